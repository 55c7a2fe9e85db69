"""Hedging: delay, first success wins, losers cancelled, budget, percentile delay."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

import pytest

from iogate.errors import OperationTimeout, UpstreamConnectionError
from iogate.policies import (
    FakeClock,
    Hedge,
    HedgeStarted,
    Pipeline,
    PolicyEvent,
    RetryBudget,
    Timeout,
)
from iogate.policies.clock import _FakeTimer

from .conftest import advance, settle


class Replica:
    """Attempt n sleeps durations[n] on the fake clock (or fails), and records its fate."""

    def __init__(self, clock: FakeClock, durations: list[float], fail: set[int] | None = None):
        self.clock = clock
        self.durations = durations
        self.fail = fail or set()
        self.started = 0
        self.cancelled: list[int] = []

    async def __call__(self) -> str:
        n = self.started
        self.started += 1
        try:
            await self.clock.sleep(self.durations[n])
        except asyncio.CancelledError:
            self.cancelled.append(n)
            raise
        if n in self.fail:
            raise UpstreamConnectionError(f"attempt {n} failed")
        return f"attempt {n}"


async def test_hedge_after_delay_first_success_wins_losers_cancelled(clock: FakeClock) -> None:
    events: list[PolicyEvent] = []
    hedge = Hedge(delay_s=1.0, max_hedges=2, clock=clock, on_event=events.append)
    replica = Replica(clock, [10.0, 0.5, 10.0])
    task = asyncio.create_task(hedge.run(replica))
    await settle()
    assert replica.started == 1
    await advance(clock, 0.99)
    assert replica.started == 1
    await advance(clock, 0.01)
    assert replica.started == 2  # the hedge started after 1 s
    await advance(clock, 0.5)
    assert await task == "attempt 1"
    assert replica.cancelled == [0]  # the slow primary was really cancelled
    assert [e.hedge for e in events if isinstance(e, HedgeStarted)] == [1]
    snap = hedge.stats()
    assert (snap.calls, snap.hedges, snap.hedge_wins) == (1, 1, 1)
    assert clock.pending == 0  # no timer or sleep left behind


async def test_fast_primary_starts_no_hedge(clock: FakeClock) -> None:
    hedge = Hedge(delay_s=1.0, clock=clock)
    replica = Replica(clock, [0.2])
    task = asyncio.create_task(hedge.run(replica))
    await settle()
    await advance(clock, 0.2)
    assert await task == "attempt 0"
    assert hedge.hedges == 0
    assert clock.pending == 0


async def test_failed_primary_leaves_the_race_to_the_hedge(clock: FakeClock) -> None:
    hedge = Hedge(delay_s=1.0, clock=clock)
    replica = Replica(clock, [2.0, 3.0], fail={0})
    task = asyncio.create_task(hedge.run(replica))
    await settle()
    await advance(clock, 1.0)  # hedge starts
    await advance(clock, 1.0)  # primary fails
    assert not task.done()
    await advance(clock, 2.0)
    assert await task == "attempt 1"


async def test_all_attempts_failing_raise_the_last_error(clock: FakeClock) -> None:
    hedge = Hedge(delay_s=1.0, clock=clock)
    replica = Replica(clock, [2.0, 1.5], fail={0, 1})
    task = asyncio.create_task(hedge.run(replica))
    await settle()
    await advance(clock, 3.0, steps=6)
    with pytest.raises(UpstreamConnectionError, match="attempt 1"):  # the last to fail
        await task


async def test_hedges_draw_on_the_retry_budget(clock: FakeClock) -> None:
    budget = RetryBudget(ratio=0.0, min_per_s=0.1, ttl_s=10.0, clock=clock)  # one withdrawal
    hedge = Hedge(delay_s=1.0, max_hedges=3, budget=budget, clock=clock)
    replica = Replica(clock, [5.0, 5.0, 5.0, 5.0])
    task = asyncio.create_task(hedge.run(replica))
    await settle()
    await advance(clock, 5.0, steps=10)
    assert await task == "attempt 0"
    assert replica.started == 2  # one hedge; the budget refused the second
    assert hedge.stats().budget_rejections == 1
    assert replica.cancelled == [1]


class LibuvClock(FakeClock):
    """A fake clock whose timers behave like uvloop's: libuv keeps a loop time in
    whole milliseconds (truncated) and rounds a delay to milliseconds, so a timer
    armed at 0.4 ms for 5 ms runs at 5.0 ms, 0.4 ms early."""

    def call_later(self, delay_s: float, callback: Callable[[], object]) -> _FakeTimer:
        now = self.monotonic()
        due = math.floor(now * 1000) / 1000 + round(delay_s * 1000) / 1000
        return super().call_later(max(due - now, 0.0), callback)


async def test_an_early_loop_timer_starts_no_hedge_before_the_delay() -> None:
    # Issue 22: under uvloop a p95 hedge timer ran ~0.5 ms early, so hedges started
    # for calls about to answer (half the calls), drained the retry budget and the
    # slow calls found it empty: p99.9 was not cut. The delay is the hedge's own
    # clock's, whatever the loop's timer precision.
    clock = LibuvClock(start=0.0004)
    budget = RetryBudget(ratio=0.0, min_per_s=0.1, ttl_s=10.0, clock=clock)  # one withdrawal
    hedge = Hedge(delay_s=0.005, budget=budget, clock=clock)
    fast = Replica(clock, [0.0047])  # answers 4.7 ms in: before the 5 ms delay
    task = asyncio.create_task(hedge.run(fast))
    await settle()
    await advance(clock, 0.0046)  # the loop's timer ran at 5.0 ms (0.4 ms in: early)
    assert fast.started == 1
    await advance(clock, 0.0001)
    assert await task == "attempt 0"
    assert (hedge.hedges, budget.withdrawals, clock.pending) == (0, 0, 0)
    # A slow call is still hedged, once the delay has really passed, from the budget.
    slow = Replica(clock, [1.0, 0.002])
    task = asyncio.create_task(hedge.run(slow))
    await settle()
    await advance(clock, 0.0049)
    assert slow.started == 1
    await advance(clock, 0.0011)
    assert slow.started == 2
    await advance(clock, 0.002)
    assert await task == "attempt 1"
    assert (hedge.hedges, hedge.hedge_wins, budget.withdrawals) == (1, 1, 1)


async def test_percentile_delay_follows_observed_latency(clock: FakeClock) -> None:
    hedge = Hedge(delay_s=5.0, percentile=0.9, min_samples=10, window=20, clock=clock)
    assert hedge.current_delay() == 5.0
    for i in range(20):
        hedge.observe(0.01 * (i + 1))  # 10 .. 200 ms
    assert hedge.current_delay() == pytest.approx(0.19)


async def test_pipeline_hedges_only_idempotent_calls(clock: FakeClock) -> None:
    hedge = Hedge(delay_s=1.0, clock=clock)
    p = Pipeline(
        resource="api",
        hedge=hedge,
        timeout=Timeout(30.0, clock=clock),
        deadline_s=60.0,
        clock=clock,
    )
    replica = Replica(clock, [10.0, 0.5])
    task = asyncio.create_task(p.run(replica, operation="GET"))
    await settle()
    await advance(clock, 2.0, steps=4)
    assert await task == "attempt 1"
    replica2 = Replica(clock, [3.0])
    task2 = asyncio.create_task(p.run(replica2, operation="POST", idempotent=False))
    await settle()
    await advance(clock, 3.0, steps=6)
    assert await task2 == "attempt 0"
    assert replica2.started == 1
    assert hedge.hedges == 1


async def test_cancelling_the_caller_cancels_every_attempt(clock: FakeClock) -> None:
    hedge = Hedge(delay_s=1.0, max_hedges=2, clock=clock)
    replica = Replica(clock, [10.0, 10.0, 10.0])
    task = asyncio.create_task(hedge.run(replica))
    await settle()
    await advance(clock, 2.0, steps=2)
    assert replica.started == 3
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(replica.cancelled) == [0, 1, 2]
    assert clock.pending == 0


def test_bounds() -> None:
    with pytest.raises(ValueError, match="delay"):
        Hedge(delay_s=0)
    with pytest.raises(ValueError, match="percentile"):
        Hedge(percentile=1.0)
    with pytest.raises(ValueError, match="max_hedges"):
        Hedge(max_hedges=0)
    with pytest.raises(ValueError, match="window"):
        Hedge(min_samples=10, window=5)


async def test_the_deadline_cuts_a_hedged_call_and_every_attempt(clock: FakeClock) -> None:
    # No attempt timeout: the pipeline times the hedged attempt on its deadline's wheel.
    hedge = Hedge(delay_s=1.0, max_hedges=1, clock=clock)
    p = Pipeline(resource="api", hedge=hedge, deadline_s=5.0, clock=clock)
    replica = Replica(clock, [100.0, 100.0])
    task = asyncio.create_task(p.run(replica, operation="GET"))
    await settle()
    await advance(clock, 5.1, steps=51)
    with pytest.raises(OperationTimeout, match="deadline of 5s") as info:
        await task
    assert info.value.elapsed_s == pytest.approx(5.0, abs=0.1)
    assert replica.started == 2
    assert sorted(replica.cancelled) == [0, 1]
    assert p.stats().deadline_timeouts == 1
    assert clock.pending == 0


async def test_first_attempt_runs_in_the_callers_task_and_a_win_leaves_it_uncancelled(
    clock: FakeClock,
) -> None:
    # The first attempt is awaited inline (no task of its own: a call that never
    # hedges pays no task start and no asyncio.wait); an extra attempt that wins
    # interrupts it by cancelling the caller, a cancellation withdrawn before
    # the caller sees the result.
    hedge = Hedge(delay_s=1.0, clock=clock)
    replica = Replica(clock, [0.2, 10.0, 0.5])
    tasks: list[asyncio.Task[object] | None] = []

    async def attempt() -> str:
        tasks.append(asyncio.current_task())
        return await replica()

    async def caller() -> tuple[str, asyncio.Task[object] | None, int, str]:
        fast = await hedge.run(attempt)  # no hedge: the primary answers in 0.2 s
        won = await hedge.run(attempt)  # the hedge (0.5 s) beats the primary (10 s)
        me = asyncio.current_task()
        assert me is not None
        return fast, me, me.cancelling(), won

    task = asyncio.create_task(caller())
    await advance(clock, 2.0, steps=8)
    fast, me, cancelling, won = await task
    assert (fast, won) == ("attempt 0", "attempt 2")
    assert tasks[0] is me  # both first attempts ran in the caller's task
    assert tasks[1] is me
    assert tasks[2] is not me  # the hedge ran in a task of its own
    assert cancelling == 0  # the winner's cancellation of the caller was withdrawn
    assert replica.cancelled == [1]
    assert (hedge.hedges, hedge.hedge_wins) == (1, 1)
    assert clock.pending == 0
