"""Retry: decide whether, and after how long, a failed attempt is tried again.

The options of tenacity / stamina / resilience4j ``Retry``, plus what they lack:

* ``retry_on`` (required, as stamina's ``on=``): only these errors are retried;
  ``retry_if_result`` retries on a result (e.g. an empty poll).
* Backoff: any :class:`~iogate.policies.Backoff` (exponential with full, equal or
  decorrelated jitter; constant; linear).
* A delay given by the server — an error's ``retry_after_s`` attribute, as set
  on :class:`~iogate.errors.RateLimitedError` from an HTTP ``Retry-After`` —
  replaces the backoff; above ``max_retry_after_s`` (120 s, as openai-python)
  retrying is pointless and the error is raised at once.
* A :class:`~iogate.policies.RetryBudget` shared by the resource caps retries at
  a ratio of calls (Finagle / gRPC A6), so a dead dependency sees no retry storm.
* Never retried: :class:`~iogate.errors.CircuitOpenError`,
  :class:`~iogate.errors.BulkheadFullError`, an expired deadline, a delay that
  would overrun the deadline, and any call marked ``idempotent=False``.

:class:`Retry` holds the decision; the loop itself lives in
:class:`~iogate.policies.Pipeline` — there is exactly one retry loop in iogate.
``Retry.run`` runs a one-policy pipeline.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import BulkheadFullError, CircuitOpenError
from .backoff import Backoff
from .budget import RetryBudget
from .clock import Clock, SystemClock
from .events import EventListener, PolicyEvent

if TYPE_CHECKING:
    from .pipeline import Pipeline

__all__ = ["GiveUpReason", "Retry", "RetryGaveUp", "RetryScheduled", "RetrySnapshot"]

T = TypeVar("T")

_NEVER_RETRIED = (CircuitOpenError, BulkheadFullError)


class GiveUpReason(enum.Enum):
    """Why a retryable failure was not retried."""

    EXHAUSTED = "exhausted"
    """``max_attempts`` reached."""
    BUDGET = "budget"
    """The retry budget is overdrawn."""
    DEADLINE = "deadline"
    """The delay would overrun the deadline."""
    RETRY_AFTER_TOO_LONG = "retry_after_too_long"
    """The server asked for a delay above ``max_retry_after_s``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryScheduled(PolicyEvent):
    """Attempt ``attempt`` failed (``error`` is the class name, or ``"result"``);
    the next one starts in ``delay_s`` seconds."""

    operation: str | None
    attempt: int
    delay_s: float
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryGaveUp(PolicyEvent):
    """A retryable failure after ``attempts`` attempts was not retried, for ``reason``."""

    operation: str | None
    attempts: int
    reason: GiveUpReason
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RetrySnapshot:
    """Counters of a :class:`Retry`."""

    max_attempts: int
    retries: int
    gave_up: int
    budget_rejections: int


class Retry:
    """When and how long to wait before another attempt (see the module docstring).

    Args:
        retry_on: error types that may be retried (required: the choice is the caller's).
        max_attempts: attempts in total, first included (>= 1).
        backoff: the delay schedule; default exponential, full jitter, 0.1 s .. 10 s.
        retry_if_result: a predicate on the result; ``True`` retries (the last
            result is returned when attempts run out).
        max_retry_after_s: a server-given delay above this many seconds is not
            waited for: the error is raised (>= 0).
        budget: the resource's retry budget, or ``None`` for no budget.
        name: name used in events (usually the resource).
        on_event: listener for :class:`RetryScheduled` and :class:`RetryGaveUp`.
        rng: random source for jitter (seed it in tests).
        clock: time source.

    Raises:
        ValueError: a bound above is violated.
    """

    __slots__ = (
        "_budget_rejections",
        "_clock",
        "_gave_up",
        "_pipeline",
        "_retries",
        "backoff",
        "budget",
        "max_attempts",
        "max_retry_after_s",
        "name",
        "on_event",
        "retry_if_result",
        "retry_on",
        "rng",
    )

    def __init__(
        self,
        *,
        retry_on: tuple[type[BaseException], ...],
        max_attempts: int = 3,
        backoff: Backoff | None = None,
        retry_if_result: Callable[[Any], bool] | None = None,
        max_retry_after_s: float = 120.0,
        budget: RetryBudget | None = None,
        name: str = "",
        on_event: EventListener | None = None,
        rng: random.Random | None = None,
        clock: Clock | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts!r}")
        if max_retry_after_s < 0:
            raise ValueError(f"max_retry_after_s must be >= 0, got {max_retry_after_s!r}")
        self.retry_on = retry_on
        self.max_attempts = max_attempts
        self.backoff = backoff if backoff is not None else Backoff()
        self.retry_if_result = retry_if_result
        self.max_retry_after_s = max_retry_after_s
        self.budget = budget
        self.name = name
        self.on_event = on_event
        self.rng = rng if rng is not None else random.Random()  # noqa: S311 - jitter, not cryptography
        self._clock = clock if clock is not None else SystemClock()
        self._pipeline: Pipeline | None = None
        self._retries = 0
        self._gave_up = 0
        self._budget_rejections = 0

    @property
    def retries(self) -> int:
        """Retries scheduled, since creation."""
        return self._retries

    @property
    def gave_up(self) -> int:
        """Retryable failures not retried (see :class:`GiveUpReason`), since creation."""
        return self._gave_up

    @property
    def budget_rejections(self) -> int:
        """Retries refused by the retry budget, since creation."""
        return self._budget_rejections

    def _give_up(
        self, reason: GiveUpReason, attempt: int, what: str, operation: str | None, now: float
    ) -> float:
        self._gave_up += 1
        if self.on_event is not None:
            self.on_event(
                RetryGaveUp(
                    policy=self.name,
                    at=now,
                    operation=operation,
                    attempts=attempt,
                    reason=reason,
                    error=what,
                )
            )
        return -1.0

    def next_delay(
        self,
        error: BaseException | None,
        *,
        attempt: int,
        previous_delay_s: float,
        now: float,
        deadline_at: float | None,
        operation: str | None = None,
    ) -> float:
        """Seconds to wait before attempt ``attempt + 1``, or a negative number to give up.

        Args:
            error: the failure of attempt ``attempt``, or ``None`` when the result
                matched ``retry_if_result``.
            attempt: the attempt that just failed (1-based).
            previous_delay_s: the delay before that attempt, seconds (0.0 after the first).
            now: the clock reading, seconds.
            deadline_at: the clock time of the deadline, if any.
            operation: for events.

        A positive answer has already been withdrawn from the budget.
        """
        if error is not None and (
            isinstance(error, _NEVER_RETRIED) or not isinstance(error, self.retry_on)
        ):
            return -1.0
        what = "result" if error is None else type(error).__name__
        if attempt >= self.max_attempts:
            return self._give_up(GiveUpReason.EXHAUSTED, attempt, what, operation, now)
        server_delay = getattr(error, "retry_after_s", None) if error is not None else None
        if isinstance(server_delay, int | float):
            if server_delay > self.max_retry_after_s:
                return self._give_up(
                    GiveUpReason.RETRY_AFTER_TOO_LONG, attempt, what, operation, now
                )
            delay = max(float(server_delay), 0.0)
        else:
            delay = self.backoff.delay(attempt, previous_delay_s, self.rng)
        if deadline_at is not None and now + delay >= deadline_at:
            return self._give_up(GiveUpReason.DEADLINE, attempt, what, operation, now)
        if self.budget is not None and not self.budget.try_withdraw(now):
            self._budget_rejections += 1
            return self._give_up(GiveUpReason.BUDGET, attempt, what, operation, now)
        self._retries += 1
        if self.on_event is not None:
            self.on_event(
                RetryScheduled(
                    policy=self.name,
                    at=now,
                    operation=operation,
                    attempt=attempt,
                    delay_s=delay,
                    error=what,
                )
            )
        return delay

    async def run(
        self, fn: Callable[[], Awaitable[T]], /, *, operation: str = "call", idempotent: bool = True
    ) -> T:
        """Call ``fn()`` with retries (a pipeline holding only this policy)."""
        if self._pipeline is None:
            from .pipeline import Pipeline

            self._pipeline = Pipeline(resource=self.name, retry=self, clock=self._clock)
        return await self._pipeline.run(fn, operation=operation, idempotent=idempotent)

    def stats(self) -> RetrySnapshot:
        """Frozen counters."""
        return RetrySnapshot(
            max_attempts=self.max_attempts,
            retries=self._retries,
            gave_up=self._gave_up,
            budget_rejections=self._budget_rejections,
        )

    def __repr__(self) -> str:
        names = ", ".join(t.__name__ for t in self.retry_on)
        return (
            f"Retry(max_attempts={self.max_attempts}, retry_on=({names}), "
            f"retries={self._retries}, gave_up={self._gave_up})"
        )
