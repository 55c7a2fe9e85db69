"""``iogate serve --workers 4`` with ``[cluster]``: the workers share one limit.

An upstream's ``rate_limit_per_second = 50`` and a key's ``rate_limit = 50``
each let through ``burst + 50 x t`` requests in ``t`` seconds for the whole
deployment, however many workers serve them (in-process limits would let four
times as many through). Over 10 s that is 50 + 500 = 550, and the test holds
the deployment to it within ±5 % (±27) both ways, as issue 18 asks.

The window is the upstream's own: from the first to the last arrival it
counted (``SeenRequest.at``). Timing it from the clients' send times, as an
earlier version did, measured the gateway's queueing under load too: on a
loaded 2-core machine a request sent at ``t`` was admitted up to 0.2 s later,
which made the deployment look up to 6 % under the limit. The limiter itself
decides on one clock, Redis ``TIME`` read inside its script.

A key's ``max_concurrent = 3`` is global the same way: twelve slow requests
sent at once through the four workers reach the upstream three at a time, the
other nine are refused (``429 concurrency-limited``).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from pathlib import Path

import aiohttp

from iogate.server.keys import hash_key, new_key
from tests.servers import RedisServer, free_port, stop, wait_for_port
from tests.subprocess_env import child_env
from tests.upstream_app import INFLIGHT, UpstreamServer
from tests.waiting import until

RATE = 50
DURATION_S = 10.0
CLIENTS = 12
SLOTS = 3


def _config(
    redis: RedisServer, upstream: UpstreamServer, key_a: str, key_b: str, key_c: str
) -> str:
    return f"""
[upstreams.limited]
base_url = "{upstream.base_url}"
rate_limit_per_second = {RATE}
rate_limit_max_wait = 0

[upstreams.open]
base_url = "{upstream.base_url}"

[keys.a]
sha256 = "{hash_key(key_a)}"
scopes = ["upstream:limited"]

[keys.b]
sha256 = "{hash_key(key_b)}"
scopes = ["upstream:open"]
rate_limit = {RATE}
burst = {RATE}

[keys.c]
sha256 = "{hash_key(key_c)}"
scopes = ["upstream:open"]
max_concurrent = {SLOTS}

[cluster]
redis_url = "{redis.url}"
key_prefix = "t{uuid.uuid4().hex[:8]}:"
expected_processes = 4
"""


async def _hammer(
    session: aiohttp.ClientSession, url: str, key: str, path: str, until_s: float
) -> tuple[list[float], dict[int, int]]:
    """Send requests back to back until ``until_s`` (monotonic); the admission
    times and the count of each status."""
    admitted: list[float] = []
    statuses: dict[int, int] = {}
    headers = {"Authorization": f"Bearer {key}"}
    body = {"method": "GET", "path": path}
    while time.monotonic() < until_s:
        sent = time.monotonic()
        async with session.post(url, json=body, headers=headers) as resp:
            await resp.read()
            statuses[resp.status] = statuses.get(resp.status, 0) + 1
            if resp.status == 200:
                admitted.append(sent)
    return admitted, statuses


def _arrivals(upstream: UpstreamServer, path: str) -> list[float]:
    """When the upstream received each request for ``path`` (monotonic seconds)."""
    return sorted(r.at for r in upstream.seen if r.path == f"/api{path}")


async def test_four_workers_share_an_upstream_limit_and_a_key_limit(
    tmp_path: Path, redis: RedisServer, upstream: UpstreamServer
) -> None:
    key_a, key_b, key_c = new_key(), new_key(), new_key()
    (tmp_path / "iogate.toml").write_text(_config(redis, upstream, key_a, key_b, key_c))
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "iogate",
            "serve",
            "-c",
            "iogate.toml",
            "--port",
            str(port),
            "--workers",
            "4",
        ],
        cwd=tmp_path,
        env=child_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await asyncio.to_thread(wait_for_port, port, proc, "iogate serve")
        base = f"http://127.0.0.1:{port}/v1/upstreams"
        # one connection per client, accepted by whichever worker: spread over them
        connector = aiohttp.TCPConnector(limit=2 * CLIENTS)
        async with aiohttp.ClientSession(connector=connector) as session:
            # every worker up (each answers /health once its app has started)
            await asyncio.gather(
                *(session.get(f"http://127.0.0.1:{port}/health") for _ in range(8))
            )
            end = time.monotonic() + DURATION_S
            runs = [
                _hammer(session, f"{base}/limited/request", key_a, "/echo/up", end)
                for _ in range(CLIENTS)
            ] + [
                _hammer(session, f"{base}/open/request", key_b, "/echo/key", end)
                for _ in range(CLIENTS)
            ]
            results = await asyncio.gather(*runs)
            # a key's max_concurrent across the workers: twelve at once, each held 1.5 s
            slow = [
                _once(session, f"{base}/open/request", key_c, f"/slow/{i}?ms=1500")
                for i in range(4 * SLOTS)
            ]
            concurrent = sorted(await asyncio.gather(*slow))
    finally:
        await asyncio.to_thread(stop, proc)
    for half, path in ((results[:CLIENTS], "/echo/up"), (results[CLIENTS:], "/echo/key")):
        times = sorted(t for admitted, _ in half for t in admitted)
        statuses: dict[int, int] = {}
        for _, counts in half:
            for status, n in counts.items():
                statuses[status] = statuses.get(status, 0) + n
        assert set(statuses) <= {200, 429}, statuses  # refused, never failed
        assert statuses.get(429, 0) > statuses[200] / 2, statuses  # the load exceeded the limit
        arrivals = _arrivals(upstream, path)
        assert len(arrivals) == statuses[200] == len(times)
        window_s = arrivals[-1] - arrivals[0]
        assert window_s > DURATION_S - 1.0, window_s  # admitted to the end of the run
        expected = RATE + RATE * window_s
        assert abs(len(arrivals) - expected) <= 0.05 * expected, (path, len(arrivals), expected)
    assert concurrent == [200] * SLOTS + [429] * (3 * SLOTS), concurrent
    assert upstream.app[INFLIGHT][0] == SLOTS  # never more at the upstream at once


async def _once(session: aiohttp.ClientSession, url: str, key: str, path: str) -> int:
    """One relayed GET of ``path`` with ``key``; the status."""
    headers = {"Authorization": f"Bearer {key}"}
    async with session.post(url, json={"method": "GET", "path": path}, headers=headers) as resp:
        await resp.read()
        return resp.status


def _tally(results: list[tuple[list[float], dict[int, int]]]) -> dict[int, int]:
    statuses: dict[int, int] = {}
    for _, counts in results:
        for status, n in counts.items():
            statuses[status] = statuses.get(status, 0) + n
    return statuses


async def test_redis_stopped_mid_run_local_shares_hold_and_global_resumes(
    tmp_path: Path, upstream: UpstreamServer
) -> None:
    """Two workers, ``expected_processes = 2``: with Redis stopped each worker
    falls back to half the limit (25/s, burst 25), so the deployment still lets
    through at most about the global 50/s and no client sees an error; after
    Redis is back the buckets are in Redis again."""
    import redis.asyncio as aioredis

    from tests.servers import redis_server

    with redis_server() as server:
        prefix = f"t{uuid.uuid4().hex[:8]}:"
        (tmp_path / "iogate.toml").write_text(
            f'[upstreams.limited]\nbase_url = "{upstream.base_url}"\n'
            f"rate_limit_per_second = {RATE}\nrate_limit_max_wait = 0\n\n"
            f'[cluster]\nredis_url = "{server.url}"\nkey_prefix = "{prefix}"\n'
            "expected_processes = 2\nrecheck_interval = 0.2\n"
        )
        port = free_port()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "iogate",
                "serve",
                "-c",
                "iogate.toml",
                "--port",
                str(port),
                "--workers",
                "2",
            ],
            cwd=tmp_path,
            env=child_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            await asyncio.to_thread(wait_for_port, port, proc, "iogate serve")
            url = f"http://127.0.0.1:{port}/v1/upstreams/limited/request"
            connector = aiohttp.TCPConnector(limit=CLIENTS)
            async with aiohttp.ClientSession(connector=connector) as session:

                async def phase(seconds: float) -> tuple[dict[int, int], float]:
                    end = time.monotonic() + seconds
                    results = await asyncio.gather(
                        *(_hammer(session, url, "-", "/echo/down", end) for _ in range(CLIENTS))
                    )
                    times = sorted(t for admitted, _ in results for t in admitted)
                    return _tally(results), (times[-1] - times[0]) if times else 0.0

                first, _ = await phase(1.5)
                assert set(first) <= {200, 429}, first
                await asyncio.to_thread(server.stop)
                down, window_s = await phase(2.0)
                assert set(down) <= {200, 429}, down  # no client failed because Redis did
                # two local buckets of half the limit: about the global limit, never 2x it
                assert 0 < down[200] <= 1.15 * (RATE + RATE * window_s), (down, window_s)
                await asyncio.to_thread(server.start)
                client = aioredis.Redis.from_url(server.url)
                try:

                    async def global_again() -> bool:
                        await session.post(url, json={"method": "GET", "path": "/echo/down"})
                        return bool(await client.keys(f"{prefix}*"))

                    await until(global_again, timeout_s=10.0, what="the buckets back in Redis")
                finally:
                    await client.aclose()
                after, _ = await phase(1.0)
                assert set(after) <= {200, 429}, after
        finally:
            await asyncio.to_thread(stop, proc)
