"""Tiny reads on the event loop's thread (``iogate.databases._sqlite_inline``),
on a real SQLite file: a statement runs inline only once a reader thread ran it
within the budget; a run past a bound is rerun on a thread with the same
answer; the bounds and the verdicts follow what each run cost."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Generator
from pathlib import Path

import pytest

from iogate.databases._sqlite_inline import (
    CONNECTIONS,
    COOLDOWN,
    HEAVY_FACTOR,
    MAX_VALUE_BYTES,
    SLICE_ROWS,
    InlineReads,
    InlineStats,
    NotInline,
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
    # cheap runs on a thread until it is tried here again: COOLDOWN of them,
    # fewer by the long thread runs (the rerun, the one above) that stayed
    # within HEAVY_FACTOR times their allowance (depends on the machine)
    calls = 0
    while _counts(db) == (1, 1) and calls <= COOLDOWN:
        assert await db.fetch_val(SUM, [5]) == 15
        calls += 1
    assert _counts(db) == (2, 1)
    assert COOLDOWN - 2 <= calls - 1 <= COOLDOWN  # the last call ran inline


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


def _connect(path: Path) -> Callable[[], sqlite3.Connection]:
    return lambda: sqlite3.connect(path, check_same_thread=False)


def test_the_verdict_table_is_bounded_and_the_bounds_are_checked(tmp_path: Path) -> None:
    connect = _connect(tmp_path / "x.db")
    with pytest.raises(ValueError, match="budget_s"):
        InlineReads(connect, budget_s=0)
    with pytest.raises(ValueError, match="max_steps"):
        InlineReads(connect, budget_s=1e-3, max_steps=0)
    with pytest.raises(ValueError, match="max_connections"):
        InlineReads(connect, budget_s=1e-3, max_connections=0)
    reads = InlineReads(connect, budget_s=1e-3)
    for index in range(5000):
        reads.learn(f"SELECT {index}", 1e-6)
    assert reads.stats().cheap <= 4096
    assert reads.eligible("SELECT 4999")
    reads.learn("SELECT 4999", 1.0)  # eligible: only its inline runs judge it now
    assert reads.eligible("SELECT 4999")
    reads.learn("SELECT never", 1.0)  # far over the budget on its first run: not cheap
    assert not reads.eligible("SELECT never")
    reads.learn("SELECT " + "1" * 5000, 1e-6)  # too long to compile inline
    assert not reads.eligible("SELECT " + "1" * 5000)
    # a long result is judged per slice of rows: 4x the budget for 4 slices' rows
    reads.learn("SELECT wide", 4e-3, rows=4 * SLICE_ROWS)
    assert reads.eligible("SELECT wide")


def test_a_statement_over_the_budget_on_threads_gets_an_inline_trial(tmp_path: Path) -> None:
    """A thread's CPU clock counts its GIL waits: a statement over the budget
    there (not far over) is tried inline after COOLDOWN + 1 such runs; one far
    over starts the count again."""
    reads = InlineReads(_connect(tmp_path / "x.db"), budget_s=1e-3)
    slow = 3e-3  # 3x the budget: GIL waits, or a real cost the trial will show
    for _ in range(COOLDOWN + 1):
        assert not reads.eligible("q")
        reads.learn("q", slow)
    assert reads.eligible("q")
    reads.learn("far", slow)
    reads.learn("far", 2 * HEAVY_FACTOR * 1e-3)  # far over: the count starts again
    for _ in range(COOLDOWN):
        reads.learn("far", slow)
    assert not reads.eligible("far")
    reads.learn("far", slow)
    assert reads.eligible("far")


def test_an_inline_run_far_over_the_budget_makes_its_statement_heavy(tmp_path: Path) -> None:
    """One VM step the progress handler cannot cut (here: a function of the
    caller's that spins ~20x the threshold of CPU) is caught afterwards."""
    reads = InlineReads(_connect(tmp_path / "x.db"), budget_s=1e-4)

    def spin(_: sqlite3.Connection, cpu_s: float) -> Generator[None, None, str]:
        end = time.thread_time() + cpu_s
        while time.thread_time() < end:
            pass
        return "done"
        yield  # a generator (of one slice)

    async def run(cpu_s: float) -> str:
        return str(await reads.run("q", spin, cpu_s))

    reads.learn("q", 1e-6)
    assert asyncio.run(run(0.0)) == "done"  # a quick run: still cheap
    assert reads.eligible("q")
    assert asyncio.run(run(2e-4)) == "done"  # 2x the budget: GIL waits, forgiven
    assert reads.eligible("q")
    assert asyncio.run(run(20 * HEAVY_FACTOR * 1e-4)) == "done"  # answered, then heavy
    assert not reads.eligible("q")
    assert reads.stats().inline == 3
    assert reads.stats().sliced == 0
    reads.close()


RANGE = "SELECT id, v FROM t WHERE id <= ? ORDER BY id"
POINT = "SELECT v FROM t WHERE id = ?"


async def test_a_long_result_is_read_inline_in_slices_while_other_tasks_run(
    db: SQLiteDatabase,
) -> None:
    """10 slices' rows: the first read is a thread's, the next inline, the loop
    running another task between every two slices; the answer is the same."""
    rows = 10 * SLICE_ROWS
    on_thread = await db.query(RANGE, [rows])
    assert len(on_thread.rows) == rows
    turns = 0

    async def ticker() -> None:
        nonlocal turns
        while True:
            await asyncio.sleep(0)
            turns += 1

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)  # the ticker is running
    try:
        inline = await db.query(RANGE, [rows])
        turns_during = turns
    finally:
        task.cancel()
    assert inline.rows == on_thread.rows
    assert _counts(db) == (1, 0)
    assert _stats(db).sliced == 1
    assert turns_during >= 9  # one loop turn at least between two of the 10 slices


async def test_a_read_suspended_between_slices_keeps_its_snapshot_and_others_see_writes(
    tmp_path: Path,
) -> None:
    """A connection with an open statement keeps its read transaction: reads
    started while it is suspended use other connections and see a write
    committed meanwhile; the suspended read answers from its own snapshot."""
    path = tmp_path / "s.db"
    with sqlite3.connect(path) as setup:
        setup.execute("PRAGMA journal_mode = WAL")
        setup.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        setup.executemany("INSERT INTO t (v) VALUES (?)", (("old",) for _ in range(1000)))
    async with SQLiteDatabase("s", path=str(path), inline_read_budget_s=0.002) as database:
        rows = 8 * SLICE_ROWS
        await database.query(RANGE, [rows])  # threads: the verdicts are learnt
        assert await database.fetch_val(POINT, [1]) == "old"
        long_read = asyncio.create_task(database.query(RANGE, [rows]))
        await asyncio.sleep(0)  # its first slice ran: suspended, holding a connection
        assert not long_read.done()
        await database.execute("UPDATE t SET v = 'new'")
        assert await database.fetch_val(POINT, [1]) == "new"  # inline, another connection
        result = await long_read
        assert {row[1] for row in result.rows} == {"old"}  # one snapshot, begun before
        assert _stats(database).inline == 2
        assert _stats(database).sliced == 1


async def test_reads_beyond_the_free_connections_go_to_threads_and_a_cancel_frees_one(
    db: SQLiteDatabase,
) -> None:
    rows = 4 * SLICE_ROWS
    expected = (await db.query(RANGE, [rows])).rows  # thread: learnt
    reads = [asyncio.create_task(db.query(RANGE, [rows])) for _ in range(CONNECTIONS + 2)]
    answers = await asyncio.gather(*reads)
    assert all(a.rows == expected for a in answers)
    inline, rerun = _counts(db)
    assert (inline, rerun) == (CONNECTIONS, 0)  # two went to threads, nothing rerun
    cancelled = asyncio.create_task(db.query(RANGE, [rows]))
    await asyncio.sleep(0)  # suspended after its first slice
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    # every connection is free again: as many reads at once all run inline
    again = await asyncio.gather(*(db.query(RANGE, [rows]) for _ in range(CONNECTIONS)))
    assert all(a.rows == expected for a in again)
    assert _counts(db) == (2 * CONNECTIONS, 0)


async def test_not_inline_when_every_connection_is_held(tmp_path: Path) -> None:
    reads = InlineReads(_connect(tmp_path / "x.db"), budget_s=1e-3, max_connections=1)
    reads.learn("q", 1e-6)
    held = asyncio.Event()

    def two_slices(_: sqlite3.Connection) -> Generator[None, None, str]:
        held.set()
        yield
        return "second"

    first = asyncio.create_task(reads.run("q", two_slices))
    await held.wait()
    with pytest.raises(NotInline):
        await reads.run("q", two_slices)
    assert await first == "second"
    assert (reads.stats().inline, reads.stats().rerun, reads.stats().sliced) == (1, 0, 1)
    reads.close()


async def test_a_task_reading_inline_in_a_loop_lets_the_others_run(db: SQLiteDatabase) -> None:
    """Reads answered in one slice do not await; back to back they would keep
    the loop from ever turning. After TURN_S of them a read awaits one turn:
    a task that only reads in a loop sees another task's flag, and the loop's
    timers keep firing while it reads."""
    point = "SELECT id, v FROM t WHERE id = ?"
    await db.fetch_one(point, [1])  # the verdict: inline from now on
    other_ran = asyncio.Event()
    timer_fired = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.call_later(0.01, timer_fired.set)

    async def other() -> None:
        other_ran.set()

    task = asyncio.create_task(other())
    reads = 0
    started = time.monotonic()
    # no await but the reads' own: without a loop turn neither event could be set
    while not (other_ran.is_set() and timer_fired.is_set()) and reads < 200_000:
        assert await db.fetch_one(point, [1 + reads % 1000]) is not None
        reads += 1
    assert other_ran.is_set()
    assert timer_fired.is_set()
    assert time.monotonic() - started < 5
    assert _stats(db).inline >= reads  # every read ran inline
    await task
