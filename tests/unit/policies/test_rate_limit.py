"""Token bucket: burst, FIFO waiting, max wait, deadline, cancellation; the rate property."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iogate.errors import RateLimitedError
from iogate.policies import (
    FakeClock,
    PolicyEvent,
    RateLimiter,
    RateLimitRejected,
    TokenBucket,
    deadline_scope,
)

from .conftest import advance, settle


async def test_burst_then_fail_at_once_with_retry_after(clock: FakeClock) -> None:
    events: list[PolicyEvent] = []
    rl = RateLimiter(
        rate=2.0, burst=3, max_wait_s=0.0, name="api", clock=clock, on_event=events.append
    )
    for _ in range(3):
        await rl.acquire()
    with pytest.raises(RateLimitedError) as info:
        await rl.acquire()
    assert info.value.retry_after_s == pytest.approx(0.5)
    assert info.value.resource == "api"
    assert isinstance(events[0], RateLimitRejected)
    clock.advance(0.5)
    await rl.acquire()  # refilled one token
    snap = rl.stats()
    assert (snap.admitted, snap.rejected) == (4, 1)


async def test_waiters_are_served_in_arrival_order(clock: FakeClock) -> None:
    rl = RateLimiter(rate=1.0, burst=1, max_wait_s=10.0, clock=clock)
    await rl.acquire()
    order: list[int] = []

    async def waiter(i: int) -> None:
        await rl.acquire()
        order.append(i)

    tasks = [asyncio.create_task(waiter(i)) for i in range(5)]
    await settle()
    assert rl.waiting == 5
    for expected in range(1, 6):
        await advance(clock, 1.0)
        assert order == list(range(expected))
    await asyncio.gather(*tasks)
    assert rl.stats().waited == 5


async def test_wait_longer_than_max_wait_takes_nothing(clock: FakeClock) -> None:
    rl = RateLimiter(rate=1.0, burst=1, max_wait_s=1.5, clock=clock)
    await rl.acquire()
    t1 = asyncio.create_task(rl.acquire())  # waits 1 s
    await settle()
    with pytest.raises(RateLimitedError) as info:
        await rl.acquire()  # would wait 2 s
    assert info.value.retry_after_s == pytest.approx(2.0)
    await advance(clock, 1.0)
    await t1
    assert rl.backend.available(clock.monotonic()) == pytest.approx(0.0)


async def test_wait_is_bounded_by_the_deadline(clock: FakeClock) -> None:
    rl = RateLimiter(rate=1.0, burst=1, max_wait_s=10.0, clock=clock)
    await rl.acquire()
    async with deadline_scope(0.5, clock=clock):
        with pytest.raises(RateLimitedError):
            await rl.acquire()  # needs 1 s, only 0.5 s left


async def test_cancelled_waiter_returns_its_token_only(clock: FakeClock) -> None:
    rl = RateLimiter(rate=1.0, burst=1, max_wait_s=100.0, clock=clock)
    await rl.acquire()
    tasks = [asyncio.create_task(rl.acquire()) for _ in range(3)]
    await settle()
    assert rl.backend.available(clock.monotonic()) == pytest.approx(-3.0)
    tasks[1].cancel()
    await settle()
    assert rl.backend.available(clock.monotonic()) == pytest.approx(-2.0)
    assert rl.stats().cancelled == 1
    await advance(clock, 3.0)
    await asyncio.gather(tasks[0], tasks[2])
    assert rl.stats().admitted == 3  # 1 + 2 waiters; the cancelled one uncounted


async def test_thousand_tasks_cancelled_leak_no_tokens(clock: FakeClock) -> None:
    rl = RateLimiter(rate=10.0, burst=10, max_wait_s=1000.0, clock=clock)
    tasks = [asyncio.create_task(rl.acquire()) for _ in range(1000)]
    await settle()
    assert sum(t.done() for t in tasks) == 10  # the burst
    for t in tasks[10:]:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert rl.waiting == 0
    # All 990 reservations came back: after 1 s the bucket is full again, not in debt.
    clock.advance(1.0)
    assert rl.backend.available(clock.monotonic()) == pytest.approx(10.0)
    assert rl.stats().cancelled == 990


async def test_thousand_concurrent_tasks_respect_the_rate(clock: FakeClock) -> None:
    rl = RateLimiter(rate=100.0, burst=50, max_wait_s=100.0, clock=clock)
    admitted_at: list[float] = []

    async def one() -> None:
        await rl.acquire()
        admitted_at.append(clock.monotonic())

    tasks = [asyncio.create_task(one()) for _ in range(1000)]
    await settle()
    await advance(clock, 10.0, steps=1000)
    await asyncio.gather(*tasks)
    assert len(admitted_at) == 1000
    assert admitted_at == sorted(admitted_at)
    # 50 at once, then 100/s: the last one at (1000 - 50) / 100 = 9.5 s
    assert admitted_at[49] == 0.0
    assert max(admitted_at) == pytest.approx(9.5, abs=0.011)


def test_bounds() -> None:
    with pytest.raises(ValueError, match="rate"):
        RateLimiter(rate=0)
    with pytest.raises(ValueError, match="burst"):
        RateLimiter(rate=1, burst=0.5)
    with pytest.raises(ValueError, match="max_wait"):
        RateLimiter(rate=1, max_wait_s=-1)
    assert RateLimiter(rate=2.5).burst == 3  # default burst: ceil(rate)


# -- property: at most burst + rate * t admitted in any window of t seconds ---------------


@settings(max_examples=300, deadline=None)
@given(
    rate=st.floats(0.5, 50),
    burst=st.integers(1, 20),
    gaps=st.lists(st.floats(0, 2), min_size=1, max_size=150),
    max_wait=st.floats(0, 5),
    cancel_every=st.integers(0, 7),
)
def test_bucket_never_admits_more_than_burst_plus_rate_t(
    rate: float, burst: int, gaps: list[float], max_wait: float, cancel_every: int
) -> None:
    bucket = TokenBucket(rate=rate, burst=burst, now=0.0)
    now = 0.0
    admitted: list[float] = []
    for i, gap in enumerate(gaps):
        now += gap
        wait = bucket.reserve(now, max_wait)
        if wait < 0:
            continue
        if cancel_every and i % cancel_every == 0 and wait > 0:
            bucket.refund(now)  # a waiter cancelled before its turn
            continue
        admitted.append(now + wait)
    admitted.sort()
    for i, a in enumerate(admitted):
        for j in range(i, len(admitted)):
            t = admitted[j] - a
            assert j - i + 1 <= burst + rate * t + 1e-6
