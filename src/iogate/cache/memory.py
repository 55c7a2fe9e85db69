"""L1: an in-process cache, LRU-bounded by entry count, with a TTL per entry.

Every operation is O(1): a dict keeps insertion order, and a hit moves its key
to the end (most recently used); the least recently used entry, at the front,
is evicted when the cache is full. Expired entries are dropped when read, and
counted as misses. Time comes from an injectable ``clock`` (seconds, monotonic)
so tests of expiry never sleep.

Single-threaded by design (one event loop); not for use from several threads.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

__all__ = ["CacheStats", "MemoryCache"]

_MISSING: Any = object()


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Counters since creation (``entries`` is the live size).

    ``hit_rate`` is hits / (hits + misses), 0.0 before any lookup.
    """

    entries: int
    max_entries: int
    hits: int
    misses: int
    evictions: int
    expirations: int

    @property
    def hit_rate(self) -> float:
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0


class MemoryCache:
    """An LRU cache of at most ``max_entries`` values, each with an optional TTL.

    Args:
        max_entries: bound on the number of entries, ≥ 1.
        default_ttl_s: TTL in seconds of entries set without one (``None``: no expiry).
        clock: monotonic time in seconds (default ``time.monotonic``).

    Raises:
        ValueError: ``max_entries`` < 1 or a TTL ≤ 0.
    """

    __slots__ = (
        "_clock",
        "_data",
        "_default_ttl_s",
        "_evictions",
        "_expirations",
        "_hits",
        "_max_entries",
        "_misses",
    )

    def __init__(
        self,
        *,
        max_entries: int = 10_000,
        default_ttl_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        if default_ttl_s is not None and default_ttl_s <= 0:
            raise ValueError(f"default_ttl_s must be > 0, got {default_ttl_s}")
        self._max_entries = max_entries
        self._default_ttl_s = default_ttl_s
        self._clock = clock
        self._data: dict[Hashable, tuple[Any, float | None]] = {}
        self._hits = self._misses = self._evictions = self._expirations = 0

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"<MemoryCache {len(self._data)}/{self._max_entries} entries>"

    def get(self, key: Hashable, default: Any = None) -> Any:
        """The value under ``key``, or ``default`` when absent or expired."""
        item = self._data.pop(key, _MISSING)
        if item is _MISSING:
            self._misses += 1
            return default
        value, expires_at = item
        if expires_at is not None and self._clock() >= expires_at:
            self._expirations += 1
            self._misses += 1
            return default
        self._data[key] = item  # most recently used
        self._hits += 1
        return value

    def set(self, key: Hashable, value: Any, *, ttl_s: float | None = None) -> None:
        """Store ``value`` for ``ttl_s`` seconds (the default TTL when ``None``),
        evicting the least recently used entry when full."""
        ttl = self._default_ttl_s if ttl_s is None else ttl_s
        if ttl is not None and ttl <= 0:
            raise ValueError(f"ttl_s must be > 0, got {ttl}")
        self._data.pop(key, None)
        if len(self._data) >= self._max_entries:
            del self._data[next(iter(self._data))]
            self._evictions += 1
        self._data[key] = (value, None if ttl is None else self._clock() + ttl)

    def delete(self, key: Hashable) -> bool:
        """Remove ``key``; whether it was present."""
        return self._data.pop(key, _MISSING) is not _MISSING

    def clear(self) -> None:
        """Remove every entry (counters are kept)."""
        self._data.clear()

    def stats(self) -> CacheStats:
        """A frozen copy of the counters."""
        return CacheStats(
            len(self._data),
            self._max_entries,
            self._hits,
            self._misses,
            self._evictions,
            self._expirations,
        )
