"""The original design's request shapes on /database/execute, /api/execute,
/batch/execute, and Redis steps in /v1/batch — over HTTP against real SQLite,
PostgreSQL, Redis, a loopback upstream and the fake LLM providers, with keys."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from iogate.config import parse_config
from iogate.server.app import create_app
from iogate.server.keys import hash_key, new_key
from tests.fakes.llm import FakeLLM, fake_llm_server
from tests.servers import PostgresServer, RedisServer, serve_asgi
from tests.upstream_app import UpstreamServer

KEYS = {name: new_key() for name in ("admin", "writer", "reader", "other")}
SCOPES = {
    "admin": ["admin"],
    "writer": [
        *("db:main:write", "db:pg:write", "db:kv:read", "db:kv:write"),
        *("upstream:example", "upstream:hf", "upstream:openai"),
    ],
    "reader": ["db:main:read", "db:kv:read"],
    "other": ["db:main:write"],
}
INVALID = "urn:iogate:problem:invalid-input"


@dataclass
class Client:
    base: str
    http: aiohttp.ClientSession
    db_path: Path
    upstream: UpstreamServer
    llm: FakeLLM

    async def post(self, path: str, body: Any, key: str = "admin") -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {KEYS[key]}"}
        async with self.http.post(self.base + path, json=body, headers=headers) as resp:
            return resp.status, orjson.loads(await resp.read())

    async def get(self, path: str, key: str = "admin") -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {KEYS[key]}"}
        async with self.http.get(self.base + path, headers=headers) as resp:
            return resp.status, orjson.loads(await resp.read())

    async def execute(self, body: dict[str, Any], key: str = "admin") -> tuple[int, Any]:
        return await self.post("/database/execute", body, key)


@pytest.fixture
async def llm() -> AsyncIterator[FakeLLM]:
    async with fake_llm_server() as server:
        yield server


@pytest.fixture
async def client(
    tmp_path: Path, pg: PostgresServer, redis: RedisServer, upstream: UpstreamServer, llm: FakeLLM
) -> AsyncIterator[Client]:
    db_path = tmp_path / "shapes.db"
    config = parse_config(
        {
            "databases": {
                "main": {"url": f"sqlite:///{db_path}"},
                "pg": {"url": pg.dsn, "allow_privileged_login": True, "pool_size": 2},
                "kv": {"url": redis.url},
            },
            "upstreams": {
                "example": {"base_url": upstream.base_url},
                "hf": {"base_url": llm.base_url, "provider": "tgi"},
                "openai": {
                    "base_url": llm.base_url + "/v1",
                    "provider": "openai",
                    "model": "gpt-test",
                },
            },
            "keys": {
                name: {"sha256": hash_key(KEYS[name]), "scopes": scopes}
                for name, scopes in SCOPES.items()
            },
        },
        environ={},
    )
    async with serve_asgi(create_app(config)) as base, aiohttp.ClientSession() as http:
        gateway_client = Client(base, http, db_path, upstream, llm)
        status, _ = await gateway_client.execute(
            {"sql": "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, email TEXT)"}
        )
        assert status == 200
        await gateway_client.post("/v1/databases/kv/command", {"command": "DEL", "args": ["k"]})
        yield gateway_client


# -- SQL: query | sql, positional objects ------------------------------------


async def test_query_or_sql_and_positional_objects_on_sqlite(client: Client) -> None:
    status, body = await client.execute(
        {
            "query": "INSERT INTO users (name, email) VALUES (?, ?)",
            "params": {"1": "Ada", "2": "ada@example.com"},
        }
    )
    assert (status, body["row_count"]) == (200, 1)
    status, body = await client.execute(
        {
            "sql": "INSERT INTO users (name, email) VALUES (?2, ?1)",
            "params": {"2": "Bob", "1": "b@x"},
        }
    )
    assert status == 200, body
    status, body = await client.execute(
        {
            "db_name": "main",
            "query": "SELECT name, email FROM users WHERE id > ? ORDER BY id",
            "params": [0],
        }
    )
    assert body["rows"] == [["Ada", "ada@example.com"], ["Bob", "b@x"]]
    for bad in ({"1": "a", "3": "b"}, {"0": "a"}, {"1": "a", "name": "b"}, {"01": "a"}):
        status, problem = await client.execute({"query": "SELECT ?", "params": bad})
        assert status == 422, bad
        assert "positional parameters" in problem["detail"]
    for both in ({"query": "SELECT 1", "sql": "SELECT 2"}, {"db_name": "main"}):
        status, problem = await client.execute(both)
        assert status == 422
        assert problem["type"] == "urn:iogate:problem:invalid-request"


async def test_positional_objects_on_postgresql(client: Client) -> None:
    status, body = await client.execute(
        {"db_name": "pg", "query": "SELECT $1::int + $2::int AS sum", "params": {"1": 2, "2": 40}}
    )
    assert (status, body["rows"]) == (200, [[42]])
    status, body = await client.execute(
        {"db_name": "pg", "sql": "SELECT ?::text || ?::text", "params": {"2": "b", "1": "a"}}
    )
    assert (status, body["rows"]) == (200, [["ab"]])


# -- cache_key: the caller's own entry ----------------------------------------


def _insert_behind_the_gateways_back(path: Path, name: str) -> None:
    with sqlite3.connect(path, timeout=5) as conn:
        conn.execute("INSERT INTO users (name) VALUES (?)", (name,))


async def test_cache_key_is_the_callers_own_entry(client: Client) -> None:
    await client.execute({"query": "INSERT INTO users (name) VALUES ('Ada')"})
    names = {"query": "SELECT name FROM users ORDER BY id", "cache_key": "names", "cache_ttl": 60}
    status, first = await client.execute(names, key="writer")
    assert (status, first["rows"]) == (200, [["Ada"]])
    await asyncio.to_thread(_insert_behind_the_gateways_back, client.db_path, "Eve")
    _, again = await client.execute(names, key="writer")
    assert again["rows"] == [["Ada"]]  # served from the writer's entry
    # The same name under another key is another entry: it reads the table now.
    _, others = await client.execute(names, key="other")
    assert others["rows"] == [["Ada"], ["Eve"]]
    # A read-only key gets an entry too, loaded under its own (read-only) rights.
    _, readers = await client.execute(names, key="reader")
    assert readers["rows"] == [["Ada"], ["Eve"]]
    # The entry is named, not keyed by SQL: the name returns what it holds.
    other_sql = {**names, "query": "SELECT 'different'"}
    _, named = await client.execute(other_sql, key="writer")
    assert named["rows"] == [["Ada"]]
    # /v1/cache/{key} lives in another namespace: it cannot reach the entry.
    status, _ = await client.get("/v1/cache/names")
    assert status == 404
    # A write through iogate to the table it read drops it (read-your-writes).
    await client.execute({"query": "INSERT INTO users (name) VALUES ('Bob')"}, key="writer")
    _, fresh = await client.execute(names, key="writer")
    assert fresh["rows"] == [["Ada"], ["Eve"], ["Bob"]]


async def test_cache_key_refusals(client: Client) -> None:
    write = {"query": "DELETE FROM users", "cache_key": "x", "cache_ttl": 5}
    status, problem = await client.execute(write, key="writer")
    assert (status, problem["type"]) == (400, INVALID)
    status, problem = await client.execute(
        {"db_name": "pg", "query": "SELECT 1", "cache_key": "x"}, key="reader"
    )
    assert (status, problem["type"]) == (403, "urn:iogate:problem:forbidden")


# -- Redis operations in the dict form ---------------------------------------


async def test_redis_operations_in_the_original_dict_form(client: Client) -> None:
    async def op(**query: Any) -> tuple[int, Any]:
        return await client.execute({"db_name": "kv", "query": query}, key="writer")

    status, body = await op(operation="set", key="k", value="v", ttl=30)
    assert (status, body["result"]) == (200, True)
    _, pttl = await client.post("/v1/databases/kv/command", {"command": "PTTL", "args": ["k"]})
    assert 0 < pttl["result"] <= 30_000
    status, body = await op(operation="get", key="k")
    assert status == 200, body
    assert body["result"] == "v"
    assert (await op(operation="incr", key="n"))[1]["result"] == 1
    assert (await op(operation="incr", key="n", value=5))[1]["result"] == 6
    assert (await op(operation="expire", key="k", ttl=100))[1]["result"] is True
    assert (await op(operation="delete", key="k"))[1]["result"] == 1
    assert (await op(operation="get", key="k"))[1]["result"] is None
    await op(operation="set", key="doc", value={"a": [1, 2]})
    assert (await op(operation="get", key="doc"))[1]["result"] == '{"a":[1,2]}'
    await client.post("/v1/databases/kv/command", {"command": "DEL", "args": ["n", "doc"]})


async def test_redis_operations_respect_read_and_write_scopes(client: Client) -> None:
    async def op(as_key: str, **query: Any) -> tuple[int, Any]:
        return await client.execute({"db_name": "kv", "query": query}, key=as_key)

    await op("writer", operation="set", key="k", value="kept")
    assert (await op("reader", operation="get", key="k"))[1]["result"] == "kept"
    for query in (
        {"operation": "set", "key": "k", "value": "changed"},
        {"operation": "delete", "key": "k"},
        {"operation": "incr", "key": "k"},
        {"operation": "expire", "key": "k", "ttl": 1},
    ):
        status, problem = await op("reader", **query)
        assert (status, problem["type"]) == (403, "urn:iogate:problem:forbidden"), query
    status, body = await op("writer", operation="get", key="k")
    assert body["result"] == "kept"
    _, pttl = await client.post("/v1/databases/kv/command", {"command": "PTTL", "args": ["k"]})
    assert pttl["result"] == -1  # the refused expire never ran
    status, problem = await op("writer", operation="set", key="k")
    assert (status, problem["type"]) == (400, INVALID)
    status, problem = await op("writer", operation="expire", key="k")
    assert (status, problem["type"]) == (400, INVALID)
    status, _ = await op("writer", operation="flushall", key="k")
    assert status == 422
    status, problem = await client.execute(
        {"db_name": "main", "query": {"operation": "get", "key": "k"}}
    )
    assert (status, problem["type"]) == (404, "urn:iogate:problem:unknown-resource")


# -- Redis steps in batches ---------------------------------------------------


async def test_redis_steps_in_a_batch(client: Client) -> None:
    status, body = await client.post(
        "/v1/batch",
        {
            "steps": [
                {"kind": "redis", "database": "kv", "command": ["SET", "k", "hello", "EX", 60]},
                {"kind": "redis", "database": "kv", "command": ["GET", "k"], "when": {"ok": 0}},
                {
                    "kind": "database",
                    "database": "main",
                    "sql": "SELECT upper(?)",
                    "params": [{"$ref": "steps.1.result"}],
                },
                {
                    "kind": "redis",
                    "database": "kv",
                    "command": ["APPEND", "k", {"$ref": "steps.2.rows.0.0"}],
                },
            ]
        },
        key="writer",
    )
    assert status == 200, body
    results = body["results"]
    assert [r["ok"] for r in results] == [True, True, True, True]
    assert results[1]["value"] == {"result": "hello"}
    assert results[2]["value"]["rows"] == [["HELLO"]]
    _, got = await client.post("/v1/databases/kv/command", {"command": "GET", "args": ["k"]})
    assert got["result"] == "helloHELLO"


async def test_redis_steps_are_held_to_scopes_and_the_allowlist(client: Client) -> None:
    await client.post("/v1/databases/kv/command", {"command": "SET", "args": ["k", "kept"]})
    status, body = await client.post(
        "/v1/batch",
        {
            "steps": [
                {"kind": "redis", "database": "kv", "command": ["GET", "k"]},
                {"kind": "redis", "database": "kv", "command": ["SET", "k", "changed"]},
                {"kind": "redis", "database": "kv", "command": ["del", "k"]},
                {"kind": "redis", "database": "kv", "command": ["FLUSHALL"]},
                {"kind": "redis", "database": "nope", "command": ["GET", "k"]},
            ]
        },
        key="reader",
    )
    assert status == 200
    results = body["results"]
    assert results[0] == {
        "ok": True,
        "value": {"result": "kept"},
        "duration_ms": results[0]["duration_ms"],
    }
    assert [r["problem"]["status"] for r in results[1:]] == [403, 403, 400, 404]
    assert results[1]["problem"]["type"] == "urn:iogate:problem:forbidden"
    assert "db:kv:write" in results[1]["problem"]["detail"]
    _, got = await client.post("/v1/databases/kv/command", {"command": "GET", "args": ["k"]})
    assert got["result"] == "kept"
    status, problem = await client.post(
        "/v1/batch", {"steps": [{"kind": "redis", "database": "kv", "command": [1, "k"]}]}
    )
    assert (status, problem["type"]) == (422, "urn:iogate:problem:invalid-request")


async def test_batch_execute_takes_the_original_shapes(client: Client) -> None:
    url = client.upstream.base_url + "/echo/batch?x=1"
    status, body = await client.post(
        "/batch/execute",
        {
            "operations": [
                {
                    "type": "database",
                    "db_name": "kv",
                    "query": {"operation": "set", "key": "k", "value": 7},
                },
                {"type": "database", "sql": "SELECT ?1 + 1", "params": {"1": 41}},
                {"type": "api", "url": url, "method": "POST", "json_data": {"a": 1}},
            ]
        },
        key="writer",
    )
    assert status == 200, body
    results = body["results"]
    assert [r["ok"] for r in results] == [True, True, True]
    assert results[0]["value"] == {"result": True}
    assert results[1]["value"]["rows"] == [[42]]
    assert results[2]["value"]["body"]["path"] == "/api/echo/batch"
    assert orjson.loads(results[2]["value"]["body"]["body"]) == {"a": 1}
    outside = {"type": "api", "url": client.upstream.base_url.removesuffix("/api") + "/outside"}
    status, problem = await client.post("/batch/execute", {"operations": [outside]}, key="writer")
    assert (status, problem["type"]) == (400, INVALID)
    assert problem["detail"].startswith("operations.0: url is not under")


# -- /api/execute: url, json_data, api_type ----------------------------------


async def test_a_url_under_a_base_url_is_sent(client: Client) -> None:
    url = client.upstream.base_url + "/echo/x?a=1"
    status, body = await client.post(
        "/api/execute", {"url": url, "method": "POST", "json_data": {"k": 1}}, key="writer"
    )
    assert status == 200, body
    assert body["status"] == 200
    assert body["body"]["path"] == "/api/echo/x"
    assert body["body"]["query"] == {"a": "1"}
    assert orjson.loads(body["body"]["body"]) == {"k": 1}
    status, body = await client.post(
        "/api/execute", {"api_name": "example", "url": url, "data": [1]}, key="writer"
    )
    assert (status, body["body"]["path"]) == (200, "/api/echo/x")
    # The url names the upstream, so its scope applies.
    status, problem = await client.post("/api/execute", {"url": url}, key="reader")
    assert (status, problem["type"]) == (403, "urn:iogate:problem:forbidden")


async def test_a_url_outside_every_base_url_is_refused_before_any_io(client: Client) -> None:
    base = client.upstream.base_url  # http://127.0.0.1:<port>/api
    origin = base.removesuffix("/api")
    port = int(origin.rsplit(":", 1)[1])
    escapes = [
        origin + "/outside",
        base + "x/echo",  # /apix is not under /api
        base + "/../outside",
        base + "/%2e%2e/outside",
        base + "/%2E%2E%2Foutside",
        base + "/..%2foutside",
        base + "/%252e%252e/outside",
        base + "/echo#frag",
        base.replace("127.0.0.1", "localhost") + "/echo",
        base.replace("http://", "https://") + "/echo",
        base.replace(f":{port}", f":{port + 1 if port < 65535 else port - 1}") + "/echo",
        base.replace("http://", "http://user:pw@") + "/echo",
        base.replace("http://", f"http://127.0.0.1:{port}@") + "/echo",
        f"http://evil.example#@127.0.0.1:{port}/api/echo",
        base.replace("127.0.0.1", "127.0.0.1\\@evil.example") + "/echo",
        base + "/echo x",
        base.removeprefix("http:") + "/echo",  # scheme-relative
        "file:///etc/passwd",
        f"http://127.0.0.1:{port}:1/api/echo",
    ]
    for url in escapes:
        status, problem = await client.post("/api/execute", {"url": url}, key="writer")
        assert (status, problem["type"]) == (400, INVALID), url
    # Under another upstream than the one named: refused too.
    status, problem = await client.post(
        "/api/execute", {"api_name": "hf", "url": base + "/echo"}, key="writer"
    )
    assert (status, problem["type"]) == (400, INVALID)
    assert problem["detail"] == "url is not under upstream 'hf''s base URL"
    assert client.upstream.seen == []
    assert client.llm.seen == []


async def test_api_type_runs_a_provider_body_as_a_generation(client: Client) -> None:
    status, body = await client.post(
        "/api/execute",
        {
            "api_name": "hf",
            "api_type": "huggingface",
            "json_data": {"inputs": "one two three four", "parameters": {"max_length": 3}},
        },
        key="writer",
    )
    assert status == 200, body
    assert body["text"] == "echo: one two"
    assert body["finish_reason"] == "length"
    assert body["raw"]["generated_text"] == "echo: one two"
    sent = client.llm.seen[-1]
    assert sent.path == "/generate"
    assert sent.body["parameters"]["max_new_tokens"] == 3
    assert "max_length" not in sent.body["parameters"]
    status, body = await client.post(
        "/api/execute",
        {
            "url": client.llm.base_url + "/v1/chat/completions",
            "api_type": "openai",
            "json_data": {
                "model": "gpt-test",
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": [{"type": "text", "text": "hi there"}]},
                ],
                "max_tokens": 2,
            },
        },
        key="writer",
    )
    assert status == 200, body
    assert (body["text"], body["usage"]) == ("echo: hi", {"input_tokens": 2, "output_tokens": 2})
    assert body["raw"]["choices"][0]["message"]["content"] == "echo: hi"
    assert client.llm.seen[-1].body["messages"][0] == {"role": "system", "content": "be brief"}
    # An Anthropic-shaped body, sent through the OpenAI upstream's adapter.
    status, body = await client.post(
        "/api/execute",
        {
            "api_name": "openai",
            "api_type": "anthropic",
            "json_data": {
                "system": "terse",
                "messages": [{"role": "user", "content": "a b c"}],
                "max_tokens": 3,
            },
        },
        key="writer",
    )
    assert (status, body["text"]) == (200, "echo: a b")
    assert client.llm.seen[-1].body["messages"][0] == {"role": "system", "content": "terse"}


async def test_api_type_refusals(client: Client) -> None:
    cases = [
        {"api_name": "example", "api_type": "openai", "json_data": {"messages": []}},
        {"api_name": "hf", "api_type": "huggingface", "json_data": {"parameters": {}}},
        {"api_name": "hf", "api_type": "huggingface", "json_data": "text"},
        {
            "api_name": "hf",
            "api_type": "huggingface",
            "json_data": {"inputs": "x", "parameters": {"max_length": 0}},
        },
        {
            "api_name": "openai",
            "api_type": "openai",
            "json_data": {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
        },
    ]
    for body in cases:
        status, problem = await client.post("/api/execute", body, key="writer")
        assert (status, problem["type"]) == (400, INVALID), body
    assert client.llm.seen == []
    assert client.upstream.seen == []
