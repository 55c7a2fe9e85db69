"""One Redis client with bounded connection slots and an auto-pipeline.

Both Redis resources stand on it: the Redis database
(:class:`~iogate.databases.redis.RedisDatabase`) and the cache's Redis tier
(:class:`~iogate.cache.redis.RedisTier`). What they share is built here once:

- the redis-py asyncio client from a URL (:func:`redis_client`), with redis-py's
  own retries turned off: what is retried is the pipeline's decision (never
  ``INCR`` and the like), whatever a redis-py version's default is;
- the bound on commands in flight (:meth:`RedisTransport.take_slot` /
  :meth:`~RedisTransport.give_slot`): a lone command or a pipeline each holds
  one slot; callers beyond ``max_connections`` queue in arrival order for up to
  ``slot_wait_s`` (or their deadline). A :class:`~iogate.policies.bulkhead.Bulkhead`
  of our own rather than redis-py's ``BlockingConnectionPool``, whose
  ``Condition`` cost a fifth of the L2-hit throughput when measured, and rather
  than redis-py's plain pool, which opens a connection per command beyond the
  bound and then fails with "Too many connections";
- the :class:`~iogate._redis.pipelining.AutoPipeline` of the client, whose
  pipelines take the same slots.

The owner translates redis-py's errors into its own terms (the database into
:mod:`iogate.errors`, the cache tier into "no L2"), so none are translated here.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as RedisRetry
from redis.backoff import NoBackoff

from iogate._redis.pipelining import AutoPipeline
from iogate.policies.bulkhead import Bulkhead

__all__ = ["RedisTransport", "SlotMeter", "redis_client"]

_MAX_QUEUED = 1_000_000
"""Callers that may queue for a slot (in practice: unbounded; the wait is bounded)."""


def redis_client(
    url: str,
    *,
    connect_timeout_s: float,
    socket_timeout_s: float | None = None,
    max_connections: int | None = None,
    health_check_interval_s: float = 0,
    keepalive: bool = False,
) -> aioredis.Redis:
    """A redis-py asyncio client for ``url`` (``redis://``, ``rediss://``,
    ``unix://``; redis-py's ``from_url``) that never retries on its own.

    Args:
        connect_timeout_s: seconds to open one connection.
        socket_timeout_s: seconds to wait for a reply; ``None``: no limit.
        max_connections: the pool's bound (``None``: redis-py's, unbounded).
        health_check_interval_s: PING a connection idle this long before use
            (seconds; 0: never).
        keepalive: TCP keepalive on the connections.
    """
    return aioredis.Redis.from_url(
        url,
        max_connections=max_connections,
        socket_connect_timeout=connect_timeout_s,
        socket_timeout=socket_timeout_s,
        health_check_interval=health_check_interval_s,
        socket_keepalive=keepalive,
        retry=RedisRetry(NoBackoff(), 0),
    )


class SlotMeter(Protocol):
    """What counts the slots taken (:class:`~iogate.databases.stats.PoolMeter` does)."""

    def took(self) -> None:
        """A slot was free at once."""

    def acquiring(self) -> None:
        """A caller starts waiting for a slot."""

    def acquired(self, wait_s: float) -> None:
        """The caller got one after ``wait_s`` seconds."""

    def abandoned(self) -> None:
        """The caller stopped waiting without one."""

    def released(self) -> None:
        """A slot was given back."""


class _Uncounted:
    __slots__ = ()

    def took(self) -> None:
        pass

    def acquiring(self) -> None:
        pass

    def acquired(self, wait_s: float) -> None:
        pass

    def abandoned(self) -> None:
        pass

    def released(self) -> None:
        pass


class RedisTransport:
    """A Redis client, its slots and (optionally) its auto-pipeline.

    Unopened until :meth:`open` (which needs the running loop and does no I/O);
    :meth:`aclose` closes the client and its pool.

    Args:
        url: the server's URL (never logged).
        name: names the slot bound in its errors (the resource's name).
        max_connections: slots, and the client pool's bound (>= 1).
        connect_timeout_s: seconds to open one connection.
        socket_timeout_s: seconds to wait for a reply; ``None``: no limit (the
            owner's pipeline bounds the call).
        slot_wait_s: longest wait for a slot, seconds (>= 0); the caller's
            deadline, if shorter, bounds it too.
        auto_pipeline: batch the commands sent through :attr:`auto`.
        meter: counts slots taken and waited for (``None``: not counted).

    Raises:
        ValueError: ``max_connections`` < 1 or ``slot_wait_s`` < 0.

    Attributes:
        client: the redis-py client while open, else ``None``.
        auto: the :class:`~iogate._redis.pipelining.AutoPipeline` while open
            (``None`` without ``auto_pipeline``).
    """

    __slots__ = (
        "_connect_timeout_s",
        "_gate",
        "_meter",
        "_socket_timeout_s",
        "_url",
        "auto",
        "auto_pipeline",
        "client",
        "max_connections",
    )

    def __init__(
        self,
        url: str,
        *,
        name: str,
        max_connections: int,
        connect_timeout_s: float,
        socket_timeout_s: float | None = None,
        slot_wait_s: float,
        auto_pipeline: bool = True,
        meter: SlotMeter | None = None,
    ) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections}")
        self._url = url
        self.max_connections = max_connections
        self._connect_timeout_s = connect_timeout_s
        self._socket_timeout_s = socket_timeout_s
        self.auto_pipeline = auto_pipeline
        self._meter: SlotMeter = meter if meter is not None else _Uncounted()
        self._gate = Bulkhead(
            max_concurrent=max_connections,
            max_queued=_MAX_QUEUED,
            max_wait_s=slot_wait_s,
            name=name,
        )
        self.client: aioredis.Redis | None = None
        self.auto: AutoPipeline | None = None

    def open(self) -> aioredis.Redis:
        """Make the client (and the auto-pipeline) and return the client. No I/O:
        connections open on first use."""
        client = redis_client(
            self._url,
            connect_timeout_s=self._connect_timeout_s,
            socket_timeout_s=self._socket_timeout_s,
            max_connections=self.max_connections,
        )
        if self.auto_pipeline:
            self.auto = AutoPipeline(
                client,
                loop=asyncio.get_running_loop(),
                take_slot=self.take_slot,
                give_slot=self.give_slot,
            )
        self.client = client
        return client

    async def aclose(self) -> None:
        """Fail what the auto-pipeline holds, then close the client and its pool.

        Raises:
            redis.exceptions.RedisError, OSError: closing a connection failed.
        """
        auto, self.auto = self.auto, None
        if auto is not None:
            await auto.aclose()
        client, self.client = self.client, None
        if client is not None:
            await client.aclose(close_connection_pool=True)

    async def take_slot(self) -> None:
        """Take a slot, queueing (FIFO) up to ``slot_wait_s`` for one.

        Raises:
            BulkheadFullError: no slot came free in time.
        """
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

    def give_slot(self) -> None:
        """Give a slot back (once per :meth:`take_slot` that returned)."""
        self._meter.released()
        self._gate.release()

    def open_connections(self) -> int:
        """Connections the client's pool holds now (idle or lent); 0 when closed."""
        client = self.client
        if client is None:
            return 0
        pool = client.connection_pool
        return len(pool._available_connections) + len(pool._in_use_connections)

    def __repr__(self) -> str:
        state = "open" if self.client is not None else "closed"
        return f"<RedisTransport {state} max_connections={self.max_connections}>"
