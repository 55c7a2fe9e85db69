"""MongoDB over HTTP and in batches with real API keys, on the ``mongo``
fixture's server: Extended JSON both ways, 409 on a duplicate key, scopes,
collection allowlists, refused operators, caps, cache invalidation."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from iogate.config import parse_config
from iogate.server.app import create_app
from iogate.server.keys import hash_key, new_key
from tests.keyed_client import KeyedClient
from tests.servers import MongoServer
from tests.servers import serve_asgi as serve

KEYS = {name: new_key() for name in ("owner", "reader", "users_only", "capped")}
SCOPES = {
    "owner": ["db:docs:write"],
    "reader": ["db:docs:read"],
    "users_only": ["db:docs:write"],
    "capped": ["db:docs:read"],
}
P = "/v1/databases/docs"


@pytest.fixture
async def client(mongo: MongoServer) -> AsyncIterator[KeyedClient]:
    keys: dict[str, Any] = {
        name: {"sha256": hash_key(KEYS[name]), "scopes": SCOPES[name]} for name in KEYS
    }
    keys["users_only"]["collections"] = ["users"]
    keys["capped"]["max_rows"] = 2
    config = parse_config(
        {
            "databases": {"docs": {"url": mongo.url("g" + uuid.uuid4().hex[:12])}},
            "keys": keys,
        },
        environ={},
    )
    async with serve(create_app(config)) as base, aiohttp.ClientSession() as http:
        yield KeyedClient(base, http, KEYS, "docs")


async def test_extended_json_travels_both_ways(client: KeyedClient, mongo: MongoServer) -> None:
    oid = "65a1b2c3d4e5f60718293a4b"
    doc: dict[str, Any] = {
        "_id": {"$oid": oid},
        "id": "user_123",
        "joined": {"$date": "2024-01-02T03:04:05.678Z"},
        "visits": {"$numberLong": "1099511627776"},
        "avatar": {"$binary": {"base64": "AAEC", "subType": "00"}},
    }
    if mongo.kind == "mongod":  # nx-27017 stores no Decimal128 (README "MongoDB")
        doc["balance"] = {"$numberDecimal": "12.50"}
    status, body = await client.post(f"{P}/insert", {"collection": "users", "documents": [doc]},
                                     "owner")  # fmt: skip
    assert (status, body["inserted_ids"]) == (200, [{"$oid": oid}])
    status, body = await client.post(
        f"{P}/find", {"collection": "users", "filter": {"_id": {"$oid": oid}}}, "reader"
    )
    assert status == 200
    assert body["count"] == 1
    assert body["truncated"] is False
    found = body["documents"][0]
    assert found["_id"] == {"$oid": oid}
    assert found["joined"] == {"$date": "2024-01-02T03:04:05.678Z"}
    assert found["visits"] == 1099511627776  # relaxed: a number
    assert found["avatar"] == {"$binary": {"base64": "AAEC", "subType": "00"}}
    status, body = await client.post(
        f"{P}/find",
        {"collection": "users", "filter": {"joined": {"$gte": {"$date": "2024-01-01T00:00:00Z"}}},
         "canonical": True},
        "reader",
    )  # fmt: skip
    assert status == 200
    assert body["documents"][0]["visits"] == {"$numberLong": "1099511627776"}
    assert body["documents"][0]["joined"] == {"$date": {"$numberLong": "1704164645678"}}
    status, body = await client.post(
        f"{P}/aggregate",
        {"collection": "users", "pipeline": [{"$match": {"id": "user_123"}},
                                             {"$project": {"_id": 0, "id": 1}}]},
        "reader",
    )  # fmt: skip
    assert (status, body["documents"]) == (200, [{"id": "user_123"}])
    status, body = await client.post(f"{P}/count", {"collection": "users"}, "reader")
    assert (status, body["count"]) == (200, 1)
    status, body = await client.post(
        f"{P}/update",
        {"collection": "users", "filter": {"id": "user_123"}, "update": {"$set": {"plan": "pro"}}},
        "owner",
    )
    assert (status, body["matched_count"], body["modified_count"]) == (200, 1, 1)
    status, body = await client.post(f"{P}/delete", {"collection": "users", "filter": {}}, "owner")
    assert (status, body["deleted_count"]) == (200, 1)


async def test_a_duplicate_key_is_a_409_problem(client: KeyedClient) -> None:
    insert = {"collection": "users", "documents": [{"_id": "dup"}]}
    assert (await client.post(f"{P}/insert", insert, "owner"))[0] == 200
    status, body = await client.post(f"{P}/insert", insert, "owner")
    assert status == 409
    assert body["type"] == "urn:iogate:problem:integrity-violation"
    assert body["sqlstate"] == "11000"


async def test_a_read_key_cannot_write_over_http_or_in_a_batch(client: KeyedClient) -> None:
    for path, body in (
        ("insert", {"collection": "users", "documents": [{"_id": "r"}]}),
        ("update", {"collection": "users", "filter": {}, "update": {"$set": {"a": 1}}}),
        ("delete", {"collection": "users", "filter": {}, "many": True}),
        ("aggregate", {"collection": "users", "pipeline": [{"$out": "copy"}]}),
    ):
        status, problem = await client.post(f"{P}/{path}", body, "reader")
        assert status == 403, path
        assert "db:docs:write" in problem["detail"]
    batch = {"steps": [{"kind": "mongodb", "database": "docs", "op": "insert",
                        "body": {"collection": "users", "documents": [{"_id": "b"}]}}]}  # fmt: skip
    status, body = await client.post("/v1/batch", batch, "reader")
    step = body["results"][0]
    assert (status, step["ok"], step["problem"]["status"]) == (200, False, 403)
    status, body = await client.post("/v1/batch", batch, "owner")
    assert status == 200
    assert body["results"][0]["ok"] is True
    status, body = await client.post(f"{P}/count", {"collection": "users"}, "reader")
    assert body["count"] == 1  # only the owner's insert happened
    # A batch read step can use a $ref to an earlier step.
    batch = {"steps": [
        {"kind": "mongodb", "database": "docs", "op": "find",
         "body": {"collection": "users", "filter": {}}},
        {"kind": "mongodb", "database": "docs", "op": "count",
         "body": {"collection": "users", "filter": {"_id": {"$ref": "steps.0.documents.0._id"}}}},
    ]}  # fmt: skip
    status, body = await client.post("/v1/batch", batch, "reader")
    assert status == 200
    assert body["results"][1]["value"] == {"count": 1}


async def test_javascript_operators_are_refused_before_any_io(client: KeyedClient) -> None:
    for path, body, operator in (
        ("find", {"collection": "users", "filter": {"$where": "sleep(10000)"}}, "$where"),
        ("aggregate", {"collection": "users", "pipeline": [{"$match": {"$expr": {
            "$function": {"body": "function() {}", "args": [], "lang": "js"}}}}]}, "$function"),
        ("aggregate", {"collection": "users", "pipeline": [{"$group": {"_id": None, "x": {
            "$accumulator": {}}}}]}, "$accumulator"),
        ("update", {"collection": "users", "filter": {"$where": "1"}, "update": {}}, "$where"),
    ):  # fmt: skip
        status, problem = await client.post(f"{P}/{path}", body, "owner")
        assert status == 400, path
        assert problem["type"] == "urn:iogate:problem:refused-operator"
        assert problem["operator"] == operator


async def test_collection_allowlist_covers_lookups_and_outputs(client: KeyedClient) -> None:
    ok = await client.post(f"{P}/find", {"collection": "users"}, "users_only")
    assert ok[0] == 200
    for path, body in (
        ("find", {"collection": "secrets"}),
        ("insert", {"collection": "secrets", "documents": [{}]}),
        ("aggregate", {"collection": "users", "pipeline": [
            {"$lookup": {"from": "secrets", "localField": "a", "foreignField": "b", "as": "s"}}]}),
        ("aggregate", {"collection": "users", "pipeline": [{"$unionWith": "secrets"}]}),
        ("aggregate", {"collection": "users", "pipeline": [{"$merge": {"into": "secrets"}}]}),
    ):  # fmt: skip
        status, problem = await client.post(f"{P}/{path}", body, "users_only")
        assert status == 403, body
        assert problem["type"] == "urn:iogate:problem:collection-not-allowed"
    status, problem = await client.post(
        f"{P}/aggregate",
        {"collection": "users", "pipeline": [{"$out": {"db": "admin", "coll": "x"}}]},
        "owner",
    )
    assert (status, problem["type"]) == (400, "urn:iogate:problem:refused-operator")


async def test_results_are_capped_and_cached_reads_see_writes(client: KeyedClient) -> None:
    docs = [{"_id": i} for i in range(5)]
    await client.post(f"{P}/insert", {"collection": "items", "documents": docs}, "owner")
    status, body = await client.post(f"{P}/find", {"collection": "items"}, "capped")
    assert (status, body["count"], body["truncated"]) == (200, 2, True)
    status, body = await client.post(
        f"{P}/aggregate", {"collection": "items", "pipeline": [{"$sort": {"_id": 1}}]}, "capped"
    )
    assert ([d["_id"] for d in body["documents"]], body["truncated"]) == ([0, 1], True)
    cached = {"collection": "items", "filter": {"_id": 1}, "cache_ttl": 60}
    status, body = await client.post(f"{P}/find", cached, "reader")
    assert body["documents"] == [{"_id": 1}]
    await client.post(
        f"{P}/update",
        {"collection": "items", "filter": {"_id": 1}, "update": {"$set": {"seen": True}}},
        "owner",
    )
    status, body = await client.post(f"{P}/find", cached, "reader")
    assert body["documents"] == [{"_id": 1, "seen": True}]


async def test_openapi_documents_the_mongodb_routes(client: KeyedClient) -> None:
    async with client.http.get(client.base + "/openapi.json") as resp:
        spec = await resp.json()
    for op in ("find", "aggregate", "count", "insert", "update", "delete"):
        assert f"{P}/{op}".replace("docs", "{name}") in spec["paths"]
    find = spec["paths"]["/v1/databases/{name}/find"]["post"]
    assert find["tags"] == ["mongodb"]
