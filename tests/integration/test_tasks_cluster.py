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
        assert back.active() == 1 and front.active() == 0
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
