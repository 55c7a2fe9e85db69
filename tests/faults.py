"""A fault-injecting TCP proxy between a client and a real server on loopback.

The idea of asyncpg's ``tests/test_adversity.py``: stopping a server shows
what a client does when the server is gone; a proxy in the middle shows what it
does when the *network* misbehaves while the server is fine — a connection
reset in the middle of a query, replies that stop arriving, latency on every
packet, connections refused. Every test that uses it talks to a real server
(PostgreSQL, Redis, an HTTP upstream) through it.

Faults, all switchable at any time:

- :attr:`FaultProxy.delay_s` — latency added before each chunk is forwarded,
  in both directions (seconds);
- :meth:`FaultProxy.blackhole` — bytes are read and dropped: a peer that
  stopped answering without closing (a dead NAT entry, a partition);
- :meth:`FaultProxy.reset_all` — every open connection is aborted with a TCP
  RST (``SO_LINGER`` 0), as a crashed middlebox does;
- :attr:`FaultProxy.reset_after_bytes` — each connection is reset once the
  server has sent it that many more bytes (a reset in the middle of a reply);
- :meth:`FaultProxy.refuse` — new connections are accepted and reset at once.

Traffic goes only to the target on 127.0.0.1 the test names.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

_CHUNK = 65536


class FaultProxy:
    """A loopback TCP proxy to ``127.0.0.1:target_port`` with faults on demand.

    Args:
        target_port: the real server's port on 127.0.0.1.

    Attributes:
        port: the proxy's own port (after :meth:`start`).
        delay_s: seconds added before each forwarded chunk (0: none).
        reset_after_bytes: reset a connection once the server has sent it this
            many bytes from now on (``None``: never).
        connections: connections accepted so far.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.delay_s = 0.0
        self.reset_after_bytes: int | None = None
        self.connections = 0
        self._dropping = False
        self._refusing = False
        self._server: asyncio.Server | None = None
        self._pairs: set[_Pair] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        """Listen on a free loopback port; returns it."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def close(self) -> None:
        """Stop listening, abort every connection and wait for their handlers."""
        if self._server is not None:
            self._server.close()
        self.reset_all()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=5)
        if self._server is not None:
            await self._server.wait_closed()

    def blackhole(self, on: bool = True) -> None:
        """Drop every byte in both directions (``on=False``: forward again)."""
        self._dropping = on

    def refuse(self, on: bool = True) -> None:
        """Reset each new connection at once (``on=False``: accept again)."""
        self._refusing = on

    def heal(self) -> None:
        """No faults any more (connections already reset stay closed)."""
        self.delay_s = 0.0
        self.reset_after_bytes = None
        self._dropping = False
        self._refusing = False

    def reset_all(self) -> None:
        """Abort every open connection with a TCP RST, both sides."""
        for pair in list(self._pairs):
            pair.reset()

    @property
    def open_connections(self) -> int:
        """Connections currently proxied."""
        return len(self._pairs)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)
        if self._refusing:
            _abort(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            _abort(writer)
            return
        pair = _Pair(self, writer, up_writer)
        self._pairs.add(pair)
        try:
            await asyncio.gather(
                pair.pump(reader, up_writer, from_server=False),
                pair.pump(up_reader, writer, from_server=True),
            )
        finally:
            self._pairs.discard(pair)
            pair.reset()


class _Pair:
    """One proxied connection: the client's side and the server's."""

    def __init__(
        self, proxy: FaultProxy, client: asyncio.StreamWriter, server: asyncio.StreamWriter
    ) -> None:
        self.proxy = proxy
        self.client = client
        self.server = server
        self.budget = proxy.reset_after_bytes
        self.closed = False

    async def pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, from_server: bool
    ) -> None:
        proxy = self.proxy
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while not self.closed:
                data = await source.read(_CHUNK)
                if not data:
                    break
                if proxy.delay_s > 0:
                    await asyncio.sleep(proxy.delay_s)
                if proxy._dropping or self.closed:
                    continue
                if from_server:
                    if self.budget is None and proxy.reset_after_bytes is not None:
                        self.budget = proxy.reset_after_bytes
                    if self.budget is not None:
                        if len(data) >= self.budget:
                            sink.write(data[: self.budget])
                            self.reset()
                            break
                        self.budget -= len(data)
                sink.write(data)
                await sink.drain()
        if not self.closed:
            with contextlib.suppress(OSError, RuntimeError):
                sink.write_eof()

    def reset(self) -> None:
        if self.closed:
            return
        self.closed = True
        _abort(self.client)
        _abort(self.server)


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER on, timeout 0) instead of a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@asynccontextmanager
async def fault_proxy(target_port: int) -> AsyncIterator[FaultProxy]:
    """A started :class:`FaultProxy` to ``127.0.0.1:target_port`` for the block."""
    proxy = FaultProxy(target_port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()
