"""Network faults between iogate and real servers (PostgreSQL, Redis, an HTTP
upstream), injected by :class:`tests.faults.FaultProxy`: a connection reset in
the middle of a reply, a peer that stops answering, latency, refused
connections. Each fault must end in iogate's own error type (transient or a
timeout, never a driver exception or a hang) and the resource must recover
once the network heals, with no broken connection handed out again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from iogate.databases.postgres import PostgresDatabase
from iogate.databases.redis import RedisDatabase
from iogate.errors import (
    OperationTimeout,
    TransientDatabaseError,
    UpstreamConnectionError,
    UpstreamError,
)
from iogate.http.upstream import Upstream
from iogate.policies import deadline_scope
from tests.faults import FaultProxy, fault_proxy
from tests.servers import PostgresServer, RedisServer
from tests.upstream_app import UpstreamServer

ROWS = "SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g"


@pytest.fixture
async def pg_proxy(pg: PostgresServer) -> AsyncIterator[FaultProxy]:
    async with fault_proxy(pg.port) as proxy:
        yield proxy


@pytest.fixture
async def pg_db(pg_proxy: FaultProxy) -> AsyncIterator[PostgresDatabase]:
    dsn = f"postgresql://iogate@127.0.0.1:{pg_proxy.port}/postgres"
    async with PostgresDatabase("pg", dsn=dsn, min_size=1, max_size=2) as database:
        yield database


@pytest.mark.postgres
async def test_postgres_reset_mid_reply_is_transient_and_the_pool_recovers(
    pg_db: PostgresDatabase, pg_proxy: FaultProxy
) -> None:
    assert await pg_db.fetch_val("SELECT 1") == 1
    pg_proxy.reset_after_bytes = 4096  # the 20,000-row reply is cut after 4 KiB
    with pytest.raises(TransientDatabaseError):
        await pg_db.fetch(ROWS)
    pg_proxy.heal()
    # The dead connection is never handed out again: the next calls succeed.
    for _ in range(4):
        assert await pg_db.fetch_val("SELECT 2") == 2
    assert len(await pg_db.fetch(ROWS)) == 20000


@pytest.mark.postgres
async def test_postgres_reset_of_every_connection_while_idle(
    pg_db: PostgresDatabase, pg_proxy: FaultProxy
) -> None:
    assert await pg_db.fetch_val("SELECT 1") == 1
    pg_proxy.reset_all()  # the pooled connection dies while idle
    outcomes: list[object] = []
    for _ in range(3):
        try:
            outcomes.append(await pg_db.fetch_val("SELECT 3"))
        except TransientDatabaseError as exc:
            outcomes.append(type(exc))
    # At most the one stale connection fails (as transient); then it is replaced.
    assert outcomes[-1] == 3
    assert outcomes.count(3) >= 2


@pytest.mark.postgres
async def test_postgres_blackhole_ends_at_the_deadline_then_recovers(
    pg_db: PostgresDatabase, pg_proxy: FaultProxy
) -> None:
    assert await pg_db.fetch_val("SELECT 1") == 1
    pg_proxy.blackhole()
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(OperationTimeout):
        async with deadline_scope(0.3):
            await pg_db.fetch_val("SELECT 4")
    assert loop.time() - started < 3.0  # bounded by the deadline, not by TCP
    pg_proxy.heal()
    pg_proxy.reset_all()  # the connection that lost its reply is unusable
    for _ in range(3):
        try:
            if await pg_db.fetch_val("SELECT 5") == 5:
                break
        except TransientDatabaseError:
            continue
    assert await pg_db.fetch_val("SELECT 6") == 6


@pytest.mark.postgres
async def test_postgres_latency_is_survived(pg_db: PostgresDatabase, pg_proxy: FaultProxy) -> None:
    pg_proxy.delay_s = 0.02
    values = await asyncio.gather(*(pg_db.fetch_val("SELECT $1::int", [i]) for i in range(8)))
    assert values == list(range(8))


@pytest.mark.postgres
async def test_postgres_refused_connections_are_transient(pg: PostgresServer) -> None:
    async with fault_proxy(pg.port) as proxy:
        proxy.refuse()
        dsn = f"postgresql://iogate@127.0.0.1:{proxy.port}/postgres"
        database = PostgresDatabase("pg", dsn=dsn, min_size=1, max_size=1, connect_timeout_s=2)
        with pytest.raises(TransientDatabaseError):
            await database.open()
        proxy.refuse(False)
        async with database:
            assert await database.fetch_val("SELECT 7") == 7


@pytest.fixture
async def redis_proxy(redis: RedisServer) -> AsyncIterator[FaultProxy]:
    async with fault_proxy(redis.port) as proxy:
        yield proxy


@pytest.mark.redis
async def test_redis_reset_mid_reply_is_transient_and_recovers(redis_proxy: FaultProxy) -> None:
    url = f"redis://127.0.0.1:{redis_proxy.port}/0"
    async with RedisDatabase("cache", url=url, max_connections=2) as db:
        await db.set("iogate:adv:big", "y" * 200_000)
        redis_proxy.reset_after_bytes = 1000  # the 200 KB reply is cut
        with pytest.raises(TransientDatabaseError):
            await db.get("iogate:adv:big")
        redis_proxy.heal()
        value = None
        for _ in range(3):
            try:
                value = await db.get("iogate:adv:big")
                break
            except TransientDatabaseError:
                continue
        assert value == b"y" * 200_000


@pytest.mark.redis
async def test_redis_blackhole_ends_at_the_deadline(redis_proxy: FaultProxy) -> None:
    url = f"redis://127.0.0.1:{redis_proxy.port}/0"
    async with RedisDatabase("cache", url=url, max_connections=2) as db:
        await db.set("iogate:adv:k", "v")
        redis_proxy.blackhole()
        with pytest.raises(OperationTimeout):
            async with deadline_scope(0.3):
                await db.get("iogate:adv:k")
        redis_proxy.heal()
        redis_proxy.reset_all()
        value = None
        for _ in range(3):
            try:
                value = await db.get("iogate:adv:k")
                break
            except TransientDatabaseError:
                continue
        assert value == b"v"


@pytest.fixture
async def upstream_proxy(upstream: UpstreamServer) -> AsyncIterator[FaultProxy]:
    port = int(upstream.base_url.rsplit(":", 1)[1].split("/", 1)[0])
    async with fault_proxy(port) as proxy:
        yield proxy


async def test_upstream_reset_mid_body_is_a_connection_error_then_recovers(
    upstream_proxy: FaultProxy,
) -> None:
    base = f"http://127.0.0.1:{upstream_proxy.port}/api"
    async with Upstream("example", base_url=base, timeout_s=5) as api:
        ok = await api.get("/blob", params={"kb": "8"})
        assert ok.status == 200
        assert len(ok.body) == 8 * 1024
        upstream_proxy.reset_after_bytes = 10_000  # a 256 KiB body cut after ~10 KB
        with pytest.raises(UpstreamConnectionError):
            await api.get("/blob", params={"kb": "256"})
        upstream_proxy.heal()
        again = await api.get("/blob", params={"kb": "256"})
        assert again.status == 200
        assert len(again.body) == 256 * 1024


async def test_upstream_blackhole_times_out(upstream_proxy: FaultProxy) -> None:
    base = f"http://127.0.0.1:{upstream_proxy.port}/api"
    async with Upstream("example", base_url=base, timeout_s=0.3) as api:
        upstream_proxy.blackhole()
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises((OperationTimeout, UpstreamError)) as caught:
            await api.get("/echo")
        assert isinstance(caught.value, OperationTimeout) or "timed out" in str(caught.value)
        assert loop.time() - started < 3.0
        upstream_proxy.heal()
        assert (await api.get("/echo")).status == 200
