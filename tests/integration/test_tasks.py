"""TaskManager on a real SQLite file: states, concurrency, cancel, progress,
restart recovery and graceful shutdown. Synchronisation by events, never sleeps."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from iogate.databases.sqlite import SQLiteDatabase
from iogate.tasks import (
    TaskCancelledError,
    TaskContext,
    TaskManager,
    TaskNotFoundError,
    TaskQueueFullError,
    TaskRecord,
    TaskState,
    TaskStore,
)
from tests.waiting import until


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[SQLiteDatabase]:
    async with SQLiteDatabase("main", path=str(tmp_path / "tasks.db")) as database:
        yield database


async def test_a_coroutine_succeeds_and_its_result_survives_a_restart(db: SQLiteDatabase) -> None:
    async with TaskManager(db) as tasks:
        handle = await tasks.submit(asyncio.sleep(0, result={"answer": 42}), name="answer")
        record = await handle.wait()
        assert record.state is TaskState.SUCCEEDED
        assert await handle.result() == {"answer": 42}
    async with TaskManager(db) as again:  # a new process on the same database
        stored = await again.get(handle.id)
    assert (stored.state, stored.result, stored.name, stored.attempts) == (
        TaskState.SUCCEEDED,
        {"answer": 42},
        "answer",
        1,
    )
    assert stored.finished_at is not None
    assert stored.started_at is not None


async def test_a_failure_is_stored_as_a_problem_and_logged(
    db: SQLiteDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    async def boom() -> None:
        raise ValueError("bad input 7")

    async with TaskManager(db) as tasks:
        handle = await tasks.submit(boom(), name="boom")
        record = await handle.wait()
        with pytest.raises(ValueError, match="bad input 7"):
            await handle.result()
    assert record.state is TaskState.FAILED
    assert record.problem is not None
    assert record.problem["type"] == "urn:iogate:problem:task-failed"
    assert record.problem["detail"] == "ValueError: bad input 7"
    assert any("boom" in r.getMessage() and "ValueError" in r.getMessage() for r in caplog.records)


async def test_fire_and_forget_failures_are_recorded_and_logged(
    db: SQLiteDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)

    async def lost() -> None:
        raise RuntimeError("nobody awaits me")

    async with TaskManager(db) as tasks:
        task_id = tasks.spawn(lost(), name="fire")

        async def ended() -> bool:
            return (await tasks.get(task_id)).state is TaskState.FAILED

        await until(ended)
    async with TaskManager(db) as again:
        record = await again.get(task_id)
    assert record.state is TaskState.FAILED
    assert record.problem is not None
    assert "nobody awaits me" in record.problem["detail"]
    messages = [r.getMessage() for r in caplog.records]
    assert any(task_id in m and "RuntimeError" in m for m in messages)
    assert not any("never retrieved" in m for m in messages)


async def test_concurrency_is_bounded_and_progress_is_live(db: SQLiteDatabase) -> None:
    release = asyncio.Event()

    async def work(ctx: TaskContext) -> str:
        ctx.progress(1, 2)
        await release.wait()
        ctx.progress(2, 2)
        return ctx.id

    async with TaskManager(db, max_concurrency=2) as tasks:
        handles = [await tasks.submit(work) for _ in range(5)]

        async def two_running() -> bool:
            states = [(await tasks.get(h.id)).state for h in handles]
            return states.count(TaskState.RUNNING) == 2

        await until(two_running)
        states = [(await tasks.get(h.id)).state for h in handles]
        assert states.count(TaskState.QUEUED) == 3
        running = [await tasks.get(h.id) for h in handles[:2]]
        assert [(r.done, r.total) for r in running] == [(1, 2), (1, 2)]
        listed = await tasks.list(states=(TaskState.QUEUED,))
        assert {r.id for r in listed} == {h.id for h in handles[2:]}
        release.set()
        records = [await h.wait() for h in handles]
    assert [r.state for r in records] == [TaskState.SUCCEEDED] * 5
    assert [r.result for r in records] == [h.id for h in handles]
    assert [(r.done, r.total) for r in records] == [(2, 2)] * 5


async def test_cancel_a_running_and_a_queued_task(db: SQLiteDatabase) -> None:
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    async with TaskManager(db, max_concurrency=1) as tasks:
        running = await tasks.submit(forever())
        queued = await tasks.submit(forever())
        await started.wait()
        assert (await tasks.cancel(queued.id)).state is TaskState.CANCELLED
        assert (await tasks.cancel(running.id)).state is TaskState.CANCELLED
        with pytest.raises(TaskCancelledError):
            await running.result()
        done = await tasks.submit(asyncio.sleep(0, result=1))
        await done.wait()
        assert (await tasks.cancel(done.id)).state is TaskState.SUCCEEDED  # unchanged
        with pytest.raises(TaskNotFoundError):
            await tasks.cancel("no-such-task")
        stored = await tasks.store.get(running.id)
    assert stored is not None
    assert stored.state is TaskState.CANCELLED
    assert stored.problem is not None
    assert stored.problem["type"] == "urn:iogate:problem:task-cancelled"


async def test_the_queue_is_bounded(db: SQLiteDatabase) -> None:
    async with TaskManager(db, max_concurrency=1, max_queued=2, drain_timeout_s=0) as tasks:
        first = await tasks.submit(asyncio.Event().wait())
        await tasks.submit(asyncio.Event().wait())
        refused = asyncio.Event().wait()
        with pytest.raises(TaskQueueFullError):
            await tasks.submit(refused)
        refused.close()
        await tasks.cancel(first.id)
        await tasks.submit(asyncio.sleep(0))  # a slot is free again


async def test_a_too_large_result_fails_the_task(db: SQLiteDatabase) -> None:
    async with TaskManager(db, max_result_bytes=1024) as tasks:
        record = await (await tasks.submit(asyncio.sleep(0, result="x" * 2000))).wait()
    assert record.state is TaskState.FAILED
    assert record.problem is not None
    assert record.problem["type"] == "urn:iogate:problem:task-result-too-large"


async def test_restart_interrupts_running_tasks_and_requeues_idempotent_definitions(
    db: SQLiteDatabase,
) -> None:
    runs: list[Any] = []

    async def echo(definition: Any, ctx: TaskContext) -> Any:
        runs.append(definition)
        return {"echo": definition}

    # A previous process stored these as running, then died without a word.
    store = TaskStore(db)
    await store.create_schema()
    stored = [
        _running("coroutine", "lib", idempotent=False, definition=None),
        _running("echo", "again", idempotent=True, definition={"n": 1}),
        _running("echo", "once", idempotent=False, definition={"n": 2}),
    ]
    for record in stored:
        await store.insert(record)

    restarted = TaskManager(db)
    restarted.register("echo", echo)
    async with restarted:
        lib, again, once = [await restarted.get(r.id) for r in stored]

        async def rerun_done() -> bool:
            return (await restarted.get(again.id)).state is TaskState.SUCCEEDED

        await until(rerun_done)
        again = await restarted.get(again.id)
    assert lib.state is TaskState.INTERRUPTED
    assert lib.problem is not None
    assert lib.problem["type"] == "urn:iogate:problem:task-interrupted"
    assert once.state is TaskState.INTERRUPTED  # not idempotent: never run twice
    assert (again.state, again.attempts, again.result) == (
        TaskState.SUCCEEDED,
        2,
        {"echo": {"n": 1}},
    )
    assert runs == [{"n": 1}]


async def test_shutdown_drains_running_tasks_then_interrupts_the_rest(db: SQLiteDatabase) -> None:
    started, finish = asyncio.Event(), asyncio.Event()

    async def drains() -> str:
        started.set()
        await finish.wait()
        return "drained"

    tasks = TaskManager(db, max_concurrency=1, drain_timeout_s=30)
    await tasks.open()
    draining = await tasks.submit(drains())
    queued = await tasks.submit(asyncio.sleep(0, result="never"))
    await started.wait()
    closing = asyncio.create_task(tasks.close())
    await until(lambda: _true(tasks._closing))
    with pytest.raises(RuntimeError):
        await tasks.submit(asyncio.sleep(0))
    finish.set()
    await closing
    assert (await draining.wait()).state is TaskState.SUCCEEDED
    assert (await queued.wait()).state is TaskState.INTERRUPTED

    stubborn = TaskManager(db, drain_timeout_s=0)
    await stubborn.open()
    hanging = await stubborn.submit(asyncio.Event().wait())
    await stubborn.close()
    record = await hanging.wait()
    assert record.state is TaskState.INTERRUPTED
    stored = await stubborn.store.get(hanging.id)
    assert stored is not None
    assert stored.state is TaskState.INTERRUPTED


async def _true(value: bool) -> bool:
    return value


def _running(kind: str, name: str, *, idempotent: bool, definition: Any) -> TaskRecord:
    now = time.time()
    return TaskRecord(
        id=uuid.uuid4().hex,
        kind=kind,
        name=name,
        state=TaskState.RUNNING,
        idempotent=idempotent,
        attempts=1,
        created_at=now,
        started_at=now,
        finished_at=None,
        done=0,
        total=None,
        result=None,
        problem=None,
        definition=definition,
    )


@pytest.mark.postgres
async def test_the_store_runs_on_postgresql_too(pg: Any) -> None:
    from iogate.databases.postgres import PostgresDatabase

    table = f"tasks_{uuid.uuid4().hex[:8]}"
    async with PostgresDatabase("pg", dsn=pg.dsn) as database:
        async with TaskManager(database, table=table) as tasks:
            ok = await tasks.submit(asyncio.sleep(0, result={"n": [1, 2]}), name="pg")
            stuck = await tasks.submit(asyncio.Event().wait())
            assert (await ok.wait()).state is TaskState.SUCCEEDED
            await tasks.cancel(stuck.id)
        async with TaskManager(database, table=table) as again:
            stored = await again.get(ok.id)
            listed = await again.list(states=(TaskState.CANCELLED,), limit=5)
        await database.execute(f"DROP TABLE {table}")
    assert (stored.result, stored.name, stored.created_at > 1.7e9) == ({"n": [1, 2]}, "pg", True)
    assert [r.id for r in listed] == [stuck.id]


async def test_the_table_is_created_by_the_first_task_only(db: SQLiteDatabase) -> None:
    count = "SELECT count(*) FROM sqlite_master WHERE name = 'iogate_tasks'"
    async with TaskManager(db) as tasks:
        assert await tasks.list() == []
        with pytest.raises(TaskNotFoundError):
            await tasks.get("x")
        assert await db.fetch_val(count) == 0
        await (await tasks.submit(asyncio.sleep(0))).wait()
        assert await db.fetch_val(count) == 1
