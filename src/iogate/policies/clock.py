"""Injectable time: every policy reads the time and sleeps through a :class:`Clock`.

Production code uses :class:`SystemClock`; tests use :class:`FakeClock`, whose
time moves only when the test calls :meth:`FakeClock.advance`, so backoff,
sliding windows and breaker recovery are tested instantly and deterministically
(the approach of aiolimiter's tests and Trio's ``MockClock``).

Durations are float seconds, named ``..._s``. Besides the two methods of the
:class:`Clock` protocol, both clocks offer ``call_later(delay_s, callback)`` (see
:class:`SchedulingClock`), which the timeout machinery uses to cancel an attempt
without a helper task.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

__all__ = [
    "Cancellable",
    "LOOP_RESOLUTION_S",
    "Clock",
    "FakeClock",
    "OnTimeTimer",
    "SchedulingClock",
    "SystemClock",
    "schedule",
]


@runtime_checkable
class Clock(Protocol):
    """Monotonic time in seconds and an asynchronous sleep."""

    def monotonic(self) -> float:
        """Seconds on a monotonic clock (only differences are meaningful)."""
        ...

    async def sleep(self, delay_s: float) -> None:
        """Suspend the calling task for ``delay_s`` seconds (clamped at 0)."""
        ...


LOOP_RESOLUTION_S = 0.001
"""libuv's timer resolution (seconds): the least a timer that ran early is re-armed for."""


class Cancellable(Protocol):
    """A scheduled callback that can be cancelled (``asyncio.TimerHandle`` is one)."""

    def cancel(self) -> object: ...


@runtime_checkable
class SchedulingClock(Clock, Protocol):
    """A :class:`Clock` that can also run a callback after a delay."""

    def call_later(self, delay_s: float, callback: Callable[[], object]) -> Cancellable:
        """Run ``callback()`` once, ``delay_s`` seconds from now; return a handle to cancel it."""
        ...


class OnTimeTimer:
    """``loop.call_later(delay_s, callback)`` that never runs ``callback`` early
    on ``time.monotonic``.

    libuv (uvloop, what ``iogate serve`` runs on) keeps its loop time in whole
    milliseconds, cached at the start of a loop iteration, and rounds a
    timer's delay to milliseconds, so a timer can run up to a millisecond
    before ``delay_s`` has passed (measured: ``call_later(0.0032)`` after
    2.6 ms). A timer that runs early is re-armed for the time left (at least
    1 ms, libuv's resolution), so ``callback`` runs at or after the deadline.
    On asyncio's own loop (``loop.time()`` is ``time.monotonic``) it never
    re-arms.

    Args:
        loop: the running event loop.
        delay_s: seconds from now, ≥ 0.
        callback: called once, with no arguments, on the loop.
    """

    __slots__ = ("_callback", "_due", "_handle", "_loop")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, delay_s: float, callback: Callable[[], object]
    ) -> None:
        self._loop = loop
        self._callback = callback
        self._due = time.monotonic() + delay_s
        self._handle = loop.call_later(delay_s, self._fire)

    def cancel(self) -> None:
        """Do not run the callback (a no-op once it ran)."""
        self._handle.cancel()

    def _fire(self) -> None:
        left = self._due - time.monotonic()
        if left > 0.0:
            self._handle = self._loop.call_later(max(left, LOOP_RESOLUTION_S), self._fire)
            return
        self._callback()


def schedule(clock: Clock, delay_s: float, callback: Callable[[], object]) -> Cancellable:
    """Run ``callback()`` once, ``delay_s`` seconds from now on ``clock``.

    Uses ``clock.call_later`` when the clock has one (:class:`SchedulingClock`),
    else a helper task sleeping on the clock. Returns a handle to cancel it.
    """
    call_later = getattr(clock, "call_later", None)
    if call_later is not None:
        handle: Cancellable = call_later(delay_s, callback)
        return handle

    async def sleeper() -> None:
        await clock.sleep(delay_s)
        callback()

    return asyncio.ensure_future(sleeper())


class SystemClock:
    """The real clock: ``time.monotonic`` and ``asyncio.sleep``.

    ``time.monotonic`` is also what asyncio's default event loop uses for
    ``loop.time()``, so deadlines computed here agree with loop timers.
    ``call_later`` schedules on the running loop.
    """

    __slots__ = ()

    monotonic = staticmethod(time.monotonic)

    async def sleep(self, delay_s: float) -> None:
        """``asyncio.sleep(max(delay_s, 0))``."""
        await asyncio.sleep(max(delay_s, 0.0))

    def call_later(self, delay_s: float, callback: Callable[[], object]) -> Cancellable:
        """``loop.call_later`` on the running loop."""
        return asyncio.get_running_loop().call_later(max(delay_s, 0.0), callback)

    def __repr__(self) -> str:
        return "SystemClock()"


class _FakeTimer:
    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], object]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A clock for tests: time stands still until :meth:`advance` moves it.

    ``sleep(s)`` suspends the task until the clock has been advanced to at
    least ``now + s`` seconds; ``call_later`` callbacks run synchronously inside
    :meth:`advance`, in time order. Nothing ever really sleeps.

    With ``auto_advance=True`` a ``sleep(s)`` moves the time itself by ``s``
    (firing the timers due meanwhile) and returns after one loop turn: for a
    test that asserts the delays a retry loop chose (:attr:`sleeps_s`) without
    driving the clock by hand.

    Args:
        start: the initial reading of :meth:`monotonic`, in seconds.
        auto_advance: each ``sleep`` advances the clock by its own duration.

    Attributes:
        sleeps_s: every ``sleep`` asked for, in seconds (rounded to the microsecond).
    """

    __slots__ = ("_auto", "_now", "_seq", "_timers", "sleeps_s")

    def __init__(self, start: float = 0.0, *, auto_advance: bool = False) -> None:
        self._now = float(start)
        self._seq = itertools.count()
        self._timers: list[tuple[float, int, _FakeTimer]] = []
        self._auto = auto_advance
        self.sleeps_s: list[float] = []

    def monotonic(self) -> float:
        """The fake time, in seconds."""
        return self._now

    def call_later(self, delay_s: float, callback: Callable[[], object]) -> _FakeTimer:
        """Run ``callback()`` when the clock is advanced past ``now + delay_s``."""
        timer = _FakeTimer(self._now + max(delay_s, 0.0), callback)
        heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
        return timer

    async def sleep(self, delay_s: float) -> None:
        """Suspend until the clock is advanced to ``now + delay_s``.

        A zero or negative sleep yields to the loop once, like ``asyncio.sleep(0)``.
        """
        self.sleeps_s.append(round(delay_s, 6))
        if self._auto:
            self.advance(max(delay_s, 0.0))
            await asyncio.sleep(0)
            return
        if delay_s <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not fut.done():
                fut.set_result(None)

        timer = self.call_later(delay_s, wake)
        try:
            await fut
        finally:
            timer.cancel()

    def advance(self, delta_s: float) -> None:
        """Move the time forward by ``delta_s`` seconds and fire every timer now due, in order.

        Woken tasks run when the caller next yields to the loop
        (``await asyncio.sleep(0)``).

        Raises:
            ValueError: ``delta_s`` is negative.
        """
        if delta_s < 0:
            raise ValueError(f"delta_s must be >= 0, got {delta_s!r}")
        target = self._now + delta_s
        timers = self._timers
        while timers and timers[0][0] <= target:
            when, _, timer = heapq.heappop(timers)
            self._now = max(self._now, when)
            if not timer.cancelled:
                timer.callback()
        self._now = target

    @property
    def pending(self) -> int:
        """Number of timers (sleeps and callbacks) not yet fired or cancelled."""
        return sum(1 for _, _, t in self._timers if not t.cancelled)

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now!r}, pending={self.pending})"
