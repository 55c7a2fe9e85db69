"""L1: an in-process cache bounded by entry count AND by bytes, LRU, with a TTL per entry.

Every operation but :meth:`MemoryCache.delete_prefix` is O(1): a dict keeps
insertion order, and a hit moves its key to the end (most recently used); the
least recently used entries, at the front, are evicted while the cache is over
either bound. Expired entries are dropped when read, and counted as misses.

The byte bound counts the size each entry is given at :meth:`MemoryCache.set`
(``size_bytes=``): the tiered cache passes the length of the entry's serialized
form, which is what the same entry costs in Redis; without ``size_bytes=`` it is
estimated with ``sys.getsizeof`` of the value. An entry larger than
``max_bytes`` on its own is not stored.

LRU rather than an admission policy such as W-TinyLFU: a hit must stay
around a few hundred nanoseconds (the benchmark target is 1 µs for a whole
tiered ``get``), and a frequency sketch costs a hash and counter updates on
every access; the tiered cache's TTLs already bound how long a one-hit
wonder can occupy memory.

Time comes from an injectable ``clock`` (seconds) so tests of expiry never sleep.
Single-threaded by design (one event loop); not for use from several threads.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Hashable, Iterator
from typing import Any

from iogate.cache.stats import CacheStats

__all__ = ["CacheStats", "MemoryCache"]

_MISSING: Any = object()
RemoveHook = Callable[[Hashable, Any], object]


class MemoryCache:
    """An LRU cache of at most ``max_entries`` values and ``max_bytes`` bytes, each
    with an optional TTL.

    Args:
        max_entries: bound on the number of entries, ≥ 1.
        max_bytes: bound on the summed entry sizes, bytes, ≥ 1 (default 64 MiB).
        default_ttl_s: TTL in seconds of entries set without one (``None``: no expiry).
        clock: time in seconds (default ``time.monotonic``).
        on_remove: called as ``on_remove(key, value)`` whenever an entry leaves
            (evicted, expired, deleted, replaced or cleared) — the tiered cache
            keeps its tag index in step with it.

    Raises:
        ValueError: a bound < 1 or a TTL ≤ 0.
    """

    __slots__ = (
        "_bytes",
        "_clock",
        "_data",
        "_default_ttl_s",
        "_evictions",
        "_expirations",
        "_hits",
        "_max_bytes",
        "_max_entries",
        "_misses",
        "_on_remove",
    )

    def __init__(
        self,
        *,
        max_entries: int = 10_000,
        max_bytes: int = 64 * 1024 * 1024,
        default_ttl_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_remove: RemoveHook | None = None,
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        if default_ttl_s is not None and default_ttl_s <= 0:
            raise ValueError(f"default_ttl_s must be > 0, got {default_ttl_s}")
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._default_ttl_s = default_ttl_s
        self._clock = clock
        self._on_remove = on_remove
        # key -> (value, expires_at or None, size in bytes)
        self._data: dict[Hashable, tuple[Any, float | None, int]] = {}
        self._bytes = 0
        self._hits = self._misses = self._evictions = self._expirations = 0

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return (
            f"<MemoryCache {len(self._data)}/{self._max_entries} entries"
            f" {self._bytes}/{self._max_bytes} bytes>"
        )

    @property
    def bytes(self) -> int:
        """The accounted size of the live entries, bytes."""
        return self._bytes

    def get(self, key: Hashable, default: Any = None) -> Any:
        """The value under ``key``, or ``default`` when absent or expired."""
        item = self._data.pop(key, _MISSING)
        if item is _MISSING:
            self._misses += 1
            return default
        expires_at = item[1]
        if expires_at is not None and self._clock() >= expires_at:
            self._expirations += 1
            self._misses += 1
            self._removed(key, item)
            return default
        self._data[key] = item  # most recently used
        self._hits += 1
        return item[0]

    def get_at(self, key: Hashable, now: float, default: Any = None) -> Any:
        """:meth:`get` with the current time given (saves a clock call on a hot path)."""
        item = self._data.pop(key, _MISSING)
        if item is _MISSING:
            self._misses += 1
            return default
        expires_at = item[1]
        if expires_at is not None and now >= expires_at:
            self._expirations += 1
            self._misses += 1
            self._removed(key, item)
            return default
        self._data[key] = item  # most recently used
        self._hits += 1
        return item[0]

    def set(
        self,
        key: Hashable,
        value: Any,
        *,
        ttl_s: float | None = None,
        size_bytes: int | None = None,
    ) -> bool:
        """Store ``value`` for ``ttl_s`` seconds (the default TTL when ``None``),
        accounted as ``size_bytes``, evicting least recently used entries while
        over a bound. Returns ``False`` (and stores nothing) when ``size_bytes`` alone
        exceeds ``max_bytes``.

        Raises:
            ValueError: ``ttl_s`` ≤ 0 or ``size_bytes`` < 0.
        """
        ttl = self._default_ttl_s if ttl_s is None else ttl_s
        if ttl is not None and ttl <= 0:
            raise ValueError(f"ttl_s must be > 0, got {ttl}")
        nbytes = sys.getsizeof(value) if size_bytes is None else size_bytes
        if nbytes < 0:
            raise ValueError(f"size_bytes must be >= 0, got {nbytes}")
        old = self._data.pop(key, _MISSING)
        if old is not _MISSING:
            self._removed(key, old)
        if nbytes > self._max_bytes:
            return False
        data = self._data
        while data and (len(data) >= self._max_entries or self._bytes + nbytes > self._max_bytes):
            oldest = next(iter(data))
            self._removed(oldest, data.pop(oldest))
            self._evictions += 1
        data[key] = (value, None if ttl is None else self._clock() + ttl, nbytes)
        self._bytes += nbytes
        return True

    def delete(self, key: Hashable) -> bool:
        """Remove ``key``; whether it was present."""
        item = self._data.pop(key, _MISSING)
        if item is _MISSING:
            return False
        self._removed(key, item)
        return True

    def delete_prefix(self, prefix: str) -> int:
        """Remove every ``str`` key starting with ``prefix``; how many (O(n) in entries)."""
        doomed = [k for k in self._data if isinstance(k, str) and k.startswith(prefix)]
        for key in doomed:
            self.delete(key)
        return len(doomed)

    def keys(self) -> Iterator[Hashable]:
        """The keys, least recently used first (a copy: safe to delete while iterating)."""
        return iter(list(self._data))

    def clear(self) -> None:
        """Remove every entry (counters are kept)."""
        items = list(self._data.items())
        self._data.clear()
        self._bytes = 0
        if self._on_remove is not None:
            for key, item in items:
                self._on_remove(key, item[0])

    def _removed(self, key: Hashable, item: tuple[Any, float | None, int]) -> None:
        self._bytes -= item[2]
        if self._on_remove is not None:
            self._on_remove(key, item[0])

    def stats(self) -> CacheStats:
        """A frozen copy of the counters."""
        return CacheStats(
            entries=len(self._data),
            max_entries=self._max_entries,
            hits=self._hits,
            misses=self._misses,
            evictions=self._evictions,
            expirations=self._expirations,
            bytes=self._bytes,
            max_bytes=self._max_bytes,
        )
