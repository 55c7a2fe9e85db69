"""Rate limiter: a token bucket whose waiters are served in arrival order.

A bucket holds up to ``burst`` tokens and refills at ``rate`` tokens per
second; each call takes one. When the bucket is empty a call *reserves* the
next token (the bucket goes into debt, as in Go's ``x/time/rate`` and the GCRA
used by Redis-based limiters), so waiters are served strictly first come,
first served and no lock or queue is needed. A call whose wait would exceed
``max_wait_s`` — or the caller's remaining deadline — takes nothing and fails at
once with :class:`~iogate.errors.RateLimitedError` carrying ``retry_after_s``.
A waiter that is cancelled gives its reserved token back, and only that.

In any window of ``t`` seconds at most ``burst + rate * t`` calls are admitted.

Storage is separate from the policy: :class:`RateLimitBackend` is the one
operation a store must offer (reserve / refund at a time); :class:`TokenBucket`
is the in-process store. A store shared by several processes (a Redis, see
:mod:`iogate.cluster`) is asynchronous and keeps its own time:
:class:`SharedBuckets` (``shared=``). With one, :attr:`RateLimiter.take` returns
``math.inf`` ("ask the store") and :meth:`RateLimiter.wait` asks it, so a
caller on the synchronous fast path (the pipeline) needs no second code path,
and a limiter without a shared store costs exactly what it did.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from ..errors import RateLimitedError
from .clock import Clock, SystemClock
from .deadline import DEADLINE, remaining
from .events import EventListener, PolicyEvent

__all__ = [
    "RateLimitBackend",
    "RateLimitRejected",
    "RateLimiter",
    "RateLimiterSnapshot",
    "SharedBuckets",
    "SharedLimits",
    "TokenBucket",
]

T = TypeVar("T")


class RateLimitBackend(Protocol):
    """Where the bucket's state lives.

    ``reserve(now, max_wait_s)`` takes one token at clock time ``now`` and returns
    the seconds to wait before using it (``0.0``: use it now); when the wait
    would exceed ``max_wait_s`` seconds it takes nothing and returns ``-retry_after``
    (a negative number). ``refund(now)`` gives one reserved token back.
    ``available(now)`` is the number of tokens in the bucket (negative in debt).
    """

    def reserve(self, now: float, max_wait_s: float) -> float: ...

    def refund(self, now: float) -> None: ...

    def available(self, now: float) -> float: ...


class SharedBuckets(Protocol):
    """One or more token buckets shared by several processes, taken from together.

    ``reserve(amounts, max_wait_s)`` takes ``amounts[i]`` tokens from bucket ``i``,
    atomically and on the store's own clock, and returns the seconds to wait before
    using them (``0.0``: now), or ``-retry_after`` (a negative number: nothing
    taken) when the wait would exceed ``max_wait_s`` seconds. It never raises: a
    store that cannot be reached answers from a local fallback.
    ``adjust(amounts)`` adds ``amounts[i]`` (negative: gives back) without waiting
    for the store. ``available()`` is the tokens of the first bucket as last seen.
    """

    async def reserve(self, amounts: Sequence[float], max_wait_s: float) -> float: ...

    def adjust(self, amounts: Sequence[float]) -> None: ...

    def available(self) -> float: ...


class SharedLimits(Protocol):
    """Makes :class:`SharedBuckets`: ``buckets(name, specs)`` for ``specs`` of
    ``(rate, burst)`` pairs (tokens per second, bucket size); ``name`` identifies
    the buckets across processes (the same name is the same buckets)."""

    def buckets(self, name: str, specs: Sequence[tuple[float, float]]) -> SharedBuckets: ...


class TokenBucket:
    """The in-process :class:`RateLimitBackend`; starts full.

    Args:
        rate: tokens per second (> 0).
        burst: bucket size (>= 1).
        now: the clock reading at creation, seconds.
    """

    __slots__ = ("_last", "_reserved", "_tokens", "burst", "rate")

    def __init__(self, *, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._last = now
        self._reserved = 0

    @property
    def reserved(self) -> int:
        """Tokens taken by :meth:`reserve` and not given back by :meth:`refund`, since creation."""
        return self._reserved

    @property
    def tokens(self) -> float:
        """Tokens at the last update (negative in debt); :meth:`available` adds the refill."""
        return self._tokens

    def available(self, now: float) -> float:
        """Tokens in the bucket at ``now`` (negative while waiters are in debt)."""
        tokens = self._tokens + (now - self._last) * self.rate
        return tokens if tokens < self.burst else self.burst

    def reserve(self, now: float, max_wait_s: float) -> float:
        """See :class:`RateLimitBackend`: :meth:`try_take` without a deadline."""
        return self.try_take(now, max_wait_s, None)

    def try_take(self, now: float, max_wait_s: float, deadline_at: float | None) -> float:
        """Take one token, or reserve the next one; synchronous, O(1), allocates nothing.

        Args:
            now: the clock reading, seconds (never earlier than the previous call's).
            max_wait_s: the longest wait to reserve, seconds.
            deadline_at: a clock time (seconds) the wait must not pass, or ``None``.

        Returns:
            ``0.0`` (a token was there and is taken), the seconds to wait for the
            reserved token, or ``-retry_after`` (nothing taken).
        """
        tokens = self._tokens + (now - self._last) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        self._last = now
        if tokens >= 1.0:
            self._tokens = tokens - 1.0
            self._reserved += 1
            return 0.0
        wait = (1.0 - tokens) / self.rate
        self._tokens = tokens
        if wait > max_wait_s or (deadline_at is not None and wait > deadline_at - now):
            return -wait
        self._tokens = tokens - 1.0
        self._reserved += 1
        return wait

    def refund(self, now: float) -> None:
        """See :class:`RateLimitBackend`."""
        self._reserved -= 1
        tokens = self.available(now) + 1.0
        self._last = now
        self._tokens = tokens if tokens < self.burst else self.burst

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self.rate:g}, burst={self.burst:g}, tokens={self._tokens:.2f})"


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
        max_wait_s: longest a call waits for a token, seconds (>= 0); 0 fails at once.
            The caller's remaining deadline, if shorter, is used instead.
        name: name used in events and errors.
        backend: where the bucket lives; default an in-process :class:`TokenBucket`.
        shared: a bucket shared by several processes (one bucket of ``(rate, burst)``),
            instead of ``backend``: see the module docstring.
        on_event: listener for :class:`RateLimitRejected`.
        clock: time source.

    Raises:
        ValueError: a bound above is violated.
    """

    __slots__ = (
        "_admitted",
        "_backend",
        "_cancelled",
        "_clock",
        "_now",
        "_own",
        "_rejected",
        "_shared",
        "_take",
        "_waited",
        "_waiting",
        "burst",
        "max_wait_s",
        "name",
        "on_event",
        "rate",
    )

    def __init__(
        self,
        *,
        rate: float,
        burst: float | None = None,
        max_wait_s: float = 1.0,
        name: str = "",
        backend: RateLimitBackend | None = None,
        shared: SharedBuckets | None = None,
        on_event: EventListener | None = None,
        clock: Clock | None = None,
    ) -> None:
        if backend is not None and shared is not None:
            raise ValueError("give backend or shared, not both")
        if not rate > 0:
            raise ValueError(f"rate must be > 0, got {rate!r}")
        if burst is None:
            burst = max(1, math.ceil(rate))
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst!r}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s!r}")
        self.rate = float(rate)
        self.burst = float(burst)
        self.max_wait_s = float(max_wait_s)
        self.name = name
        self.on_event = on_event
        self._clock = clock if clock is not None else SystemClock()
        self._now = self._clock.monotonic
        # The bucket this limiter made for itself (no backend given) counts the
        # admissions: its net reservations are exactly this limiter's.
        self._own: TokenBucket | None = None
        if backend is None:
            backend = TokenBucket(rate=self.rate, burst=self.burst, now=self._now())
            if shared is None:
                self._own = backend
        self._backend: RateLimitBackend = backend
        self._shared = shared
        if shared is not None:
            self._take = _ask_shared
        else:
            self._take = self._own.try_take if self._own is not None else self._backend_take
        self._admitted = 0
        self._waited = 0
        self._rejected = 0
        self._cancelled = 0
        self._waiting = 0

    @property
    def backend(self) -> RateLimitBackend:
        """Where the bucket lives."""
        return self._backend

    @property
    def admitted(self) -> int:
        """Calls given a token (at once or after a wait), since creation."""
        return self._own.reserved if self._own is not None else self._admitted

    @property
    def waited(self) -> int:
        """Calls that waited for their token, since creation."""
        return self._waited

    @property
    def rejected(self) -> int:
        """Calls refused (no token within the wait allowed), since creation."""
        return self._rejected

    @property
    def cancelled(self) -> int:
        """Calls cancelled while waiting for their token, since creation."""
        return self._cancelled

    @property
    def waiting(self) -> int:
        """Calls waiting for their token now."""
        return self._waiting

    def try_acquire(self, now: float, deadline_at: float | None = None) -> float:
        """Take or reserve one token at clock time ``now``; never waits.

        The synchronous fast path of :meth:`acquire`. The wait allowed is
        ``max_wait_s``, or the time left before ``deadline_at`` (clock seconds) if
        shorter.

        Returns:
            ``0.0``: admitted, go on. A positive number: admitted, the token is
            usable after that many seconds — ``await`` :meth:`wait` with it. A
            negative number: refused, nothing taken — raise :meth:`reject` with
            its negation.
        """
        return self._take(now, self.max_wait_s, deadline_at)

    @property
    def take(self) -> Callable[[float, float, float | None], float]:
        """``take(now, max_wait_s, deadline_at)``: :meth:`try_acquire` with the longest
        wait passed in, in one call, for a hot path (the pipeline's).

        It is the in-process bucket's :meth:`TokenBucket.try_take` when no
        ``backend`` was given (the bucket counts the admissions), else the limiter's
        own call to its backend. With a ``shared`` store it returns ``math.inf``:
        ``await`` :meth:`wait` with it, which asks the store."""
        return self._take

    def _backend_take(self, now: float, max_wait_s: float, deadline_at: float | None) -> float:
        if deadline_at is not None and deadline_at - now < max_wait_s:
            max_wait_s = deadline_at - now
        wait = self._backend.reserve(now, max_wait_s)
        if wait >= 0.0:
            self._admitted += 1
        return wait

    def refund(self, now: float) -> None:
        """Give back the token of an admitted call that did not run (at clock time ``now``)."""
        if self._own is None:
            self._admitted -= 1
        if self._shared is not None:
            self._shared.adjust(_GIVE_BACK)
            return
        self._backend.refund(now)

    def reject(self, retry_after_s: float, now: float) -> RateLimitedError:
        """Count a rejection, emit the event, and return the error to raise.

        Args:
            retry_after_s: seconds until a token is expected.
            now: the clock reading, seconds.
        """
        self._rejected += 1
        if self.on_event is not None:
            self.on_event(RateLimitRejected(policy=self.name, at=now, retry_after_s=retry_after_s))
        return RateLimitedError(
            f"rate limit of {self.rate:g}/s exceeded",
            resource=self.name or None,
            retry_after_s=retry_after_s,
        )

    async def wait(self, delay_s: float) -> None:
        """Sleep a reserved ``delay_s`` seconds; if cancelled, refund the reserved token.

        The call was counted as admitted by :meth:`try_acquire`; a cancelled
        wait un-counts it. With a shared store, ``delay_s`` is ``math.inf``
        (what :attr:`take` returned): this asks the store for the token first.

        Raises:
            RateLimitedError: (shared store only) no token within ``max_wait_s`` or
                the caller's deadline.
        """
        if delay_s == math.inf and self._shared is not None:
            delay_s = await self._ask()
            if delay_s == 0.0:
                return
        self._waiting += 1
        try:
            await self._clock.sleep(delay_s)
        except BaseException:
            self._cancelled += 1
            self.refund(self._now())
            raise
        finally:
            self._waiting -= 1
        self._waited += 1

    async def _ask(self) -> float:
        """Reserve a token in the shared store within ``max_wait_s`` and the deadline."""
        assert self._shared is not None
        max_wait = self.max_wait_s
        outer = DEADLINE.get()
        if outer is not None:
            left = outer[0] - outer[1]()
            if left < max_wait:
                max_wait = left if left > 0.0 else 0.0
        wait = await self._shared.reserve(_TAKE, max_wait)
        if wait < 0.0:
            raise self.reject(-wait, self._now())
        self._admitted += 1
        return wait

    async def acquire(self) -> None:
        """Take one token, waiting in arrival order if needed.

        Raises:
            RateLimitedError: no token within ``max_wait_s`` (or the deadline).
        """
        now = self._now()
        left = remaining()
        wait = self.try_acquire(now, now + left if left is not None else None)
        if wait != 0.0:
            if wait < 0.0:
                raise self.reject(-wait, now)
            await self.wait(wait)

    async def run(self, fn: Callable[[], Awaitable[T]], /) -> T:
        """``await acquire()`` then ``await fn()``."""
        await self.acquire()
        return await fn()

    def stats(self) -> RateLimiterSnapshot:
        """Frozen counters."""
        return RateLimiterSnapshot(
            name=self.name,
            rate=self.rate,
            burst=self.burst,
            available_tokens=self._available(),
            waiting=self._waiting,
            admitted=self.admitted,
            waited=self._waited,
            rejected=self._rejected,
            cancelled=self._cancelled,
        )

    def __repr__(self) -> str:
        return (
            f"RateLimiter(rate={self.rate:g}, burst={self.burst:g}, "
            f"available={self._available():.2f}, waiting={self._waiting})"
        )

    def _available(self) -> float:
        if self._shared is not None:
            return self._shared.available()
        return self._backend.available(self._now())


_TAKE: tuple[float] = (1.0,)
_GIVE_BACK: tuple[float] = (-1.0,)


def _ask_shared(now: float, max_wait_s: float, deadline_at: float | None) -> float:
    """The ``take`` of a limiter with a shared store: "ask it" (``math.inf``)."""
    return math.inf
