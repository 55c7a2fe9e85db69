"""The SQLite connection worker: order, errors, batched results that never wait
for a slow statement, and a clean close."""

from __future__ import annotations

import asyncio
import sqlite3
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
