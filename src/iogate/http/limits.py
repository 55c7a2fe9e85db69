"""Per-upstream rate limits: requests per second / minute / hour, and LLM tokens per minute.

Each limit is a token bucket holding ``n`` tokens and refilled at ``n`` per
window, so a full window's allowance may be spent in a burst and no more than
``n`` are ever spent in any window after that. A request takes one token
from every request bucket per attempt; an LLM call also takes its *estimated*
tokens from the tokens-per-minute bucket up front, and :meth:`UpstreamLimits.settle`
corrects the bucket once the response's ``usage`` tells the real count (the
bucket may go into debt: later calls wait it off).

A call waits for its tokens (reservation: FIFO-fair, no busy loop); one that
would wait longer than ``max_wait_s`` is refused at once with
:class:`~iogate.errors.RateLimitedError` carrying ``retry_after_s``.
The pipeline's own ``rate_limit`` policy still applies on top of these.

With ``shared=`` (``[cluster]``) the same buckets live in a store every gateway
process shares (:class:`~iogate.policies.SharedBuckets`, taken from in one
atomic step), so the limits hold for the deployment, not the process.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from iogate.errors import RateLimitedError
from iogate.policies.clock import Clock, SystemClock
from iogate.policies.rate_limit import SharedBuckets, SharedLimits

__all__ = ["LimitsSnapshot", "UpstreamLimits"]


class _Bucket:
    __slots__ = ("capacity", "level", "rate", "stamp")

    def __init__(self, capacity: float, window_s: float, now: float) -> None:
        self.capacity = capacity
        self.rate = capacity / window_s
        self.level = capacity
        self.stamp = now

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait_for(self, amount: float) -> float:
        return 0.0 if self.level >= amount else (amount - self.level) / self.rate


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitsSnapshot:
    """Counters of :class:`UpstreamLimits` (tokens: LLM tokens)."""

    admitted: int
    delayed: int
    rejected: int
    tokens_estimated: int
    tokens_used: int


class UpstreamLimits:
    """Request and token rate limits of one upstream.

    Args:
        per_second, per_minute, per_hour: requests allowed per window (``None``: no limit).
        tokens_per_minute: LLM tokens per minute (``None``: no limit).
        max_wait_s: longest a call waits for its tokens, seconds (>= 0).
        clock: time source (tests pass a fake one).
        shared: keep the buckets in this store (shared by every process) instead of
            in process; ``name`` names them there.
        name: the upstream's name (the shared buckets' name).

    Raises:
        ValueError: a limit is not positive, or ``max_wait_s`` is negative.
    """

    __slots__ = (
        "_amounts",
        "_clock",
        "_requests",
        "_shared",
        "_tokens",
        "admitted",
        "delayed",
        "max_wait_s",
        "rejected",
        "tokens_estimated",
        "tokens_used",
    )

    def __init__(
        self,
        *,
        per_second: float | None = None,
        per_minute: float | None = None,
        per_hour: float | None = None,
        tokens_per_minute: float | None = None,
        max_wait_s: float = 60.0,
        clock: Clock | None = None,
        shared: SharedLimits | None = None,
        name: str = "",
    ) -> None:
        for label, value in (
            ("per_second", per_second),
            ("per_minute", per_minute),
            ("per_hour", per_hour),
            ("tokens_per_minute", tokens_per_minute),
        ):
            if value is not None and not value > 0:
                raise ValueError(f"{label} must be > 0, got {value!r}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s!r}")
        self._clock = clock if clock is not None else SystemClock()
        now = self._clock.monotonic()
        self._requests = [
            _Bucket(n, window, now)
            for n, window in ((per_second, 1.0), (per_minute, 60.0), (per_hour, 3600.0))
            if n is not None
        ]
        self._tokens = _Bucket(tokens_per_minute, 60.0, now) if tokens_per_minute else None
        self.max_wait_s = max_wait_s
        self.admitted = self.delayed = self.rejected = 0
        self.tokens_estimated = self.tokens_used = 0
        self._shared: SharedBuckets | None = None
        self._amounts: list[float] = []
        specs = [(b.rate, b.capacity) for b in self._requests]
        if self._tokens is not None:
            specs.append((self._tokens.rate, self._tokens.capacity))
        if shared is not None and specs:
            self._shared = shared.buckets(f"up:{name}", specs)
            self._amounts = [0.0] * len(specs)

    @property
    def enabled(self) -> bool:
        """Whether any limit is set."""
        return bool(self._requests) or self._tokens is not None

    async def acquire(self, *, requests: int = 1, tokens: int = 0) -> float:
        """Take ``requests`` request tokens and ``tokens`` LLM tokens, waiting if needed.

        Returns:
            the seconds waited.

        Raises:
            RateLimitedError: the wait would exceed ``max_wait_s`` (nothing is taken).
        """
        if self._shared is not None:
            return await self._acquire_shared(requests, tokens)
        now = self._clock.monotonic()
        wait = 0.0
        for bucket in self._requests:
            bucket.refill(now)
            wait = max(wait, bucket.wait_for(requests))
        tb = self._tokens
        if tb is not None and tokens:
            tb.refill(now)
            # A call larger than the whole bucket can never fit: let it through
            # once the bucket is full, rather than refuse it forever.
            wait = max(wait, tb.wait_for(min(tokens, tb.capacity)))
        if wait > self.max_wait_s:
            self.rejected += 1
            raise RateLimitedError(
                f"rate limit: next slot in {wait:.3f}s (above max_wait {self.max_wait_s:g}s)",
                retry_after_s=wait,
            )
        for bucket in self._requests:
            bucket.level -= requests
        if tb is not None and tokens:
            tb.level -= tokens
            self.tokens_estimated += tokens
        self.admitted += 1
        if wait > 0:
            self.delayed += 1
            await self._clock.sleep(wait)
        return wait

    async def _acquire_shared(self, requests: int, tokens: int) -> float:
        assert self._shared is not None
        amounts = self._amounts_of(requests, tokens)
        wait = await self._shared.reserve(amounts, self.max_wait_s)
        if wait < 0.0:
            self.rejected += 1
            raise RateLimitedError(
                f"rate limit: next slot in {-wait:.3f}s (above max_wait {self.max_wait_s:g}s)",
                retry_after_s=-wait,
            )
        if self._tokens is not None and tokens:
            self.tokens_estimated += tokens
        self.admitted += 1
        if wait > 0:
            self.delayed += 1
            await self._clock.sleep(wait)
        return wait

    def _amounts_of(self, requests: float, tokens: float) -> Sequence[float]:
        amounts = list(self._amounts)
        for i in range(len(self._requests)):
            amounts[i] = requests
        if self._tokens is not None:
            amounts[-1] = tokens
        return amounts

    def settle(self, *, estimated: int, actual: int) -> None:
        """Correct the token bucket once the real token count of a call is known."""
        self.tokens_used += actual
        if self._tokens is not None:
            if self._shared is not None:
                if actual != estimated:
                    self._shared.adjust(self._amounts_of(0, actual - estimated))
                return
            self._tokens.level -= actual - estimated

    def stats(self) -> LimitsSnapshot:
        """Frozen counters."""
        return LimitsSnapshot(
            admitted=self.admitted,
            delayed=self.delayed,
            rejected=self.rejected,
            tokens_estimated=self.tokens_estimated,
            tokens_used=self.tokens_used,
        )

    def __repr__(self) -> str:
        return (
            f"UpstreamLimits(requests={len(self._requests)} windows, "
            f"tokens={'on' if self._tokens else 'off'}, admitted={self.admitted})"
        )
