"""Bulkhead: bound the calls in flight to one resource, with a bounded, timed queue.

resilience4j's ``SemaphoreBulkhead`` plus a queue bound (as Polly's
``BulkheadPolicy(maxParallelization, maxQueuingActions)``): at most
``max_concurrent`` calls run; up to ``max_queued`` more wait, in arrival order,
at most ``max_wait_s`` seconds (or the caller's remaining deadline, if shorter).
Anything beyond fails at once with :class:`~iogate.errors.BulkheadFullError`.

A freed slot is handed directly to the first waiter, so a newcomer can never
overtake the queue. A waiter cancelled after it was handed a slot passes the
slot on; a waiter cancelled or timed out before leaves the queue. No slot leaks.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from ..errors import BulkheadFullError
from .clock import Clock, SystemClock, schedule
from .deadline import remaining
from .events import EventListener, PolicyEvent

__all__ = ["Bulkhead", "BulkheadRejected", "BulkheadSnapshot"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class BulkheadRejected(PolicyEvent):
    """A call was refused.

    ``reason`` is ``"full"`` (the queue was full) or ``"timeout"`` (no slot in time).
    """

    reason: str
    active: int
    queued: int


@dataclass(frozen=True, slots=True, kw_only=True)
class BulkheadSnapshot:
    """Counters of a :class:`Bulkhead`."""

    name: str
    max_concurrent: int
    max_queued: int
    active: int
    queued: int
    admitted: int
    rejected: int
    timed_out: int


class Bulkhead:
    """At most ``max_concurrent`` calls at once, ``max_queued`` waiting (see the module docstring).

    Args:
        max_concurrent: calls running at once (>= 1).
        max_queued: calls allowed to wait for a slot (>= 0).
        max_wait_s: longest a call waits in the queue, seconds (>= 0).
        name: name used in events and errors.
        on_event: listener for :class:`BulkheadRejected`.
        clock: time source.

    Raises:
        ValueError: a bound above is violated.
    """

    __slots__ = (
        "_active",
        "_admitted",
        "_clock",
        "_rejected",
        "_timed_out",
        "_waiters",
        "max_concurrent",
        "max_queued",
        "max_wait_s",
        "name",
        "on_event",
    )

    def __init__(
        self,
        *,
        max_concurrent: int,
        max_queued: int = 0,
        max_wait_s: float = 1.0,
        name: str = "",
        on_event: EventListener | None = None,
        clock: Clock | None = None,
    ) -> None:
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be >= 1, got {max_concurrent!r}")
        if max_queued < 0:
            raise ValueError(f"max_queued must be >= 0, got {max_queued!r}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s!r}")
        self.max_concurrent = max_concurrent
        self.max_queued = max_queued
        self.max_wait_s = float(max_wait_s)
        self.name = name
        self.on_event = on_event
        self._clock = clock if clock is not None else SystemClock()
        self._waiters: deque[asyncio.Future[bool]] = deque()
        self._active = 0
        self._admitted = 0
        self._rejected = 0
        self._timed_out = 0

    @property
    def active(self) -> int:
        """Calls holding a slot now."""
        return self._active

    @property
    def queued(self) -> int:
        """Calls waiting for a slot."""
        return len(self._waiters)

    @property
    def admitted(self) -> int:
        """Calls given a slot, since creation."""
        return self._admitted

    @property
    def rejected(self) -> int:
        """Calls refused (queue full or no slot in time), since creation."""
        return self._rejected

    @property
    def timed_out(self) -> int:
        """Calls refused because no slot came in time, since creation."""
        return self._timed_out

    def try_enter(self) -> bool:
        """Take a slot if one is free and nobody is queued; never waits.

        The synchronous fast path of :meth:`enter` (the pipeline calls it first
        and awaits :meth:`enter` only when it returns ``False``). A ``True``
        must be paired with one :meth:`release`.
        """
        if self._active < self.max_concurrent and not self._waiters:
            self._active += 1
            self._admitted += 1
            return True
        return False

    def _full(self, reason: str) -> BulkheadFullError:
        self._rejected += 1
        if reason == "timeout":
            self._timed_out += 1
        if self.on_event is not None:
            self.on_event(
                BulkheadRejected(
                    policy=self.name,
                    at=self._clock.monotonic(),
                    reason=reason,
                    active=self._active,
                    queued=len(self._waiters),
                )
            )
        what = "queue full" if reason == "full" else f"no slot within {self.max_wait_s:g}s"
        return BulkheadFullError(
            f"bulkhead of {self.max_concurrent} calls: {what}", resource=self.name or None
        )

    async def enter(self) -> None:
        """Take a slot, queueing if needed.

        Raises:
            BulkheadFullError: the queue is full, or no slot came within
                ``max_wait_s`` (or the remaining deadline).
        """
        if self.try_enter():
            return
        if len(self._waiters) >= self.max_queued:
            raise self._full("full")
        limit = self.max_wait_s
        left = remaining()
        if left is not None and left < limit:
            limit = left
        if limit <= 0:
            raise self._full("timeout")
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)

        def expire() -> None:
            if not fut.done():
                fut.set_result(False)

        timer = schedule(self._clock, limit, expire)
        try:
            got = await fut
        except BaseException:
            if fut.done() and not fut.cancelled() and fut.result():
                self.release()  # handed a slot, then cancelled: pass it on
            else:
                self._remove(fut)
            raise
        finally:
            timer.cancel()
        if not got:
            self._remove(fut)
            raise self._full("timeout")
        self._admitted += 1

    def _remove(self, fut: asyncio.Future[bool]) -> None:
        with contextlib.suppress(ValueError):  # already handed over or removed
            self._waiters.remove(fut)

    def release(self) -> None:
        """Free a slot: hand it to the first live waiter, else return it. Never waits."""
        waiters = self._waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(True)
                return
        self._active -= 1

    async def run(self, fn: Callable[[], Awaitable[T]], /) -> T:
        """``fn()`` inside a slot."""
        await self.enter()
        try:
            return await fn()
        finally:
            self.release()

    def stats(self) -> BulkheadSnapshot:
        """Frozen counters."""
        return BulkheadSnapshot(
            name=self.name,
            max_concurrent=self.max_concurrent,
            max_queued=self.max_queued,
            active=self._active,
            queued=len(self._waiters),
            admitted=self._admitted,
            rejected=self._rejected,
            timed_out=self._timed_out,
        )

    def __repr__(self) -> str:
        return (
            f"Bulkhead(name={self.name!r}, active={self._active}/{self.max_concurrent}, "
            f"queued={len(self._waiters)}/{self.max_queued})"
        )
