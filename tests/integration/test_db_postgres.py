"""PostgreSQL-only behaviour on a real temporary cluster: lost connections,
server-side statement timeouts, isolation levels, serialization retries,
bounded streaming of a million rows, pool statistics and typed values."""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest

from iogate.databases._values import to_json_row
from iogate.databases.guard import ResultLimits, SQLGuard
from iogate.databases.postgres import PostgresDatabase, RoleLogin
from iogate.databases.transactions import Transaction
from iogate.errors import (
    IntegrityError,
    OperationTimeout,
    QueryError,
    ReadOnlyViolation,
    TransientDatabaseError,
)
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


# -- round trips per call ---------------------------------------------------


class _CountingProxy:
    """A TCP proxy to the cluster counting the server's ReadyForQuery ('Z')
    messages: one per round trip (each simple query and each Sync ends with
    one), and keeping the text of every simple query ('Q') the client sends.
    Needs ``sslmode=disable``: the streams are then typed messages from their
    first byte (the client's after its untyped startup message)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.ready = 0
        self.queries: list[str] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> int:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)

        async def pipe() -> None:
            pending, started = b"", False
            while data := await reader.read(65536):
                pending += data
                while True:  # complete messages: the startup one, then typed ones
                    head = 0 if not started else 1
                    if len(pending) < head + 4:
                        break
                    end = head + int.from_bytes(pending[head : head + 4], "big")
                    if len(pending) < end:
                        break
                    if started and pending[:1] == b"Q":
                        self.queries.append(pending[5 : end - 1].decode())
                    pending, started = pending[end:], True
                up_writer.write(data)
                await up_writer.drain()
            up_writer.close()

        async def count() -> None:
            while True:  # 1 type byte, 4 bytes big-endian length (itself included)
                try:
                    head = await up_reader.readexactly(5)
                    body = await up_reader.readexactly(int.from_bytes(head[1:], "big") - 4)
                except asyncio.IncompleteReadError:
                    break
                if head[:1] == b"Z":
                    self.ready += 1
                writer.write(head + body)
                await writer.drain()
            writer.close()

        await asyncio.gather(pipe(), count(), return_exceptions=True)


@pytest.fixture
async def roles(pg: PostgresServer, admin: asyncpg.Connection) -> AsyncIterator[tuple[str, str]]:
    """A read role (SELECT) and a write role (SELECT, INSERT, UPDATE) on a
    table ``rt_<tag>`` of 3,000 rows, with a deferred unique constraint."""
    tag = uuid.uuid4().hex[:8]
    read, write, table = f"rtr_{tag}", f"rtw_{tag}", f"rt_{tag}"
    await admin.execute(
        f"CREATE ROLE {read} LOGIN; CREATE ROLE {write} LOGIN;"
        f"CREATE TABLE {table} (id int PRIMARY KEY, name text,"
        f" u int UNIQUE DEFERRABLE INITIALLY DEFERRED);"
        f"INSERT INTO {table} SELECT i, 'n' || i, i FROM generate_series(1, 3000) i;"
        f"GRANT SELECT ON {table} TO {read};"
        f"GRANT SELECT, INSERT, UPDATE ON {table} TO {write}"
    )
    yield read, write
    await admin.execute(f"DROP TABLE {table}; DROP ROLE {read}; DROP ROLE {write}")


async def test_round_trips_per_call_match_a_bare_pool(
    pg: PostgresServer, roles: tuple[str, str]
) -> None:
    """A bare asyncpg pool's point select costs 2 round trips (the statement,
    the reset on release). So does every bounded single statement here: a read
    key's (BEGIN READ ONLY sent with the statement, the ROLLBACK with the
    reset), a write key's and an unrestricted caller's statement with result
    columns (BEGIN with the statement, COMMIT with the reset); a two-statement
    transaction costs 3 (BEGIN with its first statement, the second, COMMIT
    with the reset: a bare pool's costs 5), and an empty one 1 (the reset)."""
    read, write = roles
    table = "rt_" + read.removeprefix("rtr_")
    limits = ResultLimits(max_rows=100_000, max_bytes=10_000_000)
    reader = SQLGuard(read_only=True, role=read)
    writer = SQLGuard(role=write)
    point = f"SELECT id, name FROM {table} WHERE id = :id"
    proxy = _CountingProxy(pg.port)
    async with proxy as port:
        dsn = f"postgresql://{pg.user}@127.0.0.1:{port}/postgres?sslmode=disable"
        roles_ = [RoleLogin(read), RoleLogin(write)]
        async with PostgresDatabase("pg", dsn=dsn, min_size=1, max_size=1, roles=roles_) as db:

            async def trips(call: Callable[[], Awaitable[object]]) -> float:
                await call()  # the statement is prepared (and cached) once
                before = proxy.ready
                for _ in range(5):
                    await call()
                return (proxy.ready - before) / 5

            async def read_key() -> object:
                r = await db.query_guarded(point, {"id": 7}, guard=reader, limits=limits)
                assert r.rows == [(7, "n7")]
                return r

            async def write_key() -> object:
                r = await db.query_guarded(point, {"id": 7}, guard=writer, limits=limits)
                assert r.rows == [(7, "n7")]
                return r

            async def unrestricted() -> object:
                return await db.query(point, {"id": 7}, limits=limits)

            async def update() -> object:
                sql = f"UPDATE {table} SET name = 'n7' WHERE id = 7"
                return await db.query_guarded(sql, guard=writer, limits=limits)

            async def transaction() -> object:
                async with db.transaction(guard=writer) as tx:
                    sql = f"UPDATE {table} SET name = 'n7' WHERE id = 7"
                    await tx.query(sql, None, limits=limits)
                    return await tx.query(point, {"id": 7}, limits=limits)

            assert await trips(read_key) == 2
            assert await trips(write_key) == 2
            assert await trips(unrestricted) == 2
            assert await trips(update) == 2

            async def empty() -> object:
                async with db.transaction(guard=writer):
                    return None

            assert await trips(transaction) == 3
            assert await trips(empty) == 1

            # What the reset after each sends: a read's is its ROLLBACK and the
            # advisory unlock only (the rollback undoes the rest, see
            # test_sql_safety_postgres); every other call's is the whole reset.
            def last_reset(after: int) -> str:
                return proxy.queries[after:][-1]

            for call, reset in (
                (read_key, "ROLLBACK;\nSELECT pg_advisory_unlock_all();"),
                (write_key, "COMMIT;\nSELECT pg_advisory_unlock_all();"),
                (update, "SELECT pg_advisory_unlock_all();"),
                (transaction, "COMMIT;\nSELECT pg_advisory_unlock_all();"),
            ):
                before = len(proxy.queries)
                await call()
                sent = last_reset(before)
                assert sent.startswith(reset), call.__name__
                assert ("RESET ROLE;" in sent) is (call is not read_key), call.__name__


async def test_pipelined_begin_reads_past_the_first_chunk_and_resets(
    pg: PostgresServer, roles: tuple[str, str]
) -> None:
    """With BEGIN sent in the statement's round trip, a result longer than a
    chunk (1,000 rows) is still read whole or cut at max_rows, a failed
    deferred COMMIT is the caller's error, an argument asyncpg cannot encode
    is a QueryError, and after each the connection is clean and read-only or
    read-write as before."""
    read, write = roles
    table = "rt_" + read.removeprefix("rtr_")
    reader = SQLGuard(read_only=True, role=read)
    writer = SQLGuard(role=write)
    big = ResultLimits(max_rows=100_000, max_bytes=10_000_000)
    cut = ResultLimits(max_rows=2500, max_bytes=10_000_000)
    scan = f"SELECT id FROM {table} ORDER BY id"
    roles_ = [RoleLogin(read), RoleLogin(write)]
    async with PostgresDatabase("pg", dsn=pg.dsn, min_size=1, max_size=1, roles=roles_) as db:
        for guard in (reader, writer, None):
            if guard is None:
                whole = await db.query(scan, limits=big)
                part = await db.query(scan, limits=cut)
            else:
                whole = await db.query_guarded(scan, guard=guard, limits=big)
                part = await db.query_guarded(scan, guard=guard, limits=cut)
            assert [r[0] for r in whole.rows] == list(range(1, 3001)), guard
            assert not whole.truncated
            assert [r[0] for r in part.rows] == list(range(1, 2501)), guard
            assert part.truncated
        # the deferred unique check fails at COMMIT, which goes with the reset
        dup = f"UPDATE {table} SET u = 1 WHERE id = 2 RETURNING id"
        with pytest.raises(IntegrityError):
            await db.query_guarded(dup, guard=writer, limits=big)
        # asyncpg cannot encode a str for an int4 parameter
        with pytest.raises(QueryError):
            await db.query_guarded(
                f"SELECT id FROM {table} WHERE id = $1::int4 + 0", [[1]], guard=writer, limits=big
            )
        with pytest.raises(QueryError):
            await db.query_guarded(
                f"SELECT id FROM {table} WHERE id = $1::int4 + 0", [[1]], guard=reader, limits=big
            )
        state = "SELECT current_user, current_setting('transaction_read_only')"
        for guard, who, ro in ((writer, write, "off"), (reader, read, "on")):
            r = await db.query_guarded(state, guard=guard, limits=big)
            assert r.rows == [(who, ro)]
        assert (
            await db.query_guarded(f"SELECT u FROM {table} WHERE id = 2", guard=writer, limits=big)
        ).rows == [(2,)]
        assert db.stats().in_use == 0


async def test_a_transaction_begins_with_its_first_statement_whatever_it_is(
    pg: PostgresServer, admin: asyncpg.Connection
) -> None:
    """The BEGIN of ``transaction()`` is sent with the first statement (in its
    round trip for a bounded ``query``, just before it otherwise): a write
    through any call is rolled back with the block, the isolation level and
    READ ONLY hold from the first statement, and a failed first statement
    leaves nothing behind on the pooled connection."""
    table = "tx_first_" + uuid.uuid4().hex[:8]
    await admin.execute(f"CREATE TABLE {table} (id int PRIMARY KEY)")
    limits = ResultLimits(max_rows=100, max_bytes=1_000_000)

    class Undo(Exception):
        """Raised in a transaction block to roll it back."""

    async def count() -> int:
        return int(await admin.fetchval(f"SELECT count(*) FROM {table}"))

    try:
        async with PostgresDatabase("pg", dsn=pg.dsn, min_size=1, max_size=1) as db:

            async def write_then_undo(first: str) -> None:
                async with db.transaction() as tx:
                    insert = f"INSERT INTO {table} VALUES (1) RETURNING id"
                    if first == "query":
                        await tx.query(insert, None, limits=limits)
                    elif first == "execute_many":
                        await tx.execute_many(f"INSERT INTO {table} VALUES ($1)", [[1]])
                    else:
                        await getattr(tx, first)(insert, None)
                    raise Undo

            for first in ("query", "execute", "fetch", "fetch_one", "execute_many"):
                with pytest.raises(Undo):
                    await write_then_undo(first)
                assert await count() == 0, f"{first}: the write outlived its rollback"

            async with db.transaction(isolation="serializable") as tx:
                shown = await tx.query("SHOW transaction_isolation", None, limits=limits)
            assert shown.rows == [("serializable",)]

            with pytest.raises(ReadOnlyViolation):
                async with db.transaction(read_only=True) as tx:
                    await tx.query(f"INSERT INTO {table} VALUES (2)", None, limits=limits)

            with pytest.raises(QueryError):
                async with db.transaction() as tx:
                    await tx.query(f"SELECT * FROM {table}_missing", None, limits=limits)
            # a first statement that fails before its BEGIN could go out (here
            # its Parse): the rest is refused as in an aborted transaction
            async with db.transaction() as tx:
                with pytest.raises(QueryError):
                    await tx.query("SELEC 1", None, limits=limits)
                with pytest.raises(QueryError) as aborted:
                    await tx.execute(f"INSERT INTO {table} VALUES (4)", None)
            assert aborted.value.sqlstate == "25P02"
            assert await count() == 0
            # the failed transactions were rolled back on release: the same
            # (only) connection commits the next one
            async with db.transaction() as tx:
                await tx.query(f"INSERT INTO {table} VALUES (3)", None, limits=limits)
            assert await count() == 1
    finally:
        await admin.execute(f"DROP TABLE {table}")


async def test_a_schema_change_under_a_cached_statement_fails_no_single_statement(
    pg: PostgresServer,
) -> None:
    """After ``ALTER TABLE ... ADD COLUMN`` a ``SELECT *`` prepared before is
    refused before it runs ("cached plan must not change result type"). Every
    single-statement path prepares it anew and runs it once (an ``INSERT ...
    RETURNING *`` inserts one row, not two); a caller's transaction gets a
    TransientDatabaseError (it is aborted, nothing ran), and the next one
    works. One pooled connection: the stale statement is in its cache."""
    table = f"sc_{uuid.uuid4().hex[:8]}"
    limits = ResultLimits(max_rows=100, max_bytes=100_000)
    reader, writer = SQLGuard(read_only=True), SQLGuard()
    select, insert = f"SELECT * FROM {table}", f"INSERT INTO {table} (a) VALUES (2) RETURNING *"
    async with PostgresDatabase("pg", dsn=pg.dsn, min_size=1, max_size=1) as db:
        await db.execute(f"CREATE TABLE {table} (a int); INSERT INTO {table} VALUES (1)")
        calls = {
            "query": lambda sql: db.query(sql, limits=limits),
            "read key": lambda sql: db.query_guarded(sql, guard=reader, limits=limits),
            "write key": lambda sql: db.query_guarded(sql, guard=writer, limits=limits),
        }
        for column, (name, call) in enumerate(calls.items()):
            await call(select)  # prepared and cached with the columns of now
            await db.execute(f"ALTER TABLE {table} ADD COLUMN c{column} int DEFAULT {column}")
            result = await call(select)
            assert [c.name for c in result.columns][-1] == f"c{column}", name
            assert result.rows[0][-1] == column, name
        await db.query_guarded(insert, guard=writer, limits=limits)
        await db.execute(f"ALTER TABLE {table} ADD COLUMN d int")
        inserted = await db.query_guarded(insert, guard=writer, limits=limits)
        assert len(inserted.columns) == 5
        assert await db.fetch_val(f"SELECT count(*) FROM {table} WHERE a = 2") == 2

        await db.query(select, limits=limits)  # cached again
        await db.execute(f"ALTER TABLE {table} ADD COLUMN e int")
        with pytest.raises(TransientDatabaseError, match="cached plan"):
            async with db.transaction() as tx:
                await tx.query(select, None, limits=limits)
        async with db.transaction() as tx:
            again = await tx.query(select, None, limits=limits)
        assert [c.name for c in again.columns][-1] == "e"
        await db.execute(f"DROP TABLE {table}")
