"""Auto-pipelining: Redis commands of concurrent callers share round trips.

A command issued while nothing else is in flight goes out at once, on its
own, as redis-py would send it (a lone caller pays nothing for batching).
Commands issued while others are in flight are queued, and the queue is sent
as one non-transactional pipeline (one connection, one write, the replies
read back in order) when the event loop next runs its callbacks. Under
concurrency, then, every loop iteration costs one round trip however many
callers it serves: ioredis's ``enableAutoPipelining`` and node-redis's
default behaviour, which redis-py lacks (32 concurrent ``GET`` calls there
cost 32 connection checkouts, 32 writes and 32 reads).

What does not change for a caller: its commands run in the order it awaits
them; each gets its own reply, or its own error (a ``WRONGTYPE`` of one
command fails that command only); a lost connection fails every command of
the pipeline it was on, with the same "effect unknown" a lost connection
leaves a lone command with. Cancelling a caller stops its wait, not a
pipeline already sent. Only non-blocking commands belong here (a blocking
``BLPOP`` would stall everyone on its pipeline); callers route the rest
directly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions as redis_errors

__all__ = ["AutoPipeline"]

_Pending = tuple[tuple[Any, ...], "asyncio.Future[Any]"]


class AutoPipeline:
    """Batch the commands submitted in one loop iteration into one pipeline.

    Args:
        client: an open redis-py asyncio client (its pool provides the connections).
        loop: the event loop the client runs on (the batcher's futures live there).
        take_slot: awaited before each pipeline is sent: the owner's bound on
            connections in use (a pipeline holds one connection).
        give_slot: called once the pipeline's replies are in (or it failed).
        max_batch: most commands in one pipeline (> 0); a longer queue is split.
    """

    __slots__ = (
        "_busy",
        "_client",
        "_give_slot",
        "_loop",
        "_queue",
        "_senders",
        "_take_slot",
        "max_batch",
    )

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        loop: asyncio.AbstractEventLoop,
        take_slot: Callable[[], Awaitable[None]],
        give_slot: Callable[[], None],
        max_batch: int = 512,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self._client = client
        self._loop = loop
        self._take_slot = take_slot
        self._give_slot = give_slot
        self.max_batch = max_batch
        self._queue: list[_Pending] = []
        self._senders: set[asyncio.Task[None]] = set()
        self._busy = 0  # lone commands and pipelines in flight

    async def execute(self, command: tuple[Any, ...]) -> Any:
        """Run ``command`` (``("GET", key)``): at once when nothing is in flight,
        else in the next pipeline. Returns its reply.

        Raises:
            redis.exceptions.RedisError: the command failed (``ResponseError``) or
                its connection did; or whatever ``take_slot`` raises.
        """
        if self._busy or self._queue:
            return await self.submit(command)
        self._busy += 1
        try:
            await self._take_slot()
            try:
                run: Callable[..., Awaitable[Any]] = self._client.execute_command
                return await run(*command)
            finally:
                self._give_slot()
        finally:
            self._busy -= 1

    def submit(self, command: tuple[Any, ...]) -> asyncio.Future[Any]:
        """Queue ``command`` (``("GET", key)``) for the next pipeline; the future
        gets its reply, or the ``RedisError`` it failed with."""
        fut = self._loop.create_future()
        queue = self._queue
        queue.append((command, fut))
        if len(queue) == 1:
            self._loop.call_soon(self._flush)
        return fut

    def _flush(self) -> None:
        queue, self._queue = self._queue, []
        step = self.max_batch
        for i in range(0, len(queue), step):
            sender = self._loop.create_task(self._send(queue[i : i + step]))
            self._senders.add(sender)
            sender.add_done_callback(self._senders.discard)

    async def _send(self, batch: list[_Pending]) -> None:
        self._busy += 1
        slot = False
        try:
            await self._take_slot()
            slot = True
            pipe = self._client.pipeline(transaction=False)
            for command, _ in batch:
                pipe.execute_command(*command)
            replies = await pipe.execute(raise_on_error=False)
        except BaseException as exc:  # no slot (the owner's error), the connection, cancelled
            _fail(batch, exc)
            if not isinstance(exc, Exception):
                raise
            return
        finally:
            if slot:
                self._give_slot()
            self._busy -= 1
        for (_, fut), reply in zip(batch, replies, strict=False):
            if not fut.done():
                if isinstance(reply, Exception):
                    fut.set_exception(reply)
                else:
                    fut.set_result(reply)

    async def aclose(self) -> None:
        """Fail what is queued, stop the pipelines in flight (their callers get
        ``redis.exceptions.ConnectionError``) and wait for them to end."""
        queue, self._queue = self._queue, []
        _fail(queue, redis_errors.ConnectionError("the Redis client was closed"))
        senders = list(self._senders)
        for sender in senders:
            sender.cancel()
        await asyncio.gather(*senders, return_exceptions=True)


def _fail(batch: list[_Pending], exc: BaseException) -> None:
    if not isinstance(exc, Exception):  # cancelled or interrupted: the callers were not
        exc = redis_errors.ConnectionError(f"the pipeline was interrupted ({type(exc).__name__})")
    for _, fut in batch:
        if not fut.done():
            fut.set_exception(exc)
