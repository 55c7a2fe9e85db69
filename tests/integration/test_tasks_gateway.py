"""``/v1/tasks`` over HTTP: submit, poll, list, cancel, scopes; and a gateway
process killed with SIGKILL mid-task, then started again on the same database."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from iogate.config import IogateConfig, parse_config
from iogate.server.auth import Principal
from tests.as_principal import serve_as
from tests.servers import free_port, stop, wait_for_port
from tests.subprocess_env import start_iogate
from tests.upstream_app import HANG, UpstreamServer


def _config(tmp_path: Path, upstream: UpstreamServer) -> IogateConfig:
    return parse_config(
        {
            "databases": {"main": {"url": f"sqlite:///{tmp_path / 'gw.db'}"}},
            "upstreams": {"example": {"base_url": upstream.base_url}},
        },
        environ={},
    )


async def _wait_for(
    fetch: Callable[[], Any], done: Callable[[Any], bool], *, tries: int = 1500
) -> Any:
    """Poll the API (every 20 ms, bounded) until ``done(answer)``: the state of a
    background task has no other notification."""
    for _ in range(tries):
        answer = await fetch()
        if done(answer):
            return answer
        await asyncio.sleep(0.02)
    raise AssertionError(f"never reached: last answer {answer!r}")


async def test_submit_poll_list_and_cancel(tmp_path: Path, upstream: UpstreamServer) -> None:
    from tests.conftest import serve_app

    async with serve_app(_config(tmp_path, upstream)) as client:
        body = {
            "name": "two steps",
            "steps": [
                {"kind": "database", "database": "main", "sql": "SELECT 6 * 7 AS answer"},
                {"kind": "cache", "op": "set", "key": "k", "value": {"$ref": "steps.0.rows.0.0"}},
            ],
        }
        status, headers, answer = await client.post("/v1/tasks", body)
        assert status == 202, answer
        assert isinstance(answer, dict)
        assert answer["status"] == "queued"
        task_id = answer["id"]
        assert headers["Location"] == f"/v1/tasks/{task_id}"

        async def get() -> dict[str, Any]:
            return (await client.get(f"/v1/tasks/{task_id}"))[2]  # type: ignore[return-value]

        task = await _wait_for(get, lambda t: t["status"] == "succeeded")
        assert task["name"] == "two steps"
        assert task["progress"] == {"done": 2, "total": 2}
        assert [r["ok"] for r in task["result"]["results"]] == [True, True]
        assert task["result"]["results"][0]["value"]["rows"] == [[42]]

        slow = {"steps": [{"kind": "upstream", "upstream": "example", "path": "/hang"}]}
        _, _, answer = await client.post("/v1/tasks", slow)
        assert isinstance(answer, dict)
        hanging = answer["id"]
        await _wait_for(lambda: _hang_requests(upstream), lambda n: n == 1)
        status, _, listed = await client.get("/v1/tasks?status=running")
        assert status == 200
        assert [t["id"] for t in listed["tasks"]] == [hanging]  # type: ignore[index]
        async with client.session.delete(f"{client.base_url}/v1/tasks/{hanging}") as resp:
            assert resp.status == 200
            cancelled = await resp.json()
        assert cancelled["status"] == "cancelled"
        assert cancelled["problem"]["type"] == "urn:iogate:problem:task-cancelled"
        _, _, listed = await client.get("/v1/tasks?limit=10")
        assert [t["status"] for t in listed["tasks"]] == ["cancelled", "succeeded"]  # type: ignore[index]
        status, _, problem = await client.get("/v1/tasks?status=sleeping")
        assert status == 400
        status, _, problem = await client.get("/v1/tasks/no-such-task")
        assert status == 404
        assert problem["type"] == "urn:iogate:problem:unknown-resource"  # type: ignore[index]


async def _hang_requests(upstream: UpstreamServer) -> int:
    return sum(1 for r in upstream.seen if r.path == "/api/hang")


async def test_scopes_are_checked_at_submit_and_tasks_are_private(
    tmp_path: Path, upstream: UpstreamServer
) -> None:
    reader = Principal("reader", scopes=frozenset({"db:main:read"}))
    async with serve_as(_config(tmp_path, upstream), reader) as (client, app):
        refused = {
            "steps": [
                {"kind": "database", "database": "main", "sql": "SELECT 1"},
                {"kind": "upstream", "upstream": "example", "path": "/echo"},
            ]
        }
        status, _, problem = await client.post("/v1/tasks", refused)
        assert status == 403
        assert "upstream:example" in problem["detail"]  # type: ignore[index]
        status, _, answer = await client.post("/v1/tasks", {"steps": refused["steps"][:1]})
        assert status == 202
        # a library task (no owner) is visible to admin only
        gateway = app.state.gateway
        await (await gateway.tasks.submit(asyncio.sleep(0, result=1))).wait()
        _, _, listed = await client.get("/v1/tasks")
        assert [t["id"] for t in listed["tasks"]] == [answer["id"]]  # type: ignore[index]
    assert _nothing_sent(upstream)  # the refused batch never ran a step


async def _true(value: bool) -> bool:
    return value


def _nothing_sent(upstream: UpstreamServer) -> bool:
    return not any(r.path in ("/api/echo", "/api/hang") for r in upstream.seen)


async def test_tasks_off_is_a_404_problem(tmp_path: Path) -> None:
    from tests.conftest import serve_app

    config = parse_config({"tasks": {"enabled": False}}, environ={})
    async with serve_app(config) as client:
        status, _, problem = await client.get("/v1/tasks")
    assert status == 404
    assert problem["type"] == "urn:iogate:problem:tasks-not-configured"  # type: ignore[index]


async def _serve(tmp_path: Path, port: int) -> subprocess.Popen[bytes]:
    proc = start_iogate(tmp_path, port)
    await asyncio.to_thread(wait_for_port, port, proc, "iogate serve")
    return proc


@pytest.mark.timeout(90)
async def test_sigkill_mid_task_then_restart(tmp_path: Path, upstream: UpstreamServer) -> None:
    (tmp_path / "iogate.toml").write_text(
        f'[databases.main]\nurl = "sqlite:///{tmp_path / "tasks.db"}"\n\n'
        f'[upstreams.example]\nbase_url = "{upstream.base_url}"\n'
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}/v1/tasks"
    hang = [{"kind": "upstream", "upstream": "example", "path": "/hang"}]
    proc = await _serve(tmp_path, port)
    try:
        async with aiohttp.ClientSession() as session:

            async def submit(body: dict[str, Any]) -> str:
                async with session.post(base, json=body) as resp:
                    assert resp.status == 202
                    return str((await resp.json())["id"])

            async def get(task_id: str) -> dict[str, Any]:
                async with session.get(f"{base}/{task_id}") as resp:
                    assert resp.status == 200
                    answer: dict[str, Any] = await resp.json()
                    return answer

            finished = await submit(
                {"steps": [{"kind": "database", "database": "main", "sql": "SELECT 'kept'"}]}
            )
            done = await _wait_for(lambda: get(finished), lambda t: t["status"] == "succeeded")
            once = await submit({"steps": hang, "name": "once"})
            again = await submit({"steps": hang, "name": "again", "idempotent": True})
            # both are in flight at the upstream when the process dies
            await _wait_for(lambda: _hang_requests(upstream), lambda n: n == 2)
            assert (await get(once))["status"] == "running"
            assert (await get(again))["status"] == "running"

            proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(proc.wait, timeout=10)
            upstream.app[HANG].set()  # the re-run's request answers at once
            proc = await _serve(tmp_path, port)

            after = await get(finished)
            assert (after["status"], after["result"]) == ("succeeded", done["result"])
            assert after["result"]["results"][0]["value"]["rows"] == [["kept"]]
            interrupted = await get(once)
            assert interrupted["status"] == "interrupted"
            assert interrupted["problem"]["type"] == "urn:iogate:problem:task-interrupted"
            rerun = await _wait_for(lambda: get(again), lambda t: t["status"] == "succeeded")
            assert rerun["attempts"] == 2
            assert rerun["result"]["results"][0]["ok"] is True
            assert await _hang_requests(upstream) == 3  # "once" was not sent again
    finally:
        stop(proc, signal.SIGTERM)


async def test_integers_beyond_64_bits_survive_the_round_trip(
    tmp_path: Path, upstream: UpstreamServer
) -> None:
    from tests.conftest import serve_app

    big = 2**70 + 1  # found by the OpenAPI fuzzer: orjson refuses it
    async with serve_app(_config(tmp_path, upstream)) as client:
        steps = [
            {"kind": "cache", "op": "set", "key": "big", "value": big},
            {"kind": "cache", "op": "get", "key": "big"},
        ]
        status, _, answer = await client.post("/v1/tasks", {"steps": steps})
        assert status == 202, answer
        task_id = answer["id"]  # type: ignore[index]

        async def get() -> dict[str, Any]:
            async with client.session.get(f"{client.base_url}/v1/tasks/{task_id}") as resp:
                text = await resp.text()
                assert resp.status == 200, text
                return json.loads(text)  # type: ignore[no-any-return]

        task = await _wait_for(get, lambda t: t["status"] in ("succeeded", "failed"))
        assert task["status"] == "succeeded", task
        assert task["result"]["results"][1]["value"]["value"] == big


async def test_a_task_outlives_the_deadline_of_the_request_that_submitted_it(
    tmp_path: Path, upstream: UpstreamServer
) -> None:
    from tests.conftest import serve_app

    async with serve_app(_config(tmp_path, upstream)) as client:
        body = {"steps": [{"kind": "upstream", "upstream": "example", "path": "/slow/1?ms=800"}]}
        url = f"{client.base_url}/v1/tasks"
        async with client.session.post(url, json=body, headers={"X-Request-Timeout": "0.2"}) as r:
            assert r.status == 202
            task_id = (await r.json())["id"]

        async def get() -> dict[str, Any]:
            return (await client.get(f"/v1/tasks/{task_id}"))[2]  # type: ignore[return-value]

        task = await _wait_for(get, lambda t: t["status"] in ("succeeded", "failed"))
    assert task["status"] == "succeeded"
    assert task["result"]["results"][0]["ok"] is True, task["result"]
