"""A SQL database of each engine with the same ``accounts`` table, for tests
that must hold on SQLite and PostgreSQL alike."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from iogate.cache.tiered import TieredCache
from iogate.databases.base import SQLDatabase
from iogate.databases.postgres import PostgresDatabase
from iogate.databases.sqlite import SQLiteDatabase
from iogate.errors import TransientDatabaseError
from iogate.policies import Pipeline, Retry

ACCOUNTS = (
    "CREATE TABLE accounts (id INTEGER PRIMARY KEY, owner TEXT NOT NULL"
    " CONSTRAINT accounts_owner_key UNIQUE, balance INTEGER NOT NULL"
    " CONSTRAINT balance_nonneg CHECK (balance >= 0), note TEXT)"
)


def retrying_pipeline(name: str, *, deadline: float | None = None) -> Pipeline:
    """What the Gateway builds, minus the breaker: reads retried on transient errors."""
    return Pipeline(
        resource=name,
        retry=Retry(retry_on=(TransientDatabaseError,), max_attempts=3),
        deadline_s=deadline,
    )


@pytest.fixture(params=["sqlite", "postgresql"])
async def sqldb(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SQLDatabase]:
    """An open database with an empty ``accounts`` table; PostgreSQL in a schema of its own."""
    if request.param == "sqlite":
        db: SQLDatabase = SQLiteDatabase(
            "db", path=str(tmp_path / "db.sqlite"), readers=2, cache=TieredCache()
        )
        async with db:
            await db.execute(ACCOUNTS)
            yield db
        return
    pg = request.getfixturevalue("pg")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg.dsn)
    try:
        await admin.execute(f"CREATE SCHEMA {schema}")
        db = PostgresDatabase(
            "db", dsn=f"{pg.dsn}?search_path={schema}", max_size=4, cache=TieredCache()
        )
        async with db:
            await db.execute(ACCOUNTS)
            yield db
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
    finally:
        await admin.close()
