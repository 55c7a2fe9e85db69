"""JSON values in PostgreSQL: dict/list parameters bind to json/jsonb, and
json/jsonb results come back decoded — in the library and over HTTP."""

from __future__ import annotations

import io
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from iogate.config import parse_config
from iogate.databases.postgres import PostgresDatabase
from iogate.errors import QueryError
from tests.conftest import GatewayClient, serve_app
from tests.servers import PostgresServer

NESTED = {
    "user": {"id": 7, "tags": ["a", "b"], "profile": {"bio": None, "score": 1.5, "ok": True}},
    "items": [[1, 2], {"deep": {"deeper": {"deepest": [None, False, "x"]}}}],
}
UNICODE = {"name": "Zoë — 東京 🚀", "rtl": "مرحبا", "escape": 'quote " and \\ back\nslash'}


@pytest.fixture
async def db(pg: PostgresServer) -> AsyncIterator[PostgresDatabase]:
    schema = "j_" + uuid.uuid4().hex[:8]
    async with PostgresDatabase("pg", dsn=pg.dsn, min_size=1, max_size=2) as database:
        await database.execute(f"CREATE SCHEMA {schema}")
        await database.execute(
            f"CREATE TABLE {schema}.docs (id serial PRIMARY KEY, j json, b jsonb,"
            " nums int4[], words text[])"
        )
        database.table = f"{schema}.docs"  # type: ignore[attr-defined]
        yield database
        await database.execute(f"DROP SCHEMA {schema} CASCADE")


async def _roundtrip(db: PostgresDatabase, value: Any) -> tuple[Any, Any]:
    table = db.table  # type: ignore[attr-defined]
    new_id = await db.fetch_val(
        f"INSERT INTO {table} (j, b) VALUES (:v, :w) RETURNING id",
        {"v": value, "w": value},
    )
    row = await db.fetch_one(f"SELECT j, b FROM {table} WHERE id = :id", {"id": new_id})
    assert row is not None
    return row["j"], row["b"]


async def test_dict_and_list_parameters_bind_to_json_and_jsonb(db: PostgresDatabase) -> None:
    assert await _roundtrip(db, NESTED) == (NESTED, NESTED)
    assert await _roundtrip(db, [1, "two", {"three": [3]}]) == (
        [1, "two", {"three": [3]}],
        [1, "two", {"three": [3]}],
    )
    assert await _roundtrip(db, UNICODE) == (UNICODE, UNICODE)
    # The server sees a real document, not a string holding one.
    table = db.table  # type: ignore[attr-defined]
    kinds = await db.fetch(f"SELECT jsonb_typeof(b), b -> 'user' ->> 'id' FROM {table}")
    assert [tuple(r) for r in kinds] == [("object", "7"), ("array", None), ("object", None)]
    assert await db.fetch_val('SELECT :d::jsonb @> \'{"user": {"id": 7}}\'', {"d": NESTED})


async def test_a_string_is_json_text_and_null_is_sql_null(db: PostgresDatabase) -> None:
    table = db.table  # type: ignore[attr-defined]
    # A str is JSON text, as with asyncpg's default codec: existing callers keep working.
    assert await _roundtrip(db, '{"a": [1, 2]}') == ({"a": [1, 2]}, {"a": [1, 2]})
    assert await _roundtrip(db, '"just a string"') == ("just a string", "just a string")
    await db.execute(f"INSERT INTO {table} (id, j, b) VALUES (100, NULL, NULL)")
    await db.execute(f"INSERT INTO {table} (id, j, b) VALUES (101, 'null', :n)", {"n": "null"})
    rows = await db.fetch(
        f"SELECT id, b, b IS NULL, jsonb_typeof(b) FROM {table} WHERE id >= 100 ORDER BY id"
    )
    # SQL NULL and JSON null both read back as None; SQL tells them apart.
    assert [tuple(r) for r in rows] == [(100, None, True, None), (101, None, False, "null")]
    with pytest.raises(QueryError):
        await db.execute(f"INSERT INTO {table} (b) VALUES (:v)", {"v": "{not json"})
    with pytest.raises(QueryError):  # what JSON cannot hold is refused, not stringified
        await db.execute(f"INSERT INTO {table} (b) VALUES (:v)", {"v": {"raw": b"\x00"}})


async def test_a_large_document_round_trips(db: PostgresDatabase) -> None:
    big = {"rows": [{"i": i, "text": "x" * 90, "t": ["é", i]} for i in range(10_000)]}
    j, b = await _roundtrip(db, big)
    assert j == big
    assert b == big
    table = db.table  # type: ignore[attr-defined]
    size = await db.fetch_val(f"SELECT max(octet_length(j::text)) FROM {table}")
    assert size > 1_000_000


async def test_array_columns_still_take_lists(db: PostgresDatabase) -> None:
    table = db.table  # type: ignore[attr-defined]
    await db.execute(
        f"INSERT INTO {table} (id, nums, words, b) VALUES (1, :n, :w, :b)",
        {"n": [1, 2, 3], "w": ["a", "b"], "b": [1, 2, 3]},
    )
    row = await db.fetch_one(f"SELECT nums, words, b, nums[2] AS second FROM {table} WHERE id = 1")
    assert row is not None
    assert (row["nums"], row["words"], row["b"], row[3]) == ([1, 2, 3], ["a", "b"], [1, 2, 3], 2)
    assert await db.fetch_val("SELECT array_length(?::int4[], 1)", [[4, 5]]) == 2
    assert await db.fetch_val("SELECT ARRAY['{\"a\": 1}'::jsonb, '[2]'::jsonb]") == [{"a": 1}, [2]]


async def test_query_and_batches_decode_json_too(db: PostgresDatabase) -> None:
    result = await db.query("SELECT :d::jsonb AS d, :e::json AS j", {"d": NESTED, "e": NESTED})
    assert [c.type for c in result.columns] == ["jsonb", "json"]
    assert result.rows[0] == (NESTED, NESTED)
    table = db.table  # type: ignore[attr-defined]
    await db.execute_many(
        f"INSERT INTO {table} (b) VALUES (:b)",
        [{"b": {"n": 1}}, {"b": [2]}],
    )
    assert [r[0] for r in await db.fetch(f"SELECT b FROM {table} ORDER BY id")] == [
        {"n": 1},
        [2],
    ]


@pytest.fixture
async def client(pg: PostgresServer, db: PostgresDatabase) -> AsyncIterator[GatewayClient]:
    config = parse_config(
        {"databases": {"pg": {"url": pg.dsn, "allow_privileged_login": True}}}, environ={}
    )
    async with serve_app(config) as gateway_client:
        yield gateway_client


async def test_json_over_http(client: GatewayClient, db: PostgresDatabase) -> None:
    table = db.table  # type: ignore[attr-defined]
    big = {"blob": ["ü" * 1000 for _ in range(600)]}  # ~1.2 MB of UTF-8
    for doc in (NESTED, UNICODE, [1, [2, [3]]], big):
        payload = orjson.dumps(
            {
                "sql": f"INSERT INTO {table} (j, b) VALUES (:d, :e) RETURNING j, b",
                "params": {"d": doc, "e": doc},
            }
        )
        async with client.session.post(
            client.base_url + "/v1/databases/pg/query",
            data=io.BytesIO(payload),  # aiohttp warns about a large bytes body
            headers={"Content-Type": "application/json"},
        ) as resp:
            status, body = resp.status, orjson.loads(await resp.read())
        assert status == 200, body
        assert isinstance(body, dict)
        assert body["rows"] == [[doc, doc]]
        assert body["column_types"] == ["json", "jsonb"]
    status, _, body = await client.post(
        "/v1/databases/pg/query",
        {
            "sql": f"INSERT INTO {table} (nums, b) VALUES (:n, :b) RETURNING nums, b, b IS NULL",
            "params": {"n": [7, 8], "b": None},
        },
    )
    assert status == 200, body
    assert body["rows"] == [[[7, 8], None, True]]  # type: ignore[index]
    status, _, body = await client.post(
        "/v1/databases/pg/query", {"sql": "SELECT 'null'::jsonb IS NULL, 'null'::jsonb"}
    )
    assert body["rows"] == [[False, None]]  # type: ignore[index]
