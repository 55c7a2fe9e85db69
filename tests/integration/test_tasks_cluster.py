"""Tasks on the distributed backend (``[tasks] backend = "saq"``) on a real Redis:
a task submitted, watched and cancelled through one manager (or gateway
process) is run by another; a gateway process killed with SIGKILL mid-task
loses no task (another process re-runs it, or records it ``interrupted``)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from iogate.errors import TransientDatabaseError
from iogate.tasks import TaskContext, TaskState
from iogate.tasks.distributed import SaqTaskManager
from tests.servers import RedisServer, free_port, stop, wait_for_port
from tests.subprocess_env import child_env
from tests.upstream_app import UpstreamServer
from tests.waiting import until


class _Work:
    """A runner whose tasks wait for ``release`` (or fail on ``{"fail": true}``)
    and remember how they ended."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started: list[str] = []
        self.cancelled: list[str] = []

    async def __call__(self, definition: Any, ctx: TaskContext) -> Any:
        self.started.append(ctx.id)
        ctx.progress(1, 3)
        if definition.get("fail"):
            raise ValueError("no such thing")
        try:
            if definition.get("block"):
                await asyncio.Event().wait()
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled.append(ctx.id)
            raise
        ctx.progress(2, 3)
        return {"sum": sum(definition["numbers"]), "big": 2**70}


@asynccontextmanager
async def _managers(
    redis: RedisServer, work: _Work, **options: Any
) -> AsyncIterator[tuple[SaqTaskManager, SaqTaskManager]]:
    """A front manager that only submits and a back one that runs, on one queue."""
    queue = f"t-{uuid.uuid4().hex[:8]}"
    front = SaqTaskManager(redis.url, queue=queue, consume=False, heartbeat_timeout_s=1)
    back = SaqTaskManager(redis.url, queue=queue, heartbeat_timeout_s=1, **options)
    for manager in (front, back):
        manager.register("sum", work)
    async with front, back:
        yield front, back


async def test_submitted_in_one_manager_run_watched_and_cancelled_from_another(
    redis: RedisServer,
) -> None:
    work = _Work()
    async with _managers(redis, work, max_concurrency=1) as (front, back):
        record = await front.submit_definition(
            "sum", {"numbers": [1, 2, 3]}, name="six", idempotent=True
        )
        assert (record.state, record.kind, record.name) == (TaskState.QUEUED, "sum", "six")

        async def progressed() -> bool:
            seen = await front.get(record.id)
            return seen.state is TaskState.RUNNING and (seen.done, seen.total) == (1, 3)

        await until(progressed, what="progress seen through the other manager")
        assert (back.active(), front.active()) == (1, 0)
        assert [r.id for r in await front.list(states=(TaskState.RUNNING,))] == [record.id]
        work.release.set()
        final = await front.wait(record.id)
        assert final.state is TaskState.SUCCEEDED
        assert final.result == {"sum": 6, "big": 2**70}
        assert (final.done, final.total, final.attempts) == (3, 3, 1)

        blocked = await front.submit_definition("sum", {"block": True, "numbers": []})
        await until(lambda: blocked.id in work.started, what="the blocking task started")
        waiting = await front.submit_definition("sum", {"numbers": [1]})  # the one slot is taken
        assert (await front.get(waiting.id)).state is TaskState.QUEUED
        cancelled = await front.cancel(waiting.id)
        assert cancelled.state is TaskState.CANCELLED
        assert cancelled.problem is not None
        assert cancelled.problem["type"] == "urn:iogate:problem:task-cancelled"
        stopped = await front.cancel(blocked.id)
        assert stopped.state is TaskState.CANCELLED
        assert work.cancelled == [blocked.id]

        failing = await front.submit_definition("sum", {"fail": True})
        failed = await front.wait(failing.id)
        assert failed.state is TaskState.FAILED
        assert failed.problem is not None
        assert failed.problem["detail"] == "ValueError: no such thing"  # no traceback
        assert failed.attempts == 1  # a task's failure is not retried

        listed = await front.list(limit=10)
        assert [r.id for r in listed] == [failing.id, waiting.id, blocked.id, record.id]
        assert [r.state for r in listed] == [
            TaskState.FAILED,
            TaskState.CANCELLED,
            TaskState.CANCELLED,
            TaskState.SUCCEEDED,
        ]
        assert work.started == [record.id, blocked.id, failing.id]  # "waiting" never ran
        coroutine = asyncio.sleep(0)
        with pytest.raises(TypeError, match="submit_definition"):
            await front.submit(coroutine)


async def test_a_full_queue_refuses_and_an_unreachable_redis_is_a_transient_error(
    redis: RedisServer,
) -> None:
    from iogate.tasks import TaskQueueFullError

    work = _Work()
    queue = f"t-{uuid.uuid4().hex[:8]}"
    async with SaqTaskManager(redis.url, queue=queue, consume=False, max_queued=1) as front:
        front.register("sum", work)
        await front.submit_definition("sum", {"numbers": [1]})
        with pytest.raises(TaskQueueFullError):
            await front.submit_definition("sum", {"numbers": [2]})
    nowhere = SaqTaskManager(f"redis://127.0.0.1:{free_port()}/0", redis_timeout_s=1.0)
    with pytest.raises(TransientDatabaseError):
        await nowhere.open()


def _config(tmp_path: Path, redis: RedisServer, upstream: UpstreamServer, **tasks: Any) -> str:
    options = {
        "backend": "saq",
        "url": redis.url,
        "queue": f"t-{uuid.uuid4().hex[:8]}",
        "max_concurrency": 2,
        "heartbeat_timeout_s": 1,
        "sweep_interval_s": 1,
        **tasks,
    }
    lines = "\n".join(f"{key} = {_toml(value)}" for key, value in options.items())
    return (
        f'[databases.main]\nurl = "sqlite:///{tmp_path / "main.db"}"\n\n'
        f'[upstreams.example]\nbase_url = "{upstream.base_url}"\n\n[tasks]\n{lines}\n'
    )


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return f'"{value}"' if isinstance(value, str) else str(value)


async def _start(tmp_path: Path, *args: str) -> subprocess.Popen[bytes]:
    """``python -m iogate <args>`` in ``tmp_path``; waits for its port if it serves."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "iogate", *args],
        cwd=tmp_path,
        env=child_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    if "--port" in args:
        port = int(args[args.index("--port") + 1])
        await asyncio.to_thread(wait_for_port, port, proc, "iogate serve")
    return proc


class _Api:
    def __init__(self, session: aiohttp.ClientSession, port: int) -> None:
        self.session = session
        self.base = f"http://127.0.0.1:{port}/v1/tasks"

    async def submit(self, steps: list[dict[str, Any]], **extra: Any) -> str:
        async with self.session.post(self.base, json={"steps": steps, **extra}) as resp:
            assert resp.status == 202, await resp.text()
            return str((await resp.json())["id"])

    async def get(self, task_id: str) -> dict[str, Any]:
        async with self.session.get(f"{self.base}/{task_id}") as resp:
            assert resp.status == 200, await resp.text()
            answer: dict[str, Any] = await resp.json()
            return answer

    async def cancel(self, task_id: str) -> dict[str, Any]:
        async with self.session.delete(f"{self.base}/{task_id}") as resp:
            assert resp.status == 200, await resp.text()
            answer: dict[str, Any] = await resp.json()
            return answer

    async def listed(self) -> list[dict[str, Any]]:
        async with self.session.get(f"{self.base}?limit=10") as resp:
            assert resp.status == 200
            return list((await resp.json())["tasks"])

    async def status(self, task_id: str) -> str:
        return str((await self.get(task_id))["status"])


def _requests(upstream: UpstreamServer, path: str) -> int:
    return sum(1 for r in upstream.seen if r.path == f"/api/{path}")


def _step(path: str) -> list[dict[str, Any]]:
    return [{"kind": "upstream", "upstream": "example", "path": f"/{path}"}]


@pytest.mark.timeout(60)
async def test_a_task_of_a_process_killed_with_sigkill_is_run_by_another(
    tmp_path: Path, redis: RedisServer, upstream: UpstreamServer
) -> None:
    (tmp_path / "iogate.toml").write_text(_config(tmp_path, redis, upstream))
    port_a, port_b = free_port(), free_port()
    proc_a = await _start(tmp_path, "serve", "-c", "iogate.toml", "--port", str(port_a))
    proc_b: subprocess.Popen[bytes] | None = None
    try:
        async with aiohttp.ClientSession() as session:
            a, b = _Api(session, port_a), _Api(session, port_b)
            again = await a.submit(_step("hang-once/again"), name="again", idempotent=True)
            once = await a.submit(_step("hang-once/once"), name="once")
            await until(
                lambda: (
                    _requests(upstream, "hang-once/again") + _requests(upstream, "hang-once/once")
                    == 2
                ),
                timeout_s=10,
                what="both tasks running in A",
            )
            hanging = await a.submit(_step("hang"), name="hanging")  # A's two slots are taken
            assert await a.status(hanging) == "queued"

            proc_b = await _start(tmp_path, "serve", "-c", "iogate.toml", "--port", str(port_b))
            await until(lambda: _requests(upstream, "hang") == 1, timeout_s=10, what="B runs it")
            assert await b.status(again) == "running"  # A's tasks, seen through B
            cancelled = await a.cancel(hanging)  # through A, running in B
            assert cancelled["status"] == "cancelled", cancelled
            assert (await b.get(hanging))["problem"]["type"] == "urn:iogate:problem:task-cancelled"

            proc_a.send_signal(signal.SIGKILL)
            await asyncio.to_thread(proc_a.wait, timeout=10)

            async def ended(task_id: str) -> bool:
                return await b.status(task_id) in ("succeeded", "failed", "interrupted")

            await until(lambda: ended(again), timeout_s=15, what="B re-ran the idempotent task")
            rerun = await b.get(again)
            assert rerun["status"] == "succeeded", rerun
            assert rerun["attempts"] == 2
            assert rerun["result"]["results"][0]["value"]["body"] == {"attempt": 2}
            await until(lambda: ended(once), timeout_s=15, what="B recorded the other one")
            interrupted = await b.get(once)
            assert interrupted["status"] == "interrupted", interrupted
            assert interrupted["problem"]["type"] == "urn:iogate:problem:task-interrupted"
            assert _requests(upstream, "hang-once/once") == 1  # not sent twice
            listed = {t["id"]: t["status"] for t in await b.listed()}
            assert listed == {hanging: "cancelled", once: "interrupted", again: "succeeded"}
    finally:
        stop(proc_a, signal.SIGKILL)
        if proc_b is not None:  # its shutdown takes up to a second: off the loop
            await asyncio.to_thread(stop, proc_b, signal.SIGTERM)


@pytest.mark.timeout(60)
async def test_iogate_worker_runs_what_serve_with_workers_submits(
    tmp_path: Path, redis: RedisServer, upstream: UpstreamServer
) -> None:
    (tmp_path / "iogate.toml").write_text(_config(tmp_path, redis, upstream, consume=False))
    port = free_port()
    serve = await _start(
        tmp_path, "serve", "-c", "iogate.toml", "--port", str(port), "--workers", "2"
    )
    worker = await _start(tmp_path, "worker", "-c", "iogate.toml")
    try:
        connector = aiohttp.TCPConnector(force_close=True)  # each request may reach either worker
        async with aiohttp.ClientSession(connector=connector) as session:
            api = _Api(session, port)
            sql = [{"kind": "database", "database": "main", "sql": "SELECT 40 + 2"}]
            ids = [await api.submit(sql, name=f"t{i}") for i in range(4)]

            async def all_done() -> bool:
                return all([await api.status(i) == "succeeded" for i in ids])

            await until(all_done, timeout_s=15, what="the worker ran every task")
            result = (await api.get(ids[0]))["result"]
            assert result["results"][0]["value"]["rows"] == [[42]]
        worker.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(worker.wait, timeout=15) == 0
    finally:
        stop(worker, signal.SIGKILL)
        await asyncio.to_thread(stop, serve, signal.SIGTERM)


@pytest.mark.timeout(60)
async def test_redis_down_is_a_503_on_the_task_routes_and_they_recover(tmp_path: Path) -> None:
    from iogate.config import parse_config
    from tests.conftest import serve_app
    from tests.servers import redis_server

    with redis_server() as own:  # stopped and started here: not the shared server
        config = parse_config(
            {
                "databases": {"main": {"url": f"sqlite:///{tmp_path / 'main.db'}"}},
                "tasks": {"backend": "saq", "url": own.url, "redis_timeout_s": 1.0},
            },
            environ={},
        )
        sql = {"steps": [{"kind": "database", "database": "main", "sql": "SELECT 1"}]}
        async with serve_app(config) as client:
            status, _, answer = await client.post("/v1/tasks", sql)
            assert status == 202, answer
            await asyncio.to_thread(own.stop)
            status, _, problem = await client.get("/v1/tasks")
            assert status == 503, problem
            assert problem["type"] == "urn:iogate:problem:database-unavailable"  # type: ignore[index]
            status, _, _ = await client.post("/v1/tasks", sql)
            assert status == 503
            status, _, _ = await client.get("/v1/stats")
            assert status == 200  # the rest of the gateway is unaffected
            await asyncio.to_thread(own.start)  # empty: a Redis without persistence
            status, _, answer = await client.post("/v1/tasks", sql)
            assert status == 202, answer
            task_id = answer["id"]  # type: ignore[index]

            async def succeeded() -> bool:
                task = (await client.get(f"/v1/tasks/{task_id}"))[2]
                return bool(task["status"] == "succeeded")  # type: ignore[index]

            await until(succeeded, timeout_s=15, what="the queue works again")
