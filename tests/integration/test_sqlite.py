import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from iogate.databases.sqlite import SQLiteDatabase
from iogate.errors import IntegrityError, QueryError, ReadOnlyViolation


@pytest.fixture
async def db(sqlite_path: str) -> AsyncIterator[SQLiteDatabase]:
    async with SQLiteDatabase("main", path=sqlite_path, readers=2) as database:
        await database.execute(
            "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT UNIQUE NOT NULL, name TEXT,"
            " team_id INTEGER REFERENCES teams(id))"
        )
        await database.execute("CREATE TABLE teams (id INTEGER PRIMARY KEY)")
        yield database


async def test_open_creates_the_file_in_wal_mode(sqlite_path: str) -> None:
    async with SQLiteDatabase("main", path=sqlite_path) as database:
        assert Path(sqlite_path).exists()
        assert (await database.fetch_one("PRAGMA journal_mode"))[0] == "wal"  # type: ignore[index]
    with sqlite3.connect(sqlite_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_named_and_positional_parameters(db: SQLiteDatabase) -> None:
    result = await db.execute(
        "INSERT INTO users (email, name) VALUES (:email, :name)", {"email": "a@x", "name": "A"}
    )
    assert (result.rows_affected, result.last_insert_id) == (1, 1)
    await db.execute("INSERT INTO users (email, name) VALUES (?, ?)", ["b@x", "B"])
    rows = await db.fetch("SELECT id, email FROM users ORDER BY id")
    assert [tuple(r) for r in rows] == [(1, "a@x"), (2, "b@x")]
    row = await db.fetch_one("SELECT name FROM users WHERE email = ?", ["b@x"])
    assert row is not None
    assert row["name"] == "B"
    assert await db.fetch_val("SELECT count(*) FROM users") == 2
    assert await db.fetch_one("SELECT * FROM users WHERE id = 99") is None


async def test_values_are_bound_never_formatted(db: SQLiteDatabase) -> None:
    hostile = "x'); DROP TABLE users; --"
    await db.execute("INSERT INTO users (email) VALUES (:e)", {"e": hostile})
    assert await db.fetch_val("SELECT email FROM users") == hostile


async def test_query_reports_columns_rows_and_rows_affected(db: SQLiteDatabase) -> None:
    write = await db.query("INSERT INTO users (email) VALUES ('a@x'), ('b@x')")
    assert (write.columns, write.row_count, write.rows_affected) == ((), 2, 2)
    read = await db.query("SELECT id, email FROM users WHERE id > :min", {"min": 0})
    assert [c.name for c in read.columns] == ["id", "email"]
    assert read.rows == [(1, "a@x"), (2, "b@x")]
    assert read.row_count == 2
    empty = await db.query("SELECT id FROM users WHERE id < 0")
    assert [c.name for c in empty.columns] == ["id"]
    assert empty.rows == []
    returning = await db.query("UPDATE users SET name = 'n' RETURNING id")
    assert sorted(returning.rows) == [(1,), (2,)]


async def test_errors_are_classified(db: SQLiteDatabase) -> None:
    await db.execute("INSERT INTO users (email) VALUES ('a@x')")
    with pytest.raises(IntegrityError) as dup:
        await db.execute("INSERT INTO users (email) VALUES ('a@x')")
    assert dup.value.constraint == "users.email"
    assert dup.value.sqlstate == "SQLITE_CONSTRAINT_UNIQUE"
    with pytest.raises(IntegrityError):  # foreign keys are on
        await db.execute("INSERT INTO users (email, team_id) VALUES ('b@x', 42)")
    with pytest.raises(QueryError, match="syntax error"):
        await db.query("SELEC 1")
    with pytest.raises(QueryError, match="no such table"):
        await db.fetch("SELECT * FROM nope")
    with pytest.raises(QueryError):
        await db.fetch("SELECT ?", [1, 2])
    with pytest.raises(QueryError, match="one statement"):
        await db.query("SELECT 1; DROP TABLE users")
    assert await db.fetch_val("SELECT count(*) FROM users") == 1


async def test_readers_are_read_only_and_a_routed_write_falls_back_to_the_writer(
    db: SQLiteDatabase,
) -> None:
    reader = db._readers[0]
    with pytest.raises(ReadOnlyViolation):
        await db._run(reader, "INSERT INTO teams VALUES (1)", None, 3, "execute")
    # Reads run on the reader pool while the writer stays usable.
    await db.execute("INSERT INTO teams VALUES (7)")
    results = await asyncio.gather(*(db.fetch_val("SELECT max(id) FROM teams") for _ in range(20)))
    assert results == [7] * 20


async def test_memory_database_runs_everything_on_the_writer() -> None:
    async with SQLiteDatabase("mem", path=":memory:", readers=4) as database:
        await database.execute("CREATE TABLE t (x)")
        await database.execute("INSERT INTO t VALUES (1)")
        assert await database.fetch_val("SELECT x FROM t") == 1
        assert database._readers == []


async def test_lifecycle(sqlite_path: str) -> None:
    database = SQLiteDatabase("main", path=sqlite_path)
    with pytest.raises(RuntimeError, match="unopened"):
        await database.fetch("SELECT 1")
    await database.open()
    await database.ping()
    await database.close()
    await database.close()
    with pytest.raises(RuntimeError, match="closed"):
        await database.open()
    with pytest.raises(ValueError, match="readers"):
        SQLiteDatabase("x", path=sqlite_path, readers=-1)
