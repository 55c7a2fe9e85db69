"""MongoDB through the library: CRUD, Extended JSON, cache, transactions, the
pool bound and an outage — on the ``mongo`` fixture's real wire-protocol
server (mongod when on PATH, else nx-27017)."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import pytest
from bson import Binary, Decimal128, Int64, ObjectId, Regex, Timestamp
from pymongo import AsyncMongoClient, InsertOne

from iogate.config import parse_config
from iogate.databases._mongo_json import from_ejson, to_ejson
from iogate.databases.mongodb import collection_tag
from iogate.errors import (
    CircuitOpenError,
    IntegrityError,
    InvalidInputError,
    QueryError,
    TransientDatabaseError,
)
from iogate.gateway import Gateway
from tests.servers import MongoServer, mongo_server
from tests.waiting import until


def _config(url: str, **extra: Any) -> Any:
    return parse_config({"databases": {"docs": {"url": url, **extra}}}, environ={})


def _dbname() -> str:
    return "t" + uuid.uuid4().hex[:12]


def test_extended_json_round_trips_every_type_both_forms() -> None:
    oid = ObjectId()
    when = dt.datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=dt.UTC)
    value = {
        "_id": oid,
        "when": when,
        "early": dt.datetime(1969, 7, 20, 20, 17, tzinfo=dt.UTC),
        "price": Decimal128(Decimal("1.10")),
        "big": Int64(2**40),
        "small": 7,
        "ratio": 0.5,
        "inf": float("inf"),
        "raw": b"\x00\x01",
        "uuid": Binary(uuid.UUID(int=1).bytes, 4),
        "re": Regex("^a", "i"),
        "ts": Timestamp(5, 1),
        "nested": [{"x": None, "ok": True}],
    }
    relaxed = to_ejson(value)
    assert relaxed["_id"] == {"$oid": str(oid)}
    assert relaxed["when"] == {"$date": "2024-01-02T03:04:05.678Z"}
    assert relaxed["early"] == {"$date": {"$numberLong": str(-14182980000)}}
    assert relaxed["price"] == {"$numberDecimal": "1.10"}
    assert relaxed["big"] == 2**40
    assert relaxed["small"] == 7
    assert relaxed["inf"] == {"$numberDouble": "Infinity"}
    assert relaxed["raw"] == {"$binary": {"base64": "AAE=", "subType": "00"}}
    assert relaxed["re"] == {"$regularExpression": {"pattern": "^a", "options": "i"}}
    canonical = to_ejson(value, canonical=True)
    assert canonical["big"] == {"$numberLong": str(2**40)}
    assert canonical["small"] == {"$numberInt": "7"}
    assert canonical["ratio"] == {"$numberDouble": "0.5"}
    for form in (relaxed, canonical):
        assert from_ejson(form) == value
    assert isinstance(from_ejson(canonical)["big"], Int64)  # relaxed: a plain number
    # $regex stays the query operator; a malformed wrapper is refused.
    assert from_ejson({"name": {"$regex": "^a"}}) == {"name": {"$regex": "^a"}}
    with pytest.raises(InvalidInputError):
        from_ejson({"_id": {"$oid": "nope"}})


async def test_crud_and_aggregation_round_trip(mongo: MongoServer) -> None:
    cfg = _config(mongo.url(_dbname()))
    async with Gateway(cfg) as gw:
        db = gw.mongo("docs")
        when = dt.datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=dt.UTC)
        doc = {"_id": ObjectId(), "id": "user_123", "when": when, "n": Int64(2**40), "b": b"xy"}
        if mongo.kind == "mongod":  # nx-27017 stores no Decimal128 (README "MongoDB")
            doc["price"] = Decimal128("9.99")
        inserted = await db.insert_one("users", doc)
        assert inserted.inserted_ids == (doc["_id"],)
        await db["users"].insert_many([{"id": f"u{i}", "age": i} for i in range(5)])
        found = await db["users"].find_one({"id": "user_123"})
        assert found is not None
        assert found["_id"] == doc["_id"]
        assert found["when"] == when
        assert found["b"] == b"xy"
        assert found["n"] == 2**40
        assert await db.find_one("users", {"_id": doc["_id"]}) == found
        page = await db.find("users", {"age": {"$gte": 1}}, sort=[("age", -1)], skip=1, limit=2)
        assert [d["age"] for d in page] == [3, 2]
        assert await db.count_documents("users", {"age": {"$lt": 3}}) == 3
        groups = await db.aggregate(
            "users",
            [
                {"$match": {"age": {"$gte": 0}}},
                {"$group": {"_id": None, "total": {"$sum": "$age"}}},
            ],
        )
        assert groups == [{"_id": None, "total": 10}]
        updated = await db.update_one("users", {"id": "u1"}, {"$set": {"age": 10}})
        assert (updated.matched_count, updated.modified_count) == (1, 1)
        many = await db.update_many("users", {"age": {"$lt": 3}}, {"$inc": {"age": 100}})
        assert many.matched_count == 2
        replaced = await db.replace_one("users", {"id": "u4"}, {"id": "u4", "age": 44})
        assert replaced.modified_count == 1
        assert (await db.delete_one("users", {"id": "u4"})).deleted_count == 1
        assert (await db.delete_many("users", {"age": {"$gte": 100}})).deleted_count == 2
        streamed = [d["id"] async for d in db.stream("users", {}, sort=[("id", 1)], batch_size=1)]
        assert streamed == ["u1", "u3", "user_123"]
        capped = await db.find_documents("users", {}, max_rows=2, max_bytes=10**6)
        assert len(capped.documents) == 2
        assert capped.truncated
        tight = await db.find_documents("users", {}, max_rows=100, max_bytes=1)
        assert len(tight.documents) == 1
        assert tight.truncated
        stats = gw.metrics.stats().resource("docs")
        assert stats is not None
        assert stats.operation("users.find_one") is not None


async def test_errors_are_classified(mongo: MongoServer) -> None:
    async with Gateway(_config(mongo.url(_dbname()))) as gw:
        db = gw.mongo("docs")
        await db.insert_one("users", {"_id": "a"})
        with pytest.raises(IntegrityError) as dup:
            await db.insert_one("users", {"_id": "a"})
        assert dup.value.sqlstate == "11000"
        with pytest.raises(QueryError):
            await db.find_one("users", {"age": {"$nosuchoperator": 1}})
        with pytest.raises(IntegrityError):  # a BulkWriteError of duplicate keys
            await db.bulk_write("users", [InsertOne({"_id": "b"}), InsertOne({"_id": "a"})])
        assert await db.find_one("users", {"_id": "b"}) == {"_id": "b"}  # ordered: b went in


async def test_a_cached_find_is_invalidated_by_a_write_through_iogate(mongo: MongoServer) -> None:
    url = mongo.url(_dbname())
    async with Gateway(_config(url)) as gw:
        db = gw.mongo("docs")
        await db.insert_one("users", {"_id": "u", "plan": "free"})
        first = await db.find("users", {"_id": "u"}, cache_ttl_s=60)
        # A write behind iogate's back is not seen: the result is cached.
        raw: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
        try:
            await raw.get_default_database().users.update_one(
                {"_id": "u"}, {"$set": {"plan": "sneaky"}}
            )
        finally:
            await raw.close()
        assert await db.find("users", {"_id": "u"}, cache_ttl_s=60) == first
        assert first[0]["plan"] == "free"
        await db.update_one("users", {"_id": "u"}, {"$set": {"plan": "pro"}})
        after = await db.find("users", {"_id": "u"}, cache_ttl_s=60)
        assert after[0]["plan"] == "pro"
        assert collection_tag("docs", "users") in db.cache_tags(["users"])


async def test_transaction_commits_or_aborts_as_a_whole(mongo: MongoServer) -> None:
    async with Gateway(_config(mongo.url(_dbname()))) as gw:
        db = gw.mongo("docs")
        await db.insert_one("stock", {"_id": "sku", "n": 5})
        async with db.transaction() as tx:
            await tx.insert_one("orders", {"_id": "o1", "sku": "sku"})
            await tx.update_one("stock", {"_id": "sku"}, {"$inc": {"n": -1}})
        assert await db.find_one("stock", {"_id": "sku"}) == {"_id": "sku", "n": 4}

        async def give_up() -> None:
            async with db.transaction() as tx:
                await tx.insert_one("orders", {"_id": "o2"})
                raise RuntimeError("the caller gives up")

        with pytest.raises(RuntimeError):
            await give_up()
        assert await db.find_one("orders", {"_id": "o2"}) is None
        assert await db.count_documents("orders") == 1


async def test_a_thousand_concurrent_find_one_use_at_most_ten_connections(
    mongo: MongoServer,
) -> None:
    url = mongo.url(_dbname())
    raw: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
    async with Gateway(_config(url, pool_size=10, pool_min_size=0)) as gw:
        db = gw.mongo("docs")
        await db.insert_one("users", {"_id": "u"})
        before = (await raw.admin.command("serverStatus"))["connections"]["current"]
        found = await asyncio.gather(*(db.find_one("users", {"_id": "u"}) for _ in range(1000)))
        after = (await raw.admin.command("serverStatus"))["connections"]["current"]
        stats = db.stats()
        assert found == [{"_id": "u"}] * 1000
        # Connections stay pooled: what opened during the load is still open now.
        assert 2 <= stats.size <= 10  # the load used several connections, never more than 10
        assert after - before <= 10 - 1  # one pool connection was open before
        assert stats.max_size == 10
        assert stats.size <= 10
        assert stats.in_use == 0
        assert stats.acquired_total >= 1000
    await raw.close()


async def test_server_killed_mid_load_is_transient_opens_the_breaker_and_recovers() -> None:
    with mongo_server() as server:
        cfg = parse_config(
            {
                "databases": {
                    "docs": {
                        "url": server.url("outage"),
                        "connect_timeout": 0.3,
                        "policies": {
                            "deadline": 5.0,
                            "retry": {"max_attempts": 1},
                            "circuit_breaker": {
                                "failure_rate": 0.5,
                                "minimum_calls": 4,
                                "window": 8,
                                "wait_in_open": 0.3,
                            },
                        },
                    }
                }
            },
            environ={},
        )
        acknowledged: list[int] = []
        failures: list[BaseException] = []
        counter = iter(range(1_000_000))
        stop = asyncio.Event()
        async with Gateway(cfg) as gw:
            db = gw.mongo("docs")

            async def writer() -> None:
                while not stop.is_set():
                    n = next(counter)
                    try:
                        await db.insert_one("events", {"_id": n})
                    except (TransientDatabaseError, CircuitOpenError) as exc:
                        failures.append(exc)
                        await asyncio.sleep(0.01)  # pacing the load, not synchronisation
                    else:
                        acknowledged.append(n)

            writers = [asyncio.create_task(writer()) for _ in range(4)]
            await until(lambda: len(acknowledged) >= 20, what="inserts before the outage")
            server.stop()
            await until(
                lambda: any(isinstance(f, CircuitOpenError) for f in failures),
                timeout_s=10.0,
                what="the breaker to open",
            )
            assert any(isinstance(f, TransientDatabaseError) for f in failures)
            server.start()
            recovered = len(acknowledged)
            await until(lambda: len(acknowledged) >= recovered + 20, timeout_s=15.0,
                        what="inserts after the restart")  # fmt: skip
            stop.set()
            await asyncio.gather(*writers)
            stored = {d["_id"] for d in await db.find("events", {})}
        assert set(acknowledged) <= stored
