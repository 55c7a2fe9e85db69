"""Rate limits shared by every gateway process: token buckets in Redis.

One atomic server-side script per admission (the GCRA of ``limits``' Redis
storage, redis-cell and Envoy's global rate limit service): a bucket is one
Redis string, its *theoretical arrival time* (TAT, seconds on the Redis clock,
``TIME`` read inside the script, so no client clock is trusted). Taking ``n``
tokens from a bucket of ``rate`` tokens/s and ``burst`` tokens moves the TAT to
``max(TAT, now) + n / rate``; the caller waits ``TAT' - now - burst / rate``
seconds when that is positive, and nothing is taken when the wait would exceed
its ``max_wait_s``. This is exactly the in-process :class:`~iogate.policies.TokenBucket`
(reservation in arrival order, debt paid off by waiting), so a limit means the
same in one process and in many. Several buckets (an upstream's per-second,
per-minute and tokens-per-minute limits) are taken together in the same script
or not at all; their keys share a hash tag (``{name}``), so Redis Cluster
accepts the script. A key expires once its bucket is full again.

The script is sent with ``EVALSHA`` through the transport's auto-pipeline, so
concurrent admissions of one process share round trips (at most one round
trip per admission; ``NOSCRIPT`` after a Redis restart loads it again).

When Redis cannot be reached, the admission is decided by a local bucket of
``rate / expected_processes`` and ``burst / expected_processes`` (at least one
token): a breaker on the Redis tier (:class:`~iogate.policies.CircuitBreaker`)
opens on the first failure, calls then go local without trying Redis, one probe
a second (``recheck_s``) tries it again, and the first success closes it: the
global buckets are back. Each change is logged once. No caller fails because
the coordinator is down.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import redis.exceptions as redis_errors

from iogate._redis.transport import RedisTransport
from iogate.errors import BulkheadFullError, CircuitOpenError
from iogate.policies.circuit_breaker import CircuitBreaker, CircuitState, CircuitStateChanged
from iogate.policies.clock import Clock, SystemClock
from iogate.policies.events import PolicyEvent

__all__ = ["RedisBuckets", "RedisLimits", "RedisLimitsSnapshot", "RedisSlots"]

_log = logging.getLogger("iogate.cluster")

GCRA_SCRIPT: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local max_wait = tonumber(ARGV[1])
local wait = 0
local tats = {}
for i = 1, #KEYS do
  local rate = tonumber(ARGV[i * 3 - 1])
  local burst = tonumber(ARGV[i * 3])
  local amount = tonumber(ARGV[i * 3 + 1])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  local fit = amount
  if fit > burst then fit = burst end
  local w = tat + fit / rate - now - burst / rate
  if w > wait then wait = w end
  local new_tat = tat + amount / rate
  if new_tat < now then new_tat = now end
  tats[i] = new_tat
end
if wait > max_wait then return string.format('%.6f', -wait) end
for i = 1, #KEYS do
  local ttl = math.ceil((tats[i] - now) * 1000) + 1000
  redis.call('SET', KEYS[i], string.format('%.6f', tats[i]), 'PX', ttl)
end
return string.format('%.6f', wait)
"""
"""KEYS: the buckets; ARGV: max_wait_s, then rate, burst, amount per bucket.
Returns the wait (seconds, a string) or ``-retry_after``. A negative amount
gives tokens back (with a huge ``max_wait_s``: never refused)."""

SLOTS_SCRIPT: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
if ARGV[1] == 'leave' then return redis.call('ZREM', KEYS[1], ARGV[2]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[4]) * 1000))
return 1
"""
"""KEYS: the slots' sorted set (member: a request, score: when its lease ends);
ARGV: ``enter`` or ``leave``, the member, the limit, the lease (seconds).
Returns 1 (entered / left) or 0 (full)."""

_SLOTS_SHA: Final = hashlib.sha1(SLOTS_SCRIPT.encode()).hexdigest()  # noqa: S324 - Redis's id
_SHA: Final = hashlib.sha1(GCRA_SCRIPT.encode()).hexdigest()  # noqa: S324 - Redis's script id
_NEVER_REFUSED: Final = "1e18"
_DOWN: Final = (redis_errors.RedisError, OSError, BulkheadFullError)


class _Local:
    """The local fallback of a set of buckets: the same GCRA on the process clock."""

    __slots__ = ("_bursts", "_rates", "_tats")

    def __init__(self, specs: Sequence[tuple[float, float]], share: int) -> None:
        self._rates = [rate / share for rate, _ in specs]
        self._bursts = [max(1.0, burst / share) for _, burst in specs]
        self._tats = [0.0] * len(specs)

    def reserve(self, amounts: Sequence[float], max_wait_s: float, now: float) -> float:
        wait = 0.0
        news = []
        for i, amount in enumerate(amounts):
            rate, burst = self._rates[i], self._bursts[i]
            tat = max(self._tats[i], now)
            w = tat + min(amount, burst) / rate - now - burst / rate
            wait = max(wait, w)
            news.append(max(tat + amount / rate, now))
        if wait > max_wait_s:
            return -wait
        self._tats[:] = news
        return wait

    def available(self, now: float) -> float:
        return self._bursts[0] - max(self._tats[0] - now, 0.0) * self._rates[0]


@dataclass(frozen=True, slots=True, kw_only=True)
class RedisLimitsSnapshot:
    """Counters of :class:`RedisLimits` since creation."""

    global_admissions: int
    """Reservations the Redis script decided."""
    local_admissions: int
    """Reservations a local fallback bucket decided (Redis unreachable)."""
    redis_failures: int
    """Script calls that failed (connection, timeout, slots)."""
    fallback: bool
    """Whether the local buckets decide now."""


class RedisLimits:
    """The shared rate limits of one gateway (a :class:`~iogate.policies.SharedLimits`).

    Args:
        url: the coordinating Redis (``redis://``, ``rediss://``, ``unix://``); never logged.
        prefix: the start of every key (``iogate:``).
        expected_processes: processes sharing the limits (>= 1): a local fallback
            bucket holds ``1 / expected_processes`` of a limit.
        timeout_s: longest wait for Redis (connect or reply), seconds (> 0); past
            it the call is decided locally.
        recheck_s: while Redis is unreachable, seconds between probes (> 0).
        max_connections: connections to Redis (>= 1).
        clock: the local buckets' time.

    Raises:
        ValueError: a bound above is violated.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "iogate:",
        expected_processes: int = 1,
        timeout_s: float = 0.25,
        recheck_s: float = 1.0,
        max_connections: int = 8,
        clock: Clock | None = None,
    ) -> None:
        if expected_processes < 1:
            raise ValueError(f"expected_processes must be >= 1, got {expected_processes!r}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        self.prefix = prefix
        self.expected_processes = expected_processes
        self._clock = clock if clock is not None else SystemClock()
        self._transport = RedisTransport(
            url,
            name="cluster",
            max_connections=max_connections,
            connect_timeout_s=timeout_s,
            socket_timeout_s=timeout_s,
            slot_wait_s=timeout_s,
        )
        self.breaker = CircuitBreaker(
            name="cluster:redis",
            failure_rate_threshold=1.0,
            window_size=1,
            minimum_calls=1,
            permitted_calls_in_half_open=1,
            wait_in_open_s=recheck_s,
            record_on=_DOWN,
            on_event=self._on_breaker,
            clock=self._clock,
        )
        self._last_error = ""
        self._adjusting: set[asyncio.Task[Any]] = set()
        self.origin = uuid.uuid4().hex[:12]
        self.global_admissions = 0
        self.local_admissions = 0
        self.redis_failures = 0

    def buckets(self, name: str, specs: Sequence[tuple[float, float]]) -> RedisBuckets:
        """The shared buckets ``name`` (``rl:openai``) of ``specs`` (``(rate, burst)``
        pairs: tokens per second, bucket size)."""
        return RedisBuckets(self, name, specs)

    def open(self) -> None:
        """Make the client (no I/O: connections open on first use)."""
        self._transport.open()

    async def aclose(self) -> None:
        """Wait for the adjustments in flight, then close the client."""
        if self._adjusting:
            await asyncio.gather(*self._adjusting, return_exceptions=True)
        await self._transport.aclose()

    @property
    def fallback(self) -> bool:
        """Whether the local buckets decide now (Redis unreachable)."""
        return self.breaker.state is not CircuitState.CLOSED

    def _on_breaker(self, event: PolicyEvent) -> None:
        if not isinstance(event, CircuitStateChanged):
            return
        if event.from_state is CircuitState.CLOSED and event.to_state is CircuitState.OPEN:
            _log.warning(
                "the cluster's Redis is unreachable (%s): rate limits are local "
                "(1/%d of each) until it is back",
                self._last_error,
                self.expected_processes,
            )
        elif event.to_state is CircuitState.CLOSED:
            _log.warning("the cluster's Redis is back: rate limits are global again")

    async def run_script(self, keys: Sequence[str], args: Sequence[Any]) -> float | None:
        """Run the GCRA script; ``None`` when Redis could not answer (then decide locally)."""
        breaker = self.breaker
        now = self._clock.monotonic()
        try:
            permit = breaker.permit(now)
        except CircuitOpenError:
            return None
        try:
            reply = await self._evalsha(keys, args)
        except _DOWN as exc:
            end = self._clock.monotonic()
            self.redis_failures += 1
            self._last_error = type(exc).__name__
            breaker.on_error(permit, exc, end - now, end)
            return None
        except BaseException:
            breaker.release(permit)
            raise
        end = self._clock.monotonic()
        breaker.on_success(permit, end - now, end)
        self.global_admissions += 1
        return float(reply)

    async def _evalsha(
        self, keys: Sequence[str], args: Sequence[Any], sha: str = _SHA, script: str = GCRA_SCRIPT
    ) -> Any:
        auto = self._transport.auto
        if auto is None:
            raise redis_errors.ConnectionError("the cluster's Redis client is not open")
        command = ("EVALSHA", sha, len(keys), *keys, *args)
        try:
            return await auto.execute(command)
        except redis_errors.NoScriptError:  # a new or restarted Redis: load it (once is enough)
            await auto.execute(("SCRIPT", "LOAD", script))
            return await auto.execute(command)

    def slots(self, name: str, limit: int) -> RedisSlots:
        """Concurrency slots ``name`` (``key:reporting``): ``limit`` requests at once
        across every process."""
        return RedisSlots(self, name, limit)

    async def run_slots(self, key: str, args: Sequence[Any]) -> bool | None:
        """Run the slots script; ``None`` when Redis could not answer."""
        breaker = self.breaker
        now = self._clock.monotonic()
        try:
            permit = breaker.permit(now)
        except CircuitOpenError:
            return None
        try:
            reply = await self._evalsha((key,), args, _SLOTS_SHA, SLOTS_SCRIPT)
        except _DOWN as exc:
            end = self._clock.monotonic()
            self.redis_failures += 1
            self._last_error = type(exc).__name__
            breaker.on_error(permit, exc, end - now, end)
            return None
        except BaseException:
            breaker.release(permit)
            raise
        end = self._clock.monotonic()
        breaker.on_success(permit, end - now, end)
        return bool(reply)

    def monotonic(self) -> float:
        """The local buckets' clock, seconds."""
        return self._clock.monotonic()

    def decide_locally(self, local: _Local, amounts: Sequence[float], max_wait_s: float) -> float:
        """A reservation from a local fallback bucket (Redis did not answer)."""
        self.local_admissions += 1
        return local.reserve(amounts, max_wait_s, self._clock.monotonic())

    def spawn(self, coro: Any) -> None:
        """Run ``coro`` in the background (kept until done; awaited by :meth:`aclose`)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._adjusting.add(task)
        task.add_done_callback(self._adjusting.discard)

    def adjust_later(self, keys: Sequence[str], args: Sequence[Any]) -> None:
        """Run the script in the background (a refund or a correction; nothing waits)."""
        task = asyncio.get_running_loop().create_task(self._adjust(keys, args))
        self._adjusting.add(task)
        task.add_done_callback(self._adjusting.discard)

    async def _adjust(self, keys: Sequence[str], args: Sequence[Any]) -> None:
        await self.run_script(keys, args)

    def stats(self) -> RedisLimitsSnapshot:
        """Frozen counters."""
        return RedisLimitsSnapshot(
            global_admissions=self.global_admissions,
            local_admissions=self.local_admissions,
            redis_failures=self.redis_failures,
            fallback=self.fallback,
        )

    def __repr__(self) -> str:
        return f"<RedisLimits fallback={self.fallback} processes={self.expected_processes}>"


class RedisBuckets:
    """Buckets in Redis taken from together (a :class:`~iogate.policies.SharedBuckets`),
    made by :meth:`RedisLimits.buckets`."""

    __slots__ = ("_keys", "_last", "_limits", "_local", "_specs", "name")

    def __init__(
        self, limits: RedisLimits, name: str, specs: Sequence[tuple[float, float]]
    ) -> None:
        if not specs:
            raise ValueError("specs must name at least one bucket")
        for rate, burst in specs:
            if not rate > 0 or burst < 1:
                raise ValueError(f"a bucket needs rate > 0 and burst >= 1, got {(rate, burst)}")
        self.name = name
        self._limits = limits
        self._specs = tuple((float(r), float(b)) for r, b in specs)
        self._keys = tuple(f"{limits.prefix}{{{name}}}:{i}" for i in range(len(specs)))
        self._local = _Local(self._specs, limits.expected_processes)
        self._last = self._specs[0][1]

    def _args(self, amounts: Sequence[float], max_wait: str) -> list[str]:
        args = [max_wait]
        for (rate, burst), amount in zip(self._specs, amounts, strict=True):
            args += (repr(rate), repr(burst), repr(float(amount)))
        return args

    async def reserve(self, amounts: Sequence[float], max_wait_s: float) -> float:
        """See :class:`~iogate.policies.SharedBuckets`: Redis, or the local fallback."""
        limits = self._limits
        wait = await limits.run_script(self._keys, self._args(amounts, repr(max_wait_s)))
        if wait is None:
            return limits.decide_locally(self._local, amounts, max_wait_s)
        rate, burst = self._specs[0]
        self._last = -wait * rate if wait > 0 else burst - amounts[0]
        return wait

    def adjust(self, amounts: Sequence[float]) -> None:
        """See :class:`~iogate.policies.SharedBuckets` (in the background)."""
        self._limits.adjust_later(self._keys, self._args(amounts, _NEVER_REFUSED))

    def available(self) -> float:
        """About the first bucket's tokens after the last reservation (not read from Redis)."""
        limits = self._limits
        if limits.fallback:
            return self._local.available(limits.monotonic())
        return self._last

    def __repr__(self) -> str:
        return f"<RedisBuckets {self.name!r} {len(self._specs)} bucket(s)>"


class RedisSlots:
    """At most ``limit`` requests at once across every process (a sorted set of
    leases in Redis; a lease ends after ``lease_s`` seconds even if its process
    died). While Redis is unreachable each process admits ``limit /
    expected_processes`` (at least one) on its own. Made by :meth:`RedisLimits.slots`.
    """

    __slots__ = ("_key", "_limits", "_local", "_local_limit", "_seq", "lease_s", "limit", "name")

    def __init__(self, limits: RedisLimits, name: str, limit: int, lease_s: float = 600.0) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit!r}")
        self.name = name
        self.limit = limit
        self.lease_s = lease_s
        self._limits = limits
        self._key = f"{limits.prefix}{{{name}}}:slots"
        self._local = 0
        self._local_limit = max(1, limit // limits.expected_processes)
        self._seq = 0

    async def enter(self) -> str | None:
        """Take a slot: a token to :meth:`leave` with, or ``None`` (all taken)."""
        self._seq += 1
        token = f"{self._limits.origin}:{self._seq}"
        args = ("enter", token, self.limit, repr(self.lease_s))
        entered = await self._limits.run_slots(self._key, args)
        if entered is None:  # Redis down: this process's share
            if self._local >= self._local_limit:
                return None
            self._local += 1
            return ""
        return token if entered else None

    def leave(self, token: str) -> None:
        """Give the slot of ``token`` back (in the background)."""
        if token == "":
            self._local -= 1
            return
        self._limits.spawn(self._limits.run_slots(self._key, ("leave", token, 0, "0")))
