"""A second process for the cross-process cache tests (run with ``python -m``).

``load URL NS KEYS...``: wait for the go signal, then ``get_or_load`` every key
with a loader that counts its calls in Redis (``<ns>:calls:<key>``) and takes
0.3 s; print the values as JSON.

``watch URL NS KEY``: load KEY into this process's L1, say ready, then report
(as ``<ns>:gone``) the wall time at which KEY left the L1 — an invalidation
published by another process.
"""

from __future__ import annotations

import asyncio
import sys
import time

import orjson
import redis.asyncio as aioredis

from iogate.cache.redis import RedisTier
from iogate.cache.tiered import TieredCache


def _cache(url: str, ns: str) -> TieredCache:
    return TieredCache(redis=RedisTier(url, namespace=ns, channel=f"{ns}:inv"), lease_poll_s=0.01)


async def load(url: str, ns: str, keys: list[str]) -> None:
    client = aioredis.Redis.from_url(url, socket_timeout=None)

    def loader_for(key: str):  # type: ignore[no-untyped-def]
        async def loader() -> str:
            await client.incr(f"{ns}:calls:{key}")
            await asyncio.sleep(0.3)  # the work being cached takes time
            return f"value of {key}"

        return loader

    async with _cache(url, ns) as cache:
        await client.rpush(f"{ns}:ready", b"1")
        await client.blpop([f"{ns}:go"], timeout=30)
        values = await asyncio.gather(
            *(cache.get_or_load(k, loader_for(k), ttl_s=60) for k in keys)
        )
    await client.aclose()
    print(orjson.dumps(values).decode())


async def watch(url: str, ns: str, key: str) -> None:
    client = aioredis.Redis.from_url(url, socket_timeout=None)
    async with _cache(url, ns) as cache:

        async def loader() -> str:
            return "cached"

        await cache.get_or_load(key, loader, ttl_s=60, tags=["watched"])
        assert cache.l1.get(key) is not None
        await client.rpush(f"{ns}:ready", b"1")
        deadline = time.monotonic() + 10
        while cache.l1.get(key) is not None and time.monotonic() < deadline:
            await asyncio.sleep(0.002)  # polls its own memory, bounded by the deadline
        await client.rpush(f"{ns}:gone", repr(time.time()).encode())
    await client.aclose()


if __name__ == "__main__":
    mode, url, ns, *rest = sys.argv[1:]
    asyncio.run(load(url, ns, rest) if mode == "load" else watch(url, ns, rest[0]))
