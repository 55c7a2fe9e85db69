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

``us_per_call`` is ``1 / throughput``; ``redis_round_trips_per_call`` is the
Redis server's read events (``INFO stats``, ``total_reads_processed``: one per
batch of commands a client sent) per script run (``INFO commandstats``).

**Upstream requests per second through 1, 2 and 4 workers**: ``iogate serve
--workers N`` relaying ``GET /data.json`` of a local nginx
(``POST /v1/upstreams/n/request``) under ``wrk -t2 -c32``, with
``rate_limit_per_second`` set far above the load, kept in process
(``iogate.gateway --workers N, ratelimit.local``) or in Redis
(``…, ratelimit.redis``, ``[cluster]``), and nginx alone as the set-up's
ceiling. All seven servers are started once; 3 rounds alternate wrk over
them, medians reported. They run on every CPU (:func:`~benchmarks.harness.all_cpus`:
``servers_apart`` had pinned this process, and so everything it started, to
one CPU — which is why an earlier version of this scenario showed 2 and 4
workers *slower* than 1). wrk, nginx and Redis share the same two cores, so
the scaling is bounded by them, and 4 workers on 2 cores cannot scale past 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from iogate.cluster import RedisLimits
from iogate.policies import RateLimiter

from .databases import compare
from .harness import Result, all_cpus, servers_apart

TITLE = "rate-limit admissions at 32 callers (higher is better)"
BASELINE = "iogate.ratelimit.local"
COMPARE = None

CALLERS = 32
TARGET_RATIO = 0.8
RATE = 1e9  # far above the load: every admission is immediate


async def _admissions(url: str, seconds: float, repeats: int) -> list[Result]:
    import redis

    info = redis.Redis.from_url(url)
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
        before = _server_counts(info)
        best = await compare(subjects, callers=CALLERS, seconds=seconds, repeats=repeats)
        after = _server_counts(info)
        assert not limits.fallback, "Redis was unreachable during the benchmark"
    finally:
        await limits.aclose()
        info.close()
    results = [Result(s, "ops_per_s", v, "/s") for s, v in best.items()]
    results += [Result(s, "us_per_call", 1e6 / v, "us") for s, v in best.items()]
    reads, scripts = (a - b for a, b in zip(after, before, strict=True))
    # the server's read events (one per batch a client sent; the two INFO calls
    # add two) per script run: round trips per admission, at most 1
    trips = (reads - 2) / scripts
    results.append(Result("iogate.ratelimit.redis", "redis_round_trips_per_call", trips, ""))
    return results


def _server_counts(client: Any) -> tuple[int, int]:
    """Redis ``INFO`` through ``client`` (redis-py, sync): read events processed,
    and scripts run (``EVALSHA`` and ``EVAL``) so far."""
    stats = client.info("stats")
    commands = client.info("commandstats")
    scripts = sum(commands.get(f"cmdstat_{c}", {}).get("calls", 0) for c in ("evalsha", "eval"))
    return int(stats["total_reads_processed"]), int(scripts)


WORKERS = (1, 2, 4)
LIMITERS = (("ratelimit.local", False), ("ratelimit.redis", True))


def _subject(workers: int, limiter: str) -> str:
    return f"iogate.gateway --workers {workers}, {limiter}"


@contextlib.contextmanager
def _gateway(tmp: Path, nginx_url: str, redis_url: str | None, workers: int) -> Iterator[str]:
    """``iogate serve --workers N`` relaying to nginx; yields the relay URL."""
    from tests.servers import free_port, wait_for_port

    config = tmp / f"iogate-{workers}-{'redis' if redis_url else 'local'}.toml"
    text = f'[upstreams.n]\nbase_url = "{nginx_url}"\nrate_limit_per_second = 1000000\n'
    if redis_url is not None:
        prefix = f"bench{uuid.uuid4().hex[:6]}:"
        text += (
            f'\n[cluster]\nredis_url = "{redis_url}"\nkey_prefix = "{prefix}"\n'
            f"expected_processes = {workers}\n"
        )
    config.write_text(text)
    port = free_port()
    command = [sys.executable, "-m", "iogate", "serve", "-c", str(config), "--port", str(port)]
    proc = subprocess.Popen(
        [*command, "--workers", str(workers)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_port(port, proc, "iogate serve")
        yield f"http://127.0.0.1:{port}/v1/upstreams/n/request"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _through_workers(redis_url: str, seconds: int, rounds: int) -> list[Result]:
    """Every gateway started once (an idle one costs next to nothing), then
    ``rounds`` rounds alternating wrk over them, nginx alone first (the
    ceiling of this set-up); the medians."""
    from .gateway import _wrk
    from .upstreams import nginx

    with (
        all_cpus(),  # servers_apart pinned this process to one CPU: the workers need both
        nginx() as nginx_url,
        tempfile.TemporaryDirectory(prefix="iogate-cluster-") as name,
        contextlib.ExitStack() as stack,
    ):
        tmp = Path(name)
        post = tmp / "post.lua"
        post.write_text(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            'wrk.body = \'{"method": "GET", "path": "/data.json"}\'\n'
        )
        get = tmp / "get.lua"
        get.write_text("")
        urls = {"nginx": (f"{nginx_url}/data.json", get)}
        for workers in WORKERS:
            for limiter, shared in LIMITERS:
                url = stack.enter_context(
                    _gateway(tmp, nginx_url, redis_url if shared else None, workers)
                )
                urls[_subject(workers, limiter)] = (url, post)
        for url, lua in urls.values():
            _wrk(url, lua, 1)  # warm-up: every worker up, pools open
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in urls}
        for _ in range(rounds):
            for subject, (url, lua) in urls.items():
                runs[subject].append(_wrk(url, lua, seconds))
    results = []
    for subject, measured in runs.items():
        for metric, unit in (("ops_per_s", "/s"), ("p50_ms", "ms"), ("p99_ms", "ms")):
            value = statistics.median(m[metric] for m in measured)
            results.append(Result(subject, metric, value, unit))
    return results


async def run(*, quick: bool = False) -> list[Result]:
    """Measure admissions through both limiters, then requests through 1, 2, 4 workers."""
    from tests.servers import redis_server

    with servers_apart(redis_server()) as server:
        results = await _admissions(server.url, 0.3 if quick else 1.0, 2 if quick else 5)
        results += await asyncio.to_thread(
            _through_workers, server.url, 2 if quick else 4, 1 if quick else 3
        )
    return results


def summary(results: Sequence[Result]) -> list[str]:
    """The shared limiter's cost relative to the in-process one, and the scaling."""
    by = {(r.subject, r.metric): r.value for r in results}
    local, redis = by[(BASELINE, "ops_per_s")], by[("iogate.ratelimit.redis", "ops_per_s")]
    trips = by[("iogate.ratelimit.redis", "redis_round_trips_per_call")]
    lines = [
        f"Redis-backed limiter: {redis:,.0f} admissions/s at {CALLERS} callers, "
        f"{redis / local:.2f}x the in-process limiter ({local:,.0f}/s), "
        f"{trips:.3f} Redis round trips per admission"
    ]
    if ("nginx", "ops_per_s") in by:
        lines.append(f"nginx alone (the upstream's ceiling): {by[('nginx', 'ops_per_s')]:,.0f}/s")
    one = by.get((_subject(1, "ratelimit.local"), "ops_per_s"))
    for workers in WORKERS:
        a = by.get((_subject(workers, "ratelimit.local"), "ops_per_s"))
        b = by.get((_subject(workers, "ratelimit.redis"), "ops_per_s"))
        if a is None or b is None or one is None:
            continue
        verdict = (
            f" (target >= {TARGET_RATIO}x: {'met' if b >= TARGET_RATIO * a else 'MISSED'})"
            if workers == 1
            else ""
        )
        lines.append(
            f"{workers} worker(s): redis {b:,.0f}/s vs local {a:,.0f}/s = {b / a:.2f}x{verdict};"
            f" local {a / one:.2f}x one worker"
        )
    return lines
