"""Redis as a database resource, on redis-py's asyncio client with hiredis.

- ``command(name, *args)`` runs any command; typed helpers cover the common
  ones (``get``, ``set`` with a TTL, ``delete``, ``incr``, ``expire``,
  ``mget``, ``mset``) and ``pipeline`` sends many commands in one round trip
  (``MULTI``/``EXEC`` with ``transaction=True``;
  redis.io/docs/latest/develop/interact/transactions).
- Auto-pipelining (:mod:`iogate.databases.redis_pipelining`, on by default):
  the commands of the default allowlist that concurrent callers issue in one
  event-loop iteration travel in one pipeline, one round trip for all of
  them, as ioredis and node-redis do; other commands go on their own.
- At most ``max_connections`` connections are in use (a lone command or a
  pipeline each): callers beyond wait on a semaphore (bounded, metered by
  :meth:`RedisDatabase.stats`) instead of redis-py's "Too many connections"
  error.
- Retries: only commands whose repetition leaves the same state (reads, SET,
  DEL, EXPIRE...); INCR, LPUSH and the like never.
- The gateway runs only commands of an allowlist (:data:`DEFAULT_ALLOWED_COMMANDS`,
  or the resource's own): no FLUSHALL, FLUSHDB, CONFIG, KEYS, SHUTDOWN, DEBUG,
  SCRIPT/EVAL, MODULE, ACL, REPLICAOF, MIGRATE... by default.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from functools import partial
from typing import Any, ClassVar, TypeVar

import redis.asyncio as aioredis
import redis.exceptions as redis_errors
from redis.asyncio.retry import Retry as RedisRetry
from redis.backoff import NoBackoff

from iogate.databases.base import CallRunner, Database
from iogate.databases.redis_pipelining import AutoPipeline
from iogate.databases.stats import PoolMeter, PoolStats
from iogate.errors import (
    DatabaseError,
    InvalidInputError,
    OperationContext,
    OperationError,
    OperationTimeout,
    QueryError,
    ReadOnlyViolation,
    TransientDatabaseError,
)
from iogate.policies.bulkhead import Bulkhead

__all__ = ["DEFAULT_ALLOWED_COMMANDS", "RedisDatabase", "translate_redis_error"]

_MAX_QUEUED = 1_000_000
"""Callers that may queue for a command slot (in practice: unbounded)."""
_MAX_SLOT_WAIT_S = 3600.0
"""Longest wait for a command slot when the call has no deadline, seconds."""

T = TypeVar("T")

DEFAULT_ALLOWED_COMMANDS = frozenset(
    [
        "APPEND",
        "DECR",
        "DECRBY",
        "DEL",
        "EXISTS",
        "EXPIRE",
        "EXPIREAT",
        "GET",
        "GETDEL",
        "GETEX",
        "GETRANGE",
        "GETSET",
        "HDEL",
        "HEXISTS",
        "HGET",
        "HGETALL",
        "HINCRBY",
        "HINCRBYFLOAT",
        "HKEYS",
        "HLEN",
        "HMGET",
        "HSET",
        "HSETNX",
        "HVALS",
        "INCR",
        "INCRBY",
        "INCRBYFLOAT",
        "LINDEX",
        "LLEN",
        "LPOP",
        "LPUSH",
        "LRANGE",
        "LREM",
        "LSET",
        "LTRIM",
        "MGET",
        "MSET",
        "PERSIST",
        "PEXPIRE",
        "PING",
        "PTTL",
        "RPOP",
        "RPUSH",
        "SADD",
        "SCARD",
        "SISMEMBER",
        "SMEMBERS",
        "SMISMEMBER",
        "SREM",
        "SET",
        "SETEX",
        "SETNX",
        "STRLEN",
        "TTL",
        "TYPE",
        "ZADD",
        "ZCARD",
        "ZCOUNT",
        "ZINCRBY",
        "ZRANGE",
        "ZRANGEBYSCORE",
        "ZRANK",
        "ZREM",
        "ZREVRANGE",
        "ZSCORE",
        "XADD",
        "XLEN",
        "XRANGE",
        "XREVRANGE",
    ]
)
"""Commands the gateway's ``/command`` endpoint runs by default: reads and
writes of single keys. Server administration (FLUSHALL, FLUSHDB, CONFIG,
SHUTDOWN, DEBUG, ACL, MODULE, REPLICAOF), whole-keyspace scans (KEYS),
scripts (EVAL, FUNCTION) and blocking commands are not in it."""

_IDEMPOTENT = frozenset(
    {
        "GET",
        "MGET",
        "EXISTS",
        "TTL",
        "PTTL",
        "TYPE",
        "STRLEN",
        "HGET",
        "HGETALL",
        "HMGET",
        "LRANGE",
        "LLEN",
        "SMEMBERS",
        "SCARD",
        "ZRANGE",
        "ZSCORE",
        "ZCARD",
        "PING",
        "SET",
        "DEL",
        "EXPIRE",
        "HSET",
        "SADD",
        "SREM",
        "MSET",
        "GETRANGE",
        "HEXISTS",
        "HKEYS",
        "HVALS",
        "HLEN",
        "SISMEMBER",
        "SMISMEMBER",
        "ZRANK",
        "ZCOUNT",
        "ZRANGEBYSCORE",
        "ZREVRANGE",
        "XLEN",
        "XRANGE",
        "XREVRANGE",
        "LINDEX",
        "PERSIST",
    }
)


class RedisDatabase(Database):
    """A Redis server.

    Args:
        name: resource name.
        url: ``redis://[:password@]host:port/db`` or ``rediss://`` (never logged).
        max_connections: pool bound (commands in flight), ≥ 1.
        connect_timeout_s: seconds to open one connection.
        allowed_commands: what :meth:`check_command` lets through (the
            gateway's allowlist); default :data:`DEFAULT_ALLOWED_COMMANDS`.
        runner: the resilience pipeline each call runs through.
        auto_pipeline: send the commands of :data:`DEFAULT_ALLOWED_COMMANDS`
            (none of them blocks) that concurrent callers issue in one loop
            iteration as one pipeline (default ``True``).
    """

    kind: ClassVar[str] = "redis"

    def __init__(
        self,
        name: str,
        *,
        url: str,
        max_connections: int = 10,
        connect_timeout_s: float = 10.0,
        allowed_commands: Iterable[str] | None = None,
        runner: CallRunner | None = None,
        auto_pipeline: bool = True,
    ) -> None:
        super().__init__(name, runner=runner)
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections}")
        self._url = url
        self._max_connections = max_connections
        self._connect_timeout_s = connect_timeout_s
        self._client: aioredis.Redis | None = None
        self.auto_pipeline = auto_pipeline
        self._auto: AutoPipeline | None = None
        self.allowed_commands = (
            DEFAULT_ALLOWED_COMMANDS
            if allowed_commands is None
            else frozenset(c.upper() for c in allowed_commands)
        )
        # Commands in flight: redis-py's pool opens a connection per command
        # otherwise. Callers beyond max_connections queue in arrival order; the
        # call's deadline (or an hour) bounds the wait.
        self._gate = Bulkhead(
            max_concurrent=max_connections,
            max_queued=_MAX_QUEUED,
            max_wait_s=_MAX_SLOT_WAIT_S,
            name=name,
        )
        self._meter = PoolMeter()

    async def _open(self) -> None:
        self._client = aioredis.Redis.from_url(
            self._url,
            max_connections=self._max_connections,
            socket_connect_timeout=self._connect_timeout_s,
            # The pipeline decides what is retried (never INCR and the like):
            # no retries hidden inside redis-py, whatever its version's default.
            retry=RedisRetry(NoBackoff(), 0),
        )
        try:
            await self._client.ping()
        except redis_errors.RedisError as exc:
            await self._close()
            raise translate_redis_error(exc, resource=self.name, operation="open") from exc
        if self.auto_pipeline:
            self._auto = AutoPipeline(
                self._client,
                loop=asyncio.get_running_loop(),
                take_slot=self._take_slot,
                give_slot=self._give_slot,
            )

    async def _close(self) -> None:
        auto, self._auto = self._auto, None
        if auto is not None:
            await auto.aclose()
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def _ping(self) -> None:
        await self._command("PING")

    async def command(self, name: str, *args: Any) -> Any:
        """Run one Redis command (``await redis.command("SET", "k", "v", "EX", 60)``).

        Replies come back as redis-py gives them (bytes for strings). Reads and
        commands whose repetition does not change the outcome (SET, DEL,
        EXPIRE, ...) may be retried; INCR, LPUSH and the like never are.

        Raises:
            QueryError: unknown command or wrong arguments; ReadOnlyViolation:
            a write on a read-only replica; TransientDatabaseError: connection
            lost or server loading; OperationTimeout.
        """
        upper = name.upper()
        return await self._call(
            lambda: self._command(upper, *args), upper, idempotent=upper in _IDEMPOTENT
        )

    def check_command(self, name: str) -> str:
        """``name`` upper-cased if the allowlist has it.

        Raises:
            InvalidInputError: it does not (the gateway answers 400).
        """
        upper = name.upper()
        if upper not in self.allowed_commands:
            raise InvalidInputError(f"Redis command {upper!r} is not allowed on {self.name!r}")
        return upper

    def get(self, key: str | bytes) -> Coroutine[Any, Any, bytes | None]:
        """The value of ``key``, or ``None`` (the call's coroutine: one frame less)."""
        return self._call(partial(self._command, "GET", key), "GET", idempotent=True)

    async def set(
        self,
        key: str | bytes,
        value: Any,
        *,
        ttl_s: float | None = None,
        only_if_absent: bool = False,
    ) -> bool:
        """Set ``key``; with ``ttl_s`` (seconds, > 0, millisecond precision) it expires.
        ``only_if_absent`` is SET NX. Returns whether the value was set."""
        args: list[Any] = [key, value]
        if ttl_s is not None:
            if ttl_s <= 0:
                raise ValueError(f"ttl_s must be > 0, got {ttl_s}")
            args += ["PX", max(1, round(ttl_s * 1000))]
        if only_if_absent:
            args.append("NX")
            return bool(
                await self._call(lambda: self._command("SET", *args), "SET", idempotent=False)
            )
        return bool(await self.command("SET", *args))

    async def delete(self, *keys: str | bytes) -> int:
        """Delete keys; returns how many existed."""
        return int(await self.command("DEL", *keys)) if keys else 0

    async def incr(self, key: str | bytes, by: int = 1) -> int:
        """Add ``by`` to the integer at ``key`` (0 if absent); never retried."""
        return int(await self.command("INCRBY", key, by))

    async def expire(self, key: str | bytes, ttl_s: float) -> bool:
        """Expire ``key`` in ``ttl_s`` seconds (millisecond precision); whether it exists."""
        return bool(await self.command("PEXPIRE", key, max(1, round(ttl_s * 1000))))

    async def mget(self, keys: Sequence[str | bytes]) -> list[bytes | None]:
        """The values of ``keys``, ``None`` for absent ones (one round trip)."""
        return list(await self.command("MGET", *keys)) if keys else []

    async def mset(self, mapping: Mapping[str | bytes, Any]) -> None:
        """Set every key of ``mapping`` at once (atomic)."""
        if mapping:
            args = [x for kv in mapping.items() for x in kv]
            await self.command("MSET", *args)

    async def pipeline(
        self, commands: Sequence[Sequence[Any]], *, transaction: bool = False
    ) -> list[Any]:
        """Send ``commands`` (each ``[name, *args]``) in one round trip and return
        one reply per command. With ``transaction=True`` they run as one
        ``MULTI``/``EXEC`` block, which no other client's command interleaves.
        A command that fails leaves its translated error (QueryError...) in
        its place; the others still run (Redis never rolls back).
        Retried only if every command is retry-safe.
        """
        cmds = [(str(c[0]).upper(), *c[1:]) for c in commands if c]
        idempotent = all(c[0] in _IDEMPOTENT for c in cmds)
        return await self._call(
            lambda: self._pipeline(cmds, transaction), "pipeline", idempotent=idempotent
        )

    async def _pipeline(self, cmds: list[tuple[Any, ...]], transaction: bool) -> list[Any]:
        client = self._need_client()
        await self._take_slot()
        try:
            pipe = client.pipeline(transaction=transaction)
            for cmd in cmds:
                pipe.execute_command(*cmd)
            replies = await pipe.execute(raise_on_error=False)
        except redis_errors.RedisError as exc:
            raise translate_redis_error(exc, resource=self.name, operation="pipeline") from exc
        finally:
            self._give_slot()
        return [
            translate_redis_error(r, resource=self.name, operation=str(c[0]))
            if isinstance(r, redis_errors.RedisError)
            else r
            for c, r in zip(cmds, replies, strict=False)
        ]

    async def _command(self, name: str, *args: Any) -> Any:
        client = self._client
        if client is None:
            raise RuntimeError(f"database {self.name!r} is not open")
        auto = self._auto
        if auto is not None and name in DEFAULT_ALLOWED_COMMANDS:
            try:
                return await auto.execute((name, *args))
            except redis_errors.RedisError as exc:
                raise translate_redis_error(exc, resource=self.name, operation=name) from exc
        await self._take_slot()
        try:
            run: Callable[..., Awaitable[Any]] = client.execute_command
            return await run(name, *args)
        except redis_errors.RedisError as exc:
            raise translate_redis_error(exc, resource=self.name, operation=name) from exc
        finally:
            self._give_slot()

    async def _take_slot(self) -> None:
        meter = self._meter
        if self._gate.try_enter():
            meter.took()
            return
        meter.acquiring()
        started = time.perf_counter()
        try:
            await self._gate.enter()
        except BaseException:
            meter.abandoned()
            raise
        meter.acquired(time.perf_counter() - started)

    def _give_slot(self) -> None:
        self._meter.released()
        self._gate.release()

    def _need_client(self) -> aioredis.Redis:
        if self._client is None:
            raise RuntimeError(f"database {self.name!r} is not open")
        return self._client

    def stats(self) -> PoolStats:
        """Pool statistics: ``size`` is redis-py's open connections, ``in_use``
        the commands in flight."""
        pool = self._client.connection_pool if self._client is not None else None
        size = 0
        if pool is not None:
            size = len(pool._available_connections) + len(pool._in_use_connections)
        size = max(size, self._meter.in_use)
        return self._meter.snapshot(size=size, max_size=self._max_connections)


def translate_redis_error(
    exc: BaseException, *, resource: str | None, operation: str | None
) -> OperationError:
    """Map a redis-py error: timeouts → OperationTimeout, connection trouble and
    ``LOADING``/``BUSY``/``TRYAGAIN`` → TransientDatabaseError, ``READONLY`` →
    ReadOnlyViolation, other server replies (wrong type, unknown command) → QueryError."""
    ctx: OperationContext = {"resource": resource, "operation": operation}
    message = str(exc)
    if isinstance(exc, redis_errors.TimeoutError):
        return OperationTimeout("Redis did not answer in time", **ctx)
    if isinstance(
        exc,
        redis_errors.ConnectionError | redis_errors.BusyLoadingError | redis_errors.TryAgainError,
    ):
        return TransientDatabaseError(message, **ctx)
    if isinstance(exc, redis_errors.ReadOnlyError):
        return ReadOnlyViolation(message, **ctx)
    if isinstance(exc, redis_errors.ResponseError | redis_errors.DataError):
        return QueryError(message, **ctx)
    return DatabaseError(message, **ctx)
