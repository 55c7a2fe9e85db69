"""The gateway's cache routes, ``cache_ttl`` on query and upstream requests, and
the cache figures of ``/v1/stats`` — served by uvicorn, L2 on the real Redis."""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import AsyncIterator
from typing import Any

import pytest

from iogate.config import parse_config
from tests.conftest import GatewayClient, serve_app
from tests.servers import RedisServer
from tests.upstream_app import UpstreamServer

pytestmark = pytest.mark.redis


@pytest.fixture
async def client(
    sqlite_path: str, upstream: UpstreamServer, redis: RedisServer
) -> AsyncIterator[GatewayClient]:
    ns = "g" + secrets.token_hex(4)
    config = parse_config(
        {
            "databases": {"main": {"url": f"sqlite:///{sqlite_path}"}},
            "upstreams": {"example": {"base_url": upstream.base_url}},
            "cache": {"redis_url": redis.url, "namespace": ns, "invalidation_channel": ns},
        },
        environ={},
    )
    async with serve_app(config) as served:
        yield served


async def _call(client: GatewayClient, method: str, path: str, body: Any = None) -> Any:
    async with client.session.request(method, client.base_url + path, json=body) as resp:
        return resp.status, await resp.json(content_type=None)


async def test_put_get_delete_and_invalidate(client: GatewayClient) -> None:
    status, body = await _call(client, "GET", "/v1/cache/user/1")
    assert status == 404
    assert body["status"] == 404

    status, body = await _call(
        client, "PUT", "/v1/cache/user/1", {"value": {"name": "ann"}, "ttl": 60, "tags": ["u"]}
    )
    assert (status, body) == (200, {"key": "user/1", "stored": True, "ttl": 60})
    status, body = await _call(client, "GET", "/v1/cache/user/1")
    assert status == 200
    assert body == {"key": "user/1", "value": {"name": "ann"}, "stale": False, "source": "l1"}

    await _call(client, "PUT", "/v1/cache/user/2", {"value": 2})
    await _call(client, "PUT", "/v1/cache/order/1", {"value": 3})
    assert await _call(client, "POST", "/v1/cache/invalidate", {"tags": ["u"]}) == (
        200,
        {"removed": 2},  # L1 and L2
    )
    assert (await _call(client, "GET", "/v1/cache/user/1"))[0] == 404
    status, body = await _call(client, "POST", "/v1/cache/invalidate", {"prefix": "user/"})
    assert status == 200
    assert body["removed"] >= 1
    assert (await _call(client, "GET", "/v1/cache/user/2"))[0] == 404
    assert (await _call(client, "GET", "/v1/cache/order/1"))[0] == 200
    assert await _call(client, "DELETE", "/v1/cache/order/1") == (
        200,
        {"key": "order/1", "deleted": True},
    )

    status, body = await _call(
        client, "POST", "/v1/cache/invalidate", {"tags": ["u"], "prefix": "x"}
    )
    assert status in (400, 422)
    assert "tags or prefix" in str(body)
    status, _ = await _call(client, "PUT", "/v1/cache/k", {"value": 1, "ttl": 0})
    assert status in (400, 422)


async def test_query_cache_ttl_reads_through_and_writes_through_iogate_invalidate(
    client: GatewayClient, sqlite_path: str
) -> None:
    await client.post("/v1/databases/main/query", {"sql": "CREATE TABLE t (x INTEGER)"})
    await client.post("/v1/databases/main/query", {"sql": "INSERT INTO t VALUES (1)"})
    read = {"sql": "SELECT x FROM t ORDER BY x", "cache_ttl": 60}
    status, _, first = await client.post("/v1/databases/main/query", read)
    assert status == 200
    assert first["rows"] == [[1]]

    with sqlite3.connect(sqlite_path) as conn:  # a write iogate does not see
        conn.execute("INSERT INTO t VALUES (2)")
    _, _, cached = await client.post("/v1/databases/main/query", read)
    assert cached["rows"] == [[1]]  # served from the cache

    await client.post("/v1/databases/main/query", {"sql": "INSERT INTO t VALUES (3)"})
    _, _, fresh = await client.post("/v1/databases/main/query", read)
    assert fresh["rows"] == [[1], [2], [3]]  # the write through iogate invalidated it

    status, _, problem = await client.post(
        "/v1/databases/main/query", {"sql": "DELETE FROM t", "cache_ttl": 60}
    )
    assert status == 400
    assert "reads" in problem["detail"]


async def test_upstream_cache_ttl_and_stats(client: GatewayClient) -> None:
    request = {"method": "GET", "path": "/flaky/c1?fail=0", "cache_ttl": 60}
    _, _, one = await client.post("/v1/upstreams/example/request", request)
    _, _, two = await client.post("/v1/upstreams/example/request", request)
    assert one["body"] == two["body"] == {"attempt": 1}  # the second came from the cache
    _, _, uncached = await client.post(
        "/v1/upstreams/example/request", {"method": "GET", "path": "/flaky/c1?fail=0"}
    )
    assert uncached["body"] == {"attempt": 2}

    status, _, stats = await client.get("/v1/stats")
    assert status == 200
    assert "resources" in stats
    cache = stats["cache"]
    assert cache["l1"]["hits"] >= 1
    assert cache["loads"] >= 1
    assert cache["l2"]["circuit"] == "closed"
    assert cache["l2"]["subscribed"] is True
    assert 0 <= cache["hit_rate"] <= 1
