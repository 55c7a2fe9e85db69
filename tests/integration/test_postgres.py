import uuid
from collections.abc import AsyncIterator

import pytest

from iogate.databases.postgres import PostgresDatabase
from iogate.errors import IntegrityError, QueryError, TransientDatabaseError
from tests.servers import PostgresServer, free_port


@pytest.fixture
async def db(pg: PostgresServer) -> AsyncIterator[PostgresDatabase]:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    async with PostgresDatabase("pg", dsn=pg.dsn, min_size=1, max_size=4) as database:
        await database.execute(f"CREATE SCHEMA {schema}")
        await database.execute(
            f"CREATE TABLE {schema}.users (id serial PRIMARY KEY, email text"
            f" CONSTRAINT users_email_key UNIQUE NOT NULL, name text, data jsonb)"
        )
        database.schema = schema  # type: ignore[attr-defined]
        yield database
        await database.execute(f"DROP SCHEMA {schema} CASCADE")


async def test_named_and_positional_parameters(db: PostgresDatabase) -> None:
    t = f"{db.schema}.users"  # type: ignore[attr-defined]
    result = await db.execute(
        f"INSERT INTO {t} (email, name) VALUES (:email, :name)", {"email": "a@x", "name": "A"}
    )
    assert result.rows_affected == 1
    await db.execute(f"INSERT INTO {t} (email, name) VALUES (?, ?)", ["b@x", "B"])
    await db.execute(f"INSERT INTO {t} (email, name) VALUES ($1, $2)", ["c@x", "C"])
    rows = await db.fetch(f"SELECT email FROM {t} ORDER BY id")
    assert [r["email"] for r in rows] == ["a@x", "b@x", "c@x"]
    row = await db.fetch_one(f"SELECT name FROM {t} WHERE email = :e", {"e": "b@x"})
    assert row is not None
    assert row["name"] == "B"
    assert await db.fetch_val(f"SELECT count(*) FROM {t}") == 3


async def test_values_are_bound_never_formatted(db: PostgresDatabase) -> None:
    t = f"{db.schema}.users"  # type: ignore[attr-defined]
    hostile = "x'); DROP TABLE users; --"
    await db.execute(f"INSERT INTO {t} (email) VALUES (:e)", {"e": hostile})
    assert await db.fetch_val(f"SELECT email FROM {t}") == hostile


async def test_query_reports_columns_types_and_rows_affected(db: PostgresDatabase) -> None:
    t = f"{db.schema}.users"  # type: ignore[attr-defined]
    write = await db.query(f"INSERT INTO {t} (email) VALUES ('a@x'), ('b@x')")
    assert (write.columns, write.row_count) == ((), 2)
    read = await db.query(f"SELECT id, email FROM {t} WHERE id > :min ORDER BY id", {"min": 0})
    assert [(c.name, c.type) for c in read.columns] == [("id", "int4"), ("email", "text")]
    assert read.rows == [(1, "a@x"), (2, "b@x")]
    empty = await db.query(f"SELECT id FROM {t} WHERE false")
    assert [c.name for c in empty.columns] == ["id"]
    assert empty.row_count == 0
    updated = await db.query(f"UPDATE {t} SET name = 'n'")
    assert updated.row_count == 2


async def test_jsonb_question_mark_operator_with_named_parameters(db: PostgresDatabase) -> None:
    value = await db.fetch_val("SELECT CAST(:doc AS jsonb) ? 'k'", {"doc": '{"k": 1}'})
    assert value is True


async def test_errors_are_classified(db: PostgresDatabase) -> None:
    t = f"{db.schema}.users"  # type: ignore[attr-defined]
    await db.execute(f"INSERT INTO {t} (email) VALUES ('a@x')")
    with pytest.raises(IntegrityError) as dup:
        await db.execute(f"INSERT INTO {t} (email) VALUES ('a@x')")
    assert (dup.value.constraint, dup.value.sqlstate) == ("users_email_key", "23505")
    with pytest.raises(QueryError) as syntax:
        await db.query("SELEC 1")
    assert syntax.value.sqlstate == "42601"
    assert syntax.value.position == 1
    with pytest.raises(QueryError, match="multiple commands"):
        await db.query("SELECT 1; SELECT 2")
    with pytest.raises(QueryError) as bad_arg:
        await db.fetch(f"SELECT * FROM {t} WHERE id = :id", {"id": "secret-value"})
    assert "secret-value" not in str(bad_arg.value)


async def test_unreachable_server_is_transient() -> None:
    database = PostgresDatabase(
        "pg", dsn=f"postgresql://iogate@127.0.0.1:{free_port()}/postgres", connect_timeout_s=2
    )
    with pytest.raises(TransientDatabaseError):
        await database.open()


async def test_query_decodes_json_arguments_by_parameter_type(db: PostgresDatabase) -> None:
    result = await db.query(
        "SELECT :ts::timestamptz AS ts, :n::numeric + 1 AS n, :u::uuid AS u, :j::jsonb -> 'k' AS j",
        {
            "ts": "2026-01-02T03:04:05Z",
            "n": "1.5",
            "u": "12345678-1234-5678-1234-567812345678",
            "j": {"k": [1, 2]},
        },
    )
    ts, n, u, j = result.rows[0]
    assert ts.isoformat() == "2026-01-02T03:04:05+00:00"
    assert str(n) == "2.5"
    assert str(u) == "12345678-1234-5678-1234-567812345678"
    assert j == [1, 2]  # jsonb comes back decoded
    with pytest.raises(QueryError, match="timestamptz"):
        await db.query("SELECT :ts::timestamptz", {"ts": "not a date"})


async def test_the_deadline_remainder_cancels_a_statement_on_the_server(pg: PostgresServer) -> None:
    from iogate.errors import OperationTimeout
    from iogate.policies import Pipeline

    pipeline = Pipeline(resource="pg", deadline_s=0.3)
    async with PostgresDatabase("pg", dsn=pg.dsn, runner=pipeline) as database:
        with pytest.raises(OperationTimeout):
            await database.fetch("SELECT pg_sleep(5)")
        # The pool is healthy and the statement is no longer running on the server.
        assert await database.fetch_val("SELECT 1") == 1
        running = await database.fetch_val(
            "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(5)'"
            " AND state = 'active'"
        )
        assert running == 0
