"""SQL safety and batches with real API keys (the gateway's key middleware):
a read-only key writes through no SQL path, a named-query key sends no SQL,
a table-limited key is held to its tables, a batch step is checked per key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from iogate.config import parse_config
from iogate.server.app import create_app
from iogate.server.keys import hash_key, new_key
from tests.keyed_client import KeyedClient
from tests.servers import serve_asgi as serve

KEYS = {name: new_key() for name in ("owner", "reader", "named", "users")}
SCOPES = {
    "owner": ["db:main:write"],
    "reader": ["db:main:read", "cache:read"],
    "named": ["db:main:query:by_id"],
    "users": ["db:main:write"],
}


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[KeyedClient]:
    keys: dict[str, Any] = {
        name: {"sha256": hash_key(KEYS[name]), "scopes": SCOPES[name]} for name in KEYS
    }
    keys["users"]["tables"] = ["items"]
    config = parse_config(
        {
            "databases": {
                "main": {
                    "url": f"sqlite:///{tmp_path / 'keys.db'}",
                    "queries": {"by_id": {"sql": "SELECT id, name FROM items WHERE id = :id"}},
                }
            },
            "keys": keys,
        },
        environ={},
    )
    async with serve(create_app(config)) as base, aiohttp.ClientSession() as http:
        c = KeyedClient(base, http, KEYS, "main")
        for sql in (
            "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)",
            "CREATE TABLE audit (note TEXT)",
            "INSERT INTO items VALUES (1, 'one'), (2, 'two')",
        ):
            assert (await c.sql(sql, "owner"))[0] == 200
        yield c


async def test_keys_get_the_engine_enforced_rights_of_their_scopes(client: KeyedClient) -> None:
    status, body = await client.sql("SELECT count(*) FROM items", "reader")
    assert (status, body["rows"]) == (200, [[2]])
    for sql in (
        "DELETE FROM items",
        "WITH x AS (SELECT 1) INSERT INTO items (name) SELECT 'x' FROM x",
        "UPDATE items SET name = 'x' RETURNING id",
        "PRAGMA query_only = 0",
    ):
        status, body = await client.sql(sql, "reader")
        assert status == 403, sql
        assert body["type"] == "urn:iogate:problem:read-only"
    status, body = await client.post(
        "/v1/batch",
        {
            "steps": [
                {"kind": "database", "database": "main", "sql": "DELETE FROM items"},
                {"kind": "cache", "op": "set", "key": "k", "value": 1},
                {"kind": "cache", "op": "get", "key": "k"},
            ]
        },
        "reader",
    )
    assert status == 200
    problems = [r.get("problem", {}).get("type") for r in body["results"]]
    assert problems == ["urn:iogate:problem:read-only", "urn:iogate:problem:forbidden", None]

    status, body = await client.post(
        "/v1/databases/main/queries/by_id", {"params": {"id": 2}}, "named"
    )
    assert (status, body["rows"]) == (200, [[2, "two"]])
    status, body = await client.sql("SELECT 1", "named")
    assert status == 403
    assert body["type"] == "urn:iogate:problem:forbidden"

    assert (await client.sql("INSERT INTO items (name) VALUES ('three')", "users"))[0] == 200
    status, body = await client.sql("INSERT INTO audit VALUES ('x')", "users")
    assert (status, body["type"]) == (403, "urn:iogate:problem:table-not-allowed")

    _, body = await client.sql("SELECT count(*) FROM items", "owner")
    assert body["rows"] == [[3]]
