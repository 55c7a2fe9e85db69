"""Circuit breakers shared through Redis (``[cluster]``): two gateways (in one
process, then as two ``iogate serve`` processes) on one Redis and one loopback
upstream. A trip in one makes
the other fail fast within 1 s; once the wait in open is over exactly one
half-open probe reaches the upstream, from one of them; a reset through one
closes the other's breaker."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from iogate.config import parse_config
from iogate.errors import CircuitOpenError
from iogate.gateway import Gateway
from iogate.policies import CircuitState
from tests.servers import RedisServer, free_port, stop, wait_for_port
from tests.subprocess_env import child_env
from tests.upstream_app import UpstreamServer
from tests.waiting import until


def _config(redis: RedisServer, upstream: UpstreamServer, prefix: str) -> Any:
    return parse_config(
        {
            "upstreams": {
                "flaky": {
                    "base_url": upstream.base_url,
                    "policies": {
                        "circuit_breaker": {
                            "failure_rate": 0.5,
                            "window": 2,
                            "minimum_calls": 2,
                            "wait_in_open": 0.5,
                            "half_open_calls": 1,
                        }
                    },
                }
            },
            "cluster": {"redis_url": redis.url, "key_prefix": prefix},
        }
    )


async def _call(gw: Gateway) -> str:
    try:
        response = await gw.upstream("flaky").request("GET", "/status/500")
    except CircuitOpenError:
        return "open"
    except Exception as exc:
        return type(exc).__name__
    return str(response.status)


def _arrivals(upstream: UpstreamServer) -> int:
    return sum(1 for r in upstream.seen if r.path == "/api/status/500")


async def test_a_trip_is_shared_and_one_probe_runs_cluster_wide(
    redis: RedisServer, upstream: UpstreamServer
) -> None:
    config = _config(redis, upstream, f"t{uuid.uuid4().hex[:8]}:")
    async with Gateway(config) as a, Gateway(config) as b:
        for gw in (a, b):
            assert gw.breakers is not None
            assert gw.breakers.subscribed is not None
            await asyncio.wait_for(gw.breakers.subscribed.wait(), 5)
        breaker_a = a.pipeline("flaky").circuit_breaker
        breaker_b = b.pipeline("flaky").circuit_breaker
        assert breaker_a is not None
        assert breaker_b is not None
        await _call(a)
        await _call(a)  # two failures in a window of two: A trips
        assert breaker_a.state is CircuitState.OPEN
        tripped = time.monotonic()
        await until(
            lambda: breaker_b.state is CircuitState.OPEN, timeout_s=1.0, what="B sees A's trip"
        )
        assert time.monotonic() - tripped < 1.0
        before = _arrivals(upstream)
        assert await _call(b) == "open"  # B fails fast: nothing reached the upstream
        assert _arrivals(upstream) == before

        # Past the wait in open: both keep calling; one probe (it fails: open again).
        async def probed() -> bool:
            await asyncio.gather(*(_call(gw) for gw in (a, b, a, b)))
            return _arrivals(upstream) > before

        await until(probed, timeout_s=5.0, what="a half-open probe")
        assert _arrivals(upstream) == before + 1
        await until(
            lambda: breaker_a.state is CircuitState.OPEN and breaker_b.state is CircuitState.OPEN,
            timeout_s=1.0,
            what="both open again after the failed probe",
        )
        outcomes = await asyncio.gather(*(_call(gw) for gw in (a, b) for _ in range(5)))
        assert outcomes == ["open"] * 10
        assert _arrivals(upstream) == before + 1  # exactly one probe, cluster-wide

        breaker_b.reset()  # the admin route's reset, through B
        await until(
            lambda: breaker_a.state is CircuitState.CLOSED, timeout_s=1.0, what="A sees B's reset"
        )


async def test_two_serve_processes_share_a_trip_and_one_probe(
    tmp_path: Path, redis: RedisServer, upstream: UpstreamServer
) -> None:
    """The same through two ``iogate serve`` processes (HTTP in, HTTP out)."""
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    (tmp_path / "iogate.toml").write_text(
        f'[upstreams.flaky]\nbase_url = "{upstream.base_url}"\n\n'
        "[upstreams.flaky.policies]\ncircuit_breaker = { failure_rate = 0.5, window = 2, "
        "minimum_calls = 2, wait_in_open = 0.5, half_open_calls = 1 }\n\n"
        f'[cluster]\nredis_url = "{redis.url}"\nkey_prefix = "{prefix}"\n'
    )
    ports = [free_port(), free_port()]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "iogate", "serve", "-c", "iogate.toml", "--port", str(port)],
            cwd=tmp_path,
            env=child_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in ports
    ]
    try:
        for port, proc in zip(ports, procs, strict=True):
            await asyncio.to_thread(wait_for_port, port, proc, "iogate serve")
        urls = [f"http://127.0.0.1:{port}/v1/upstreams/flaky/request" for port in ports]
        async with aiohttp.ClientSession() as session:

            async def call(url: str) -> int:
                body = {"method": "GET", "path": "/status/500"}
                async with session.post(url, json=body) as resp:
                    await resp.read()
                    return resp.status

            assert [await call(urls[0]), await call(urls[0])] == [200, 200]  # relayed 500s
            tripped = time.monotonic()

            async def b_fails_fast() -> bool:
                return await call(urls[1]) == 503

            # B may relay until the trip reaches it (the promise: within 1 s);
            # from then on it fails fast without reaching the upstream
            await until(b_fails_fast, timeout_s=1.0, what="B fails fast after A's trip")
            assert time.monotonic() - tripped < 1.0
            before = _arrivals(upstream)
            assert [await call(urls[1]) for _ in range(3)] == [503] * 3
            assert _arrivals(upstream) == before

            async def probed() -> bool:
                await asyncio.gather(*(call(url) for url in (*urls, *urls)))
                return _arrivals(upstream) > before

            await until(probed, timeout_s=5.0, what="a half-open probe")
            statuses = await asyncio.gather(*(call(url) for url in urls for _ in range(4)))
            assert statuses == [503] * 8  # open again everywhere after the failed probe
            assert _arrivals(upstream) == before + 1  # exactly one probe reached it
    finally:
        for proc in procs:
            await asyncio.to_thread(stop, proc)
