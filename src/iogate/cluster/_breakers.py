"""Circuit breakers shared by every gateway process, through Redis.

Each process keeps its own :class:`~iogate.policies.CircuitBreaker` (the one
state machine); a :class:`BreakerSync` per breaker listens to its
:class:`~iogate.policies.CircuitStateChanged` events and keeps the deployment
in step:

- **A move is published**: open (a trip), closed, forced open, disabled — one
  script stores the state with a new *version* in a hash
  (``{prefix}cb:{name}``, with when the open state ends on Redis's clock) and
  ``PUBLISH``es it. Every other process's subscriber applies it
  (:meth:`~iogate.policies.CircuitBreaker.apply`) unless it has seen that version
  already: a trip in one process is seen by the others within a pub/sub
  delivery (milliseconds; the test bounds it at 1 s). A process that starts, or
  whose subscription was lost, reads the stored states first.
- **One probe cluster-wide**: when the wait in open is over, a breaker asks its
  ``half_open_gate``; the sync answers yes only in the process that holds the
  probe *lease* (``SET {prefix}cb:{name}:probe NX PX probe_lease``), taken in the
  background on the first call past the wait. The others keep failing fast; the
  prober's outcome (closed, or open again) is published and the lease dropped.
- **Redis unreachable**: each process decides alone, as without ``[cluster]``
  (the gate says yes), and catches up from the stored states when it is back.

Manual moves through the admin routes (``reset``) are moves like any other:
they apply to the whole deployment.
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from typing import Any, Final

import redis.exceptions as redis_errors

from iogate._redis.transport import RedisTransport, redis_client
from iogate.errors import BulkheadFullError
from iogate.policies.circuit_breaker import CircuitBreaker, CircuitState, CircuitStateChanged
from iogate.policies.clock import Clock, SystemClock
from iogate.policies.events import PolicyEvent

__all__ = ["BreakerSync", "RedisBreakers"]

_log = logging.getLogger("iogate.cluster")
_DOWN: Final = (redis_errors.RedisError, OSError, BulkheadFullError)

PUBLISH_SCRIPT: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local v = redis.call('HINCRBY', KEYS[1], 'version', 1)
local ends = string.format('%.6f', now + tonumber(ARGV[2]))
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'until', ends, 'origin', ARGV[3])
redis.call('DEL', KEYS[2])
local message = ARGV[5] .. '|' .. v .. '|' .. ARGV[1] .. '|' .. ARGV[2] .. '|' .. ARGV[3]
redis.call('PUBLISH', ARGV[4], message)
return v
"""
"""KEYS: the state hash, the probe lease; ARGV: state, seconds open, origin,
channel, breaker name. Returns the new version."""

READ_SCRIPT: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local h = redis.call('HMGET', KEYS[1], 'version', 'state', 'until')
if not h[1] then return false end
return {h[1], h[2], string.format('%.6f', tonumber(h[3]) - now)}
"""
"""KEYS: the state hash. Returns ``[version, state, seconds left open]`` or nil."""

_SHARED_STATES: Final = {
    CircuitState.OPEN,
    CircuitState.CLOSED,
    CircuitState.FORCED_OPEN,
    CircuitState.DISABLED,
}


class BreakerSync:
    """Keeps one breaker in step with the deployment (made by :meth:`RedisBreakers.sync`).

    Wire it at build time: ``half_open_gate=sync.gate`` and the breaker's events
    to :meth:`on_event`, then :meth:`attach` the breaker.
    """

    __slots__ = (
        "_applying",
        "_breaker",
        "_lease",
        "_owner",
        "_tried_at",
        "_trying",
        "keys",
        "name",
        "version",
    )

    def __init__(self, owner: RedisBreakers, name: str) -> None:
        self.name = name
        self._owner = owner
        self.keys = (f"{owner.prefix}cb:{{{name}}}", f"{owner.prefix}cb:{{{name}}}:probe")
        self._breaker: CircuitBreaker | None = None
        self._applying = False
        self._lease = False
        self._trying = False
        self._tried_at = -math.inf
        self.version = 0

    def attach(self, breaker: CircuitBreaker) -> None:
        """The breaker this keeps in step (once)."""
        self._breaker = breaker

    @property
    def probing(self) -> bool:
        """Whether this process holds the probe lease."""
        return self._lease

    def gate(self, now: float) -> bool:
        """The breaker's ``half_open_gate``: probe only with the lease (see the module)."""
        if self._lease:
            return True
        if not self._trying and now - self._tried_at >= self._owner.lease_retry_s:
            self._trying = True
            self._tried_at = now
            self._owner.spawn(self._take_lease())
        return False

    async def _take_lease(self) -> None:
        try:
            won = await self._owner.take_lease(self.keys[1])
        finally:
            self._trying = False
        if won:
            self._lease = True

    def on_event(self, event: PolicyEvent) -> None:
        """The breaker's listener: publish its own moves (not the ones applied)."""
        if self._applying or not isinstance(event, CircuitStateChanged):
            return
        if event.to_state not in _SHARED_STATES:
            return
        self._lease = False
        wait = 0.0
        if event.to_state is CircuitState.OPEN and self._breaker is not None:
            wait = self._breaker.stats().retry_after_s or 0.0
        self._owner.spawn(self._publish(event.to_state, wait))

    async def _publish(self, state: CircuitState, wait_s: float) -> None:
        version = await self._owner.publish(self, state, wait_s)
        if version is not None and version > self.version:
            self.version = version

    def apply(self, version: int, state: CircuitState, wait_s: float) -> None:
        """Apply another process's move ``version`` unless seen already."""
        breaker = self._breaker
        if breaker is None or version <= self.version or state not in _SHARED_STATES:
            return
        self.version = version
        self._lease = False
        if state is CircuitState.CLOSED and breaker.state is CircuitState.CLOSED:
            return
        self._applying = True
        try:
            breaker.apply(state, retry_after_s=wait_s)
        finally:
            self._applying = False


class RedisBreakers:
    """The shared breaker states of one gateway.

    Args:
        url: the coordinating Redis; never logged.
        prefix: the start of every key and of the channel.
        timeout_s: longest wait for Redis, seconds (> 0).
        probe_lease_s: how long the probe lease lasts if its holder never
            reports, seconds (> 0).
        clock: the breakers' clock.

    Raises:
        ValueError: a bound above is violated.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "iogate:cluster:",
        timeout_s: float = 0.25,
        probe_lease_s: float = 5.0,
        clock: Clock | None = None,
    ) -> None:
        if not timeout_s > 0 or not probe_lease_s > 0:
            raise ValueError("timeout_s and probe_lease_s must be > 0")
        self.prefix = prefix
        self.channel = f"{prefix}cb"
        self.origin = uuid.uuid4().hex[:12]
        self.probe_lease_s = probe_lease_s
        self.lease_retry_s = min(0.25, probe_lease_s / 4)
        self._timeout_s = timeout_s
        self._clock = clock if clock is not None else SystemClock()
        self._transport = RedisTransport(
            url,
            name="cluster-breakers",
            max_connections=4,
            connect_timeout_s=timeout_s,
            socket_timeout_s=timeout_s,
            slot_wait_s=timeout_s,
        )
        self._url = url
        self._syncs: dict[str, BreakerSync] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._listener: asyncio.Task[None] | None = None
        self._pubsub_client: Any = None
        self.subscribed: asyncio.Event | None = None
        """Set once the subscriber has caught up with the stored states."""

    def sync(self, name: str) -> BreakerSync:
        """The :class:`BreakerSync` of breaker ``name`` (the resource's name)."""
        found = self._syncs.get(name)
        if found is None:
            found = self._syncs[name] = BreakerSync(self, name)
        return found

    def spawn(self, coro: Any) -> None:
        """Run ``coro`` in the background, kept until done."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def open(self) -> None:
        """Make the client and start the subscriber (it reads the stored states first)."""
        self._transport.open()
        # pub/sub on a client of its own: no reply timeout (it waits for messages)
        self._pubsub_client = redis_client(self._url, connect_timeout_s=self._timeout_s)
        self.subscribed = asyncio.Event()
        self._listener = asyncio.get_running_loop().create_task(self._listen())

    async def aclose(self) -> None:
        """Stop the subscriber, wait for publications in flight, close the client."""
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._transport.aclose()
        if self._pubsub_client is not None:
            await self._pubsub_client.aclose(close_connection_pool=True)

    async def _run(self, script: str, keys: tuple[str, ...], *args: Any) -> Any:
        client = self._transport.client
        if client is None:
            raise redis_errors.ConnectionError("the cluster's Redis client is not open")
        return await client.eval(script, len(keys), *keys, *args)

    async def publish(self, sync: BreakerSync, state: CircuitState, wait_s: float) -> int | None:
        """Store and announce ``sync``'s move; its version, or ``None`` (Redis down)."""
        try:
            reply = await self._run(
                PUBLISH_SCRIPT, sync.keys, state.value, repr(wait_s), self.origin,
                self.channel, sync.name,
            )  # fmt: skip
        except _DOWN as exc:
            _log.warning(
                "breaker %r: its move to %s was not shared (%s)",
                sync.name,
                state.value,
                type(exc).__name__,
            )
            return None
        return int(reply)

    async def take_lease(self, key: str) -> bool:
        """Take the probe lease ``key``; ``True`` also when Redis is down (decide alone)."""
        client = self._transport.client
        if client is None:
            return True
        try:
            return bool(
                await client.set(key, self.origin, nx=True, px=int(self.probe_lease_s * 1000))
            )
        except _DOWN:
            return True

    async def _catch_up(self) -> None:
        for sync in list(self._syncs.values()):
            found = await self._run(READ_SCRIPT, sync.keys[:1])
            if found:
                version, state, left = found
                sync.apply(int(version), CircuitState(_text(state)), max(float(left), 0.0))

    def _on_message(self, data: bytes | str) -> None:
        name, version, state, wait, origin = _text(data).split("|")
        sync = self._syncs.get(name)
        if sync is None or origin == self.origin:
            if sync is not None and int(version) > sync.version:
                sync.version = int(version)
            return
        sync.apply(int(version), CircuitState(state), float(wait))

    async def _listen(self) -> None:
        """Subscribe, catch up, then apply every announcement; resubscribe after a loss."""
        while True:
            pubsub = self._pubsub_client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                await self._catch_up()
                assert self.subscribed is not None
                self.subscribed.set()
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        self._on_message(message["data"])
            except _DOWN as exc:
                _log.debug("breaker subscription lost (%s); retrying", type(exc).__name__)
                await asyncio.sleep(1.0)
            finally:
                await asyncio.shield(pubsub.aclose())


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
