"""Attempt timeouts (and, re-exported, the deadline and the timer wheel).

A :class:`Timeout` bounds one attempt. A timed-out attempt is really cancelled
(``task.cancel()``), and :class:`~iogate.errors.OperationTimeout` (a
``TimeoutError``) is raised in its place. Its timer is a slot of a shared
:class:`~iogate.policies.TimerWheel` (:mod:`._timer_wheel`), so it may fire up
to ``precision_s`` seconds late, never early.

The rest of the timeout machinery lives in its own modules and is re-exported
here, so ``from iogate.policies.timeout import ...`` keeps working: the deadline
context and :class:`deadline_scope` (:mod:`.deadline`), the timer wheel
(:mod:`._timer_wheel`), the running-task lookup (:mod:`._current_task`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from ..errors import OperationTimeout
from ._current_task import current_task, current_task_or_none
from ._timer_wheel import FIRED as FIRED
from ._timer_wheel import TimerWheel, cancelled_by_timer
from .clock import Clock, SystemClock
from .clock import schedule as _schedule  # noqa: F401 - re-exported
from .deadline import DEADLINE as _DEADLINE  # noqa: F401 - re-exported
from .deadline import deadline_scope, remaining
from .events import EventListener, PolicyEvent

__all__ = [
    "Timeout",
    "TimeoutFired",
    "TimeoutSnapshot",
    "TimerWheel",
    "current_task",
    "deadline_scope",
    "remaining",
]

_current_task = current_task_or_none  # the name of the single-module layout

T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeoutFired(PolicyEvent):
    """A timeout or deadline expired and cancelled the call.

    ``kind`` is ``"attempt"`` or ``"deadline"``; ``timeout_s`` the configured
    duration, seconds.
    """

    kind: str
    timeout_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeoutSnapshot:
    """Counters of a :class:`Timeout` (``timeout_s``: its duration, seconds)."""

    timeout_s: float
    timeouts: int


class Timeout:
    """Bound one attempt to ``timeout_s`` seconds; cancel it and raise ``OperationTimeout`` after.

    The timer is shared through a :class:`TimerWheel`, so it may fire up to
    ``precision_s`` seconds late. Usable alone through :meth:`run`; inside
    :class:`~iogate.policies.Pipeline` (the attempt timeout) the pipeline runs
    the same steps as :meth:`run` in its own frame: ``wheel.add`` before the
    attempt, ``TimerWheel.remove`` after, :func:`cancelled_by_timer` and
    :meth:`expired` when the slot fired.

    Args:
        timeout_s: the attempt timeout, seconds (> 0).
        name: name used in events and errors (usually the resource).
        precision_s: timer granularity, seconds; default 1 % of ``timeout_s``, at most 10 ms.
        on_event: listener for :class:`TimeoutFired`.
        clock: time source.

    Raises:
        ValueError: ``timeout_s`` or ``precision_s`` is not positive.
    """

    __slots__ = ("_clock", "_timeouts", "_wheel", "name", "on_event", "timeout_s")

    def __init__(
        self,
        timeout_s: float,
        *,
        name: str = "",
        precision_s: float | None = None,
        on_event: EventListener | None = None,
        clock: Clock | None = None,
    ) -> None:
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        self.timeout_s = float(timeout_s)
        self.name = name
        self.on_event = on_event
        self._clock = clock if clock is not None else SystemClock()
        g = precision_s if precision_s is not None else TimerWheel.granularity_for(self.timeout_s)
        self._wheel = TimerWheel(granularity_s=g, clock=self._clock)
        self._timeouts = 0

    @property
    def wheel(self) -> TimerWheel:
        """The shared timer wheel this timeout arms."""
        return self._wheel

    @property
    def timeouts(self) -> int:
        """Attempts this timeout cut, since creation."""
        return self._timeouts

    def expired(
        self, *, operation: str | None, attempts: int, elapsed_s: float
    ) -> OperationTimeout:
        """Count one timed-out attempt, emit :class:`TimeoutFired`, return the error to raise.

        Args:
            operation: what was called, for the error.
            attempts: attempts made so far (this one included).
            elapsed_s: seconds since the operation started.
        """
        self._timeouts += 1
        if self.on_event is not None:
            self.on_event(
                TimeoutFired(
                    policy=self.name,
                    at=self._clock.monotonic(),
                    kind="attempt",
                    timeout_s=self.timeout_s,
                )
            )
        return OperationTimeout(
            f"attempt timed out after {self.timeout_s:g}s",
            resource=self.name or None,
            operation=operation,
            attempts=attempts,
            elapsed_s=elapsed_s,
        )

    async def run(self, fn: Callable[[], Awaitable[T]], /, *, operation: str | None = None) -> T:
        """Await ``fn()``; after ``timeout_s`` seconds, cancel it and raise ``OperationTimeout``.

        Raises:
            OperationTimeout: the attempt took longer than ``timeout_s``.
            RuntimeError: not called inside an asyncio task.
        """
        task = current_task_or_none() or current_task()
        start = self._clock.monotonic()
        baseline = task.cancelling()
        bucket = self._wheel.add(start + self.timeout_s, task)
        try:
            result = await fn()
        except BaseException as exc:
            if TimerWheel.remove(bucket, task) and cancelled_by_timer(task, baseline, exc):
                elapsed = self._clock.monotonic() - start
                raise self.expired(operation=operation, attempts=1, elapsed_s=elapsed) from None
            raise
        TimerWheel.remove(bucket, task)  # if fn swallowed our cancellation, it is withdrawn
        return result

    def stats(self) -> TimeoutSnapshot:
        """Frozen counters."""
        return TimeoutSnapshot(timeout_s=self.timeout_s, timeouts=self._timeouts)

    def __repr__(self) -> str:
        return f"Timeout({self.timeout_s:g}, name={self.name!r}, timeouts={self._timeouts})"
