"""Backoff schedules: how long :class:`~iogate.policies.Retry` waits between attempts.

Three growth shapes (constant, linear, exponential) and four jitters, after
Marc Brooker, "Exponential Backoff And Jitter" (AWS Architecture Blog, 2015):

* ``NONE``          ``d``
* ``FULL``          ``uniform(0, d)``                       (AWS' recommendation)
* ``EQUAL``         ``d/2 + uniform(0, d/2)``
* ``DECORRELATED``  ``min(max_delay, uniform(initial, 3 * previous))`` — its own
  growth, independent of the shape.

All durations are float seconds. A :class:`Backoff` is an immutable value; the
random source is passed to :meth:`Backoff.delay` so tests can seed it.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

__all__ = ["Backoff", "BackoffKind", "Jitter"]


class BackoffKind(enum.Enum):
    """Growth of the un-jittered delay with the attempt number ``n`` (1-based)."""

    CONSTANT = "constant"
    """``initial``"""
    LINEAR = "linear"
    """``initial + (n - 1) * increment``"""
    EXPONENTIAL = "exponential"
    """``initial * multiplier ** (n - 1)``"""


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
        initial: first delay, seconds (> 0 unless ``CONSTANT``, then >= 0).
        multiplier: growth factor for ``EXPONENTIAL`` (>= 1).
        increment: step for ``LINEAR``, seconds (>= 0); ``None`` means ``initial``.
        max_delay: cap on any single delay, seconds (>= initial).

    Raises:
        ValueError: a bound above is violated; the message names it.
    """

    kind: BackoffKind = BackoffKind.EXPONENTIAL
    jitter: Jitter = Jitter.FULL
    initial: float = 0.1
    multiplier: float = 2.0
    increment: float | None = None
    max_delay: float = 10.0

    def __post_init__(self) -> None:
        if self.initial < 0 or (self.initial == 0 and self.kind is not BackoffKind.CONSTANT):
            raise ValueError(f"initial must be > 0 (>= 0 for constant), got {self.initial!r}")
        if self.multiplier < 1:
            raise ValueError(f"multiplier must be >= 1, got {self.multiplier!r}")
        if self.increment is not None and self.increment < 0:
            raise ValueError(f"increment must be >= 0, got {self.increment!r}")
        if self.max_delay < self.initial:
            raise ValueError(f"max_delay must be >= initial, got {self.max_delay!r}")

    @classmethod
    def exponential(
        cls,
        *,
        initial: float = 0.1,
        multiplier: float = 2.0,
        max_delay: float = 10.0,
        jitter: Jitter = Jitter.FULL,
    ) -> Backoff:
        """Exponential growth, full jitter by default (AWS 2015)."""
        return cls(
            kind=BackoffKind.EXPONENTIAL,
            initial=initial,
            multiplier=multiplier,
            max_delay=max_delay,
            jitter=jitter,
        )

    @classmethod
    def constant(cls, delay: float, *, jitter: Jitter = Jitter.NONE) -> Backoff:
        """The same ``delay`` seconds before every retry."""
        return cls(kind=BackoffKind.CONSTANT, initial=delay, max_delay=delay, jitter=jitter)

    @classmethod
    def linear(
        cls,
        *,
        initial: float = 0.1,
        increment: float | None = None,
        max_delay: float = 10.0,
        jitter: Jitter = Jitter.NONE,
    ) -> Backoff:
        """``initial + (n - 1) * increment`` seconds, capped at ``max_delay``."""
        return cls(
            kind=BackoffKind.LINEAR,
            initial=initial,
            increment=increment,
            max_delay=max_delay,
            jitter=jitter,
        )

    def base_delay(self, retry: int) -> float:
        """The un-jittered delay before retry number ``retry`` (1-based), capped."""
        kind = self.kind
        if kind is BackoffKind.EXPONENTIAL:
            # Avoid float overflow for large retry numbers: cap the exponent.
            exp = min(retry - 1, 1024)
            try:
                d = self.initial * self.multiplier**exp
            except OverflowError:
                d = self.max_delay
        elif kind is BackoffKind.LINEAR:
            step = self.initial if self.increment is None else self.increment
            d = self.initial + (retry - 1) * step
        else:
            d = self.initial
        return min(d, self.max_delay)

    def delay(self, retry: int, previous: float, rng: random.Random) -> float:
        """The delay in seconds before retry number ``retry`` (1-based).

        Args:
            retry: 1 for the first retry (the second attempt), 2 for the next...
            previous: the delay used before the previous retry (0.0 for the first);
                only ``DECORRELATED`` uses it.
            rng: the random source.
        """
        jitter = self.jitter
        if jitter is Jitter.DECORRELATED:
            lo = self.initial
            hi = max(lo, (previous if previous > 0 else lo) * 3.0)
            return min(self.max_delay, rng.uniform(lo, hi))
        d = self.base_delay(retry)
        if jitter is Jitter.FULL:
            return rng.uniform(0.0, d)
        if jitter is Jitter.EQUAL:
            return d / 2.0 + rng.uniform(0.0, d / 2.0)
        return d
