"""The gateway's database endpoints over real HTTP: /batch, /stream (NDJSON)
and Redis /command, with errors as problem details."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from iogate.config import parse_config
from tests.conftest import GatewayClient, serve_app
from tests.servers import RedisServer


@pytest.fixture
async def client(tmp_path: Path, redis: RedisServer) -> AsyncIterator[GatewayClient]:
    config = parse_config(
        {
            "databases": {
                "main": {"url": f"sqlite:///{tmp_path / 'gw.db'}"},
                "kv": {"url": redis.url},
            }
        },
        environ={},
    )
    async with serve_app(config) as gateway_client:
        status, _, _ = await gateway_client.post(
            "/v1/databases/main/query",
            {"sql": "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL)"},
        )
        assert status == 200
        yield gateway_client


async def _count(client: GatewayClient) -> Any:
    _, _, body = await client.post(
        "/v1/databases/main/query", {"sql": "SELECT count(*) FROM items"}
    )
    assert isinstance(body, dict)
    return body["rows"][0][0]


async def test_transactional_batch_is_all_or_nothing(client: GatewayClient) -> None:
    ok_status, _, ok = await client.post(
        "/v1/databases/main/batch",
        {
            "statements": [
                {"sql": "INSERT INTO items (name) VALUES (:n)", "params": {"n": "a"}},
                {"sql": "INSERT INTO items (name) VALUES (?)", "params": ["b"]},
                {"sql": "SELECT name FROM items ORDER BY id"},
            ]
        },
    )
    assert ok_status == 200
    assert isinstance(ok, dict)
    assert [r["row_count"] for r in ok["results"]] == [1, 1, 2]
    assert ok["results"][0]["last_insert_id"] == 1
    assert ok["results"][2]["rows"] == [["a"], ["b"]]
    status, headers, problem = await client.post(
        "/v1/databases/main/batch",
        {
            "statements": [
                {"sql": "INSERT INTO items (name) VALUES ('c')"},
                {"sql": "INSERT INTO items (name) VALUES ('a')"},
            ]
        },
    )
    assert status == 409
    assert headers["Content-Type"] == "application/problem+json"
    assert isinstance(problem, dict)
    assert problem["detail"].startswith("statement 1:")
    assert await _count(client) == 2  # 'c' was rolled back


async def test_non_transactional_batch_reports_failures_in_place(client: GatewayClient) -> None:
    status, _, body = await client.post(
        "/v1/databases/main/batch",
        {
            "transaction": False,
            "statements": [
                {"sql": "INSERT INTO items (name) VALUES ('x')"},
                {"sql": "SELEC oops"},
                {"sql": "INSERT INTO items (name) VALUES ('y')"},
            ],
        },
    )
    assert status == 200
    assert isinstance(body, dict)
    results = body["results"]
    assert results[0]["row_count"] == 1
    assert results[1]["error"]["status"] == 400
    assert results[1]["error"]["type"] == "urn:iogate:problem:bad-query"
    assert results[2]["row_count"] == 1
    assert await _count(client) == 2


async def _stream(client: GatewayClient, body: dict[str, Any]) -> tuple[int, str, list[Any]]:
    async with client.session.post(client.base_url + "/v1/databases/main/stream", json=body) as r:
        text = await r.text()
        if r.status != 200:
            return r.status, r.headers["Content-Type"], [orjson.loads(text)]
        return r.status, r.headers["Content-Type"], [orjson.loads(x) for x in text.splitlines()]


async def test_stream_returns_ndjson_rows_with_a_cap(client: GatewayClient) -> None:
    recursive = (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < :n)"
        " SELECT x, 'n' || x AS label, x * 1.5 AS f FROM c"
    )
    status, ctype, lines = await _stream(
        client, {"sql": recursive, "params": {"n": 2500}, "chunk_size": 1000}
    )
    assert (status, ctype) == (200, "application/x-ndjson")
    assert lines[0] == {"columns": ["x", "label", "f"], "column_types": [None, None, None]}
    assert lines[1] == [1, "n1", 1.5]
    assert len(lines) == 2 + 2500
    assert lines[-1] == {"row_count": 2500, "truncated": False}
    _, _, capped = await _stream(
        client, {"sql": recursive, "params": {"n": 2500}, "max_rows": 1200, "chunk_size": 500}
    )
    assert capped[-1] == {"row_count": 1200, "truncated": True}
    assert capped[-2] == [1200, "n1200", 1800.0]
    _, _, exact = await _stream(
        client, {"sql": recursive, "params": {"n": 1000}, "max_rows": 1000, "chunk_size": 500}
    )
    assert exact[-1] == {"row_count": 1000, "truncated": False}


async def test_stream_errors_before_the_first_row_are_problems(client: GatewayClient) -> None:
    status, ctype, lines = await _stream(client, {"sql": "SELECT nope FROM items"})
    assert (status, ctype) == (400, "application/problem+json")
    assert lines[0]["type"] == "urn:iogate:problem:bad-query"
    status, _, lines = await _stream(client, {"sql": "SELECT 1", "max_rows": 0})
    assert status == 422


async def test_redis_commands_through_the_allowlist(client: GatewayClient) -> None:
    status, _, body = await client.post(
        "/v1/databases/kv/command", {"command": "set", "args": ["iogate:gw", "héllo", "EX", 60]}
    )
    assert (status, body["result"] if isinstance(body, dict) else None) == (200, True)
    _, _, got = await client.post(
        "/v1/databases/kv/command", {"command": "GET", "args": ["iogate:gw"]}
    )
    assert isinstance(got, dict)
    assert got["result"] == "héllo"
    await client.post("/v1/databases/kv/command", {"command": "RPUSH", "args": ["iogate:l", 1, 2]})
    _, _, listed = await client.post(
        "/v1/databases/kv/command", {"command": "LRANGE", "args": ["iogate:l", 0, -1]}
    )
    assert isinstance(listed, dict)
    assert listed["result"] == ["1", "2"]
    for refused in ("FLUSHALL", "CONFIG", "KEYS", "SHUTDOWN", "DEBUG"):
        status, _, problem = await client.post(
            "/v1/databases/kv/command", {"command": refused, "args": []}
        )
        assert status == 400, refused
        assert isinstance(problem, dict)
        assert "not allowed" in problem["detail"]
    status, _, _ = await client.post("/v1/databases/main/command", {"command": "GET", "args": []})
    assert status == 404  # a SQL database has no Redis commands
    status, _, problem = await client.post(
        "/v1/databases/kv/command", {"command": "INCR", "args": ["iogate:gw"]}
    )
    assert status == 400
    assert isinstance(problem, dict)
    assert problem["type"] == "urn:iogate:problem:bad-query"
