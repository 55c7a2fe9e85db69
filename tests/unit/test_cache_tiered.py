"""The in-process cache: XFetch, TTLs, stale windows, single-flight, tags, byte
bound, serialization and @cached — on a fake clock, with no I/O and no sleeps."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import uuid
from decimal import Decimal
from typing import Any

import pytest

import iogate
from iogate.cache._xfetch import should_refresh_early
from iogate.cache.memory import MemoryCache
from iogate.cache.serialization import (
    CachedRow,
    Entry,
    decode_entry,
    decode_value,
    encode_entry,
    encode_value,
)
from iogate.cache.tiered import TieredCache
from iogate.databases._tables import extract_tables


class Wall:
    """A settable wall clock."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Loader:
    """A loader that counts its calls, returns ``value`` or raises ``error``,
    and takes ``took`` seconds of the fake clock."""

    def __init__(self, wall: Wall, value: Any = "v", took: float = 0.0) -> None:
        self.wall = wall
        self.value = value
        self.took = took
        self.calls = 0
        self.error: Exception | None = None
        self.gate: asyncio.Event | None = None

    async def __call__(self) -> Any:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        self.wall.now += self.took
        if self.error is not None:
            raise self.error
        return self.value


def _cache(wall: Wall, **kwargs: Any) -> TieredCache:
    kwargs.setdefault("xfetch_beta", 0.0)
    return TieredCache(wall_clock=wall, **kwargs)


# -- XFetch ---------------------------------------------------------------------------


def test_xfetch_follows_the_papers_formula() -> None:
    # now - delta * beta * ln(1 - r) >= expiry
    args = {"expires_at": 100.0, "delta_s": 2.0, "beta": 1.0}
    r = 1 - math.exp(-5.0)  # -ln(1 - r) = 5: refresh when now >= 100 - 2 * 5 = 90
    assert should_refresh_early(now=90.0, rng=lambda: r, **args)
    assert not should_refresh_early(now=89.9, rng=lambda: r, **args)
    # beta doubles the lead time
    assert should_refresh_early(now=80.0, rng=lambda: r, **{**args, "beta": 2.0})
    # rng() = 0 gives ln(1) = 0: only at expiry
    assert not should_refresh_early(now=99.99, rng=lambda: 0.0, **args)
    assert should_refresh_early(now=100.0, rng=lambda: 0.0, **args)
    # beta 0 or an instant computation: no early refresh
    assert not should_refresh_early(now=99.0, rng=lambda: r, **{**args, "beta": 0.0})
    assert not should_refresh_early(now=99.0, rng=lambda: r, **{**args, "delta_s": 0.0})


async def test_xfetch_refreshes_early_in_the_background_and_serves_the_current_value() -> None:
    wall = Wall()
    r = 1 - math.exp(-5.0)
    cache = _cache(wall, xfetch_beta=1.0, rng=lambda: r)
    loader = Loader(wall, "old", took=2.0)  # delta = 2 s
    assert await cache.get_or_load("k", loader, ttl_s=60) == "old"
    expires = wall.now + 60
    wall.now = expires - 10.5  # lead 2 * 1 * 5 = 10 s not reached yet
    loader.value = "new"
    assert await cache.get_or_load("k", loader, ttl_s=60) == "old"
    assert loader.calls == 1
    wall.now = expires - 9.5  # within the lead: refresh starts, the caller is not held
    result = await cache.get_or_load_result("k", loader, ttl_s=60)
    assert (result.value, result.stale, result.source) == ("old", False, "l1")
    await asyncio.gather(*cache._background)
    assert loader.calls == 2
    assert await cache.get("k") == "new"
    assert cache.stats().early_refreshes == 1


# -- TTL and stale windows ------------------------------------------------------------


async def test_ttl_expiry_and_default_ttl_on_a_fake_clock() -> None:
    wall = Wall()
    cache = _cache(wall, default_ttl_s=10)
    await cache.set("a", 1)
    await cache.set("b", 2, ttl_s=100)
    wall.now += 9.99
    assert await cache.get("a") == 1
    wall.now += 0.01
    assert await cache.get("a") is None
    assert await cache.get("b") == 2
    with pytest.raises(ValueError, match="ttl"):
        await cache.set("c", 3, ttl_s=0)


async def test_stale_while_revalidate_serves_stale_once_and_refreshes() -> None:
    wall = Wall()
    cache = _cache(wall, stale_while_revalidate_s=30)
    loader = Loader(wall, "v1")
    await cache.get_or_load("k", loader, ttl_s=10)
    wall.now += 15  # expired 5 s ago, within the 30 s window
    loader.value = "v2"
    result = await cache.get_or_load_result("k", loader, ttl_s=10)
    assert (result.value, result.stale) == ("v1", True)
    await asyncio.gather(*cache._background)
    fresh = await cache.get_or_load_result("k", loader, ttl_s=10)
    assert (fresh.value, fresh.stale) == ("v2", False)
    assert loader.calls == 2
    wall.now += 10 + 31  # past the window: a synchronous load
    loader.value = "v3"
    assert await cache.get_or_load("k", loader, ttl_s=10) == "v3"
    assert cache.stats().stale_served == 1


async def test_stale_if_error_serves_the_old_value_when_the_loader_fails() -> None:
    wall = Wall()
    cache = _cache(wall, stale_if_error_s=60)
    loader = Loader(wall, "good")
    await cache.get_or_load("k", loader, ttl_s=10)
    wall.now += 20
    loader.error = ConnectionError("database down")
    result = await cache.get_or_load_result("k", loader, ttl_s=10)
    assert (result.value, result.stale, result.source) == ("good", True, "l1")
    wall.now += 60  # 70 s after expiry: beyond the window, the error is raised
    with pytest.raises(ConnectionError):
        await cache.get_or_load("k", loader, ttl_s=10)
    assert cache.stats().stale_served == 1


async def test_without_a_stale_window_a_failing_loader_raises() -> None:
    wall = Wall()
    cache = _cache(wall)
    loader = Loader(wall)
    loader.error = iogate.TransientDatabaseError("down")
    with pytest.raises(iogate.TransientDatabaseError):
        await cache.get_or_load("k", loader)
    loader.error = None
    assert await cache.get_or_load("k", loader) == "v"  # errors are not cached


# -- single-flight --------------------------------------------------------------------


async def test_a_thousand_concurrent_misses_make_one_loader_call() -> None:
    wall = Wall()
    cache = _cache(wall)
    loader = Loader(wall, {"rows": [1, 2, 3]})
    loader.gate = asyncio.Event()
    tasks = [asyncio.create_task(cache.get_or_load("hot", loader)) for _ in range(1000)]
    while cache.stats().coalesced < 999:  # every caller has joined the flight
        await asyncio.sleep(0)
    loader.gate.set()
    results = await asyncio.gather(*tasks)
    assert loader.calls == 1
    assert all(r == {"rows": [1, 2, 3]} for r in results)
    assert cache.stats().coalesced == 999


async def test_a_cancelled_caller_does_not_cancel_the_shared_load() -> None:
    wall = Wall()
    cache = _cache(wall)
    loader = Loader(wall, 42)
    loader.gate = asyncio.Event()
    first = asyncio.create_task(cache.get_or_load("k", loader))
    second = asyncio.create_task(cache.get_or_load("k", loader))
    while cache.stats().coalesced < 1:
        await asyncio.sleep(0)
    first.cancel()
    loader.gate.set()
    assert await second == 42
    assert await cache.get("k") == 42


# -- tags, prefixes, invalidation during a load ---------------------------------------


async def test_tags_and_prefix_invalidate_only_their_entries() -> None:
    wall = Wall()
    cache = _cache(wall)
    await cache.set("user:1", "ann", tags=["users", "user:1"])
    await cache.set("user:2", "bob", tags=["users"])
    await cache.set("order:1", "o1", tags=["orders"])
    assert await cache.invalidate_tags(["user:1"]) == 1
    assert await cache.get("user:1") is None
    assert await cache.get("user:2") == "bob"
    assert await cache.invalidate_tags(["users"]) == 1
    assert await cache.get("order:1") == "o1"
    await cache.set("order:2", "o2")
    assert await cache.invalidate_prefix("order:") == 2
    assert len(cache.l1) == 0
    assert len(cache._tags) == 0  # the tag index follows removals


async def test_a_load_overlapping_an_invalidation_of_its_tags_is_not_stored() -> None:
    wall = Wall()
    cache = _cache(wall)
    loader = Loader(wall, "read before the write")
    loader.gate = asyncio.Event()
    task = asyncio.create_task(cache.get_or_load("q", loader, tags=["table:t"]))
    while loader.calls == 0:
        await asyncio.sleep(0)
    await cache.invalidate_tags(["table:t"])  # a write committed while the query ran
    loader.gate.set()
    assert await task == "read before the write"  # returned to its caller...
    assert await cache.get("q") is None  # ...but not kept


# -- L1 bounds ------------------------------------------------------------------------


async def test_the_byte_bound_holds() -> None:
    wall = Wall()
    cache = _cache(wall, max_entries=10_000, max_bytes=20_000)
    for i in range(200):
        await cache.set(f"k{i}", "x" * 500)
        assert cache.l1.bytes <= 20_000
    stats = cache.stats().l1
    assert stats.bytes <= stats.max_bytes == 20_000
    assert stats.evictions > 150
    assert await cache.get("k199") == "x" * 500  # the most recent survive
    assert await cache.get("k0") is None
    await cache.set("huge", "y" * 30_000)  # larger than the bound: not kept
    assert await cache.get("huge") is None
    assert cache.l1.bytes <= 20_000


def test_memory_cache_is_lru_within_entry_and_byte_bounds() -> None:
    removed: list[object] = []
    cache = MemoryCache(max_entries=3, max_bytes=100, on_remove=lambda k, v: removed.append(k))
    for key in "abc":
        cache.set(key, key, size_bytes=30)
    assert cache.get("a") == "a"  # a becomes most recent
    cache.set("d", "d", size_bytes=30)  # 4 entries > 3: evict b (least recent)
    assert cache.get("b") is None
    cache.set("e", "e", size_bytes=50)  # 140 bytes > 100: evict c then a
    assert sorted(k for k in "abcde" if cache.get(k) is not None) == ["d", "e"]
    assert cache.bytes == 80
    assert removed == ["b", "c", "a"]
    with pytest.raises(ValueError, match="max_bytes"):
        MemoryCache(max_bytes=0)


# -- serialization --------------------------------------------------------------------


def test_typed_values_round_trip_without_pickle() -> None:
    value = {
        "int": 2**60,
        "float": 1.5,
        "nan": float("inf"),
        "dec": Decimal("1.10"),
        "bytes": b"\x00\xff",
        "dt": dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        "date": dt.date(2024, 1, 2),
        "time": dt.time(3, 4, 5),
        "td": dt.timedelta(seconds=90),
        "uuid": uuid.UUID(int=7),
        "tuple": (1, "a"),
        "list": [None, True],
        "int keys": {1: "one"},
        "tagged": {"$t": "not a tag"},
        "row": CachedRow(("id", "name"), (1, "ann")),
    }
    back = decode_value(encode_value(value))
    assert back == value
    assert back["row"]["name"] == "ann"
    assert back["row"].keys() == ("id", "name")
    entry = Entry([1, 2], expires_at=5.0, delta_s=0.25, tags=("t",))
    assert decode_entry(encode_entry(entry)) == entry
    with pytest.raises(TypeError, match="object"):
        encode_value(object())
    with pytest.raises(ValueError, match="malformed"):
        decode_entry(b"not json")


# -- @cached ----------------------------------------------------------------------------


async def test_cached_decorator_has_stable_keys_and_templates() -> None:
    wall = Wall()
    cache = _cache(wall)
    calls: list[tuple[int, str]] = []

    @iogate.cached(cache=cache, ttl_s=60, tags=["user:{user_id}"])
    async def profile(user_id: int, lang: str = "en") -> dict[str, Any]:
        calls.append((user_id, lang))
        return {"id": user_id, "lang": lang}

    assert await profile(1) == {"id": 1, "lang": "en"}
    assert await profile(user_id=1, lang="en") == {"id": 1, "lang": "en"}  # same key
    assert await profile(1, "fr") == {"id": 1, "lang": "fr"}
    assert calls == [(1, "en"), (1, "fr")]
    key = profile.key_for(1)
    assert key == profile.key_for(user_id=1, lang="en")
    assert key.startswith("fn:tests.unit.test_cache_tiered.")
    await cache.invalidate_tags(["user:1"])
    await profile(1)
    assert len(calls) == 3

    @iogate.cached(cache=lambda: cache, key="greeting:{name}")
    async def greet(name: str) -> str:
        return f"hi {name}"

    assert await greet("ann") == "hi ann"
    assert await cache.get("greeting:ann") == "hi ann"
    assert await greet.invalidate("ann") is True

    with pytest.raises(TypeError, match="coroutine"):
        iogate.cached(cache=cache)(lambda: 1)  # type: ignore[arg-type]


# -- PostgreSQL table extraction (conservative) -----------------------------------------


def test_postgres_extraction_names_tables_but_is_never_certain() -> None:
    tables = extract_tables(
        'SELECT * FROM users u JOIN "Orders" o ON o.uid = u.id -- FROM hidden\n'
        "WHERE u.name = 'FROM fake' AND o.id IN (SELECT id FROM public.items)"
    )
    assert tables.reads == {"users", "orders", "public.items"}
    assert tables.certain is False
    assert extract_tables("UPDATE accounts SET x = 1").reads == {"accounts"}


# -- [cache] config --------------------------------------------------------------------


def test_cache_config_table_builds_the_gateway_cache() -> None:
    from iogate.cache.config import build_cache
    from iogate.config import parse_config

    config = parse_config(
        {
            "cache": {
                "max_entries": 50,
                "max_bytes": 4096,
                "default_ttl": 12.5,
                "redis_url": "redis://127.0.0.1:1/0",
                "xfetch_beta": 2.0,
                "stale_if_error": 30,
            }
        },
        environ={},
    )
    cache = build_cache(config.cache)
    stats = cache.stats()
    assert (stats.l1.max_entries, stats.l1.max_bytes) == (50, 4096)
    assert cache.default_ttl_s == 12.5
    assert cache.xfetch_beta == 2.0
    assert cache.redis is not None
    assert parse_config({}, environ={}).cache.redis_url is None  # memory only by default
    with pytest.raises(iogate.ConfigError, match="redis_url"):
        parse_config({"cache": {"redis_url": "http://x"}}, environ={})
    with pytest.raises(iogate.ConfigError, match=r"cache\.max_entrys"):
        parse_config({"cache": {"max_entrys": 1}}, environ={})
