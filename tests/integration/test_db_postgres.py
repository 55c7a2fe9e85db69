"""PostgreSQL-only behaviour on a real temporary cluster: lost connections,
server-side statement timeouts, isolation levels, serialization retries,
bounded streaming of a million rows, pool statistics and typed values."""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import time
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest

from iogate.databases._values import to_json_row
from iogate.databases.postgres import PostgresDatabase
from iogate.databases.transactions import Transaction
from iogate.errors import OperationTimeout, TransientDatabaseError
from tests.integration.db_fixtures import retrying_pipeline
from tests.servers import PostgresServer


@pytest.fixture
async def admin(pg: PostgresServer) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(pg.dsn)
    yield conn
    await conn.close()


async def _active_pid(admin: asyncpg.Connection, app: str, query_prefix: str) -> int:
    """The backend pid running ``query_prefix`` for ``app`` (readiness poll, bounded)."""
    for _ in range(500):
        pid = await admin.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1"
            " AND state = 'active' AND query LIKE $2",
            app,
            query_prefix + "%",
        )
        if pid is not None:
            return int(pid)
        await asyncio.sleep(0.01)
    raise AssertionError(f"no backend of {app} ran {query_prefix}")


async def test_terminated_backend_mid_run_the_pool_recovers(
    pg: PostgresServer, admin: asyncpg.Connection
) -> None:
    app = f"iogate-{uuid.uuid4().hex[:8]}"
    db = PostgresDatabase(
        "pg",
        dsn=pg.dsn,
        min_size=2,
        max_size=2,
        application_name=app,
        runner=retrying_pipeline("pg"),
    )
    async with db:
        long = asyncio.create_task(db.fetch_val("SELECT pg_sleep(30)", idempotent=False))
        pid = await _active_pid(admin, app, "SELECT pg_sleep")
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        with pytest.raises(TransientDatabaseError):
            await long
        # Kill the idle pooled connection too: the next calls must still succeed.
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            app,
        )
        assert await db.fetch_val("SELECT 40 + 2") == 42
        assert await db.fetch_val("SELECT 1") == 1
        stats = db.stats()
        assert stats.in_use == 0
        assert stats.size <= 2


async def test_statement_timeout_is_enforced_by_the_server(pg: PostgresServer) -> None:
    async with PostgresDatabase("pg", dsn=pg.dsn, statement_timeout_s=0.2) as db:
        assert await db.fetch_val("SHOW statement_timeout") == "200ms"
        started = time.monotonic()
        with pytest.raises(OperationTimeout) as caught:
            await db.fetch_val("SELECT pg_sleep(10)")
        assert time.monotonic() - started < 5
        assert isinstance(caught.value.__cause__, asyncpg.QueryCanceledError)  # SQLSTATE 57014
        assert await db.fetch_val("SELECT 1") == 1


async def test_isolation_and_read_only_reach_the_server(pg: PostgresServer) -> None:
    async with PostgresDatabase("pg", dsn=pg.dsn) as db:
        async with db.transaction(isolation="serializable", read_only=True) as tx:
            assert await tx.fetch_val("SHOW transaction_isolation") == "serializable"
            assert await tx.fetch_val("SHOW transaction_read_only") == "on"
        async with db.transaction(isolation="repeatable read") as tx:
            assert await tx.fetch_val("SHOW transaction_isolation") == "repeatable read"


async def test_run_in_transaction_re_runs_a_serialization_failure(
    pg: PostgresServer, admin: asyncpg.Connection
) -> None:
    table = f"ledger_{uuid.uuid4().hex[:8]}"
    await admin.execute(f"CREATE TABLE {table} (k int, v int)")
    both_read = asyncio.Barrier(2)
    attempts = 0
    async with PostgresDatabase("pg", dsn=pg.dsn, max_size=4) as db:

        async def add(tx: Transaction, k: int) -> None:
            nonlocal attempts
            attempts += 1
            total = await tx.fetch_val(f"SELECT coalesce(sum(v), 0) FROM {table}")
            if attempts <= 2:  # the first round: both have read before either writes
                await both_read.wait()
            await tx.execute(f"INSERT INTO {table} VALUES (:k, :v)", {"k": k, "v": total + 1})

        await asyncio.gather(
            db.run_in_transaction(lambda tx: add(tx, 1), isolation="serializable"),
            db.run_in_transaction(lambda tx: add(tx, 2), isolation="serializable"),
        )
        rows = await db.fetch(f"SELECT v FROM {table} ORDER BY v")
    assert attempts == 3  # one of the two was re-run after SQLSTATE 40001
    assert [r[0] for r in rows] == [1, 2]  # serial outcome
    await admin.execute(f"DROP TABLE {table}")


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def test_streaming_a_million_rows_keeps_memory_bounded(pg: PostgresServer) -> None:
    sql = "SELECT g, 'row number ' || g AS label FROM generate_series(1, :n) g"
    async with PostgresDatabase("pg", dsn=pg.dsn) as db:
        gc.collect()
        baseline = peak = _rss_bytes()
        count = total = 0
        async with db.stream(sql, {"n": 1_000_000}, chunk_rows=5000) as rows:
            async for row in rows:
                count += 1
                total += row[0]
                if count % 50_000 == 0:
                    peak = max(peak, _rss_bytes())
        peak = max(peak, _rss_bytes())
    assert count == 1_000_000
    assert total == 1_000_000 * 1_000_001 // 2
    assert peak - baseline < 50 * 2**20, f"RSS grew by {(peak - baseline) / 2**20:.1f} MB"


async def test_stats_show_waiters_and_acquire_waits(pg: PostgresServer) -> None:
    async with PostgresDatabase("pg", dsn=pg.dsn, min_size=2, max_size=2) as db:
        before = db.stats().acquired_total
        tasks = [
            asyncio.create_task(db.fetch_val("SELECT pg_sleep(0.05)", idempotent=False))
            for _ in range(6)
        ]
        seen_waiting = 0
        for _ in range(1000):
            await asyncio.sleep(0)
            stats = db.stats()
            seen_waiting = max(seen_waiting, stats.waiting)
            if seen_waiting and stats.in_use == 2:
                break
        await asyncio.gather(*tasks)
        after = db.stats()
    assert seen_waiting >= 1
    assert after.acquired_total - before == 6
    assert after.acquire_wait_p99_s >= 0.04  # the last ones waited for two sleeps
    assert (after.in_use, after.waiting, after.max_size) == (0, 0, 2)


async def test_typed_values_come_back_with_declared_types(pg: PostgresServer) -> None:
    async with PostgresDatabase("pg", dsn=pg.dsn) as db:
        result = await db.query(
            "SELECT 9007199254740993::int8 AS big, 12.50::numeric AS price,"
            " '\\x00ff'::bytea AS raw, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid AS id,"
            " '{\"k\": [1, 2]}'::jsonb AS doc, ARRAY[1, 2]::int4[] AS nums,"
            " :at::timestamptz AS at, DATE '2026-11-23' AS day, true AS yes,"
            " 0.5::float8 AS half, NULL::text AS nothing",
            {"at": "2026-11-23T12:00:00Z"},
        )
    types = [c.type for c in result.columns]
    assert types == [
        "int8",
        "numeric",
        "bytea",
        "uuid",
        "jsonb",
        "int4[]",
        "timestamptz",
        "date",
        "bool",
        "float8",
        "text",
    ]
    row = result.rows[0]
    assert row[1] == Decimal("12.50")
    assert row[6] == dt.datetime(2026, 11, 23, 12, tzinfo=dt.UTC)
    assert to_json_row(row) == [
        "9007199254740993",
        "12.50",
        "AP8=",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        {"k": [1, 2]},
        [1, 2],
        "2026-11-23T12:00:00+00:00",
        "2026-11-23",
        True,
        0.5,
        None,
    ]


async def test_query_prepares_a_statement_once_per_connection(pg: PostgresServer) -> None:
    # query() / query_guarded() prepare through the connection's statement
    # cache: the third call of the same text parses nothing, so the session
    # holds exactly one server-side statement for it (an uncached prepare
    # makes a new named statement per call).
    from iogate.databases.guard import ResultLimits, SQLGuard

    async with PostgresDatabase("pg", dsn=pg.dsn, min_size=1, max_size=1) as db:
        sql = "SELECT 41 + :n AS answer"
        limits = ResultLimits(max_rows=10, max_bytes=10_000)
        for n in range(3):
            result = await db.query(sql, {"n": n}, limits=limits)
            assert result.rows == [(41 + n,)]
            guarded = await db.query_guarded(
                sql, {"n": n}, guard=SQLGuard(read_only=True), limits=limits
            )
            assert guarded.rows == [(41 + n,)]
        held = await db.fetch_val(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement = :text",
            {"text": "SELECT 41 + $1 AS answer"},
        )
        assert held == 1
