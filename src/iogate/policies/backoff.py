"""Backoff schedules: how long :class:`~iogate.policies.Retry` waits between attempts.

Three growth shapes (constant, linear, exponential) and four jitters, after
Marc Brooker, "Exponential Backoff And Jitter" (AWS Architecture Blog, 2015):

* ``NONE``          ``d``
* ``FULL``          ``uniform(0, d)``                       (AWS' recommendation)
* ``EQUAL``         ``d/2 + uniform(0, d/2)``
* ``DECORRELATED``  ``min(max_delay_s, uniform(initial_s, 3 * previous_s))`` — its own
  growth, independent of the shape.

All durations are float seconds (their names end in ``_s``). A :class:`Backoff`
is an immutable value; the random source is passed to :meth:`Backoff.delay` so
tests can seed it.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

__all__ = ["Backoff", "BackoffKind", "Jitter"]


class BackoffKind(enum.Enum):
    """Growth of the un-jittered delay with the attempt number ``n`` (1-based)."""

    CONSTANT = "constant"
    """``initial_s``"""
    LINEAR = "linear"
    """``initial_s + (n - 1) * increment_s``"""
    EXPONENTIAL = "exponential"
    """``initial_s * multiplier ** (n - 1)``"""


class Jitter(enum.Enum):
    """Randomisation applied to the delay (AWS 2015, see the module docstring)."""

    NONE = "none"
    FULL = "full"
    EQUAL = "equal"
    DECORRELATED = "decorrelated"


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """An immutable backoff schedule.

    Args:
        kind: the growth shape (:class:`BackoffKind`).
        jitter: the randomisation (:class:`Jitter`).
        initial_s: first delay, seconds (> 0 unless ``CONSTANT``, then >= 0).
        multiplier: growth factor for ``EXPONENTIAL`` (>= 1).
        increment_s: step for ``LINEAR``, seconds (>= 0); ``None`` means ``initial_s``.
        max_delay_s: cap on any single delay, seconds (>= ``initial_s``).

    Raises:
        ValueError: a bound above is violated; the message names it.
    """

    kind: BackoffKind = BackoffKind.EXPONENTIAL
    jitter: Jitter = Jitter.FULL
    initial_s: float = 0.1
    multiplier: float = 2.0
    increment_s: float | None = None
    max_delay_s: float = 10.0

    def __post_init__(self) -> None:
        if self.initial_s < 0 or (self.initial_s == 0 and self.kind is not BackoffKind.CONSTANT):
            raise ValueError(f"initial_s must be > 0 (>= 0 for constant), got {self.initial_s!r}")
        if self.multiplier < 1:
            raise ValueError(f"multiplier must be >= 1, got {self.multiplier!r}")
        if self.increment_s is not None and self.increment_s < 0:
            raise ValueError(f"increment_s must be >= 0, got {self.increment_s!r}")
        if self.max_delay_s < self.initial_s:
            raise ValueError(f"max_delay_s must be >= initial_s, got {self.max_delay_s!r}")

    @classmethod
    def exponential(
        cls,
        *,
        initial_s: float = 0.1,
        multiplier: float = 2.0,
        max_delay_s: float = 10.0,
        jitter: Jitter = Jitter.FULL,
    ) -> Backoff:
        """Exponential growth, full jitter by default (AWS 2015)."""
        return cls(
            kind=BackoffKind.EXPONENTIAL,
            initial_s=initial_s,
            multiplier=multiplier,
            max_delay_s=max_delay_s,
            jitter=jitter,
        )

    @classmethod
    def constant(cls, delay_s: float, *, jitter: Jitter = Jitter.NONE) -> Backoff:
        """The same ``delay_s`` seconds before every retry."""
        return cls(kind=BackoffKind.CONSTANT, initial_s=delay_s, max_delay_s=delay_s, jitter=jitter)

    @classmethod
    def linear(
        cls,
        *,
        initial_s: float = 0.1,
        increment_s: float | None = None,
        max_delay_s: float = 10.0,
        jitter: Jitter = Jitter.NONE,
    ) -> Backoff:
        """``initial_s + (n - 1) * increment_s`` seconds, capped at ``max_delay_s``."""
        return cls(
            kind=BackoffKind.LINEAR,
            initial_s=initial_s,
            increment_s=increment_s,
            max_delay_s=max_delay_s,
            jitter=jitter,
        )

    def base_delay(self, retry: int) -> float:
        """The un-jittered delay before retry number ``retry`` (1-based), capped, seconds."""
        kind = self.kind
        if kind is BackoffKind.EXPONENTIAL:
            # Avoid float overflow for large retry numbers: cap the exponent.
            exp = min(retry - 1, 1024)
            try:
                d = self.initial_s * self.multiplier**exp
            except OverflowError:
                d = self.max_delay_s
        elif kind is BackoffKind.LINEAR:
            step = self.initial_s if self.increment_s is None else self.increment_s
            d = self.initial_s + (retry - 1) * step
        else:
            d = self.initial_s
        return min(d, self.max_delay_s)

    def delay(self, retry: int, previous_s: float, rng: random.Random) -> float:
        """The delay in seconds before retry number ``retry`` (1-based).

        Args:
            retry: 1 for the first retry (the second attempt), 2 for the next...
            previous_s: the delay used before the previous retry, seconds (0.0 for
                the first); only ``DECORRELATED`` uses it.
            rng: the random source.
        """
        jitter = self.jitter
        if jitter is Jitter.DECORRELATED:
            lo = self.initial_s
            hi = max(lo, (previous_s if previous_s > 0 else lo) * 3.0)
            return min(self.max_delay_s, rng.uniform(lo, hi))
        d = self.base_delay(retry)
        if jitter is Jitter.FULL:
            return rng.uniform(0.0, d)
        if jitter is Jitter.EQUAL:
            return d / 2.0 + rng.uniform(0.0, d / 2.0)
        return d
