"""The SQLite connection worker: order, errors, batched results that never wait
for a slow statement, and a clean close."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from iogate.databases._sqlite_worker import ConnectionWorker

SLOW = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3000000)"
    " SELECT count(*) FROM c"
)


def _connect(path: str) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None, check_same_thread=False)


def _one(conn: sqlite3.Connection, sql: str, *params: Any) -> Any:
    return conn.execute(sql, params).fetchone()[0]


@pytest.fixture
async def worker(tmp_path: Path) -> Any:
    w = ConnectionWorker(name="test", batch_results=True)
    await w.start(partial(_connect, str(tmp_path / "w.db")))
    yield w
    await w.close()


async def test_results_come_back_in_submission_order(worker: ConnectionWorker) -> None:
    futures = [worker.submit(_one, "SELECT ?", i) for i in range(500)]
    assert await asyncio.gather(*futures) == list(range(500))


async def test_an_error_reaches_its_caller_only(worker: ConnectionWorker) -> None:
    bad = worker.submit(_one, "SELECT * FROM missing")
    good = worker.submit(_one, "SELECT 7")
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        await bad
    assert await good == 7


async def test_a_fast_result_does_not_wait_for_a_slow_statement_behind_it(
    worker: ConnectionWorker,
) -> None:
    # Both are queued before the thread runs either: the fast one's result is
    # held in a batch, and SQLite's progress handler hands it over while the
    # slow one is still running.
    fast = worker.submit(_one, "SELECT 1")
    slow = worker.submit(_one, SLOW)
    assert await fast == 1
    assert not slow.done()
    assert await slow == 3_000_000


async def test_close_runs_what_is_queued_then_refuses_work(tmp_path: Path) -> None:
    w = ConnectionWorker(name="test", batch_results=False)
    await w.start(partial(_connect, str(tmp_path / "c.db")))
    queued = w.submit(_one, "SELECT 5")
    await w.close()
    assert queued.done()
    assert queued.result() == 5
    assert not w.running
    with pytest.raises(RuntimeError, match="closed"):
        w.submit(_one, "SELECT 1")


async def test_a_failing_open_raises_from_start(tmp_path: Path) -> None:
    w = ConnectionWorker(name="test", batch_results=True)
    missing_dir = tmp_path / "no" / "such" / "dir" / "x.db"
    with pytest.raises(sqlite3.OperationalError, match="unable to open"):
        await w.start(partial(_connect, str(missing_dir)))
    assert not w.running


# -- a writer: waits_on_locks -------------------------------------------------


def _wal_connect(path: str, busy_ms: int) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA busy_timeout = {busy_ms}")
    conn.execute("CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, kind TEXT)")
    return conn


def _insert(conn: sqlite3.Connection, kind: str) -> int:
    return int(conn.execute("INSERT INTO events (kind) VALUES (?)", (kind,)).lastrowid or 0)


def _wait_for(conn: sqlite3.Connection, gate: Any) -> str:
    assert gate.wait(10)
    return "opened"


def _busy_timeout(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA busy_timeout").fetchone()[0])


@pytest.fixture
async def writer(tmp_path: Path) -> Any:
    # max_hold_s: long enough that no result is handed over for its age here
    w = ConnectionWorker(name="writer", batch_results=True, waits_on_locks=True, max_hold_s=30.0)
    await w.start(partial(_wal_connect, str(tmp_path / "wal.db"), 5000))
    yield w
    await w.close()


async def test_a_writer_hands_back_queued_statements_in_one_batch(
    writer: ConnectionWorker,
) -> None:
    # Statements queued behind one another come back together: when the first
    # result reaches the loop, every other one already has (issue 22: one
    # hand-over per INSERT cost the gateway 0.5-0.7x a bare aiosqlite endpoint).
    import threading

    gate = threading.Event()
    held = writer.submit(_wait_for, gate)
    inserts = [writer.submit(_insert, f"k{i}", retryable=True) for i in range(20)]
    gate.set()
    assert await held == "opened"
    assert all(f.done() for f in inserts)
    assert await asyncio.gather(*inserts) == list(range(1, 21))
    assert await writer.submit(_busy_timeout) == 5000  # the lock wait is back


async def test_a_writer_never_holds_results_while_it_waits_for_a_lock(
    writer: ConnectionWorker, tmp_path: Path
) -> None:
    # Another process's writer holds the write lock. A result already held
    # (the gate's) must reach its caller while the INSERT behind it waits for
    # the lock; then the INSERT runs once, waiting as long as its busy_timeout.
    retryable = partial(writer.submit, retryable=True)
    blocked = await _held_while_locked(writer, tmp_path, retryable, "after the lock")
    assert await asyncio.wait_for(blocked, 5.0) == 1
    rows = await writer.submit(lambda c: c.execute("SELECT kind FROM events").fetchall())
    assert rows == [("after the lock",)]  # run once: the failed attempt did nothing
    assert await writer.submit(_busy_timeout) == 5000


async def test_a_writer_hands_back_before_a_job_that_may_not_be_rerun(
    writer: ConnectionWorker, tmp_path: Path
) -> None:
    # A job submitted with submit() (a transaction's statement, many rows) is
    # never run with the lock wait off: held results go back before it starts.
    blocked = await _held_while_locked(writer, tmp_path, writer.submit, "once")
    assert await asyncio.wait_for(blocked, 5.0) == 1


async def _held_while_locked(
    writer: ConnectionWorker,
    tmp_path: Path,
    submit: Callable[..., asyncio.Future[Any]],
    kind: str,
) -> asyncio.Future[Any]:
    """While another connection holds the write lock, queue a job that waits on
    a gate, then an INSERT of ``kind`` through ``submit``: the first job's result
    must arrive while the INSERT waits. Returns the INSERT's future, with the
    lock released."""
    import threading

    other = sqlite3.connect(tmp_path / "wal.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # the write lock
    try:
        gate = threading.Event()
        first = writer.submit(_wait_for, gate, retryable=True)
        blocked = submit(_insert, kind)
        gate.set()
        assert await asyncio.wait_for(first, 2.0) == "opened"
        assert not blocked.done()
    finally:
        other.execute("COMMIT")
        other.close()
    return blocked
