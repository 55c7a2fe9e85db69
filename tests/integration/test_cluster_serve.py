"""``iogate serve --workers 4`` with ``[cluster]``: the workers share one limit.

An upstream's ``rate_limit_per_second = 20`` and a key's ``rate_limit = 20``
each let through ``burst + 20 x t`` requests in ``t`` seconds for the whole
deployment, however many workers serve them (in-process limits would let four
times as many through). The loopback upstream counts arrivals.

Duration and rate: 6 s at 20/s rather than 10 s at 50/s. The expected count is
20 + 120 = 140 and the tolerance ±5 % (±7); the measurement's own error is the
clients' timing of the window's ends, which on a loaded 2-core test machine was
up to 0.2 s (4 tokens) — too close to the tolerance at 3 s, comfortably inside
it at 6 s — while a per-process limit (≈ 560) or one off by a process's share
(≈ 175) fails it. 20/s rather than 50/s so that the clients, on that machine,
still offer well above the limit (the test checks that many were refused).
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
from tests.upstream_app import UpstreamServer
from tests.waiting import until

RATE = 20
DURATION_S = 6.0
CLIENTS = 12


def _config(redis: RedisServer, upstream: UpstreamServer, key_a: str, key_b: str) -> str:
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


def _arrivals(upstream: UpstreamServer, path: str) -> int:
    return sum(1 for r in upstream.seen if r.path == f"/api{path}")


async def test_four_workers_share_an_upstream_limit_and_a_key_limit(
    tmp_path: Path, redis: RedisServer, upstream: UpstreamServer
) -> None:
    key_a, key_b = new_key(), new_key()
    (tmp_path / "iogate.toml").write_text(_config(redis, upstream, key_a, key_b))
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
        window_s = times[-1] - times[0]
        expected = RATE + RATE * window_s
        seen = _arrivals(upstream, path)
        assert seen == statuses[200]
        # Never more than 5 % over the limit. Under heavy load (other jobs on the two
        # cores) the deployment admitted up to 6 % less than the limit allows, never more:
        # the lower bound is 10 %.
        assert -0.10 * expected <= seen - expected <= 0.05 * expected, (path, seen, expected)


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
    falls back to 10/s (burst 10), so the deployment still lets through at
    most about the global 20/s and no client sees an error; after Redis is
    back the buckets are in Redis again."""
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
                # two local buckets of 10 (+10/s): about the global limit, never 2x it
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
