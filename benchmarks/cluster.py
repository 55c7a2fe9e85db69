"""Rate limits shared through Redis (``[cluster]``) vs the in-process limiter.

**Admissions per second at 32 concurrent callers** (one process, against a
temporary ``redis-server`` on a CPU of its own), each caller looping on
``await RateLimiter.acquire()`` with a limit far above the load (nothing waits,
nothing is refused):

* ``iogate.ratelimit.local``  the in-process token bucket (plus one ``sleep(0)``:
                              it never suspends, and the callers must take turns)
* ``iogate.ratelimit.redis``  the same limiter on :class:`iogate.cluster.RedisLimits`:
                              one GCRA script (``EVALSHA``) per admission, sent
                              through the auto-pipeline, so concurrent admissions
                              share round trips

``us_per_admission`` is ``1 / throughput``. The upstream requests/s through 1,
2 and 4 gateway workers is not measured here yet.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence

from iogate.cluster import RedisLimits
from iogate.policies import RateLimiter

from .databases import compare
from .harness import Result, servers_apart

TITLE = "rate-limit admissions at 32 callers (higher is better)"
BASELINE = "iogate.ratelimit.local"
COMPARE = None

CALLERS = 32
RATE = 1e9  # far above the load: every admission is immediate


async def _admissions(url: str, seconds: float, repeats: int) -> list[Result]:
    limits = RedisLimits(url, prefix=f"bench{uuid.uuid4().hex[:6]}:")
    limits.open()
    try:
        local = RateLimiter(rate=RATE, burst=RATE, name="local")
        shared = RateLimiter(
            rate=RATE, burst=RATE, name="redis", shared=limits.buckets("rl:b", ((RATE, RATE),))
        )

        async def local_call() -> None:
            await local.acquire()
            await asyncio.sleep(0)  # the in-process limiter never suspends: let others run

        subjects: dict[str, Callable[[], Awaitable[object]]] = {
            "iogate.ratelimit.local": local_call,
            "iogate.ratelimit.redis": shared.acquire,
        }
        best = await compare(subjects, callers=CALLERS, seconds=seconds, repeats=repeats)
        assert not limits.fallback, "Redis was unreachable during the benchmark"
    finally:
        await limits.aclose()
    results = [Result(s, f"admissions ({CALLERS} callers)", v, "/s") for s, v in best.items()]
    results += [Result(s, "us_per_admission", 1e6 / v, "us") for s, v in best.items()]
    return results


async def run(*, quick: bool = False) -> list[Result]:
    """Measure admissions through both limiters."""
    from tests.servers import redis_server

    with servers_apart(redis_server()) as server:
        return await _admissions(server.url, 0.3 if quick else 1.0, 2 if quick else 5)


def summary(results: Sequence[Result]) -> list[str]:
    """The shared limiter's cost relative to the in-process one."""
    by = {(r.subject, r.metric): r.value for r in results}
    metric = f"admissions ({CALLERS} callers)"
    local, redis = by[(BASELINE, metric)], by[("iogate.ratelimit.redis", metric)]
    return [
        f"Redis-backed limiter: {redis:,.0f} admissions/s at {CALLERS} callers, "
        f"{redis / local:.2f}x the in-process limiter ({local:,.0f}/s)"
    ]
