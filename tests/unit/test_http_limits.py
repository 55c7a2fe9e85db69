import asyncio

import pytest

from iogate.errors import RateLimitedError
from iogate.http.auth import ApiKeyHeader, ApiKeyQuery, BearerAuth
from iogate.http.limits import UpstreamLimits
from iogate.policies import FakeClock


async def test_per_second_window_spaces_calls() -> None:
    clock = FakeClock(1000.0, auto_advance=True)
    limits = UpstreamLimits(per_second=2, clock=clock)
    waits = [await limits.acquire() for _ in range(4)]
    assert waits == [0.0, 0.0, 0.5, 0.5]
    assert limits.stats().delayed == 2


async def test_tightest_window_wins_and_too_long_waits_are_refused() -> None:
    clock = FakeClock(1000.0, auto_advance=True)
    limits = UpstreamLimits(per_second=100, per_minute=2, max_wait_s=10, clock=clock)
    await limits.acquire()
    await limits.acquire()
    with pytest.raises(RateLimitedError) as info:
        await limits.acquire()
    assert info.value.retry_after_s == pytest.approx(30.0)
    assert limits.stats().rejected == 1


async def test_tokens_estimated_then_settled_from_usage() -> None:
    clock = FakeClock(1000.0, auto_advance=True)
    limits = UpstreamLimits(tokens_per_minute=600, clock=clock)  # 10 tokens / s
    assert await limits.acquire(tokens=500) == 0.0
    limits.settle(estimated=500, actual=100)  # the call used far fewer: 500 left
    assert await limits.acquire(tokens=500) == 0.0
    limits.settle(estimated=500, actual=700)  # used more: 200 in debt
    assert await limits.acquire(tokens=100) == pytest.approx(30.0)  # 300 short at 10/s
    snap = limits.stats()
    assert (snap.tokens_estimated, snap.tokens_used) == (1100, 800)


async def test_concurrent_waiters_queue_in_order() -> None:
    clock = FakeClock()
    limits = UpstreamLimits(per_second=1, clock=clock)
    tasks = [asyncio.create_task(limits.acquire()) for _ in range(3)]
    await asyncio.sleep(0)  # let each task take its reservation (a yield, no time passes)
    assert [t.done() for t in tasks] == [True, False, False]
    clock.advance(1.0)
    await asyncio.sleep(0)
    assert [t.done() for t in tasks] == [True, True, False]
    clock.advance(1.0)
    assert list(await asyncio.gather(*tasks)) == [0.0, 1.0, 2.0]


def test_bounds_are_checked() -> None:
    with pytest.raises(ValueError, match="per_minute"):
        UpstreamLimits(per_minute=0)
    with pytest.raises(ValueError, match="max_wait_s"):
        UpstreamLimits(max_wait_s=-1)


def test_auth_reprs_mask_secrets() -> None:
    for auth in (BearerAuth("sk-SECRET"), ApiKeyHeader("sk-SECRET"), ApiKeyQuery("sk-SECRET")):
        assert "SECRET" not in repr(auth)
        assert "SECRET" not in str(auth)
    assert BearerAuth("t").headers() == {"Authorization": "Bearer t"}
    assert ApiKeyQuery("k", "key").params() == {"key": "k"}
