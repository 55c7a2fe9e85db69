"""Attempt timeouts, deadlines travelling in the context, the timer wheel, timeout_or_default."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from iogate.errors import OperationTimeout
from iogate.policies import (
    FakeClock,
    PolicyEvent,
    Timeout,
    TimeoutFired,
    TimerWheel,
    deadline_scope,
    remaining,
    timeout_or_default,
)

from .conftest import advance, settle


async def test_timeout_really_cancels_the_attempt(clock: FakeClock) -> None:
    events: list[PolicyEvent] = []
    tmo = Timeout(1.0, name="api", clock=clock, on_event=events.append)
    cancelled = False

    async def hang() -> None:
        nonlocal cancelled
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled = True
            raise

    task = asyncio.create_task(tmo.run(hang, operation="GET"))
    await settle()
    await advance(clock, 0.99)
    assert not task.done()
    await advance(clock, 0.02)  # the wheel may fire up to 1 % late
    with pytest.raises(OperationTimeout) as info:
        await task
    assert cancelled
    err = info.value
    assert isinstance(err, TimeoutError)
    assert (err.resource, err.operation) == ("api", "GET")
    assert err.elapsed_s == pytest.approx(1.0, abs=0.02)
    assert isinstance(events[0], TimeoutFired)
    assert tmo.stats().timeouts == 1
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_timeout_passes_results_and_errors_through(clock: FakeClock) -> None:
    tmo = Timeout(1.0, clock=clock)

    async def ok() -> int:
        return 3

    async def bad() -> int:
        raise KeyError("k")

    assert await tmo.run(ok) == 3
    with pytest.raises(KeyError):
        await tmo.run(bad)
    assert len(tmo.wheel) == 0  # unregistered


async def test_outside_cancellation_is_not_a_timeout(clock: FakeClock) -> None:
    tmo = Timeout(10.0, clock=clock)
    task = asyncio.create_task(tmo.run(lambda: asyncio.Event().wait()))
    await settle()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert tmo.timeouts == 0


async def test_timer_wheel_shares_one_timer_per_slot(clock: FakeClock) -> None:
    wheel = TimerWheel(granularity_s=0.01, clock=clock)

    async def sleeper() -> None:
        await clock.sleep(100)

    tasks = [asyncio.create_task(sleeper()) for _ in range(100)]
    await settle()
    buckets = {id(wheel.add(5.001 + i * 1e-5, t)) for i, t in enumerate(tasks)}
    assert len(buckets) == 1
    assert clock.pending == 100 + 1  # the sleeps, plus one shared timer
    clock.advance(5.01)
    await settle()
    assert all(t.cancelled() for t in tasks)


async def test_timer_wheel_arms_one_timer_for_all_its_slots(clock: FakeClock) -> None:
    wheel = TimerWheel(granularity_s=1.0, clock=clock)

    async def sleeper() -> None:
        await clock.sleep(100)

    tasks = [asyncio.create_task(sleeper()) for _ in range(4)]
    await settle()
    for at, task in zip((5.0, 3.0, 8.0, 3.5), tasks, strict=True):  # 3.5 rounds up to slot 4
        wheel.add(at, task)
    assert clock.pending == 4 + 1  # the sleeps, plus the wheel's one timer
    clock.advance(3.0)
    await settle()
    assert [t.cancelled() for t in tasks] == [False, True, False, False]
    assert clock.pending == 3 + 1  # re-armed for the next slot
    clock.advance(0.99)
    await settle()
    assert not tasks[3].done()  # never early
    clock.advance(1.01)  # t = 5: slots 4 and 5
    await settle()
    assert [t.cancelled() for t in tasks] == [True, True, False, True]
    clock.advance(3.0)
    await settle()
    assert all(t.cancelled() for t in tasks)
    assert clock.pending == 0


async def test_remaining_follows_the_deadline(clock: FakeClock) -> None:
    assert remaining() is None
    async with deadline_scope(10.0, clock=clock):
        assert remaining() == pytest.approx(10.0)
        clock.advance(4)
        assert remaining() == pytest.approx(6.0)
        async with deadline_scope(2.0, clock=clock):  # tighter: takes over
            assert remaining() == pytest.approx(2.0)
        async with deadline_scope(60.0, clock=clock):  # looser: changes nothing
            assert remaining() == pytest.approx(6.0)

        async def child() -> float | None:
            return remaining()

        assert await asyncio.create_task(child()) == pytest.approx(6.0)  # inherited
    assert remaining() is None


async def test_deadline_scope_cancels_the_block_and_raises(clock: FakeClock) -> None:
    async def body() -> None:
        async with deadline_scope(3.0, clock=clock, resource="db", operation="fetch"):
            await asyncio.Event().wait()

    task = asyncio.create_task(body())
    await settle()
    await advance(clock, 3.0)
    with pytest.raises(OperationTimeout) as info:
        await task
    assert (info.value.resource, info.value.operation) == ("db", "fetch")
    assert "deadline of 3s" in str(info.value)


async def test_deadline_scope_without_expiry_leaves_no_timer(clock: FakeClock) -> None:
    async with deadline_scope(3.0, clock=clock) as scope:
        await settle(1)
    assert not scope.expired
    assert clock.pending == 0


async def test_timeout_or_default(clock: FakeClock) -> None:
    async def slow() -> str:
        await clock.sleep(5)
        return "late"

    task = asyncio.create_task(timeout_or_default(slow(), 1.0, default="fallback", clock=clock))
    await settle()
    await advance(clock, 1.0)
    assert await task == "fallback"
    fast = await timeout_or_default(asyncio.sleep(0, "soon"), 1.0, clock=clock)
    assert fast == "soon"

    async def inner_timeout() -> None:
        raise OperationTimeout("not ours")

    with pytest.raises(OperationTimeout, match="not ours"):
        await timeout_or_default(inner_timeout(), 1.0, default=1, clock=clock)


def test_bounds() -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        Timeout(0)
    with pytest.raises(ValueError, match="deadline_s"):
        deadline_scope(-1)
    with pytest.raises(ValueError, match="granularity_s"):
        TimerWheel(granularity_s=0, clock=FakeClock())


async def test_timer_wheel_remove_withdraws_the_cancellation_of_a_fired_slot(
    clock: FakeClock,
) -> None:
    wheel = TimerWheel(granularity_s=1.0, clock=clock)
    seen: list[tuple[bool, int]] = []

    async def armed(at: float) -> None:
        task = asyncio.current_task()
        assert task is not None
        bucket = wheel.add(at, task)
        with contextlib.suppress(asyncio.CancelledError):  # swallowed, as a careless call would
            await clock.sleep(10.0)
        seen.append((TimerWheel.remove(bucket, task), task.cancelling()))

    quiet = asyncio.create_task(armed(50.0))
    fired = asyncio.create_task(armed(2.0))
    await settle()
    await advance(clock, 2.0)  # the slot of 2.0 fires: the wheel cancels `fired`
    await advance(clock, 10.0)
    await asyncio.gather(quiet, fired)
    # The fired slot's cancellation is withdrawn (count back to 0); the other never fired.
    assert sorted(seen) == [(False, 0), (True, 0)]
