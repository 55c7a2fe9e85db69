"""Cache hits: iogate's tiered cache vs cashews and aiocache, and an L2 hit vs redis-py.

**L1 hit, µs per call** (one process, default asyncio loop, interleaved,
best of N — :func:`benchmarks.harness.time_per_call`); every subject awaits
one ``get`` of a key that is present:

* ``bare``                      ``await noop()`` — the cost of one await
* ``iogate.get``                ``await TieredCache.get(key)`` (L1, TTL checked)
* ``iogate.get_or_load``        ``await TieredCache.get_or_load(key, loader)`` (L1 hit,
                                XFetch check included)
* ``cashews.mem``               ``await cashews Cache("mem://").get(key)``
* ``aiocache.SimpleMemoryCache`` ``await SimpleMemoryCache().get(key)``

**L2 hit, gets per second** at 16 concurrent callers against a temporary
``redis-server``: ``raw redis-py GET`` vs ``iogate L2 hit`` —
``TieredCache.get`` with an L1 of one entry and each caller alternating
between two keys of its own, so every call misses L1, reads Redis, decodes
the entry and copies it into L1 (the whole L2-hit path; single-flight cannot
merge the calls, the keys differ).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import redis.asyncio as aioredis

from iogate.cache.redis import RedisTier
from iogate.cache.tiered import TieredCache

from .databases import compare
from .harness import Result, servers_apart, time_per_call

TITLE = "cache hits: L1 µs per get (lower is better); L2 gets per second (higher is better)"
BASELINE = "bare"
COMPARE = None

L1_TARGET_US = 1.0
L2_TARGET_RATIO = 0.9
CALLERS = 16
VALUE = {"id": 1, "name": "ann", "tags": ["a", "b"], "score": 9.5}


async def noop() -> None:
    return None


async def _l1_subjects() -> dict[str, Callable[[], Awaitable[object]]]:
    from aiocache import SimpleMemoryCache
    from cashews import Cache

    cache = TieredCache(xfetch_beta=1.0)
    loads = 0

    async def loader() -> object:
        nonlocal loads
        loads += 1
        if loads > 1:
            raise AssertionError("an L1 hit never loads")
        return VALUE

    # loaded (not set), so the entry has a compute time and the XFetch test runs
    await cache.get_or_load("k", loader, ttl_s=3600)

    cashews = Cache()
    cashews.setup("mem://")
    await cashews.set("k", VALUE, expire=3600)
    aiocache = SimpleMemoryCache()
    await aiocache.set("k", VALUE, ttl=3600)
    return {
        "bare": noop,
        "iogate.get": lambda: cache.get("k"),
        "iogate.get_or_load": lambda: cache.get_or_load("k", loader, ttl_s=3600),
        "cashews.mem": lambda: cashews.get("k"),
        "aiocache.SimpleMemoryCache": lambda: aiocache.get("k"),
    }


async def _l2(url: str, seconds: float, repeats: int) -> list[Result]:
    # the same 5 s socket timeout as redis-py's default for the raw client
    tier = RedisTier(url, namespace="bench", max_connections=CALLERS, timeout_s=5.0)
    raw = aioredis.Redis.from_url(url, max_connections=CALLERS)
    async with TieredCache(redis=tier, max_entries=1, xfetch_beta=0.0) as cache:
        keys = [(f"c{i}a", f"c{i}b") for i in range(CALLERS)]
        for pair in keys:
            for key in pair:
                await cache.set(key, VALUE, ttl_s=3600)
                await raw.set(f"raw:{key}", b'{"id":1,"name":"ann","tags":["a","b"],"score":9.5}')
        turn = {"iogate": 0, "raw": 0}

        def alternating(
            prefix: str, get: Callable[[str], Awaitable[object]]
        ) -> Callable[[], Awaitable[object]]:
            def call() -> Awaitable[object]:
                n = turn[prefix] = turn[prefix] + 1
                pair = keys[n % CALLERS]
                return get(pair[(n // CALLERS) % 2])

            return call

        subjects = {
            "raw redis-py GET": alternating("raw", lambda k: raw.get(f"raw:{k}")),
            "iogate L2 hit": alternating("iogate", cache.get),
        }
        before = cache.stats()
        best = await compare(subjects, callers=CALLERS, seconds=seconds, repeats=repeats)
        after = cache.stats()
        assert after.l2 is not None
        assert before.l2 is not None
        l2_hits = after.l2.hits - before.l2.hits
        l1_hits = after.l1.hits - before.l1.hits
        if l1_hits > l2_hits / 100:  # the subject must measure L2, not L1
            raise AssertionError(f"L1 answered {l1_hits} of {l2_hits + l1_hits} gets")
        if after.l2.misses != before.l2.misses or after.l2.errors:  # every get found its value
            raise AssertionError("an L2 get missed or failed")
    await raw.aclose()
    return [Result(s, f"redis get ({CALLERS} callers)", v, "gets/s") for s, v in best.items()]


async def run(*, quick: bool = False) -> list[Result]:
    """L1 µs per hit for every subject; then L2 throughput on a temporary redis-server."""
    from tests.servers import redis_server

    subjects = await _l1_subjects()
    for name, call in subjects.items():
        if name != "bare" and await call() != VALUE:
            raise AssertionError(f"{name} did not return the cached value")
    seconds = await time_per_call(subjects, repeats=3 if quick else 25)
    results = [Result(n, "us_per_get", s * 1e6, "us") for n, s in seconds.items()]
    with servers_apart(redis_server()) as server:  # the server on a CPU of its own
        results += await _l2(server.url, *((0.3, 1) if quick else (1.5, 5)))
    return results


def summary(results: Sequence[Result]) -> list[str]:
    """The two targets of issue 6."""
    by = {(r.metric, r.subject): r.value for r in results}
    lines = []
    for subject in ("iogate.get", "iogate.get_or_load"):
        value = by[("us_per_get", subject)]
        verdict = "met" if value <= L1_TARGET_US else "MISSED"
        lines.append(f"target {subject} L1 hit <= {L1_TARGET_US:g} us: {value:.2f} us ({verdict})")
    for peer in ("cashews.mem", "aiocache.SimpleMemoryCache"):
        ratio = by[("us_per_get", peer)] / by[("us_per_get", "iogate.get")]
        lines.append(f"{peer} / iogate.get = {ratio:.1f}x (reported)")
    metric = f"redis get ({CALLERS} callers)"
    ratio = by[(metric, "iogate L2 hit")] / by[(metric, "raw redis-py GET")]
    verdict = "met" if ratio >= L2_TARGET_RATIO else "MISSED"
    lines.append(
        f"target L2 hit >= {L2_TARGET_RATIO:g}x raw redis-py GET: {ratio:.2f}x ({verdict})"
    )
    return lines
