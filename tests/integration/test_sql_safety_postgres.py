"""SQL safety on a real PostgreSQL cluster, enforced by the engine: a read-only
caller runs in a READ ONLY transaction that is rolled back, so no SQL path
writes (CTEs, RETURNING, nextval, a VOLATILE function that inserts); session
state (advisory locks, SET) does not outlive the call; one statement per
query; a table allowlist checked on the statement's plan; describe."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from iogate.databases.guard import SQLGuard
from iogate.databases.postgres import PostgresDatabase
from iogate.errors import DatabaseError, QueryError, ReadOnlyViolation, TableNotAllowed
from tests.servers import PostgresServer

pytestmark = pytest.mark.postgres

READ_ONLY = SQLGuard(read_only=True)


@pytest.fixture
async def names(pg: PostgresServer) -> AsyncIterator[dict[str, str]]:
    tag = uuid.uuid4().hex[:8]
    n = {"users": f"users_{tag}", "secret": f"secret_{tag}", "seq": f"seq_{tag}", "fn": f"fn_{tag}"}
    conn = await asyncpg.connect(pg.dsn)
    try:
        await conn.execute(
            f"CREATE TABLE {n['users']} (id int PRIMARY KEY, email text);"
            f"INSERT INTO {n['users']} SELECT i, 'u' || i FROM generate_series(1, 5) i;"
            f"CREATE TABLE {n['secret']} (token text); INSERT INTO {n['secret']} VALUES ('s');"
            f"CREATE SEQUENCE {n['seq']};"
            f"CREATE FUNCTION {n['fn']}() RETURNS int VOLATILE LANGUAGE sql AS"
            f" $$ INSERT INTO {n['users']} VALUES (99, 'evil') RETURNING id $$;"
        )
        yield n
    finally:
        await conn.execute(
            f"DROP FUNCTION {n['fn']}(); DROP SEQUENCE {n['seq']};"
            f" DROP TABLE {n['users']}, {n['secret']}"
        )
        await conn.close()


@pytest.fixture
async def db(pg: PostgresServer) -> AsyncIterator[PostgresDatabase]:
    async with PostgresDatabase("pg", dsn=pg.dsn, min_size=1, max_size=2) as database:
        yield database


async def _count(db: PostgresDatabase, table: str) -> Any:
    return await db.fetch_val(f"SELECT count(*) FROM {table}")


async def test_a_read_only_caller_cannot_write_through_any_sql_path(
    db: PostgresDatabase, names: dict[str, str]
) -> None:
    users, seq, fn = names["users"], names["seq"], names["fn"]
    writes = [
        f"INSERT INTO {users} VALUES (10, 'x')",
        f"INSERT INTO {users} VALUES (10, 'x') RETURNING id",
        f"UPDATE {users} SET email = 'x' RETURNING id",
        f"DELETE FROM {users}",
        f"WITH w AS (INSERT INTO {users} VALUES (11, 'x') RETURNING id) SELECT * FROM w",
        f"WITH d AS (DELETE FROM {users} RETURNING id) SELECT count(*) FROM d",
        f"SELECT nextval('{seq}')",
        f"SELECT setval('{seq}', 100)",
        f"SELECT {fn}()",
        f"CREATE TABLE evil_{uuid.uuid4().hex[:6]} (a int)",
        f"TRUNCATE {users}",
    ]
    for sql in writes:
        with pytest.raises(ReadOnlyViolation):
            await db.query_guarded(sql, guard=READ_ONLY)
    assert await _count(db, users) == 5
    assert await db.fetch_val(f"SELECT last_value FROM {seq}") == 1
    rows = (await db.query_guarded(f"SELECT id FROM {users} ORDER BY id", guard=READ_ONLY)).rows
    assert rows == [(i,) for i in range(1, 6)]


async def test_transaction_control_cannot_escape_the_read_only_transaction(
    db: PostgresDatabase, names: dict[str, str]
) -> None:
    for sql in ("COMMIT", "ROLLBACK"):
        with pytest.raises(QueryError, match="transaction control"):
            await db.query_guarded(sql, guard=READ_ONLY)
    async with db.transaction(guard=READ_ONLY) as tx:
        with pytest.raises(QueryError, match="transaction control"):
            await tx.query("COMMIT")
    # A grouped read-only transaction cannot be turned into a writing one either.
    for switch in ("SET TRANSACTION READ WRITE", "SET default_transaction_read_only = off"):
        with pytest.raises(DatabaseError):
            await _switch_then_write(db, switch, names["users"])
    assert await _count(db, names["users"]) == 5


async def _switch_then_write(db: PostgresDatabase, switch: str, table: str) -> None:
    async with db.transaction(guard=READ_ONLY) as tx:
        await tx.query(switch)
        await tx.query(f"INSERT INTO {table} VALUES (12, 'x')")


async def test_session_state_does_not_outlive_a_read_only_call(
    db: PostgresDatabase, pg: PostgresServer
) -> None:
    key = 7_000_000 + uuid.uuid4().int % 1_000_000
    await db.query_guarded("SELECT pg_advisory_lock($1)", [key], guard=READ_ONLY)
    other = await asyncpg.connect(pg.dsn)
    try:
        assert await other.fetchval("SELECT pg_try_advisory_lock($1)", key) is True
        await other.execute("SELECT pg_advisory_unlock($1)", key)
    finally:
        await other.close()
    await db.query_guarded("SET work_mem = '77kB'", guard=READ_ONLY)
    for _ in range(3):  # every pooled connection
        assert await db.fetch_val("SHOW work_mem") != "77kB"


async def test_no_session_state_of_a_read_only_statement_reaches_the_next_caller(
    pg: PostgresServer,
) -> None:
    """After one read-only statement the connection's reset is only its
    ROLLBACK and ``pg_advisory_unlock_all()``: the rollback must undo every
    other kind of session state the statement can set, checked here on the
    one pooled connection of a superuser login (the worst case: SET SESSION
    AUTHORIZATION and SET ROLE reach any role)."""
    tag = uuid.uuid4().hex[:8]
    admin = await asyncpg.connect(pg.dsn)
    await admin.execute(f"CREATE ROLE other_{tag} NOLOGIN")
    key = 7_000_000 + uuid.uuid4().int % 1_000_000
    statements = [
        f"SET SESSION AUTHORIZATION other_{tag}",
        f"SET ROLE other_{tag}",
        "SELECT set_config('application_name', 'leak', false)",
        "SET search_path = leak",
        f"LISTEN chan_{tag}",
        "DECLARE held CURSOR WITH HOLD FOR SELECT 1",
        f"SELECT pg_advisory_lock({key})",
        f"SELECT pg_advisory_lock_shared({key + 1})",
    ]
    probe = (
        "SELECT session_user::text, current_user::text, current_setting('application_name'),"
        " current_setting('search_path'), (SELECT count(*) FROM pg_listening_channels()),"
        " (SELECT count(*) FROM pg_cursors WHERE name = 'held'),"
        " (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
        "  AND pid = pg_backend_pid())"
    )
    try:
        async with PostgresDatabase("pg", dsn=pg.dsn, min_size=1, max_size=1) as db:
            clean = await db.fetch_one(probe)
            assert clean is not None
            assert clean[2:] == ("iogate", '"$user", public', 0, 0, 0)
            for sql in statements:
                await db.query_guarded(sql, guard=READ_ONLY)
                assert await db.fetch_one(probe) == clean, sql
                # ... and on the read path itself (the next caller is a read too)
                again = await db.query_guarded(probe, guard=READ_ONLY)
                assert again.rows == [tuple(clean)], sql
    finally:
        await admin.execute(f"DROP ROLE other_{tag}")
        await admin.close()


async def test_several_statements_are_refused_by_the_protocol(
    db: PostgresDatabase, names: dict[str, str]
) -> None:
    injection = f"SELECT 1; DELETE FROM {names['users']}"
    for call in (
        db.query(injection),
        db.query_guarded(injection, guard=READ_ONLY),
        db.query_guarded(injection, guard=SQLGuard(tables=frozenset({names["users"]}))),
    ):
        with pytest.raises(QueryError, match="multiple commands"):
            await call
    assert await _count(db, names["users"]) == 5


async def test_a_table_allowlist_is_checked_on_the_plan(
    db: PostgresDatabase, names: dict[str, str]
) -> None:
    users, secret = names["users"], names["secret"]
    only_users = SQLGuard(tables=frozenset({users}))
    refused = [
        f"SELECT * FROM {secret}",
        f"SELECT * FROM {users} u JOIN {secret} s ON true",
        f"SELECT * FROM {users} WHERE email IN (SELECT token FROM {secret})",
        f"WITH s AS (SELECT token FROM {secret}) SELECT * FROM s",
        f"INSERT INTO {secret} VALUES ('x')",
        "SELECT * FROM pg_catalog.pg_authid",
        "SET search_path = evil",
    ]
    for sql in refused:
        with pytest.raises(TableNotAllowed):
            await db.query_guarded(sql, guard=only_users)
    result = await db.query_guarded(
        f"UPDATE {users} SET email = :e WHERE id = :id RETURNING id",
        {"e": "new", "id": 1},
        guard=only_users,
    )
    assert result.rows == [(1,)]
    with pytest.raises(TableNotAllowed):
        await db.describe(f"SELECT token FROM {secret}", guard=only_users)


async def test_describe_returns_columns_and_parameter_types_without_running(
    db: PostgresDatabase, names: dict[str, str]
) -> None:
    users = names["users"]
    found = await db.describe(f"SELECT id, email AS mail FROM {users} WHERE id = :id")
    assert [(c.name, c.type) for c in found.columns] == [("id", "int4"), ("mail", "text")]
    assert [(p.name, p.type) for p in found.parameters] == [("id", "int4")]
    found = await db.describe(f"DELETE FROM {users} WHERE id = ? AND email = ?")
    assert found.columns == ()
    assert [p.type for p in found.parameters] == ["int4", "text"]
    assert await _count(db, users) == 5
    with pytest.raises(QueryError):
        await db.describe("SELECT 1; SELECT 2")
