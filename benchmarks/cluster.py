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

``us_per_admission`` is ``1 / throughput``.

**Upstream requests per second through 1, 2 and 4 workers**: ``iogate serve
--workers N`` relaying ``GET /data.json`` of a local nginx
(``POST /v1/upstreams/n/request``) under ``wrk -t2 -c32``, with
``rate_limit_per_second`` set far above the load, kept in process
(``iogate.ratelimit.local``) or in Redis (``iogate.ratelimit.redis``,
``[cluster]``). Everything shares the machine's cores (wrk included), so the
scaling is bounded by them.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from iogate.cluster import RedisLimits
from iogate.policies import RateLimiter

from .databases import compare
from .harness import Result, servers_apart

TITLE = "rate-limit admissions at 32 callers (higher is better)"
BASELINE = "iogate.ratelimit.local"
COMPARE = None

CALLERS = 32
TARGET_RATIO = 0.8
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


def _serve_rps(
    tmp: Path, nginx_url: str, redis_url: str | None, workers: int, seconds: int
) -> float:
    from tests.servers import free_port, wait_for_port

    from .gateway import _wrk

    config = tmp / f"iogate-{workers}-{'redis' if redis_url else 'local'}.toml"
    text = f'[upstreams.n]\nbase_url = "{nginx_url}"\nrate_limit_per_second = 1000000\n'
    if redis_url is not None:
        text += f'\n[cluster]\nredis_url = "{redis_url}"\nexpected_processes = {workers}\n'
    config.write_text(text)
    script = tmp / "post.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        'wrk.body = \'{"method": "GET", "path": "/data.json"}\'\n'
    )
    port = free_port()
    command = [sys.executable, "-m", "iogate", "serve", "-c", str(config), "--port", str(port)]
    proc = subprocess.Popen(
        [*command, "--workers", str(workers)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_port(port, proc, "iogate serve")
        url = f"http://127.0.0.1:{port}/v1/upstreams/n/request"
        _wrk(url, script, max(1, seconds // 2))  # warm-up: every worker up
        return _wrk(url, script, seconds)["requests_per_s"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _through_workers(redis_url: str, seconds: int) -> list[Result]:
    from .upstreams import nginx

    results = []
    with nginx() as nginx_url, tempfile.TemporaryDirectory(prefix="iogate-cluster-") as tmp:
        for workers in (1, 2, 4):
            for subject, url in (
                ("iogate.ratelimit.local", None),
                ("iogate.ratelimit.redis", redis_url),
            ):
                rps = _serve_rps(Path(tmp), nginx_url, url, workers, seconds)
                results.append(
                    Result(subject, f"upstream requests/s, {workers} worker(s)", rps, "/s")
                )
    return results


async def run(*, quick: bool = False) -> list[Result]:
    """Measure admissions through both limiters, then requests through 1, 2, 4 workers."""
    from tests.servers import redis_server

    with servers_apart(redis_server()) as server:
        results = await _admissions(server.url, 0.3 if quick else 1.0, 2 if quick else 5)
        results += await asyncio.to_thread(_through_workers, server.url, 2 if quick else 5)
    return results


def summary(results: Sequence[Result]) -> list[str]:
    """The shared limiter's cost relative to the in-process one."""
    by = {(r.subject, r.metric): r.value for r in results}
    metric = f"admissions ({CALLERS} callers)"
    local, redis = by[(BASELINE, metric)], by[("iogate.ratelimit.redis", metric)]
    lines = [
        f"Redis-backed limiter: {redis:,.0f} admissions/s at {CALLERS} callers, "
        f"{redis / local:.2f}x the in-process limiter ({local:,.0f}/s)"
    ]
    for workers in (1, 2, 4):
        metric = f"upstream requests/s, {workers} worker(s)"
        if (BASELINE, metric) not in by:
            continue
        a, b = by[(BASELINE, metric)], by[("iogate.ratelimit.redis", metric)]
        verdict = (
            ""
            if workers != 1
            else f" (target >= {TARGET_RATIO}x: {'met' if b >= TARGET_RATIO * a else 'MISSED'})"
        )
        lines.append(
            f"{workers} worker(s): redis {b:,.0f}/s vs local {a:,.0f}/s = {b / a:.2f}x{verdict}"
        )
    return lines
