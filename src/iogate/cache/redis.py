"""L2: the Redis tier of the cache (redis-py asyncio + hiredis), and cross-process
invalidation.

Keys under one ``namespace`` (default ``iogate``)::

    <ns>:k:<key>      the serialized entry (iogate.cache.serialization), PX = TTL + stale windows
    <ns>:t:<tag>      SET of the data keys carrying <tag> (expires with its longest member)
    <ns>:v:<tag>      the tag's version, INCR'd by every invalidation of the tag
    <ns>:epoch        INCR'd by every prefix invalidation / clear
    <ns>:l:<key>      a load lease: SET NX PX <lease> with a random token

**Invalidation across processes: Redis pub/sub, not RESP3 client tracking.**
Every write, delete and invalidation publishes one message on the
invalidation channel naming what changed (keys, tags or a prefix); each
process drops the matching entries from its L1 when it arrives (milliseconds).
Client tracking (``CLIENT TRACKING ... BCAST``) would invalidate per key only,
so a tag invalidation of N keys costs N messages, and it needs a RESP3
connection (or a redirect connection) that redis-py's asyncio client does not
manage for us; pub/sub carries a tag or a prefix in one message and works on
every Redis version and proxy. Pub/sub is at-most-once, so the bound is kept
by the subscriber: while its connection is down nothing is trusted, and when
it is re-established the whole L1 is cleared (a message may have been lost).
The delay bound is therefore the publish latency while connected, and the
reconnect time otherwise.

**Load leases** (cross-process single-flight): ``SET <ns>:l:<key> <token> NX PX``;
only the holder deletes it, with a Lua compare-and-delete on its token (the
pattern of redis.io's "distributed locks" page for a single instance), so a
lease that expired and was taken by another process is never released by the
first one.

**Writes cannot resurrect invalidated data**: a loader snapshots the versions of
its tags (and the epoch) before it runs; the Lua script that stores its result
compares them and refuses to store when an invalidation happened meanwhile.

**Outage**: every call runs through iogate's :class:`~iogate.policies.CircuitBreaker`
(the policies' one breaker state machine, used directly rather than in a full
``Pipeline``: the cache tier retries nothing, and its attempt timeout is the
socket timeout, so a pipeline would only add cost to every L2 hit); a failing
or refused call raises :class:`TierUnavailable`, which the tiered cache
treats as "no L2" — callers never see it. The breaker's half-open trial calls
find Redis again when it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, TypeVar

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from iogate._redis import AutoPipeline, RedisTransport, redis_client
from iogate.cache.stats import RedisTierStats
from iogate.errors import BulkheadFullError, OperationError
from iogate.policies import CircuitBreaker, Clock, SystemClock

__all__ = ["Invalidation", "RedisTier", "TierUnavailable"]

T = TypeVar("T")

Invalidation = dict[str, Any]
"""A decoded invalidation message: ``{"src", "keys"?, "tags"?, "prefix"?, "clear"?}``
(JSON wire format only; handed to the tiered cache's handler)."""

_TAG_VERSION_TTL_MS = 86_400_000  # a tag version outlives any load by far

_SET = """
local n = tonumber(ARGV[3])
if ARGV[4] ~= '' then
  if (redis.call('GET', KEYS[2]) or '0') ~= ARGV[4] then return 0 end
  for i = 1, n do
    if (redis.call('GET', KEYS[2 + i]) or '0') ~= ARGV[4 + i] then return 0 end
  end
end
local px = tonumber(ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', px)
for i = 1, n do
  local s = KEYS[2 + n + i]
  redis.call('SADD', s, KEYS[1])
  if redis.call('PTTL', s) < px then redis.call('PEXPIRE', s, px) end
end
redis.call('PUBLISH', ARGV[5 + n], ARGV[6 + n])
return 1
"""

_INVALIDATE_TAGS = """
local n = tonumber(ARGV[1])
local removed = 0
for i = 1, n do
  redis.call('INCR', KEYS[i])
  redis.call('PEXPIRE', KEYS[i], ARGV[4])
  local members = redis.call('SMEMBERS', KEYS[n + i])
  for j = 1, #members, 500 do
    removed = removed + redis.call('UNLINK', unpack(members, j, math.min(j + 499, #members)))
  end
  redis.call('DEL', KEYS[n + i])
end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return removed
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class TierUnavailable(Exception):
    """The Redis tier could not serve this call (down, slow, or its breaker open).

    Internal to the cache: the tiered cache catches it and carries on with L1.
    """


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class RedisTier:
    """The L2 tier: entries, tag sets, leases and invalidation messages in Redis.

    Args:
        url: ``redis://host:port/db`` (or ``rediss://``, ``unix://``).
        namespace: prefix of every Redis key (1..64 characters).
        channel: the pub/sub channel invalidations travel on.
        timeout_s: connect and read timeout of each call (socket level), seconds (> 0).
        max_connections: connections to Redis for calls (≥ 1; one more subscribes).
        breaker: the circuit breaker guarding the tier (a default one — opens at
            50 % failures over 10 calls, 5 at least, for 5 s — when ``None``).
        clock: time of the breaker and of the subscriber's reconnect pauses.

    Raises:
        ValueError: a bound above is violated.
    """

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "iogate",
        channel: str = "iogate:cache:invalidate",
        timeout_s: float = 0.5,
        max_connections: int = 32,
        breaker: CircuitBreaker | None = None,
        clock: Clock | None = None,
    ) -> None:
        if not 1 <= len(namespace) <= 64:
            raise ValueError(f"namespace must have 1..64 characters, got {namespace!r}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections}")
        # At most `max_connections` calls at a time (the slots taken in _run and
        # by the auto-pipeline's sends), FIFO beyond, each waiting up to timeout_s
        # for a slot: the pool never needs more.
        self._transport = RedisTransport(
            url,
            name=f"cache:{namespace}",
            max_connections=max_connections,
            connect_timeout_s=timeout_s,
            socket_timeout_s=timeout_s,
            slot_wait_s=timeout_s,
        )
        self._url = url
        self.namespace = namespace
        self._key_prefix = f"{namespace}:k:"
        self.channel = channel
        self._timeout_s = timeout_s
        self._clock = clock if clock is not None else SystemClock()
        self.breaker = breaker or CircuitBreaker(
            name=f"cache:{namespace}",
            failure_rate_threshold=0.5,
            window_size=10,
            minimum_calls=5,
            permitted_calls_in_half_open=1,
            wait_in_open_s=5.0,
            clock=self._clock,
        )
        self._client: aioredis.Redis | None = None
        self._auto: AutoPipeline | None = None
        self._sub_client: aioredis.Redis | None = None
        self._listener: asyncio.Task[None] | None = None
        self._on_message: Callable[[Invalidation], object] | None = None
        self._on_resubscribe: Callable[[], object] | None = None
        self._subscribed = asyncio.Event()
        self.subscribed = False
        self.source = secrets.token_hex(8)  # this process's id in messages
        self.hits = self.misses = self.writes = self.errors = self.bytes_written = 0

    def _key(self, key: str) -> str:
        return self._key_prefix + key

    # -- lifecycle ------------------------------------------------------------------

    async def open(
        self,
        *,
        on_message: Callable[[Invalidation], object],
        on_resubscribe: Callable[[], object],
    ) -> None:
        """Connect and subscribe to the invalidation channel.

        Waits up to ``timeout_s`` for the subscription; if Redis is down, the
        tier starts degraded (calls fail over to L1) and the subscriber keeps
        reconnecting in the background. Never raises for an unreachable Redis.
        """
        self._client = self._transport.open()
        self._auto = self._transport.auto
        # The subscriber waits for messages indefinitely (no socket timeout); a
        # dead connection is found by redis-py's periodic PING and TCP keepalive.
        self._sub_client = redis_client(
            self._url,
            connect_timeout_s=self._timeout_s,
            health_check_interval_s=5,
            keepalive=True,
        )
        self._on_message = on_message
        self._on_resubscribe = on_resubscribe
        self._listener = asyncio.create_task(self._listen(), name=f"cache:{self.namespace}:sub")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._timeout_s * 4):
                await self._subscribed.wait()

    async def close(self) -> None:
        """Stop the subscriber and close the connections."""
        self._auto = None
        with contextlib.suppress(RedisError, OSError):
            await self._transport.aclose()
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        client, self._sub_client = self._sub_client, None
        if client is not None:
            with contextlib.suppress(RedisError, OSError):
                await client.aclose(close_connection_pool=True)
        self._client = None

    async def _listen(self) -> None:
        delay = 0.05
        client = self._sub_client
        assert client is not None
        while True:
            pubsub = client.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                self.subscribed = True
                self._subscribed.set()
                if self._on_resubscribe is not None:
                    self._on_resubscribe()  # messages may have been lost meanwhile
                delay = 0.05
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        self._dispatch(message["data"])
            except (RedisError, OSError):
                pass  # connection lost or refused: reconnect below, with backoff
            finally:
                self.subscribed = False
                self._subscribed.clear()
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]  # typed in redis-py 8.2
            await self._clock.sleep(delay)
            delay = min(delay * 2, 2.0)

    def _dispatch(self, data: bytes) -> None:
        try:
            message = orjson.loads(data)
        except orjson.JSONDecodeError:
            return  # not one of ours: ignored
        if isinstance(message, dict) and message.get("src") != self.source and self._on_message:
            self._on_message(message)

    async def probe(self) -> None:
        """One ``PING`` on the tier's own connections, outside its circuit breaker
        (so an open breaker never hides that Redis is back); for readiness.

        Raises:
            TierUnavailable: the tier is not open.
            RedisError, OSError: Redis did not answer.
        """
        client = self._client
        if client is None:
            raise TierUnavailable("the Redis tier is not open")
        await client.ping()

    def _message(self, **fields: Any) -> bytes:
        return orjson.dumps({"src": self.source, **fields})

    # -- calls ----------------------------------------------------------------------

    async def _run(self, fn: Callable[[aioredis.Redis], Awaitable[T]], operation: str) -> T:
        client = self._client
        if client is None:
            raise TierUnavailable("the Redis tier is not open")
        transport = self._transport
        try:
            await transport.take_slot()  # FIFO, up to timeout_s
        except BulkheadFullError as exc:
            self.errors += 1
            raise TierUnavailable(f"Redis tier {operation}: no connection free") from exc
        try:
            return await self.breaker.run(lambda: fn(client))
        except (OperationError, RedisError, OSError) as exc:
            self.errors += 1
            raise TierUnavailable(f"Redis tier {operation}: {type(exc).__name__}") from exc
        finally:
            transport.give_slot()

    async def get(self, key: str) -> bytes | None:
        """The stored bytes of ``key``, or ``None``.

        The ``GET`` is auto-pipelined with the other gets issued meanwhile
        (:class:`~iogate._redis.pipelining.AutoPipeline`, whose pipelines take
        the tier's connection slots), through the tier's breaker; no slot free
        within ``timeout_s`` fails it like an error of Redis.

        Raises:
            TierUnavailable: Redis did not answer (or the breaker is open).
        """
        auto = self._auto
        if auto is None:
            raise TierUnavailable("the Redis tier is not open")
        try:
            raw: Any = await self.breaker.run(
                partial(auto.execute, ("GET", self._key_prefix + key))
            )
        except (OperationError, RedisError, OSError) as exc:
            self.errors += 1
            raise TierUnavailable(f"Redis tier get: {type(exc).__name__}") from exc
        if raw is None:
            self.misses += 1
            return None
        self.hits += 1
        return bytes(raw)

    async def versions(self, tags: Sequence[str]) -> list[str]:
        """The epoch and each tag's version now (strings), to pass to :meth:`set`.

        Raises:
            TierUnavailable: as :meth:`get`.
        """
        names = [f"{self.namespace}:epoch", *(f"{self.namespace}:v:{t}" for t in tags)]
        values: Any = await self._run(lambda c: c.mget(names), "versions")
        return [(v or b"0").decode() for v in values]

    async def set(
        self,
        key: str,
        data: bytes,
        *,
        ttl_s: float,
        tags: Sequence[str] = (),
        versions: Sequence[str] | None = None,
    ) -> bool:
        """Store ``data`` for ``ttl_s`` seconds, index it under ``tags``, and tell the
        other processes to drop their copy of ``key``. With ``versions`` (from
        :meth:`versions`, same ``tags``), store only if no invalidation of those
        tags (nor a prefix invalidation) happened since; returns whether stored.

        Raises:
            TierUnavailable: as :meth:`get`.
        """
        n = len(tags)
        ns = self.namespace
        keys = [
            self._key(key),
            f"{ns}:epoch",
            *(f"{ns}:v:{t}" for t in tags),
            *(f"{ns}:t:{t}" for t in tags),
        ]
        check = list(versions) if versions is not None else [""] * (n + 1)
        args: list[Any] = [
            data,
            max(1, int(ttl_s * 1000)),
            n,
            *check,
            self.channel,
            self._message(keys=[key]),
        ]
        stored = await self._run(lambda c: c.eval(_SET, len(keys), *keys, *args), "set")
        if stored:
            self.writes += 1
            self.bytes_written += len(data)
        return bool(stored)

    async def delete(self, key: str) -> bool:
        """Delete ``key`` everywhere; whether it existed in Redis.

        Raises:
            TierUnavailable: as :meth:`get`.
        """

        async def run(client: aioredis.Redis) -> list[Any]:
            async with client.pipeline(transaction=False) as pipe:
                pipe.delete(self._key(key))
                pipe.publish(self.channel, self._message(keys=[key]))
                result: list[Any] = await pipe.execute()
                return result

        deleted = await self._run(run, "delete")
        return bool(deleted[0])

    async def invalidate_tags(self, tags: Sequence[str]) -> int:
        """Delete every entry carrying one of ``tags`` and tell the other processes;
        the number of Redis keys deleted.

        Raises:
            TierUnavailable: as :meth:`get`.
        """
        ns = self.namespace
        keys = [*(f"{ns}:v:{t}" for t in tags), *(f"{ns}:t:{t}" for t in tags)]
        args: list[Any] = [
            len(tags),
            self.channel,
            self._message(tags=list(tags)),
            _TAG_VERSION_TTL_MS,
        ]
        removed = await self._run(
            lambda c: c.eval(_INVALIDATE_TAGS, len(keys), *keys, *args), "invalidate"
        )
        return int(removed)

    async def invalidate_prefix(self, prefix: str) -> int:
        """Delete every entry whose key starts with ``prefix`` (``""``: all of this
        namespace's entries) and tell the other processes; keys deleted.

        Raises:
            TierUnavailable: as :meth:`get`.
        """

        async def run(client: aioredis.Redis) -> int:
            await client.incr(f"{self.namespace}:epoch")
            removed = 0
            batch: list[bytes] = []
            async for name in client.scan_iter(
                match=_glob_escape(self._key(prefix)) + "*", count=1000
            ):
                batch.append(name)
                if len(batch) >= 500:
                    removed += int(await client.unlink(*batch))
                    batch.clear()
            if batch:
                removed += int(await client.unlink(*batch))
            await client.publish(self.channel, self._message(prefix=prefix))
            return removed

        return await self._run(run, "invalidate")

    async def acquire_lease(self, key: str, *, ttl_s: float) -> str | None:
        """Take the load lease of ``key`` for ``ttl_s`` seconds: its token, or
        ``None`` when another process holds it.

        Raises:
            TierUnavailable: as :meth:`get`.
        """
        token = secrets.token_hex(16)
        ms = max(1, int(ttl_s * 1000))
        name = f"{self.namespace}:l:{key}"
        taken = await self._run(lambda c: c.set(name, token, nx=True, px=ms), "lease")
        return token if taken else None

    async def release_lease(self, key: str, token: str) -> bool:
        """Release the lease of ``key`` if ``token`` still holds it (compare-and-delete).

        Raises:
            TierUnavailable: as :meth:`get`.
        """
        name = f"{self.namespace}:l:{key}"
        released = await self._run(lambda c: c.eval(_RELEASE, 1, name, token), "lease")
        return bool(released)

    def stats(self) -> RedisTierStats:
        """A frozen copy of the counters."""
        return RedisTierStats(
            hits=self.hits,
            misses=self.misses,
            writes=self.writes,
            errors=self.errors,
            circuit=self.breaker.state.value,
            subscribed=self.subscribed,
            bytes=self.bytes_written,
        )

    def __repr__(self) -> str:
        return f"<RedisTier {self.namespace!r} circuit={self.breaker.state.value}>"
