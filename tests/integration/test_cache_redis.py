"""The tiered cache against a real Redis: coalescing, leases across real
processes, invalidation across processes, an outage and recovery, and the
query cache's table tags on SQLite."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from iogate.cache.redis import RedisTier
from iogate.cache.tiered import TieredCache
from iogate.databases.sqlite import SQLiteDatabase
from iogate.policies import CircuitBreaker
from tests.servers import RedisServer, redis_server
from tests.waiting import until

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parents[2]
INVALIDATION_BOUND_S = 0.5  # what the cross-process test allows (pub/sub: milliseconds)


def _ns() -> str:
    return "t" + secrets.token_hex(4)


def _tier(url: str, ns: str, **kwargs: Any) -> RedisTier:
    return RedisTier(url, namespace=ns, channel=f"{ns}:inv", **kwargs)


@pytest.fixture
async def raw(redis: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis.url, socket_timeout=None)
    yield client
    await client.aclose()


def _worker(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.cache_worker", *args],
        cwd=ROOT,
        env={"PYTHONPATH": f"{ROOT / 'src'}:{ROOT}", "PATH": "/usr/bin:/bin"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


async def test_a_thousand_concurrent_misses_make_one_loader_call(
    redis: RedisServer,
) -> None:
    calls = 0
    gate = asyncio.Event()

    async def loader() -> list[int]:
        nonlocal calls
        calls += 1
        await gate.wait()
        return [1, 2, 3]

    async with TieredCache(redis=_tier(redis.url, _ns())) as cache:
        tasks = [asyncio.create_task(cache.get_or_load("hot", loader)) for _ in range(1000)]
        await until(lambda: calls == 1 and cache.stats().coalesced == 999)  # all joined
        gate.set()
        assert await asyncio.gather(*tasks) == [[1, 2, 3]] * 1000
        stats = cache.stats()
    assert calls == 1
    assert stats.coalesced == 999
    assert stats.l2 is not None
    # one look before the lease, one after it (another process may have just stored)
    assert (stats.l2.hits, stats.l2.misses, stats.l2.writes) == (0, 2, 1)


async def test_l2_is_shared_read_through_and_copied_into_l1(redis: RedisServer) -> None:
    ns = _ns()
    async with (
        TieredCache(redis=_tier(redis.url, ns)) as one,
        TieredCache(redis=_tier(redis.url, ns)) as two,
    ):
        await one.set("k", {"n": 1}, ttl_s=60, tags=["t"])
        found = await two.lookup("k")
        assert found is not None
        assert (found.value, found.source) == ({"n": 1}, "l2")
        again = await two.lookup("k")
        assert again is not None
        assert again.source == "l1"


async def test_two_processes_make_one_loader_call_per_key(
    redis: RedisServer, raw: aioredis.Redis
) -> None:
    ns = _ns()
    keys = [f"k{i}" for i in range(5)]
    procs = [_worker("load", redis.url, ns, *keys) for _ in range(2)]
    try:
        for _ in procs:
            assert await raw.blpop([f"{ns}:ready"], timeout=30) is not None
        await raw.rpush(f"{ns}:go", b"1", b"1")
        outputs = [await asyncio.to_thread(p.communicate, timeout=30) for p in procs]
    finally:
        for p in procs:
            p.kill() if p.poll() is None else None
    for (out, err), proc in zip(outputs, procs, strict=True):
        assert proc.returncode == 0, err.decode()
        assert orjson.loads(out) == [f"value of {k}" for k in keys]
    counts = [int(await raw.get(f"{ns}:calls:{k}") or 0) for k in keys]
    assert counts == [1] * len(keys)


async def test_an_invalidation_in_one_process_reaches_the_other_within_the_bound(
    redis: RedisServer, raw: aioredis.Redis
) -> None:
    ns = _ns()
    proc = _worker("watch", redis.url, ns, "shared")
    try:
        assert await raw.blpop([f"{ns}:ready"], timeout=30) is not None
        async with TieredCache(redis=_tier(redis.url, ns)) as cache:
            sent = time.time()
            assert await cache.invalidate_tags(["watched"]) >= 1  # the key, in Redis
            reply = await raw.blpop([f"{ns}:gone"], timeout=30)
        assert reply is not None
        delay = float(reply[1]) - sent
        assert 0 <= delay < INVALIDATION_BOUND_S
        _, err = await asyncio.to_thread(proc.communicate, timeout=30)
        assert proc.returncode == 0, err.decode()
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


async def test_redis_outage_degrades_to_l1_and_the_tier_recovers(
    own_redis: RedisServer,
) -> None:
    breaker = CircuitBreaker(
        name="cache", window_size=4, minimum_calls=2, wait_in_open_s=0.2, failure_rate_threshold=0.5
    )
    loads = 0

    async def loader() -> str:
        nonlocal loads
        loads += 1
        return f"load {loads}"

    tier = _tier(own_redis.url, _ns(), timeout_s=0.2, breaker=breaker)
    async with TieredCache(redis=tier) as cache:
        assert await cache.get_or_load("k", loader, ttl_s=60) == "load 1"
        await asyncio.to_thread(own_redis.stop)
        for _ in range(20):  # every call answered, from L1
            assert await cache.get_or_load("k", loader, ttl_s=60) == "load 1"
        assert await cache.get_or_load("other", loader, ttl_s=60) == "load 2"  # L1-only miss
        await cache.set("written", 1)
        assert await cache.invalidate_tags(["some-tag"]) == 0  # kept for replay
        for _ in range(5):
            await cache.get("absent")  # L1 misses ask L2, which fails
        stats = cache.stats()
        assert stats.l2 is not None
        assert stats.l2.errors >= 2
        assert stats.l2.circuit == "open"
        assert not stats.l2.subscribed

        await asyncio.to_thread(own_redis.start)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:  # bounded wait for the breaker's half-open trial
            await cache.set("probe", 1)
            l2 = cache.stats().l2
            if l2 is not None and l2.circuit == "closed" and l2.subscribed:
                break
            await asyncio.sleep(0.05)
        l2 = cache.stats().l2
        assert l2 is not None
        assert (l2.circuit, l2.subscribed) == ("closed", True)
        assert not cache._pending  # the invalidation made during the outage was replayed
        client = aioredis.Redis.from_url(own_redis.url)
        try:
            assert await cache.get_or_load("after", loader, ttl_s=60) == "load 3"
            assert await client.exists(f"{tier.namespace}:k:after") == 1  # L2 written again
        finally:
            await client.aclose()


async def test_query_results_are_tagged_by_table_and_writes_invalidate_them(
    tmp_path: Path, redis: RedisServer
) -> None:
    ns = _ns()
    path = str(tmp_path / "q.db")
    async with (
        TieredCache(redis=_tier(redis.url, ns)) as cache,
        TieredCache(redis=_tier(redis.url, ns)) as other_process_cache,
        SQLiteDatabase("main", path=path, cache=cache) as db,
        SQLiteDatabase("main", path=path, cache=other_process_cache) as other,
    ):
        await db.execute("CREATE TABLE a (x INTEGER)")
        await db.execute("CREATE TABLE b (y INTEGER)")
        await db.execute("CREATE TABLE log (z INTEGER)")
        await db.execute("CREATE VIEW va AS SELECT x FROM a")
        await db.execute(
            "CREATE TRIGGER tb AFTER INSERT ON b BEGIN INSERT INTO log VALUES (new.y); END"
        )
        await db.execute("INSERT INTO a VALUES (1)")
        view_sql, log_sql, b_sql = "SELECT x FROM va", "SELECT count(*) FROM log", "SELECT y FROM b"
        tags = set(await db.cache_tags(view_sql))
        assert {"db:main", "table:main:a"} <= tags  # the table behind the view
        assert "db:main:?" not in tags  # certain: the engine said so
        assert [r[0] for r in await db.fetch(view_sql, cache_ttl_s=60)] == [1]
        assert [r[0] for r in await db.fetch(log_sql, cache_ttl_s=60)] == [0]
        loads = cache.stats().loads

        await db.execute("INSERT INTO b VALUES (5)")  # writes b and, by the trigger, log
        assert [r[0] for r in await db.fetch(view_sql, cache_ttl_s=60)] == [1]  # untouched: a hit
        assert cache.stats().loads == loads
        assert [r[0] for r in await db.fetch(log_sql, cache_ttl_s=60)] == [1]  # trigger seen

        # the other process caches b, then this one writes b in a transaction
        assert [r[0] for r in await other.fetch(b_sql, cache_ttl_s=60)] == [5]
        b_key = other.cache_key(b_sql)
        assert other_process_cache.l1.get(b_key) is not None
        async with db.transaction() as tx:
            await tx.execute("UPDATE b SET y = 6")
        deadline = time.monotonic() + INVALIDATION_BOUND_S  # pub/sub delivery, bounded
        while other_process_cache.l1.get(b_key) is not None and time.monotonic() < deadline:
            await asyncio.sleep(0.002)
        assert [r[0] for r in await other.fetch(b_sql, cache_ttl_s=60)] == [6]

        # CRUD and batch writes invalidate too
        await db.insert("a", {"x": 2})
        assert sorted(r[0] for r in await db.fetch(view_sql, cache_ttl_s=60)) == [1, 2]
        await db.batch(["DELETE FROM a"])
        assert await db.fetch(view_sql, cache_ttl_s=60) == []


async def test_the_tier_gate_hands_its_one_connection_to_every_waiter(redis: RedisServer) -> None:
    ns = _ns()
    async with TieredCache(redis=_tier(redis.url, ns, max_connections=1), max_entries=1) as cache:
        for i in range(50):
            await cache.set(f"k{i}", i, ttl_s=60)
        # an L1 of one entry: nearly every get below reads Redis, 50 at once on one slot
        values = await asyncio.gather(*(cache.get(f"k{i}") for i in range(50)))
        assert values == list(range(50))
        stats = cache.stats()
        assert stats.l2 is not None
        assert stats.l2.errors == 0
        assert stats.l2.hits >= 49


async def test_concurrent_l2_hits_each_get_their_own_value(redis: RedisServer) -> None:
    """L2 gets are auto-pipelined: 200 concurrent gets of 100 keys, each answered
    with its own key's value, from a process whose L1 is empty."""
    ns = _ns()
    async with (
        TieredCache(redis=_tier(redis.url, ns)) as writer,
        TieredCache(redis=_tier(redis.url, ns), max_entries=1) as reader,
    ):
        for i in range(100):
            await writer.set(f"k{i}", {"i": i, "tags": ["a", str(i)]}, ttl_s=60)
        keys = [f"k{i % 100}" for i in range(200)]
        values = await asyncio.gather(*(reader.get(k) for k in keys))
        stats = reader.stats()
    assert values == [{"i": i % 100, "tags": ["a", str(i % 100)]} for i in range(200)]
    assert stats.l2 is not None
    assert (stats.l2.hits, stats.l2.misses, stats.l2.errors) == (200, 0, 0)
