"""``iogate serve --workers 2`` with ``[cache] redis_url``: a write through one
worker drops the other worker's L1 copy within the documented bound
(README "Cache": pub/sub, milliseconds; the cross-process test allows 0.5 s)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from pathlib import Path

import aiohttp

from tests.servers import RedisServer, free_port, stop, wait_for_port
from tests.subprocess_env import child_env
from tests.waiting import until

INVALIDATION_BOUND_S = 0.5
_SERVE = (sys.executable, "-m", "iogate", "serve", "-c", "iogate.toml")
CONNECTIONS = 24  # one request each: accepted by whichever worker


async def _read_all(session: aiohttp.ClientSession, url: str) -> list[tuple[object, str]]:
    async def one() -> tuple[object, str]:
        async with session.get(url) as resp:
            assert resp.status == 200, await resp.text()
            body = await resp.json()
            return body["value"], body["source"]

    return await asyncio.gather(*(one() for _ in range(CONNECTIONS)))


async def test_a_write_in_one_worker_invalidates_the_others_l1(
    tmp_path: Path, redis: RedisServer
) -> None:
    (tmp_path / "iogate.toml").write_text(
        f'[cache]\nredis_url = "{redis.url}"\nnamespace = "t{uuid.uuid4().hex[:8]}"\n'
    )
    port = free_port()
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "iogate", "serve", "-c", "iogate.toml"),
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
        url = f"http://127.0.0.1:{port}/v1/cache/greeting"
        connector = aiohttp.TCPConnector(force_close=True)  # a new connection per request
        async with aiohttp.ClientSession(connector=connector) as session:
            async with session.put(url, json={"value": "v1", "ttl": 300}) as resp:
                assert resp.status == 200, await resp.text()

            async def another_worker_read_it() -> bool:
                # a worker other than the writer answers: its first read comes from L2
                first = await _read_all(session, url)
                assert {value for value, _ in first} == {"v1"}
                return "l2" in {source for _, source in first}

            # (uvicorn listens before every worker is up: wait for the second)
            await until(another_worker_read_it, timeout_s=20.0, what="the second worker")
            # now both workers hold v1 in their L1
            second = await _read_all(session, url)
            assert {source for _, source in second} == {"l1"}
            async with session.put(url, json={"value": "v2", "ttl": 300}) as resp:
                assert resp.status == 200
            written = time.monotonic()
            while True:
                values = {value for value, _ in await _read_all(session, url)}
                if values == {"v2"}:
                    break
                assert time.monotonic() - written < INVALIDATION_BOUND_S, values
    finally:
        await asyncio.to_thread(stop, proc)
