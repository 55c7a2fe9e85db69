"""Redis as a database resource, on redis-py's asyncio client with hiredis.

This is the minimal resource of the walking skeleton: a pooled client,
``ping`` and ``command``. Typed helpers (get / set / incr / pipelines) and the
gateway's command allowlist build on it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, cast

import redis.asyncio as aioredis
import redis.exceptions as redis_errors

from iogate.databases.base import CallRunner, Database
from iogate.errors import (
    DatabaseError,
    OperationContext,
    OperationError,
    OperationTimeout,
    QueryError,
    ReadOnlyViolation,
    TransientDatabaseError,
)

__all__ = ["RedisDatabase", "translate_redis_error"]

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
    }
)


class RedisDatabase(Database):
    """A Redis server.

    Args:
        name: resource name.
        url: ``redis://[:password@]host:port/db`` or ``rediss://`` (never logged).
        max_connections: pool bound.
        connect_timeout_s: seconds to open one connection.
        runner: the resilience pipeline each call runs through.
    """

    kind: ClassVar[str] = "redis"

    def __init__(
        self,
        name: str,
        *,
        url: str,
        max_connections: int = 10,
        connect_timeout_s: float = 10.0,
        runner: CallRunner | None = None,
    ) -> None:
        super().__init__(name, runner=runner)
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections}")
        self._url = url
        self._max_connections = max_connections
        self._connect_timeout_s = connect_timeout_s
        self._client: aioredis.Redis | None = None

    async def _open(self) -> None:
        self._client = aioredis.Redis.from_url(
            self._url,
            max_connections=self._max_connections,
            socket_connect_timeout=self._connect_timeout_s,
        )
        try:
            await self._client.ping()
        except redis_errors.RedisError as exc:
            await self._close()
            raise translate_redis_error(exc, resource=self.name, operation="open") from exc

    async def _close(self) -> None:
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

    async def _command(self, name: str, *args: Any) -> Any:
        if self._client is None:
            raise RuntimeError(f"database {self.name!r} is not open")
        try:
            run = cast(Callable[..., Awaitable[Any]], self._client.execute_command)
            return await run(name, *args)
        except redis_errors.RedisError as exc:
            raise translate_redis_error(exc, resource=self.name, operation=name) from exc


def translate_redis_error(
    exc: redis_errors.RedisError, *, resource: str | None, operation: str | None
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
