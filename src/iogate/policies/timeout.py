"""Attempt timeouts (and, re-exported, the deadline and the timer wheel).

A :class:`Timeout` bounds one attempt. A timed-out attempt is really cancelled
(``task.cancel()``), and :class:`~iogate.errors.OperationTimeout` (a
``TimeoutError``) is raised in its place. Its timer is a slot of a shared
:class:`~iogate.policies.TimerWheel` (:mod:`._timer_wheel`), so it may fire up
to ``precision`` seconds late, never early.

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

    ``kind`` is ``"attempt"`` or ``"deadline"``; ``seconds`` the configured duration.
    """

    kind: str
    seconds: float


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeoutSnapshot:
    """Counters of a :class:`Timeout`."""

    seconds: float
    timeouts: int


class Timeout:
    """Bound one attempt to ``seconds``; cancel it and raise ``OperationTimeout`` after.

    The timer is shared through a :class:`TimerWheel`, so it may fire up to
    ``precision`` seconds late. Usable alone through :meth:`run`; inside
    :class:`~iogate.policies.Pipeline` (the attempt timeout) the pipeline runs
    the same steps as :meth:`run` in its own frame: ``wheel.add`` before the
    attempt, ``TimerWheel.remove`` after, :func:`cancelled_by_timer` and
    :meth:`expired` when the slot fired.

    Args:
        seconds: the attempt timeout, seconds (> 0).
        name: name used in events and errors (usually the resource).
        precision: timer granularity, seconds; default 1 % of ``seconds``, at most 10 ms.
        on_event: listener for :class:`TimeoutFired`.
        clock: time source.

    Raises:
        ValueError: ``seconds`` or ``precision`` is not positive.
    """

    __slots__ = ("_clock", "_timeouts", "_wheel", "name", "on_event", "seconds")

    def __init__(
        self,
        seconds: float,
        *,
        name: str = "",
        precision: float | None = None,
        on_event: EventListener | None = None,
        clock: Clock | None = None,
    ) -> None:
        if not seconds > 0:
            raise ValueError(f"seconds must be > 0, got {seconds!r}")
        self.seconds = float(seconds)
        self.name = name
        self.on_event = on_event
        self._clock = clock if clock is not None else SystemClock()
        g = precision if precision is not None else TimerWheel.granularity_for(self.seconds)
        self._wheel = TimerWheel(granularity=g, clock=self._clock)
        self._timeouts = 0

    @property
    def wheel(self) -> TimerWheel:
        """The shared timer wheel this timeout arms."""
        return self._wheel

    @property
    def timeouts(self) -> int:
        """Attempts this timeout cut, since creation."""
        return self._timeouts

    def expired(self, *, operation: str | None, attempts: int, elapsed: float) -> OperationTimeout:
        """Count one timed-out attempt, emit :class:`TimeoutFired`, return the error to raise.

        Args:
            operation: what was called, for the error.
            attempts: attempts made so far (this one included).
            elapsed: seconds since the operation started.
        """
        self._timeouts += 1
        if self.on_event is not None:
            self.on_event(
                TimeoutFired(
                    policy=self.name,
                    at=self._clock.monotonic(),
                    kind="attempt",
                    seconds=self.seconds,
                )
            )
        return OperationTimeout(
            f"attempt timed out after {self.seconds:g}s",
            resource=self.name or None,
            operation=operation,
            attempts=attempts,
            elapsed_s=elapsed,
        )

    async def run(self, fn: Callable[[], Awaitable[T]], /, *, operation: str | None = None) -> T:
        """Await ``fn()``; after ``seconds``, cancel it and raise ``OperationTimeout``.

        Raises:
            OperationTimeout: the attempt took longer than ``seconds``.
            RuntimeError: not called inside an asyncio task.
        """
        task = current_task_or_none() or current_task()
        start = self._clock.monotonic()
        baseline = task.cancelling()
        bucket = self._wheel.add(start + self.seconds, task)
        try:
            result = await fn()
        except BaseException as exc:
            if TimerWheel.remove(bucket, task) and cancelled_by_timer(task, baseline, exc):
                elapsed = self._clock.monotonic() - start
                raise self.expired(operation=operation, attempts=1, elapsed=elapsed) from None
            raise
        TimerWheel.remove(bucket, task)  # if fn swallowed our cancellation, it is withdrawn
        return result

    def snapshot(self) -> TimeoutSnapshot:
        """Frozen counters."""
        return TimeoutSnapshot(seconds=self.seconds, timeouts=self._timeouts)

    def __repr__(self) -> str:
        return f"Timeout({self.seconds:g}, name={self.name!r}, timeouts={self._timeouts})"
