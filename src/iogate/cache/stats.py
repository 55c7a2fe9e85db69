"""Typed statistics of the cache tiers: frozen snapshots, never dicts.

- :class:`CacheStats` — the in-process tier (L1, :class:`~iogate.cache.memory.MemoryCache`);
- :class:`RedisTierStats` — the Redis tier (L2, :class:`~iogate.cache.redis.RedisTier`);
- :class:`TieredCacheStats` — both, plus what only the read-through layer sees
  (loader calls, coalesced waiters, stale answers, early refreshes).

Every ``hit_rate`` is hits / (hits + misses), 0.0 before any lookup.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["CacheStats", "RedisTierStats", "TieredCacheStats"]


def _rate(hits: int, misses: int) -> float:
    lookups = hits + misses
    return hits / lookups if lookups else 0.0


@dataclass(frozen=True, slots=True)
class CacheStats:
    """L1 counters since creation (``entries`` and ``bytes`` are the live size).

    Attributes:
        entries, max_entries: live entries and their bound.
        hits, misses: lookups (an expired entry counts as a miss).
        evictions: entries dropped to respect a bound (LRU order).
        expirations: entries dropped because their TTL passed.
        bytes, max_bytes: the accounted size of the live entries and its bound (bytes).
    """

    entries: int
    max_entries: int
    hits: int
    misses: int
    evictions: int
    expirations: int
    bytes: int = 0
    max_bytes: int = 0

    @property
    def hit_rate(self) -> float:
        return _rate(self.hits, self.misses)


@dataclass(frozen=True, slots=True)
class RedisTierStats:
    """L2 counters since creation.

    Attributes:
        hits, misses: ``GET``s that found / did not find the key.
        writes: entries stored.
        errors: calls that failed (Redis down, timeout) or were refused by the
            open circuit breaker; each degraded to "no L2" for that call.
        circuit: the breaker's state (``"closed"``, ``"open"``, ``"half_open"``).
        subscribed: whether the invalidation subscription is live.
        bytes: bytes written (serialized entries).
    """

    hits: int
    misses: int
    writes: int
    errors: int
    circuit: str
    subscribed: bool
    bytes: int

    @property
    def hit_rate(self) -> float:
        return _rate(self.hits, self.misses)


@dataclass(frozen=True, slots=True)
class TieredCacheStats:
    """A snapshot of a :class:`~iogate.cache.tiered.TieredCache`.

    Attributes:
        l1: the in-process tier.
        l2: the Redis tier, ``None`` when none is configured.
        loads: loader calls made by this process.
        coalesced: callers that waited for another caller's load (single-flight)
            instead of calling the loader.
        lease_waits: loads that waited for another process's lease.
        stale_served: answers given from an expired entry (stale-while-revalidate
            or stale-if-error).
        early_refreshes: XFetch refreshes started before expiry.
        invalidations: tag / prefix / key invalidations applied to L1
            (local and received from other processes).
    """

    l1: CacheStats
    l2: RedisTierStats | None
    loads: int
    coalesced: int
    lease_waits: int
    stale_served: int
    early_refreshes: int
    invalidations: int

    @property
    def hit_rate(self) -> float:
        """Hits in any tier over lookups (a lookup missing L1 and hitting L2 is a hit)."""
        l2_hits = self.l2.hits if self.l2 is not None else 0
        return _rate(self.l1.hits + l2_hits, self.l1.misses - l2_hits)

    def as_json(self) -> dict[str, Any]:
        """A JSON-safe rendering (for ``/v1/stats``), hit rates included."""
        out: dict[str, Any] = asdict(self)
        out["hit_rate"] = round(self.hit_rate, 6)
        out["l1"]["hit_rate"] = round(self.l1.hit_rate, 6)
        if self.l2 is not None:
            out["l2"]["hit_rate"] = round(self.l2.hit_rate, 6)
        return out
