"""Pool statistics: a cheap meter every backend updates, and its frozen snapshot.

A backend wraps each connection acquisition in :meth:`PoolMeter.acquiring` /
:meth:`PoolMeter.acquired` / :meth:`PoolMeter.released` (plain integer
updates, no lock: one event loop). Acquire waits are kept in a ring of the
last :data:`WAIT_SAMPLES` waits, from which :meth:`PoolMeter.snapshot`
computes the 99th percentile (nearest-rank) on demand, so the hot path never
sorts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["WAIT_SAMPLES", "PoolMeter", "PoolStats"]

WAIT_SAMPLES = 1024
"""How many recent acquire waits the p99 is computed over."""


@dataclass(frozen=True, slots=True)
class PoolStats:
    """One pool's state at the moment of :meth:`~iogate.databases.base.Database.stats`.

    Attributes:
        size: connections open now (SQLite: readers + the writer).
        max_size: the pool's bound.
        in_use: connections lent to a call or a transaction.
        idle: open connections nobody holds.
        waiting: callers waiting for a connection now.
        acquired_total: connections lent since open.
        acquire_wait_p99_s: 99th percentile of the wait for a connection over
            the last 1024 acquisitions, seconds (0.0 before any).
    """

    size: int
    max_size: int
    in_use: int
    idle: int
    waiting: int
    acquired_total: int
    acquire_wait_p99_s: float


class PoolMeter:
    """Counters for one pool (``__slots__``, integer updates only).

    The waits ring holds :data:`WAIT_SAMPLES` slots; acquisition number ``n``
    (counted by ``acquired_total``) writes slot ``n % WAIT_SAMPLES``, so the
    ring needs no index of its own and the hot path is three statements.
    """

    __slots__ = ("_waits", "acquired_total", "in_use", "waiting")

    def __init__(self) -> None:
        self.in_use = 0
        self.waiting = 0
        self.acquired_total = 0
        self._waits: list[float] = [0.0] * WAIT_SAMPLES

    def acquiring(self) -> None:
        """A caller starts waiting for a connection."""
        self.waiting += 1

    def acquired(self, wait_s: float) -> None:
        """The caller got one after ``wait_s`` seconds."""
        self.waiting -= 1
        self.in_use += 1
        n = self.acquired_total
        self._waits[n % WAIT_SAMPLES] = wait_s
        self.acquired_total = n + 1

    def took(self) -> None:
        """A caller got one without waiting (:meth:`acquiring` + ``acquired(0.0)``)."""
        self.in_use += 1
        n = self.acquired_total
        self._waits[n % WAIT_SAMPLES] = 0.0
        self.acquired_total = n + 1

    def abandoned(self) -> None:
        """The caller stopped waiting without a connection (cancelled, timed out)."""
        self.waiting -= 1

    def released(self) -> None:
        """A connection went back to the pool."""
        self.in_use -= 1

    def wait_p99(self) -> float:
        """Nearest-rank 99th percentile of the recent waits, seconds."""
        taken = min(self.acquired_total, WAIT_SAMPLES)
        if not taken:
            return 0.0
        ordered = sorted(self._waits[:taken])
        return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]

    def snapshot(self, *, size: int, max_size: int, idle: int | None = None) -> PoolStats:
        """Freeze the counters with the pool's own ``size`` (and ``idle`` if it knows it)."""
        in_use = min(self.in_use, size)
        return PoolStats(
            size=size,
            max_size=max_size,
            in_use=in_use,
            idle=max(0, size - in_use) if idle is None else idle,
            waiting=self.waiting,
            acquired_total=self.acquired_total,
            acquire_wait_p99_s=self.wait_p99(),
        )

    def __repr__(self) -> str:
        return f"<PoolMeter in_use={self.in_use} waiting={self.waiting}>"
