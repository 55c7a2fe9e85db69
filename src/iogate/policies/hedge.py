"""Hedged requests: race a slow idempotent call against late duplicates.

Dean & Barroso, "The Tail at Scale" (CACM 2013): send a second copy of a
request once the first has been outstanding longer than, say, the 95th
percentile of latency; use whichever answers first and cancel the rest. It
cuts tail latency for a few percent of extra load. Polly v8's hedging strategy
and Envoy's ``hedge_policy`` are the same idea.

* After ``delay_s`` seconds — fixed, or the ``percentile`` of recent successful
  latencies once ``min_samples`` are known — up to ``max_hedges`` extra attempts
  start, one per delay. The delay is measured on the hedge's clock, not taken on
  trust from the loop's timer: uvloop (libuv) counts timers in whole
  milliseconds from a cached loop time, so ``call_later(0.0032)`` can run after
  2.6 ms; a timer that runs early is re-armed for the time left (at least a
  millisecond, libuv's resolution). Started early, a p95 hedge fired for half the
  calls, drained the retry budget and left the slow calls it exists for
  unhedged (issue 22).
* The first success wins; every other attempt is cancelled and awaited.
* An attempt that fails leaves the race; if none is left running, its error is
  raised (errors are :class:`~iogate.policies.Retry`'s business, not the hedge's).
* Every extra attempt withdraws from the resource's
  :class:`~iogate.policies.RetryBudget`; with the budget overdrawn no hedge starts.
* Only for idempotent calls: the pipeline never hedges ``idempotent=False``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ._current_task import current_task_or_none as current_task
from .budget import RetryBudget
from .clock import LOOP_RESOLUTION_S, Cancellable, Clock, SystemClock
from .clock import schedule as _schedule
from .events import EventListener, PolicyEvent

__all__ = ["Hedge", "HedgeSnapshot", "HedgeStarted"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class HedgeStarted(PolicyEvent):
    """Extra attempt number ``hedge`` (1-based) started after ``delay_s`` seconds."""

    hedge: int
    delay_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class HedgeSnapshot:
    """Counters of a :class:`Hedge`; ``delay_s`` is the delay the next call would use."""

    calls: int
    hedges: int
    hedge_wins: int
    budget_rejections: int
    delay_s: float


class Hedge:
    """Start extra attempts of a slow call (see the module docstring).

    Args:
        delay_s: seconds before each extra attempt (> 0); with ``percentile``, the
            delay used until ``min_samples`` latencies are known.
        percentile: use this quantile of recent latencies as the delay, in (0, 1)
            (0.95 is the paper's example), or ``None`` for the fixed delay.
        max_hedges: extra attempts at most (>= 1).
        min_samples: latencies needed before ``percentile`` is used (>= 1).
        window: how many latencies are kept for the percentile (>= ``min_samples``).
        budget: the resource's retry budget; each extra attempt withdraws one.
        name: name used in events.
        on_event: listener for :class:`HedgeStarted`.
        clock: time source.

    Raises:
        ValueError: a bound above is violated.
    """

    __slots__ = (
        "_budget_rejections",
        "_calls",
        "_clock",
        "_delay_cache",
        "_hedge_wins",
        "_hedges",
        "_now",
        "_pos",
        "_samples",
        "_since_sort",
        "budget",
        "delay_s",
        "max_hedges",
        "min_samples",
        "name",
        "on_event",
        "percentile",
        "window",
    )

    def __init__(
        self,
        *,
        delay_s: float = 0.05,
        percentile: float | None = None,
        max_hedges: int = 1,
        min_samples: int = 100,
        window: int = 1000,
        budget: RetryBudget | None = None,
        name: str = "",
        on_event: EventListener | None = None,
        clock: Clock | None = None,
    ) -> None:
        if not delay_s > 0:
            raise ValueError(f"delay_s must be > 0, got {delay_s!r}")
        if percentile is not None and not 0 < percentile < 1:
            raise ValueError(f"percentile must be in (0, 1), got {percentile!r}")
        if max_hedges < 1:
            raise ValueError(f"max_hedges must be >= 1, got {max_hedges!r}")
        if min_samples < 1:
            raise ValueError(f"min_samples must be >= 1, got {min_samples!r}")
        if window < min_samples:
            raise ValueError(f"window must be >= min_samples, got {window!r}")
        self.delay_s = float(delay_s)
        self.percentile = percentile
        self.max_hedges = max_hedges
        self.min_samples = min_samples
        self.window = window
        self.budget = budget
        self.name = name
        self.on_event = on_event
        self._clock = clock if clock is not None else SystemClock()
        self._now = self._clock.monotonic
        self._samples: list[float] = []
        self._pos = 0
        self._since_sort = 0
        self._delay_cache = self.delay_s
        self._calls = 0
        self._hedges = 0
        self._hedge_wins = 0
        self._budget_rejections = 0

    @property
    def calls(self) -> int:
        """Calls run through :meth:`run`, since creation."""
        return self._calls

    @property
    def hedges(self) -> int:
        """Extra attempts started, since creation."""
        return self._hedges

    @property
    def hedge_wins(self) -> int:
        """Calls answered by an extra attempt, since creation."""
        return self._hedge_wins

    @property
    def budget_rejections(self) -> int:
        """Extra attempts the retry budget refused, since creation."""
        return self._budget_rejections

    def observe(self, latency_s: float) -> None:
        """Add a successful attempt's latency (seconds) to the percentile window."""
        if self.percentile is None:
            return
        samples = self._samples
        if len(samples) < self.window:
            samples.append(latency_s)
        else:
            samples[self._pos] = latency_s
            self._pos = (self._pos + 1) % self.window
        self._since_sort += 1
        # Re-sort at most every 1/16 of the window: O(log n) amortised per sample.
        if len(samples) >= self.min_samples and self._since_sort >= max(1, self.window // 16):
            self._since_sort = 0
            ordered = sorted(samples)
            idx = min(len(ordered) - 1, int(self.percentile * len(ordered)))
            self._delay_cache = max(ordered[idx], 1e-6)

    def current_delay(self) -> float:
        """The hedging delay the next call uses, seconds."""
        return self._delay_cache

    async def run(self, fn: Callable[[], Awaitable[T]], /) -> T:
        """Run ``fn()``, hedging it; return the first success.

        The first attempt runs in the caller's own task (no task, no
        ``asyncio.wait``: a call that never hedges costs one timer more than
        an unhedged one); each extra attempt is a task of its own, started by
        the delay's timer. An extra attempt that wins cancels the caller's
        task out of the first attempt (the cancellation is withdrawn, as
        ``asyncio.timeout`` withdraws its own, and its result returned).

        Raises:
            BaseException: the error of the last attempt, when every attempt failed.
            RuntimeError: not called inside an asyncio task.
        """
        self._calls += 1
        caller = current_task()
        if caller is None:
            raise RuntimeError("Hedge.run must be called inside an asyncio task")
        race = _Race(self, fn, caller)
        start = self._now()
        race.arm(self._delay_cache, start)
        baseline = caller.cancelling()
        try:
            try:
                result = await fn()
            finally:
                race.first_running = False
            if race.cancelled_caller:  # a hedge won as fn returned: withdraw our cancel
                caller.uncancel()
        except asyncio.CancelledError:
            if race.cancelled_caller and caller.uncancel() <= baseline:
                winner = race.winner
                assert winner is not None
                self._hedge_wins += 1
                self.observe(self._now() - start)
                await race.drop()
                return winner.result()
            await race.drop()
            raise
        except Exception as exc:  # noqa: BLE001 - re-raised unless an extra attempt wins
            if race.cancelled_caller:  # fn raised something else once cancelled by the winner
                caller.uncancel()
            return await self._race_on(race, exc, start)
        except BaseException:  # KeyboardInterrupt, SystemExit: no race to run on
            await race.drop()
            raise
        self.observe(self._now() - start)
        await race.drop()
        return result

    async def _race_on(self, race: _Race[T], error: BaseException, start: float) -> T:
        """The first attempt failed with ``error``: wait for the extra attempts
        (more may start, one per delay); the first success, else the last error."""
        if race.winner is None and not race.tasks:
            race.disarm()
            raise error
        race.error = error
        try:
            if race.winner is None:
                race.waiter = asyncio.get_running_loop().create_future()
                await race.waiter
            winner = race.winner
            if winner is None:
                raise race.error
            self._hedge_wins += 1
            self.observe(self._now() - start)
            return winner.result()
        finally:
            await race.drop()

    def stats(self) -> HedgeSnapshot:
        """Frozen counters."""
        return HedgeSnapshot(
            calls=self._calls,
            hedges=self._hedges,
            hedge_wins=self._hedge_wins,
            budget_rejections=self._budget_rejections,
            delay_s=self._delay_cache,
        )

    def __repr__(self) -> str:
        return (
            f"Hedge(delay_s={self._delay_cache:g}, max_hedges={self.max_hedges}, "
            f"hedges={self._hedges}, wins={self._hedge_wins})"
        )


async def _call(fn: Callable[[], Awaitable[T]]) -> T:
    return await fn()


class _Race(Generic[T]):
    """One hedged call's extra attempts, driven by loop callbacks: the delay's
    timer starts them (:meth:`_fire`), their completion (:meth:`_done`) picks
    the winner and interrupts the caller (its task while the first attempt
    runs inline, else :attr:`waiter`)."""

    __slots__ = (
        "_due",
        "_fn",
        "_handle",
        "_hedge",
        "_slack",
        "_started",
        "caller",
        "cancelled_caller",
        "error",
        "first_running",
        "tasks",
        "waiter",
        "winner",
    )

    def __init__(self, hedge: Hedge, fn: Callable[[], Awaitable[T]], caller: asyncio.Task[Any]):
        self._hedge = hedge
        self._fn = fn
        self._handle: Cancellable | None = None
        self._due = 0.0
        self._slack = 0.0
        self._started = 0
        self.caller = caller
        self.cancelled_caller = False
        self.error: BaseException | None = None
        self.first_running = True
        self.tasks: set[asyncio.Task[T]] = set()
        self.waiter: asyncio.Future[None] | None = None
        self.winner: asyncio.Task[T] | None = None

    def arm(self, delay_s: float, now: float) -> None:
        """Start the next extra attempt ``delay_s`` seconds after ``now`` (clock reading)."""
        self._due = now + delay_s
        self._slack = delay_s / 64  # early by at most this: close enough
        self._handle = _schedule(self._hedge._clock, delay_s, self._fire)

    def disarm(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = None
        hedge = self._hedge
        if self.winner is not None or not (self.first_running or self.tasks):
            return
        now = hedge._now()
        early = self._due - now
        if early > self._slack:  # the loop's timer ran early: wait for the time left
            self._handle = _schedule(hedge._clock, max(early, LOOP_RESOLUTION_S), self._fire)
            return
        if hedge.budget is not None and not hedge.budget.try_withdraw(now):
            hedge._budget_rejections += 1
            return
        self._started += 1
        hedge._hedges += 1
        task = asyncio.get_running_loop().create_task(_call(self._fn))
        task.add_done_callback(self._done)
        self.tasks.add(task)
        delay = hedge._delay_cache
        if hedge.on_event is not None:
            hedge.on_event(
                HedgeStarted(policy=hedge.name, at=now, hedge=self._started, delay_s=delay)
            )
        if self._started < hedge.max_hedges:
            self.arm(delay, now)

    def _done(self, task: asyncio.Task[T]) -> None:
        self.tasks.discard(task)
        if task.cancelled() or self.winner is not None:
            return
        exc = task.exception()
        if exc is None:
            self.winner = task
            self.disarm()
            if self.first_running:
                self.cancelled_caller = True
                self.caller.cancel()
            elif self.waiter is not None and not self.waiter.done():
                self.waiter.set_result(None)
            return
        self.error = exc
        waiter = self.waiter
        if not self.first_running and not self.tasks and waiter is not None and not waiter.done():
            self.disarm()
            waiter.set_result(None)

    async def drop(self) -> None:
        """Cancel the timer and every attempt still running, and await them."""
        self.disarm()
        if self.tasks:
            running = list(self.tasks)
            for task in running:
                task.cancel()
            await asyncio.wait(running)
            for task in running:
                if not task.cancelled():
                    task.exception()  # retrieved: no "never retrieved" warning
