"""Rate limiter: a token bucket whose waiters are served in arrival order.

A bucket holds up to ``burst`` tokens and refills at ``rate`` tokens per
second; each call takes one. When the bucket is empty a call *reserves* the
next token (the bucket goes into debt, as in Go's ``x/time/rate`` and the GCRA
used by Redis-based limiters), so waiters are served strictly first come,
first served and no lock or queue is needed. A call whose wait would exceed
``max_wait`` — or the caller's remaining deadline — takes nothing and fails at
once with :class:`~iogate.errors.RateLimitedError` carrying ``retry_after_s``.
A waiter that is cancelled gives its reserved token back, and only that.

In any window of ``t`` seconds at most ``burst + rate * t`` calls are admitted.

Storage is separate from the policy: :class:`RateLimitBackend` is the one
operation a store must offer (reserve / refund at a time); :class:`TokenBucket`
is the in-process store. A Redis store shared by several processes implements
the same two operations.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from ..errors import RateLimitedError
from .clock import Clock, SystemClock
from .events import EventListener, PolicyEvent
from .timeout import remaining

__all__ = [
    "RateLimitBackend",
    "RateLimitRejected",
    "RateLimiter",
    "RateLimiterSnapshot",
    "TokenBucket",
]

T = TypeVar("T")


class RateLimitBackend(Protocol):
    """Where the bucket's state lives.

    ``reserve(now, max_wait)`` takes one token at clock time ``now`` and returns
    the seconds to wait before using it (``0.0``: use it now); when the wait
    would exceed ``max_wait`` it takes nothing and returns ``-retry_after``
    (a negative number). ``refund(now)`` gives one reserved token back.
    ``available(now)`` is the number of tokens in the bucket (negative in debt).
    """

    def reserve(self, now: float, max_wait: float) -> float: ...

    def refund(self, now: float) -> None: ...

    def available(self, now: float) -> float: ...


class TokenBucket:
    """The in-process :class:`RateLimitBackend`; starts full.

    Args:
        rate: tokens per second (> 0).
        burst: bucket size (>= 1).
        now: the clock reading at creation, seconds.
    """

    __slots__ = ("burst", "last", "rate", "tokens")

    def __init__(self, *, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.last = now

    def available(self, now: float) -> float:
        """Tokens in the bucket at ``now`` (negative while waiters are in debt)."""
        tokens = self.tokens + (now - self.last) * self.rate
        return tokens if tokens < self.burst else self.burst

    def reserve(self, now: float, max_wait: float) -> float:
        """See :class:`RateLimitBackend`."""
        tokens = self.tokens + (now - self.last) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        self.last = now
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return 0.0
        wait = (1.0 - tokens) / self.rate
        self.tokens = tokens
        if wait > max_wait:
            return -wait
        self.tokens = tokens - 1.0
        return wait

    def refund(self, now: float) -> None:
        """See :class:`RateLimitBackend`."""
        self.tokens = self.available(now) + 1.0
        self.last = now
        if self.tokens > self.burst:
            self.tokens = self.burst

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self.rate:g}, burst={self.burst:g}, tokens={self.tokens:.2f})"


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimitRejected(PolicyEvent):
    """A call was refused; a token is expected in ``retry_after_s`` seconds."""

    retry_after_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimiterSnapshot:
    """Counters of a :class:`RateLimiter`."""

    name: str
    rate: float
    burst: float
    available_tokens: float
    waiting: int
    admitted: int
    waited: int
    rejected: int
    cancelled: int


class RateLimiter:
    """Token-bucket rate limiter (see the module docstring).

    Args:
        rate: calls per second (> 0).
        burst: calls allowed at once after idleness (>= 1); default ``max(1, ceil(rate))``.
        max_wait: longest a call waits for a token, seconds (>= 0); 0 fails at once.
            The caller's remaining deadline, if shorter, is used instead.
        name: name used in events and errors.
        backend: where the bucket lives; default an in-process :class:`TokenBucket`.
        on_event: listener for :class:`RateLimitRejected`.
        clock: time source.

    Raises:
        ValueError: a bound above is violated.
    """

    __slots__ = (
        "_clock",
        "_now",
        "admitted",
        "backend",
        "burst",
        "cancelled",
        "max_wait",
        "name",
        "on_event",
        "rate",
        "rejected",
        "waited",
        "waiting",
    )

    def __init__(
        self,
        *,
        rate: float,
        burst: float | None = None,
        max_wait: float = 1.0,
        name: str = "",
        backend: RateLimitBackend | None = None,
        on_event: EventListener | None = None,
        clock: Clock | None = None,
    ) -> None:
        if not rate > 0:
            raise ValueError(f"rate must be > 0, got {rate!r}")
        if burst is None:
            burst = max(1, math.ceil(rate))
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst!r}")
        if max_wait < 0:
            raise ValueError(f"max_wait must be >= 0, got {max_wait!r}")
        self.rate = float(rate)
        self.burst = float(burst)
        self.max_wait = float(max_wait)
        self.name = name
        self.on_event = on_event
        self._clock = clock if clock is not None else SystemClock()
        self._now = self._clock.monotonic
        self.backend: RateLimitBackend = (
            backend
            if backend is not None
            else TokenBucket(rate=self.rate, burst=self.burst, now=self._now())
        )
        self.admitted = 0
        self.waited = 0
        self.rejected = 0
        self.cancelled = 0
        self.waiting = 0

    def reject(self, retry_after: float, now: float) -> RateLimitedError:
        """Count a rejection, emit the event, and return the error to raise."""
        self.rejected += 1
        if self.on_event is not None:
            self.on_event(RateLimitRejected(policy=self.name, at=now, retry_after_s=retry_after))
        return RateLimitedError(
            f"rate limit of {self.rate:g}/s exceeded",
            resource=self.name or None,
            retry_after_s=retry_after,
        )

    async def wait(self, seconds: float) -> None:
        """Sleep a reserved ``seconds``; if cancelled, refund the reserved token.

        The caller has already counted the call as admitted; a cancelled wait
        un-counts it.
        """
        self.waiting += 1
        try:
            await self._clock.sleep(seconds)
        except BaseException:
            self.cancelled += 1
            self.admitted -= 1
            self.backend.refund(self._now())
            raise
        finally:
            self.waiting -= 1
        self.waited += 1

    async def acquire(self) -> None:
        """Take one token, waiting in arrival order if needed.

        Raises:
            RateLimitedError: no token within ``max_wait`` (or the deadline).
        """
        now = self._now()
        limit = self.max_wait
        left = remaining()
        if left is not None and left < limit:
            limit = left
        wait = self.backend.reserve(now, limit)
        if wait < 0.0:
            raise self.reject(-wait, now)
        self.admitted += 1
        if wait > 0.0:
            await self.wait(wait)

    async def run(self, fn: Callable[[], Awaitable[T]], /) -> T:
        """``await acquire()`` then ``await fn()``."""
        await self.acquire()
        return await fn()

    def snapshot(self) -> RateLimiterSnapshot:
        """Frozen counters."""
        return RateLimiterSnapshot(
            name=self.name,
            rate=self.rate,
            burst=self.burst,
            available_tokens=self.backend.available(self._now()),
            waiting=self.waiting,
            admitted=self.admitted,
            waited=self.waited,
            rejected=self.rejected,
            cancelled=self.cancelled,
        )

    def __repr__(self) -> str:
        return (
            f"RateLimiter(rate={self.rate:g}, burst={self.burst:g}, "
            f"available={self.backend.available(self._now()):.2f}, waiting={self.waiting})"
        )
