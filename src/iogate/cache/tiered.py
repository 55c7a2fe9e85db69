"""The tiered read-through cache: L1 (memory) → L2 (Redis, optional) → loader.

>>> cache = TieredCache(max_entries=10_000, max_bytes=64 << 20)     # doctest: +SKIP
>>> user = await cache.get_or_load("user:1", load_user, ttl_s=60, tags=["users"])

Reads look in L1, then L2 (an L2 hit is copied into L1), then call the
loader; a loaded value is written to both tiers. Around the loader:

- **single-flight** in the process (:mod:`iogate.cache._singleflight`): 1,000
  concurrent misses on one key make one loader call;
- a **Redis lease** across processes (:meth:`RedisTier.acquire_lease`): one
  process computes while the others poll L2 for its result, every
  ``lease_poll_s``, up to ``lease_wait_s``; then they compute themselves
  (a holder that dies only delays them by the wait, never blocks them);
- **XFetch** early refresh (:mod:`iogate.cache._xfetch`): a hit may start a
  background refresh before expiry, with the paper's probability; the caller
  gets the current value at once;
- **stale-while-revalidate**: up to ``stale_while_revalidate_s`` after expiry
  the old value is returned (``stale=True``) while one background refresh runs
  (RFC 5861's directive, applied to any value);
- **stale-if-error**: up to ``stale_if_error_s`` after expiry, a loader that
  raises is answered with the old value (``stale=True``) instead of its error.

Entries carry **tags**; :meth:`TieredCache.invalidate_tags` and
:meth:`TieredCache.invalidate_prefix` remove them from both tiers and, through
Redis pub/sub, from every other process's L1 (see :mod:`iogate.cache.redis`
for the delay bound). A load that overlaps an invalidation of its tags does
not store its (possibly outdated) result.

**Redis down**: every L2 call is guarded by a circuit breaker; when it fails,
the cache works from L1 alone and no caller sees an error. An invalidation
that could not reach Redis is kept and replayed before L2 is read again, so an
outage cannot let L2 serve data a write made through iogate invalidated.

Time: entries expire on ``wall_clock`` (seconds since the epoch by default:
entries travel between processes); waits use ``clock.sleep``. Both, and the
XFetch random source ``rng``, are injectable for deterministic tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from iogate.cache._singleflight import SingleFlight
from iogate.cache._xfetch import XFETCH_HORIZON, should_refresh_early, should_refresh_early_at
from iogate.cache.memory import MemoryCache
from iogate.cache.redis import Invalidation, RedisTier, TierUnavailable
from iogate.cache.serialization import Entry, decode_entry, encode_entry
from iogate.cache.stats import TieredCacheStats
from iogate.cache.tags import TagIndex, validate_tags
from iogate.lifecycle import AsyncResource
from iogate.policies import Clock, SystemClock

__all__ = ["CacheResult", "Source", "TieredCache"]

T = TypeVar("T")
Source = Literal["l1", "l2", "loader"]
_MISSING: Any = object()
_MAX_TRACKED_TAGS = 100_000


@dataclass(frozen=True, slots=True)
class CacheResult(Generic[T]):
    """What :meth:`TieredCache.get_or_load_result` found.

    Attributes:
        value: the value (shared with other readers: do not mutate it).
        stale: past its TTL, served within a stale-while-revalidate or
            stale-if-error window.
        source: ``"l1"``, ``"l2"`` or ``"loader"``.
    """

    value: T
    stale: bool
    source: Source


class TieredCache(AsyncResource):
    """L1 memory + optional L2 Redis, read-through (see the module docstring).

    Args:
        max_entries: L1 bound on entries (≥ 1).
        max_bytes: L1 bound on bytes (serialized size of the entries, ≥ 1).
        default_ttl_s: TTL of entries set without one, seconds (> 0).
        redis: the L2 tier, or ``None`` for an in-process cache only.
        xfetch_beta: XFetch's β (≥ 0; 0 turns early refresh off).
        stale_while_revalidate_s: seconds after expiry a value is served while it
            is refreshed in the background (≥ 0).
        stale_if_error_s: seconds after expiry a value is served when its loader
            fails (≥ 0).
        lease_ttl_s: lifetime of a cross-process load lease, seconds (> 0).
        lease_wait_s: how long a process waits for another's lease, seconds (≥ 0).
        lease_poll_s: pause between looks at L2 while waiting, seconds (> 0).
        wall_clock: entry time, seconds (``time.time``).
        clock: sleeps while waiting for a lease (``SystemClock``).
        rng: uniform [0, 1) random numbers for XFetch (``random.random``).

    Raises:
        ValueError: a bound above is violated.

    Usable without :meth:`open` when ``redis`` is ``None``; ``async with`` (or
    ``open()``) connects the Redis tier and subscribes to invalidations.
    """

    def __init__(
        self,
        *,
        max_entries: int = 10_000,
        max_bytes: int = 64 * 1024 * 1024,
        default_ttl_s: float = 300.0,
        redis: RedisTier | None = None,
        xfetch_beta: float = 1.0,
        stale_while_revalidate_s: float = 0.0,
        stale_if_error_s: float = 0.0,
        lease_ttl_s: float = 10.0,
        lease_wait_s: float = 5.0,
        lease_poll_s: float = 0.02,
        wall_clock: Callable[[], float] = time.time,
        clock: Clock | None = None,
        rng: Callable[[], float] = random.random,
    ) -> None:
        super().__init__("cache")
        if not default_ttl_s > 0:
            raise ValueError(f"default_ttl_s must be > 0, got {default_ttl_s}")
        if xfetch_beta < 0:
            raise ValueError(f"xfetch_beta must be >= 0, got {xfetch_beta}")
        if stale_while_revalidate_s < 0 or stale_if_error_s < 0:
            raise ValueError("stale_while_revalidate_s and stale_if_error_s must be >= 0")
        if not lease_ttl_s > 0 or lease_wait_s < 0 or not lease_poll_s > 0:
            raise ValueError("lease_ttl_s and lease_poll_s must be > 0, lease_wait_s >= 0")
        self._now = wall_clock
        self._clock = clock if clock is not None else SystemClock()
        self._rng = rng
        self._tags = TagIndex()
        self._l1 = MemoryCache(
            max_entries=max_entries, max_bytes=max_bytes, clock=wall_clock, on_remove=self._gone
        )
        self._redis = redis
        self.default_ttl_s = default_ttl_s
        self.xfetch_beta = xfetch_beta
        self._swr = stale_while_revalidate_s
        self._sie = stale_if_error_s
        self._retain = max(stale_while_revalidate_s, stale_if_error_s)
        self._lease_ttl = lease_ttl_s
        self._lease_polls = max(1, round(lease_wait_s / lease_poll_s)) if lease_wait_s else 0
        self._lease_poll = lease_poll_s
        self._flight = SingleFlight()
        self._background: set[asyncio.Task[Any]] = set()
        self._gen: dict[str, int] = {}
        self._epoch = 0
        self._pending: list[tuple[str, Any]] = []  # invalidations Redis has not seen yet
        self._loads = self._lease_waits = self._stale = self._early = self._invalidations = 0

    # -- lifecycle ------------------------------------------------------------------

    async def _open(self) -> None:
        if self._redis is not None:
            await self._redis.open(on_message=self._received, on_resubscribe=self._resubscribed)

    async def _close(self) -> None:
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self._flight.cancel_all()
        if self._redis is not None:
            await self._redis.close()

    @property
    def l1(self) -> MemoryCache:
        """The in-process tier (also where the upstream response cache keeps its
        entries, under tuple keys that never collide with the ``str`` keys here)."""
        return self._l1

    @property
    def redis(self) -> RedisTier | None:
        """The Redis tier, if configured."""
        return self._redis

    # -- reads ----------------------------------------------------------------------

    async def get(self, key: str, default: Any = None) -> Any:
        """The fresh value under ``key`` (L1, then L2), or ``default``."""
        now = self._now()
        entry = self._l1.get_at(key, now, _MISSING)
        if entry is _MISSING:
            redis = self._redis
            if redis is None:
                return default
            entry = await self._from_l2(key)
            if entry is None:
                return default
        if now < entry.expires_at:
            return entry.value
        return default

    async def lookup(self, key: str) -> CacheResult[Any] | None:
        """The value under ``key`` with where it came from, also when stale within
        the stale windows (``stale=True``); ``None`` when absent."""
        entry, source = await self._find(key)
        if entry is None:
            return None
        if self._now() < entry.expires_at:
            return CacheResult(entry.value, False, source)
        return CacheResult(entry.value, True, source)

    async def _find(self, key: str) -> tuple[Entry | None, Source]:
        entry = self._l1.get(key, _MISSING)
        if entry is not _MISSING:
            return entry, "l1"
        if self._redis is None:
            return None, "l1"
        return await self._from_l2(key), "l2"

    async def _from_l2(self, key: str) -> Entry | None:
        redis = self._redis
        if redis is None or (self._pending and not await self._l2_ready()):
            return None
        try:
            raw = await redis.get(key)
        except TierUnavailable:
            return None
        if raw is None:
            return None
        try:
            entry = decode_entry(raw)
        except ValueError:
            return None  # written by another version or corrupted: a miss
        now = self._now()  # once after the round trip, for the check and the L1 copy
        if now >= entry.expires_at + self._retain:
            return None
        self._store_l1(key, entry, len(raw), now)
        return entry

    # -- writes ---------------------------------------------------------------------

    async def set(
        self, key: str, value: Any, *, ttl_s: float | None = None, tags: Iterable[str] = ()
    ) -> None:
        """Store ``value`` under ``key`` in both tiers for ``ttl_s`` seconds (default
        TTL when ``None``), invalidated by any of ``tags``; other processes drop
        their L1 copy of ``key``.

        Raises:
            TypeError: the value cannot be serialized (:mod:`iogate.cache.serialization`).
            ValueError: ``ttl_s`` ≤ 0 or a bad tag.
        """
        ttl_s = self._ttl(ttl_s)
        entry = Entry(value, self._now() + ttl_s, 0.0, validate_tags(tags))
        data = encode_entry(entry)
        self._store_l1(key, entry, len(data))
        redis = self._redis
        if redis is not None and await self._l2_ready():
            with contextlib.suppress(TierUnavailable):
                await redis.set(key, data, ttl_s=ttl_s + self._retain, tags=entry.tags)

    async def delete(self, key: str) -> bool:
        """Remove ``key`` from both tiers and every process's L1; whether it was found."""
        found = self._l1.delete(key)
        redis = self._redis
        if redis is not None:
            if not await self._l2_ready():
                self._pending.append(("keys", key))
                return found
            try:
                found = await redis.delete(key) or found
            except TierUnavailable:
                self._pending.append(("keys", key))
        return found

    async def invalidate_tags(self, tags: Iterable[str]) -> int:
        """Remove every entry carrying one of ``tags``, in both tiers and in every
        process's L1; the number of entries removed here (L1 plus L2 keys).

        Raises:
            ValueError: a bad tag.
        """
        names = validate_tags(tags)
        if not names:
            return 0
        removed = self._drop_tags(names)
        redis = self._redis
        if redis is not None:
            if not await self._l2_ready():
                self._pending.append(("tags", names))
                return removed
            try:
                removed += await redis.invalidate_tags(names)
            except TierUnavailable:
                self._pending.append(("tags", names))
        return removed

    async def invalidate_prefix(self, prefix: str) -> int:
        """Remove every entry whose key starts with ``prefix``, everywhere (as
        :meth:`invalidate_tags`); ``""`` removes all. O(entries) in L1, a SCAN in Redis."""
        removed = self._drop_prefix(prefix)
        redis = self._redis
        if redis is not None:
            if not await self._l2_ready():
                self._pending.append(("prefix", prefix))
                return removed
            try:
                removed += await redis.invalidate_prefix(prefix)
            except TierUnavailable:
                self._pending.append(("prefix", prefix))
        return removed

    async def clear(self) -> int:
        """Remove every entry of this cache in both tiers (``invalidate_prefix("")``)."""
        return await self.invalidate_prefix("")

    # -- read-through ---------------------------------------------------------------

    async def get_or_load(
        self,
        key: str,
        loader: Callable[[], Awaitable[T]],
        *,
        ttl_s: float | None = None,
        tags: Iterable[str] = (),
    ) -> T:
        """The value under ``key``; on a miss ``await loader()``, store and return it.

        Args:
            key: the cache key.
            loader: computes the value (called at most once per key at a time in
                this process, and by one process at a time while a lease holds).
            ttl_s: seconds the value stays fresh (default TTL when ``None``).
            tags: invalidation tags of the stored value.

        Raises:
            What ``loader`` raises, unless a stale-if-error value can be served.
            TypeError: the loaded value cannot be serialized.
        """
        if ttl_s is not None and not ttl_s > 0:
            raise ValueError(f"ttl_s must be > 0 seconds, got {ttl_s}")
        now = self._now()
        entry = self._l1.get_at(key, now, _MISSING)
        if entry is not _MISSING:
            # the fresh-L1-hit fast path of _serve(), without building a CacheResult
            expires_at = entry.expires_at
            if now < expires_at:
                lead = entry.delta_s * self.xfetch_beta
                if (
                    lead > 0
                    and now + lead * XFETCH_HORIZON >= expires_at
                    and should_refresh_early_at(
                        now, expires_at, entry.delta_s, self.xfetch_beta, self._rng
                    )
                    and self._refresh(key, loader, self._ttl(ttl_s), validate_tags(tags))
                ):
                    self._early += 1
                return entry.value  # type: ignore[no-any-return]
        result = await self._resolve(entry, key, loader, self._ttl(ttl_s), validate_tags(tags))
        return result.value

    async def get_or_load_result(
        self,
        key: str,
        loader: Callable[[], Awaitable[T]],
        *,
        ttl_s: float | None = None,
        tags: Iterable[str] = (),
    ) -> CacheResult[T]:
        """As :meth:`get_or_load`, with ``stale`` and ``source`` (:class:`CacheResult`).

        An L1 miss is single-flight from the L2 lookup on: 1,000 concurrent
        misses make one Redis ``GET`` and at most one loader call.
        """
        entry = self._l1.get(key, _MISSING)
        return await self._resolve(entry, key, loader, self._ttl(ttl_s), validate_tags(tags))

    async def _resolve(
        self,
        entry: Any,
        key: str,
        loader: Callable[[], Awaitable[T]],
        ttl_s: float,
        names: tuple[str, ...],
    ) -> CacheResult[T]:
        """Serve ``entry`` (what L1 held, or ``_MISSING``), or load (single-flight)."""
        if entry is _MISSING:
            return await self._flight.run(
                key, lambda: self._from_l2_or_load(key, loader, ttl_s, names)
            )
        served = self._serve(entry, "l1", key, loader, ttl_s, names)
        if served is not None:
            return served
        return await self._flight.run(
            key, lambda: self._load_or_stale(entry, "l1", key, loader, ttl_s, names)
        )

    def _serve(
        self,
        entry: Entry,
        source: Source,
        key: str,
        loader: Callable[[], Awaitable[T]],
        ttl_s: float,
        tags: tuple[str, ...],
    ) -> CacheResult[T] | None:
        """A fresh value (maybe starting an XFetch refresh), a stale one within the
        stale-while-revalidate window (starting a refresh), or ``None``: load."""
        now = self._now()
        if now < entry.expires_at:
            early = self.xfetch_beta > 0 and should_refresh_early(
                now=now,
                expires_at=entry.expires_at,
                delta_s=entry.delta_s,
                beta=self.xfetch_beta,
                rng=self._rng,
            )
            if early and self._refresh(key, loader, ttl_s, tags):
                self._early += 1
            return CacheResult(entry.value, False, source)
        if now < entry.expires_at + self._swr:
            self._stale += 1
            self._refresh(key, loader, ttl_s, tags)
            return CacheResult(entry.value, True, source)
        return None

    async def _from_l2_or_load(
        self, key: str, loader: Callable[[], Awaitable[T]], ttl_s: float, tags: tuple[str, ...]
    ) -> CacheResult[T]:
        entry = await self._from_l2(key) if self._redis is not None else None
        if entry is not None:
            served = self._serve(entry, "l2", key, loader, ttl_s, tags)
            if served is not None:
                return served
        return await self._load_or_stale(entry, "l2", key, loader, ttl_s, tags)

    async def _load_or_stale(
        self,
        entry: Entry | None,
        source: Source,
        key: str,
        loader: Callable[[], Awaitable[T]],
        ttl_s: float,
        tags: tuple[str, ...],
    ) -> CacheResult[T]:
        try:
            value = await self._load(key, loader, ttl_s, tags)
        except Exception:
            if entry is not None and self._now() < entry.expires_at + self._sie:
                self._stale += 1  # stale-if-error
                return CacheResult(entry.value, True, source)
            raise
        return CacheResult(value, False, "loader")

    def _refresh(
        self, key: str, loader: Callable[[], Awaitable[T]], ttl_s: float, tags: tuple[str, ...]
    ) -> bool:
        """Start one background load of ``key`` unless one runs; whether started."""
        if self._flight.in_flight(key) or self.state.value == "closed":
            return False
        task = asyncio.ensure_future(
            self._flight.run(key, lambda: self._load_or_stale(None, "l1", key, loader, ttl_s, tags))
        )
        self._background.add(task)
        task.add_done_callback(self._refreshed)
        return True

    def _refreshed(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled():
            task.exception()  # a failed refresh leaves the old value; retrieved, not raised

    async def _load(
        self, key: str, loader: Callable[[], Awaitable[T]], ttl_s: float, tags: tuple[str, ...]
    ) -> T:
        snapshot = self._snapshot(tags)
        redis = self._redis
        token: str | None = None
        versions: list[str] | None = None
        if redis is not None and await self._l2_ready():
            try:
                token = await redis.acquire_lease(key, ttl_s=self._lease_ttl)
                if token is None:
                    self._lease_waits += 1
                    entry, token = await self._await_lease(redis, key)
                    if entry is not None:
                        return entry.value  # type: ignore[no-any-return]
                if token is not None:
                    # the previous holder may have stored and released between our
                    # look at L2 and our lease: look again before computing
                    entry = await self._from_l2(key)
                    if entry is not None and self._now() < entry.expires_at:
                        await redis.release_lease(key, token)
                        return entry.value  # type: ignore[no-any-return]
                versions = await redis.versions(tags)
            except TierUnavailable:
                versions = None
        try:
            self._loads += 1
            started = self._now()
            value = await loader()
            delta = max(self._now() - started, 0.0)
            await self._store_loaded(key, value, ttl_s, tags, delta, snapshot, versions)
            return value
        finally:
            if token is not None and redis is not None:
                with contextlib.suppress(TierUnavailable):
                    await redis.release_lease(key, token)

    async def _await_lease(self, redis: RedisTier, key: str) -> tuple[Entry | None, str | None]:
        """Poll L2 while another process holds the lease: its fresh result, or the
        lease itself once released without a result, or neither after the wait."""
        for _ in range(self._lease_polls):
            await self._clock.sleep(self._lease_poll)
            entry = await self._from_l2(key)
            if entry is not None and self._now() < entry.expires_at:
                return entry, None
            token = await redis.acquire_lease(key, ttl_s=self._lease_ttl)
            if token is not None:
                return None, token
        return None, None

    async def _store_loaded(
        self,
        key: str,
        value: Any,
        ttl_s: float,
        tags: tuple[str, ...],
        delta: float,
        snapshot: tuple[int, tuple[int, ...]],
        versions: list[str] | None,
    ) -> None:
        # A load that overlapped an invalidation of its tags may hold data older
        # than the write behind it: it is returned to its callers, never stored.
        # Redis judges for L2 (tag versions, across processes); this process's
        # own record (which also moves when L1 is cleared) judges for L1.
        entry = Entry(value, self._now() + ttl_s, delta, tags)
        data = encode_entry(entry)
        redis = self._redis
        if redis is not None and versions is not None and not self._pending:
            try:
                stored = await redis.set(
                    key, data, ttl_s=ttl_s + self._retain, tags=tags, versions=versions
                )
            except TierUnavailable:
                stored = True  # L2 is gone; L1 alone, as when Redis is down
            if not stored:
                return  # an invalidation of a tag happened meanwhile (any process)
        if self._snapshot(tags) == snapshot:
            self._store_l1(key, entry, len(data))

    # -- L1 bookkeeping and invalidation --------------------------------------------

    def _ttl(self, ttl_s: float | None) -> float:
        ttl_s = self.default_ttl_s if ttl_s is None else ttl_s
        if not ttl_s > 0:
            raise ValueError(f"ttl_s must be > 0 seconds, got {ttl_s}")
        return ttl_s

    def _store_l1(self, key: str, entry: Entry, size: int, now: float | None = None) -> None:
        if now is None:
            now = self._now()
        keep = entry.expires_at + self._retain - now
        if (
            keep > 0
            and self._l1.set(key, entry, ttl_s=keep, size_bytes=size + len(key))
            and entry.tags
        ):
            self._tags.add(key, entry.tags)

    def _gone(self, key: Hashable, value: Any) -> None:
        if isinstance(value, Entry) and value.tags:
            self._tags.discard(key, value.tags)

    def _snapshot(self, tags: tuple[str, ...]) -> tuple[int, tuple[int, ...]]:
        gen = self._gen
        return self._epoch, tuple(gen.get(t, 0) for t in tags)

    def _drop_tags(self, tags: Iterable[str]) -> int:
        gen = self._gen
        if len(gen) > _MAX_TRACKED_TAGS:
            gen.clear()
            self._epoch += 1  # forgetting versions must not let an old load store
        keys = self._tags.keys_of(tags)
        for tag in tags:
            gen[tag] = gen.get(tag, 0) + 1
        for key in keys:
            self._l1.delete(key)
        self._invalidations += 1
        return len(keys)

    def _drop_prefix(self, prefix: str) -> int:
        self._epoch += 1
        self._invalidations += 1
        return self._l1.delete_prefix(prefix)

    def _received(self, message: Invalidation) -> None:
        """An invalidation published by another process."""
        keys = message.get("keys")
        if isinstance(keys, list):
            for key in keys:
                if isinstance(key, str) and self._l1.delete(key):
                    self._invalidations += 1
        tags = message.get("tags")
        if isinstance(tags, list):
            self._drop_tags([t for t in tags if isinstance(t, str)])
        prefix = message.get("prefix")
        if isinstance(prefix, str):
            self._drop_prefix(prefix)

    def _resubscribed(self) -> None:
        """The subscription was (re-)established: messages may have been lost."""
        self._drop_prefix("")

    async def _l2_ready(self) -> bool:
        """Replay invalidations Redis missed; whether L2 may be used now."""
        pending = self._pending
        redis = self._redis
        if not pending or redis is None:
            return True
        while pending:
            kind, arg = pending[0]
            try:
                if kind == "tags":
                    await redis.invalidate_tags(arg)
                elif kind == "prefix":
                    await redis.invalidate_prefix(arg)
                else:
                    await redis.delete(arg)
            except TierUnavailable:
                return False
            pending.pop(0)
        return True

    def stats(self) -> TieredCacheStats:
        """A frozen snapshot of both tiers' counters and the read-through figures."""
        return TieredCacheStats(
            l1=self._l1.stats(),
            l2=self._redis.stats() if self._redis is not None else None,
            loads=self._loads,
            coalesced=self._flight.coalesced,
            lease_waits=self._lease_waits,
            stale_served=self._stale,
            early_refreshes=self._early,
            invalidations=self._invalidations,
        )

    def __repr__(self) -> str:
        tier = "memory+redis" if self._redis is not None else "memory"
        return f"<TieredCache {tier} {len(self._l1)} entries {self._l1.bytes} bytes>"
