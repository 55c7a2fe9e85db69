"""FakeClock, backoff schedules and the retry budget."""

from __future__ import annotations

import asyncio
import random

import pytest

from iogate.policies import Backoff, BackoffKind, FakeClock, Jitter, RetryBudget, SystemClock

from .conftest import settle

# -- clocks ------------------------------------------------------------------------------


async def test_fake_clock_sleep_wakes_only_when_advanced(clock: FakeClock) -> None:
    woke: list[str] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append(name)

    tasks = [asyncio.create_task(sleeper("b", 2.0)), asyncio.create_task(sleeper("a", 1.0))]
    await settle()
    assert woke == []
    clock.advance(0.999)
    await settle()
    assert woke == []
    clock.advance(0.001)
    await settle()
    assert woke == ["a"]
    clock.advance(5)
    await settle()
    assert woke == ["a", "b"]
    assert clock.monotonic() == pytest.approx(6.0)
    await asyncio.gather(*tasks)


async def test_fake_clock_cancelled_sleep_leaves_no_timer(clock: FakeClock) -> None:
    task = asyncio.create_task(clock.sleep(10))
    await settle()
    assert clock.pending == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert clock.pending == 0


def test_fake_clock_call_later_runs_in_time_order() -> None:
    clock = FakeClock(start=100.0)
    seen: list[tuple[str, float]] = []
    clock.call_later(2, lambda: seen.append(("two", clock.monotonic())))
    clock.call_later(1, lambda: seen.append(("one", clock.monotonic())))
    handle = clock.call_later(1.5, lambda: seen.append(("never", clock.monotonic())))
    handle.cancel()
    clock.advance(3)
    assert seen == [("one", 101.0), ("two", 102.0)]
    with pytest.raises(ValueError, match="delta_s"):
        clock.advance(-1)


async def test_auto_advancing_fake_clock_moves_by_each_sleep_and_records_it() -> None:
    clock = FakeClock(1000.0, auto_advance=True)
    fired: list[float] = []
    clock.call_later(1.5, lambda: fired.append(clock.monotonic()))
    await clock.sleep(1.0)
    assert (clock.monotonic(), fired) == (1001.0, [])
    await clock.sleep(0.75)  # passes the timer due at 1001.5: it fires at its own time
    assert (clock.monotonic(), fired) == (1001.75, [1001.5])
    await clock.sleep(0)
    assert clock.sleeps_s == [1.0, 0.75, 0.0]
    assert clock.monotonic() == 1001.75


async def test_system_clock_is_monotonic_and_sleeps() -> None:
    c = SystemClock()
    a = c.monotonic()
    await c.sleep(0)
    await c.sleep(-1)  # clamped
    assert c.monotonic() >= a
    fired = asyncio.Event()
    c.call_later(0, fired.set)
    await asyncio.wait_for(fired.wait(), 5)


# -- backoff -----------------------------------------------------------------------------


def test_exponential_without_jitter_doubles_and_caps() -> None:
    b = Backoff.exponential(initial_s=0.1, multiplier=2, max_delay_s=1.0, jitter=Jitter.NONE)
    rng = random.Random(0)
    assert [b.delay(n, 0.0, rng) for n in range(1, 7)] == pytest.approx(
        [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    )
    assert b.base_delay(10_000) == 1.0  # no overflow


def test_constant_and_linear() -> None:
    rng = random.Random(0)
    c = Backoff.constant(0.5)
    assert [c.delay(n, 0.0, rng) for n in (1, 2, 9)] == [0.5, 0.5, 0.5]
    lin = Backoff.linear(initial_s=0.1, increment_s=0.2, max_delay_s=0.6)
    assert [lin.delay(n, 0.0, rng) for n in range(1, 6)] == pytest.approx([0.1, 0.3, 0.5, 0.6, 0.6])
    assert Backoff.linear(initial_s=0.1).base_delay(3) == pytest.approx(0.3)


def test_full_and_equal_jitter_stay_in_their_ranges() -> None:
    rng = random.Random(42)
    full = Backoff.exponential(initial_s=1, multiplier=2, max_delay_s=100, jitter=Jitter.FULL)
    equal = Backoff(kind=BackoffKind.EXPONENTIAL, jitter=Jitter.EQUAL, initial_s=1, max_delay_s=100)
    for n in range(1, 8):
        base = min(2 ** (n - 1), 100)
        fulls = [full.delay(n, 0, rng) for _ in range(200)]
        equals = [equal.delay(n, 0, rng) for _ in range(200)]
        assert all(0 <= d <= base for d in fulls)
        assert all(base / 2 <= d <= base for d in equals)
        assert len(set(fulls)) > 100  # actually random
    # seeded: reproducible
    a = [full.delay(3, 0, random.Random(7)) for _ in range(3)]
    b = [full.delay(3, 0, random.Random(7)) for _ in range(3)]
    assert a == b


def test_decorrelated_jitter_grows_from_previous_and_caps() -> None:
    b = Backoff(jitter=Jitter.DECORRELATED, initial_s=0.1, max_delay_s=5.0)
    rng = random.Random(1)
    prev = 0.0
    for n in range(1, 50):
        d = b.delay(n, prev, rng)
        lo, hi = 0.1, max(0.1, (prev if prev > 0 else 0.1) * 3)
        assert lo <= d <= min(5.0, hi) + 1e-12
        prev = d
    assert prev <= 5.0


@pytest.mark.parametrize(
    ("kwargs", "bound"),
    [
        ({"initial_s": 0}, "initial_s"),
        ({"multiplier": 0.5}, "multiplier"),
        ({"initial_s": 2, "max_delay_s": 1}, "max_delay_s"),
        ({"kind": BackoffKind.LINEAR, "increment_s": -1}, "increment_s"),
    ],
)
def test_backoff_bounds(kwargs: dict[str, object], bound: str) -> None:
    with pytest.raises(ValueError, match=bound):
        Backoff(**kwargs)  # type: ignore[arg-type]


# -- retry budget ------------------------------------------------------------------------


def test_budget_allows_min_per_s_reserve_without_traffic(clock: FakeClock) -> None:
    budget = RetryBudget(ratio=0.0, min_per_s=1.0, ttl_s=10.0, clock=clock)
    allowed = sum(budget.try_withdraw() for _ in range(50))
    assert allowed == 10  # min_per_s * ttl
    assert budget.rejections == 40


def test_budget_allows_ratio_of_calls_and_exhausts(clock: FakeClock) -> None:
    budget = RetryBudget(ratio=0.1, min_per_s=0.0, ttl_s=10.0, clock=clock)
    for _ in range(100):
        budget.deposit()
    allowed = sum(budget.try_withdraw() for _ in range(100))
    assert allowed == 10
    snap = budget.stats()
    assert snap.deposits_in_window == 100
    assert snap.withdrawals_in_window == 10
    assert snap.balance < 1


def test_budget_deposits_and_withdrawals_expire_after_ttl(clock: FakeClock) -> None:
    budget = RetryBudget(ratio=0.5, min_per_s=0.0, ttl_s=2.0, slots=4, clock=clock)
    for _ in range(10):
        budget.deposit()
    assert sum(budget.try_withdraw() for _ in range(10)) == 5
    clock.advance(1.0)
    assert not budget.try_withdraw()  # still in the window
    clock.advance(2.0)
    assert budget.balance() == 0  # everything expired
    for _ in range(4):
        budget.deposit()
    assert sum(budget.try_withdraw() for _ in range(4)) == 2


@pytest.mark.parametrize(
    ("kwargs", "bound"),
    [({"ratio": -1}, "ratio"), ({"min_per_s": -1}, "min_per_s"), ({"ttl_s": 0.5}, "ttl_s")],
)
def test_budget_bounds(kwargs: dict[str, float], bound: str) -> None:
    with pytest.raises(ValueError, match=bound):
        RetryBudget(**kwargs)  # type: ignore[arg-type]
