"""iogate's PostgreSQL connection pool on a real temporary cluster: bounds,
first-come-first-served waiters, reset on release, recycling, idle sweep,
cancellation at every step and closing."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial

import asyncpg
import pytest

from iogate.databases._postgres_pool import PoolClosed, PostgresPool
from iogate.policies import FakeClock
from tests.servers import PostgresServer
from tests.waiting import until


def _connector(pg: PostgresServer) -> Callable[[], Awaitable[asyncpg.Connection]]:
    return partial(asyncpg.connect, pg.dsn, server_settings={"application_name": "pool-test"})


@pytest.fixture
async def pool(pg: PostgresServer) -> AsyncIterator[PostgresPool]:
    pool = PostgresPool(
        _connector(pg), min_size=1, max_size=2, max_queries=1000, max_idle_lifetime_s=0
    )
    await pool.open()
    yield pool
    await pool.close()


async def _get(pool: PostgresPool) -> asyncpg.Connection:
    return pool.take() or await pool.wait()


async def test_open_opens_min_size_and_take_is_lifo(pool: PostgresPool) -> None:
    assert (pool.size, pool.idle) == (1, 1)
    first = await _get(pool)
    second = await _get(pool)  # under max_size: a new connection
    assert pool.size == 2
    assert first is not second
    await pool.release(first)
    await pool.release(second)
    assert pool.take() is second  # the most recently used goes out first
    assert pool.take() is first
    assert pool.take() is None  # none idle and at max_size
    await pool.release(first)
    await pool.release(second)
    stats = pool.stats()
    assert (stats.size, stats.in_use, stats.idle, stats.waiting) == (2, 0, 2, 0)
    assert stats.acquired_total == 4


async def test_callers_beyond_max_size_wait_first_come_first_served(pool: PostgresPool) -> None:
    held = [await _get(pool), await _get(pool)]
    order: list[int] = []

    async def caller(i: int) -> None:
        conn = await _get(pool)
        order.append(i)
        assert await conn.fetchval("SELECT $1::int", i) == i
        await pool.release(conn)

    tasks = [asyncio.create_task(caller(i)) for i in range(6)]
    await until(lambda: pool.meter.waiting == 6)
    for conn in held:
        await pool.release(conn)
    await asyncio.gather(*tasks)
    assert order == list(range(6))
    assert pool.size == 2  # never above max_size
    stats = pool.stats()
    assert stats.waiting == 0
    assert stats.in_use == 0
    assert stats.acquire_wait_p99_s > 0.0


async def test_release_resets_session_state_and_rolls_back(pool: PostgresPool) -> None:
    conn = await _get(pool)
    await conn.execute("CREATE TABLE IF NOT EXISTS pool_reset (v int)")
    await conn.execute("TRUNCATE pool_reset")
    await conn.execute("SET search_path TO nowhere")
    await conn.execute("SELECT pg_advisory_lock(4242)")
    await conn.execute("BEGIN")
    await conn.execute("INSERT INTO public.pool_reset VALUES (1)")
    await pool.release(conn)
    again = pool.take()
    assert again is conn  # the same connection, reset
    assert not again.is_in_transaction()
    assert await again.fetchval("SHOW search_path") == '"$user", public'
    locks = await again.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
    assert locks == 0
    assert await again.fetchval("SELECT count(*) FROM pool_reset") == 0
    await again.execute("DROP TABLE pool_reset")
    await pool.release(again)


async def test_a_connection_is_replaced_after_max_queries(pg: PostgresServer) -> None:
    pool = PostgresPool(
        _connector(pg), min_size=0, max_size=1, max_queries=3, max_idle_lifetime_s=0
    )
    await pool.open()
    try:
        conn = await _get(pool)
        pid = await conn.fetchval("SELECT pg_backend_pid()")
        await pool.release(conn)  # 1 statement + the reset: 2
        conn = await _get(pool)
        assert await conn.fetchval("SELECT pg_backend_pid()") == pid  # 3: the last use
        await pool.release(conn)
        await until(lambda: conn.is_closed() and pool.size == 0)
        fresh = await _get(pool)
        assert await fresh.fetchval("SELECT pg_backend_pid()") != pid
        await pool.release(fresh)
    finally:
        await pool.close()


async def test_idle_connections_beyond_min_size_are_closed_after_their_lifetime(
    pg: PostgresServer,
) -> None:
    clock = FakeClock(1000.0)
    pool = PostgresPool(
        _connector(pg),
        min_size=1,
        max_size=3,
        max_queries=1000,
        max_idle_lifetime_s=60,
        clock=clock.monotonic,
    )
    await pool.open()
    try:
        conns = [await _get(pool) for _ in range(3)]
        await pool.release(conns[0])
        clock.advance(30)
        await pool.release(conns[1])
        await pool.release(conns[2])
        clock.advance(40)  # conns[0] idle 70 s, the others 40 s
        assert pool.prune_idle() == 1
        await until(lambda: conns[0].is_closed() and pool.size == 2)
        clock.advance(30)  # both others idle 70 s: one goes, min_size keeps one
        assert pool.prune_idle() == 1
        await until(lambda: pool.size == 1)
        assert pool.idle == 1
        assert pool.prune_idle() == 0
    finally:
        await pool.close()


async def test_a_waiter_cancelled_after_the_hand_over_passes_the_connection_on(
    pool: PostgresPool,
) -> None:
    held = [await _get(pool), await _get(pool)]
    waiter = asyncio.create_task(_get(pool))
    await until(lambda: pool.meter.waiting == 1)
    await pool.release(held[0])  # handed to the waiter, which has not run yet
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert pool.take() is held[0]  # back in the pool, not lost
    await pool.release(held[0])
    await pool.release(held[1])
    assert pool.stats().in_use == 0
    assert pool.stats().waiting == 0


async def test_a_waiter_cancelled_in_line_leaves_the_line(pool: PostgresPool) -> None:
    held = [await _get(pool), await _get(pool)]
    waiter = asyncio.create_task(_get(pool))
    await until(lambda: pool.meter.waiting == 1)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert pool.meter.waiting == 0
    await pool.release(held[0])
    assert pool.idle == 1  # kept, not handed to the cancelled waiter
    await pool.release(held[1])


async def test_a_release_cancelled_mid_reset_terminates_the_connection(
    pool: PostgresPool,
) -> None:
    conn = await _get(pool)
    size = pool.size
    release = asyncio.create_task(pool.release(conn))
    await until(lambda: pool.meter.in_use == 0)  # the reset is on the wire
    release.cancel()
    with pytest.raises(asyncio.CancelledError):
        await release
    assert conn.is_closed()  # its state is unknown: never reused
    assert pool.size == size - 1
    fresh = await _get(pool)  # the slot is free for a new connection
    assert await fresh.fetchval("SELECT 1") == 1
    await pool.release(fresh)


async def test_a_failed_connect_frees_its_slot_for_the_next_caller(pg: PostgresServer) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    attempts = 0

    async def connect() -> asyncpg.Connection:
        nonlocal attempts
        attempts += 1
        if attempts == 1:  # nothing listens there: the connect is refused
            return await asyncpg.connect(host="127.0.0.1", port=dead_port, timeout=2)
        return await asyncpg.connect(pg.dsn)

    pool = PostgresPool(connect, min_size=0, max_size=1, max_queries=1000, max_idle_lifetime_s=0)
    await pool.open()
    try:
        with pytest.raises(ConnectionRefusedError):
            await pool.wait()
        assert pool.size == 0
        assert pool.meter.waiting == 0
        conn = await pool.wait()
        assert await conn.fetchval("SELECT 1") == 1
        await pool.release(conn)
    finally:
        await pool.close()


async def test_a_connection_whose_backend_died_frees_its_slot(
    pool: PostgresPool, pg: PostgresServer
) -> None:
    conn = await _get(pool)
    pid = await conn.fetchval("SELECT pg_backend_pid()")
    admin = await asyncpg.connect(pg.dsn)
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()
    lost = (asyncpg.InterfaceError, asyncpg.PostgresError, asyncpg.InternalClientError, OSError)
    with pytest.raises(lost):  # which one depends on when asyncpg sees the EOF (asyncpg#1069)
        await conn.fetchval("SELECT 1")
    await pool.release(conn)
    assert pool.size == 0
    assert pool.idle == 0
    fresh = await _get(pool)
    assert await fresh.fetchval("SELECT pg_backend_pid()") != pid
    await pool.release(fresh)


async def test_close_fails_waiters_and_closes_lent_connections_on_release(
    pool: PostgresPool,
) -> None:
    held = [await _get(pool), await _get(pool)]
    waiter = asyncio.create_task(_get(pool))
    await until(lambda: pool.meter.waiting == 1)
    closing = asyncio.create_task(pool.close())
    with pytest.raises(PoolClosed):
        await waiter
    for conn in held:
        await pool.release(conn)
    await closing
    assert all(c.is_closed() for c in held)
    assert pool.size == 0
    with pytest.raises(PoolClosed):
        await pool.wait()


def test_bounds_are_checked() -> None:
    async def never() -> asyncpg.Connection:
        raise AssertionError

    with pytest.raises(ValueError, match="min_size"):
        PostgresPool(never, min_size=3, max_size=2, max_queries=1, max_idle_lifetime_s=0)
    with pytest.raises(ValueError, match="min_size"):
        PostgresPool(never, min_size=0, max_size=0, max_queries=1, max_idle_lifetime_s=0)
