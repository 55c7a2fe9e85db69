"""Tiny reads on the event loop's thread (``iogate.databases._sqlite_inline``),
on a real SQLite file: a statement runs inline only once a reader thread ran it
within the budget; a run past a bound is rerun on a thread with the same
answer; the bounds and the verdicts follow what each run cost."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from iogate.databases._sqlite_inline import (
    COOLDOWN,
    HEAVY_FACTOR,
    MAX_VALUE_BYTES,
    InlineReads,
    InlineStats,
)
from iogate.databases.guard import SQLGuard
from iogate.databases.sqlite import SQLiteDatabase
from iogate.errors import ReadOnlyViolation

ROWS = 200_000
SUM = "SELECT sum(id) FROM t WHERE id <= ?"


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A file of ROWS rows: summing them all takes far more than 2 ms."""
    path = tmp_path_factory.mktemp("inline") / "big.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        conn.executemany("INSERT INTO t (v) VALUES (?)", (("x",) for _ in range(ROWS)))
    return path


@pytest.fixture
async def db(big_file: Path) -> AsyncIterator[SQLiteDatabase]:
    async with SQLiteDatabase("main", path=str(big_file), inline_read_budget_s=0.002) as database:
        yield database


def _stats(db: SQLiteDatabase) -> InlineStats:
    stats = db.inline_reads()
    assert stats is not None
    return stats


def _counts(db: SQLiteDatabase) -> tuple[int, int]:
    stats = _stats(db)
    return stats.inline, stats.rerun


async def test_a_cheap_read_runs_inline_once_a_thread_ran_it_within_the_budget(
    db: SQLiteDatabase,
) -> None:
    point = "SELECT id, v FROM t WHERE id = ?"
    first = await db.fetch_one(point, [7])  # a reader thread: the verdict is learnt
    assert _counts(db) == (0, 0)
    again = [await db.fetch_one(point, [7]) for _ in range(3)]
    assert _counts(db) == (3, 0)
    assert first is not None
    assert dict(first) == {"id": 7, "v": "x"}
    assert [dict(r) for r in again if r is not None] == [{"id": 7, "v": "x"}] * 3
    result = await db.query(point, [8])
    assert _counts(db) == (4, 0)
    assert result.rows == [(8, "x")]
    assert [c.name for c in result.columns] == ["id", "v"]
    assert (_stats(db).cheap, _stats(db).heavy) == (1, 0)


async def test_a_run_past_the_step_bound_is_rerun_on_a_thread_with_the_same_answer(
    db: SQLiteDatabase,
) -> None:
    assert await db.fetch_val(SUM, [5]) == 15  # on a thread: cheap
    assert await db.fetch_val(SUM, [5]) == 15  # inline
    assert _counts(db) == (1, 0)
    whole = ROWS * (ROWS + 1) // 2
    assert await db.fetch_val(SUM, [ROWS]) == whole  # inline: cut at max_steps, rerun
    assert _counts(db) == (1, 1)
    assert _stats(db).heavy == 1  # the thread's run was long too
    assert await db.fetch_val(SUM, [ROWS]) == whole  # heavy: straight to a thread
    assert _counts(db) == (1, 1)
    for _ in range(COOLDOWN):  # cheap runs on a thread, until it is tried here again
        assert await db.fetch_val(SUM, [5]) == 15
    assert _counts(db) == (1, 1)
    assert await db.fetch_val(SUM, [5]) == 15
    assert _counts(db) == (2, 1)


async def test_a_value_past_the_inline_length_limit_is_rerun_on_a_thread(
    db: SQLiteDatabase,
) -> None:
    blob = "SELECT length(randomblob(?))"
    assert await db.fetch_val(blob, [10]) == 10
    assert await db.fetch_val(blob, [10]) == 10
    assert _counts(db) == (1, 0)
    size = 4 * MAX_VALUE_BYTES
    assert await db.fetch_val(blob, [size]) == size  # SQLITE_TOOBIG inline, rerun
    assert _counts(db) == (1, 1)
    assert await db.fetch_val(blob, [size]) == size  # on a thread now
    assert _counts(db) == (1, 1)
    assert _stats(db).heavy == 1


async def test_a_read_only_caller_s_reads_run_inline_and_its_writes_never(
    db: SQLiteDatabase,
) -> None:
    guard = SQLGuard(read_only=True)
    for _ in range(3):
        result = await db.query_guarded("SELECT v FROM t WHERE id = ?", [3], guard=guard)
        assert result.rows == [("x",)]
    assert _counts(db) == (2, 0)
    for _ in range(3):  # refused on the reader every time: never learnt, never inline
        with pytest.raises(ReadOnlyViolation):
            await db.query_guarded("DELETE FROM t WHERE id = ?", [3], guard=guard)
    assert _counts(db) == (2, 0)
    assert await db.fetch_val("SELECT count(*) FROM t WHERE id = 3") == 1
    tables = SQLGuard(read_only=True, tables=frozenset({"t"}))
    for _ in range(3):  # a table allowlist's authorizer recompiles: never inline
        await db.query_guarded("SELECT v FROM t WHERE id = ?", [3], guard=tables)
    assert _counts(db) == (2, 0)


async def test_a_write_is_seen_by_the_next_inline_read(tmp_path: Path) -> None:
    async with SQLiteDatabase(
        "w", path=str(tmp_path / "w.db"), inline_read_budget_s=0.002
    ) as database:
        await database.execute("CREATE TABLE n (id INTEGER PRIMARY KEY, v INTEGER)")
        await database.execute("INSERT INTO n VALUES (1, 0)")
        read = "SELECT v FROM n WHERE id = 1"
        assert await database.fetch_val(read) == 0
        for value in range(1, 6):
            await database.execute("UPDATE n SET v = ? WHERE id = 1", [value])
            assert await database.fetch_val(read) == value
        assert _stats(database).inline == 5


async def test_no_inline_reads_without_readers_or_with_a_zero_budget(tmp_path: Path) -> None:
    async with SQLiteDatabase("a", path=str(tmp_path / "a.db"), readers=0) as no_readers:
        assert await no_readers.fetch_val("SELECT 1") == 1
        assert no_readers.inline_reads() is None
    async with SQLiteDatabase("b", path=str(tmp_path / "b.db"), inline_read_budget_s=0) as off:
        assert [await off.fetch_val("SELECT 1") for _ in range(3)] == [1, 1, 1]
        assert off.inline_reads() is None
    with pytest.raises(ValueError, match="inline_read_budget_s"):
        SQLiteDatabase("c", path=str(tmp_path / "c.db"), inline_read_budget_s=-1)


def test_the_verdict_table_is_bounded_and_the_bounds_are_checked(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "x.db", check_same_thread=False)
    with pytest.raises(ValueError, match="budget_s"):
        InlineReads(conn, budget_s=0)
    with pytest.raises(ValueError, match="max_steps"):
        InlineReads(conn, budget_s=1e-3, max_steps=0)
    reads = InlineReads(conn, budget_s=1e-3)
    for index in range(5000):
        reads.learn(f"SELECT {index}", 1e-6)
    assert reads.stats().cheap <= 4096
    assert reads.eligible("SELECT 4999")
    reads.learn("SELECT 4999", 1.0)  # one strike: a clock's jump is forgiven
    assert reads.eligible("SELECT 4999")
    reads.learn("SELECT 4999", 1.0)  # two in a row: heavy
    assert not reads.eligible("SELECT 4999")
    reads.learn("SELECT 4999", 1e-6)
    assert reads.eligible("SELECT 4999")
    reads.learn("SELECT never", 1.0)  # over the budget on its first run: not cheap
    assert not reads.eligible("SELECT never")
    reads.learn("SELECT " + "1" * 5000, 1e-6)  # too long to compile inline
    assert not reads.eligible("SELECT " + "1" * 5000)
    conn.close()


def test_an_inline_run_far_over_the_budget_makes_its_statement_heavy(tmp_path: Path) -> None:
    """One VM step the progress handler cannot cut (here: a function of the
    caller's that spins ~20x the threshold of CPU) is caught afterwards."""
    conn = sqlite3.connect(tmp_path / "x.db", check_same_thread=False)
    reads = InlineReads(conn, budget_s=1e-4)

    def spin(_: sqlite3.Connection, cpu_s: float) -> str:
        end = time.thread_time() + cpu_s
        while time.thread_time() < end:
            pass
        return "done"

    reads.learn("q", 1e-6)
    assert reads.run("q", spin, 0.0) == "done"  # a quick run: still cheap
    assert reads.eligible("q")
    assert reads.run("q", spin, 2e-4) == "done"  # 2x the budget: noise, forgiven
    assert reads.eligible("q")
    assert reads.run("q", spin, 20 * HEAVY_FACTOR * 1e-4) == "done"  # answered, then heavy
    assert not reads.eligible("q")
    assert reads.stats().inline == 3
    conn.close()
