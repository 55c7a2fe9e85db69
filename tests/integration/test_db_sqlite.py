"""SQLite-only behaviour on real files: concurrent writers, interruption past
the deadline, read-only snapshots on readers, the writer lock."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from iogate.databases.sqlite import SQLiteDatabase
from iogate.errors import DatabaseError, OperationTimeout
from iogate.policies import Pipeline
from tests.waiting import until

SLOW = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 200000000)"
    " SELECT count(*) FROM c"
)


async def test_fifty_concurrent_writers_never_see_database_is_locked(tmp_path: Path) -> None:
    path = str(tmp_path / "w.db")
    # Two databases on one file: writers queue on each one's writer lock, and
    # the two writer connections wait on each other with busy_timeout.
    async with (
        SQLiteDatabase("a", path=path, readers=2) as a,
        SQLiteDatabase("b", path=path, readers=2) as b,
    ):
        await a.execute("CREATE TABLE t (writer INTEGER, n INTEGER)")
        await a.execute("CREATE TABLE totals (writer INTEGER PRIMARY KEY, n INTEGER)")
        errors: list[BaseException] = []

        async def writer(i: int) -> None:
            db = a if i % 2 else b
            try:
                for n in range(10):
                    await db.execute("INSERT INTO t VALUES (?, ?)", [i, n])
                    assert (
                        await db.fetch_val("SELECT count(*) FROM t WHERE writer = ?", [i]) == n + 1
                    )
                async with db.transaction() as tx:
                    count = await tx.fetch_val("SELECT count(*) FROM t WHERE writer = ?", [i])
                    await tx.execute("INSERT INTO totals VALUES (?, ?)", [i, count])
                await db.execute_many("INSERT INTO t VALUES (?, ?)", [(i, 100), (i, 101)])
            except DatabaseError as exc:
                errors.append(exc)

        await asyncio.gather(*(writer(i) for i in range(50)))
        assert errors == []
        assert await a.fetch_val("SELECT count(*) FROM t") == 50 * 12
        assert await b.fetch_val("SELECT sum(n) FROM totals") == 50 * 10
        assert a.stats().in_use == b.stats().in_use == 0


async def test_a_statement_past_its_deadline_is_interrupted(tmp_path: Path) -> None:
    db = SQLiteDatabase(
        "s", path=str(tmp_path / "s.db"), readers=1, runner=Pipeline(resource="s", deadline_s=0.2)
    )
    async with db:
        started = time.monotonic()
        with pytest.raises(OperationTimeout):
            await db.fetch_val(SLOW)
        # The one reader is free again at once: the statement was interrupted on
        # its thread, not left running for the seconds it would take.
        assert await db.fetch_val("SELECT 7") == 7
        assert time.monotonic() - started < 2.0
        with pytest.raises(OperationTimeout):
            await db.execute("CREATE TABLE big AS " + SLOW)
        assert await db.execute("CREATE TABLE small (x)") is not None


async def test_read_only_transaction_reads_a_snapshot_beside_the_writer(tmp_path: Path) -> None:
    async with SQLiteDatabase("s", path=str(tmp_path / "s.db"), readers=2) as db:
        await db.execute("CREATE TABLE t (x)")
        await db.execute("INSERT INTO t VALUES (1)")
        async with db.transaction(read_only=True) as tx:
            assert await tx.fetch_val("SELECT count(*) FROM t") == 1
            await db.execute("INSERT INTO t VALUES (2)")  # the writer is not blocked
            assert await tx.fetch_val("SELECT count(*) FROM t") == 1  # WAL snapshot
        assert await db.fetch_val("SELECT count(*) FROM t") == 2


async def test_using_the_database_inside_ones_own_write_transaction_fails_fast(
    tmp_path: Path,
) -> None:
    async with SQLiteDatabase("s", path=str(tmp_path / "s.db")) as db:
        await db.execute("CREATE TABLE t (x)")
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO t VALUES (1)")
            with pytest.raises(RuntimeError, match=r"tx\.execute"):
                await db.execute("INSERT INTO t VALUES (2)")
        assert await db.fetch_val("SELECT count(*) FROM t") == 1


async def test_memory_database_transactions_and_read_only(tmp_path: Path) -> None:
    async with SQLiteDatabase("m", path=":memory:") as db:
        await db.execute("CREATE TABLE t (x)")
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO t VALUES (1)")
        async with db.transaction(read_only=True) as tx:
            assert await tx.fetch_val("SELECT count(*) FROM t") == 1
        await db.execute("INSERT INTO t VALUES (2)")  # query_only was switched back off
        assert db.stats().size == 1


async def test_a_write_queued_behind_a_transaction_is_counted_once(tmp_path: Path) -> None:
    async with SQLiteDatabase("db", path=str(tmp_path / "m.db")) as db:
        await db.execute("CREATE TABLE t (x)")
        before = db.stats().acquired_total
        tx_open = asyncio.Event()
        release = asyncio.Event()

        async def hold_the_writer() -> None:
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO t VALUES (1)")
                tx_open.set()
                await release.wait()

        holder = asyncio.create_task(hold_the_writer())
        await tx_open.wait()
        queued = asyncio.create_task(db.execute("INSERT INTO t VALUES (2)"))
        await until(lambda: db.stats().waiting > 0)  # the write waits for the writer
        release.set()
        await asyncio.gather(holder, queued)
        stats = db.stats()
        assert stats.acquired_total - before == 2  # the transaction, then the write
        assert (stats.in_use, stats.waiting) == (0, 0)
        assert await db.fetch_val("SELECT count(*) FROM t") == 2


async def test_two_databases_on_one_new_file_open_concurrently(tmp_path: Path) -> None:
    # Both writers switch the new file to WAL at once: SQLite answers SQLITE_BUSY
    # without its busy handler, which failed one of the two opens before.
    for i in range(40):  # the race is narrow: it failed about one open in twenty
        path = str(tmp_path / f"shared-{i}.db")
        one, two = SQLiteDatabase("one", path=path), SQLiteDatabase("two", path=path)
        await asyncio.gather(one.open(), two.open())
        try:
            assert await one.fetch_val("PRAGMA journal_mode") == "wal"
            assert await two.fetch_val("SELECT 1") == 1
        finally:
            await asyncio.gather(one.close(), two.close())
