"""Shared, coarse timers that cancel tasks: the timer wheel of timeouts and deadlines.

``asyncio.timeout`` arms and cancels a ``TimerHandle`` per call (~3.7 µs on the
reference machine). A :class:`TimerWheel` instead rounds expiry times *up* to a
granularity (1 % of the duration, at most 10 ms) and lets every call expiring
in the same slot share one timer, as Netty's ``HashedWheelTimer`` and the Linux
kernel's timer wheel do. A timer therefore fires between 0 and ``granularity_s``
seconds late, never early.

Used by :class:`~iogate.policies.Timeout` (the attempt timeout) and by the
pipeline's deadline.
"""

from __future__ import annotations

import asyncio
import heapq
from math import ceil as _ceil
from typing import Any

from .clock import Cancellable, Clock, schedule

__all__ = ["FIRED", "TimerWheel", "cancelled_by_timer"]

_Bucket = dict[Any, int]
"""Tasks (with a nesting count) expiring in one slot of a :class:`TimerWheel`; the
key :data:`FIRED` is present once the slot has expired. A plain dict, so the
interpreter's specialised dict operations apply on the hot path."""

FIRED: Any = object()
"""The key a bucket holds once its slot expired (``FIRED in bucket``)."""


def cancelled_by_timer(task: asyncio.Task[Any], baseline: int, exc: BaseException) -> bool:
    """Whether ``exc``, raised in ``task`` after its timer's slot fired, is that timer's doing.

    ``baseline`` is ``task.cancelling()`` when the timer was armed. The test of
    ``asyncio.timeout``: the cancellation is ours when, once uncancelled (by
    :meth:`TimerWheel.remove`), the count is back at the baseline (nobody else
    cancelled too) and ``exc`` is the ``CancelledError`` it raised.
    """
    return task.cancelling() <= baseline and isinstance(exc, asyncio.CancelledError)


class TimerWheel:
    """Shared, coarse timers that cancel tasks at (slightly after) an expiry time.

    ``add(at, task)`` registers ``task`` to be cancelled once the clock passes
    ``at``, rounded *up* to ``granularity_s``, and returns the slot's bucket;
    ``remove(bucket, task)`` unregisters it and tells whether the slot expired
    (and so cancelled ``task``, a cancellation it then withdraws with
    ``task.uncancel()``; ``FIRED in bucket`` tells the same). Every call
    expiring in one slot shares one timer, so a registration costs a dict
    update, not a timer.

    The wheel keeps the slots in a heap of integers of its own and arms **one**
    event-loop timer, for its earliest slot (re-armed as slots fire). A 30 s
    deadline with 10 ms slots would otherwise keep ~3,000 live ``TimerHandle``
    objects in the loop's timer heap, whose Python-level comparisons (and the
    garbage collections the extra objects trigger) every other timer push and
    pop then pays for: ~10 % of a Redis GET.

    Args:
        granularity_s: slot width in seconds (> 0).
        clock: time source; its ``call_later`` is used when present.

    Raises:
        ValueError: ``granularity_s`` is not positive.
    """

    __slots__ = ("_armed", "_buckets", "_clock", "_g", "_handle", "_inv", "_keys", "_loop", "_now")

    def __init__(self, *, granularity_s: float, clock: Clock) -> None:
        if not granularity_s > 0:
            raise ValueError(f"granularity_s must be > 0, got {granularity_s!r}")
        self._g = granularity_s
        self._inv = 1.0 / granularity_s
        self._clock = clock
        self._now = clock.monotonic
        self._buckets: dict[int, _Bucket] = {}
        self._keys: list[int] = []  # heap of the slots in _buckets
        self._armed: int | None = None  # the slot the one timer is armed for
        self._handle: Cancellable | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def granularity_s(self) -> float:
        """The slot width, seconds."""
        return self._g

    @staticmethod
    def granularity_for(duration_s: float) -> float:
        """The default slot width (seconds) for a duration of ``duration_s`` seconds:
        1 % of it, between 0.1 ms and 10 ms."""
        return min(0.01, max(duration_s / 100.0, 0.0001))

    def add(self, at: float, task: asyncio.Task[Any]) -> _Bucket:
        """Cancel ``task`` once the clock passes ``at`` (clock seconds, rounded up to the
        granularity); return the slot's bucket, to pass to :meth:`remove`."""
        key = _ceil(at * self._inv)  # self.slot(at), inlined
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._new_bucket(key, task)
        if task in bucket:
            bucket[task] += 1
        else:
            bucket[task] = 1
        return bucket

    def slot(self, at: float) -> int:
        """The slot of expiry time ``at``: ``at`` rounded up to a multiple of the
        granularity (a multiplication, not a float floor division, which costs an
        ``fmod``)."""
        return _ceil(at * self._inv)

    def _new_bucket(self, key: int, task: asyncio.Task[Any]) -> _Bucket:
        loop = task.get_loop()
        if loop is not self._loop:
            # Slots armed on a previous event loop never fire in this one.
            self._buckets = {}
            self._keys = []
            self._armed = self._handle = None
            self._loop = loop
        bucket: _Bucket = {}
        self._buckets[key] = bucket
        heapq.heappush(self._keys, key)
        armed = self._armed
        if armed is None or key < armed:
            if self._handle is not None:
                self._handle.cancel()
            self._arm(key)
        return bucket

    def _arm(self, key: int) -> None:
        self._armed = key
        self._handle = schedule(self._clock, key * self._g - self._now(), self._tick)

    def _tick(self) -> None:
        """The one timer fired: expire its slot and every other slot now due, re-arm."""
        armed = self._armed
        self._armed = self._handle = None
        keys = self._keys
        now = self._now()
        g = self._g
        while keys and ((armed is not None and keys[0] <= armed) or keys[0] * g <= now):
            self._fire(heapq.heappop(keys))
        if keys:
            self._arm(keys[0])

    @staticmethod
    def remove(bucket: _Bucket, task: asyncio.Task[Any]) -> bool:
        """Undo one :meth:`add` of ``task`` to ``bucket``; return whether the slot fired.

        If it fired, the wheel cancelled ``task``: the cancellation request is
        withdrawn (``task.uncancel()``), so a call that swallowed it leaks nothing;
        a ``CancelledError`` already raised still propagates, and
        :func:`cancelled_by_timer` tells whether it was the wheel's.
        """
        n = bucket[task]
        if n == 1:
            del bucket[task]
        else:
            bucket[task] = n - 1
        if FIRED in bucket:
            task.uncancel()
            return True
        return False

    def _fire(self, key: int) -> None:
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            return
        for task in bucket:
            task.cancel()
        bucket[FIRED] = 1

    def __len__(self) -> int:
        return sum(len(b) - (FIRED in b) for b in self._buckets.values())

    def __repr__(self) -> str:
        return (
            f"TimerWheel(granularity_s={self._g}, slots={len(self._buckets)}, entries={len(self)})"
        )
