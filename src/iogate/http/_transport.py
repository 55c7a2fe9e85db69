"""The aiohttp side of an upstream: its session, one attempt, and error translation.

aiohttp errors are translated here, in exactly one place, and chained:
``TimeoutError`` → :class:`~iogate.errors.OperationTimeout`;
``ClientConnectionError`` → :class:`~iogate.errors.UpstreamConnectionError`;
other ``ClientError`` → :class:`~iogate.errors.UpstreamError`. Messages name
the upstream, never the URL (an ``ApiKeyQuery`` secret lives in it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from typing import Any

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from iogate.databases.stats import PoolStats
from iogate.errors import OperationContext, OperationTimeout, UpstreamConnectionError, UpstreamError
from iogate.http.options import ConnectionOptions
from iogate.http.response import Response, new_response
from iogate.policies.timeout import Timeout, remaining

__all__ = ["Transport", "read_bounded", "translate_errors", "translated"]

_perf_counter = time.perf_counter


class Transport:
    """One pooled aiohttp session (see :class:`~iogate.http.upstream.Upstream` for the args)."""

    __slots__ = (
        "_attempt",
        "_attempt_bounded",
        "_max_connections",
        "_options",
        "_phase_timeout",
        "_session",
        "max_response_bytes",
        "name",
    )

    def __init__(
        self,
        name: str,
        *,
        timeout_s: float,
        connect_timeout_s: float,
        read_timeout_s: float | None,
        max_connections: int,
        options: ConnectionOptions,
        max_response_bytes: int,
        attempt_bounded: bool = False,
    ) -> None:
        if timeout_s <= 0 or connect_timeout_s <= 0:
            raise ValueError("timeout_s and connect_timeout_s must be > 0")
        if read_timeout_s is not None and read_timeout_s <= 0:
            raise ValueError(f"read_timeout_s must be > 0, got {read_timeout_s}")
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections}")
        if max_response_bytes < 1:
            raise ValueError(f"max_response_bytes must be >= 1, got {max_response_bytes}")
        self.name = name
        # What aiohttp enforces itself: the connect and read phases. The total
        # of an attempt is fetch's; streams are bounded per read only (the
        # pipeline's attempt bounds the wait for headers).
        self._phase_timeout = aiohttp.ClientTimeout(
            total=None, connect=connect_timeout_s, sock_read=read_timeout_s
        )
        self._attempt = Timeout(timeout_s, name=name)
        self._attempt_bounded = attempt_bounded
        self._max_connections = max_connections
        self._options = options
        self.max_response_bytes = max_response_bytes
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        """Create the session and its pool in the running loop (CA bundle read off-loop)."""
        opts = self._options
        ssl_ctx = await asyncio.to_thread(opts.ssl_context)
        connector = aiohttp.TCPConnector(
            limit=self._max_connections,
            limit_per_host=opts.max_per_host,
            keepalive_timeout=opts.keepalive_s,
            ttl_dns_cache=None if opts.dns_cache_ttl_s is None else int(opts.dns_cache_ttl_s),
            use_dns_cache=opts.dns_cache_ttl_s != 0,
            ssl=ssl_ctx,
        )
        # No cookie jar: one session serves every caller of the upstream, so a
        # Set-Cookie in one caller's answer must never ride on another's request.
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._phase_timeout,
            auto_decompress=True,
            cookie_jar=aiohttp.DummyCookieJar(),
            trace_configs=list(opts.trace_configs) or None,
        )

    async def close(self) -> None:
        """Close the session and every pooled connection."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def pool_stats(self, answered: int) -> PoolStats:
        """The connection pool's gauges, read from the aiohttp connector.

        aiohttp exposes no statistics API: ``in_use`` is the size of the
        connector's set of acquired connections, ``idle`` its pooled keep-alive
        connections, ``waiting`` the requests queued for a free slot, and
        ``max_size`` its ``limit`` (``max_connections``). aiohttp counts no
        acquisitions; ``acquired_total`` is ``answered``, the requests that got
        an answer (each took a connection from the pool). All 0 when closed.
        """
        session = self._session
        connector = session.connector if session is not None else None
        if connector is None:
            return PoolStats(0, self._max_connections, 0, 0, 0, answered, 0.0)
        in_use = len(getattr(connector, "_acquired", ()))
        idle = sum(len(c) for c in getattr(connector, "_conns", {}).values())
        waiting = sum(len(w) for w in getattr(connector, "_waiters", {}).values())
        limit = connector.limit or self._max_connections
        return PoolStats(in_use + idle, limit, in_use, idle, waiting, answered, 0.0)

    @property
    def session(self) -> aiohttp.ClientSession:
        """The open session. Raises RuntimeError when not open."""
        if self._session is None:
            raise RuntimeError(f"upstream {self.name!r} is not open")
        return self._session

    def fetch(
        self,
        method: str,
        url: URL,
        headers: CIMultiDict[str],
        body: Any,
        ctx: Mapping[str, Any],
        attempts: int = 1,
        check: Callable[[Response], None] | None = None,
    ) -> Awaitable[Response]:
        """One attempt, the whole body read (bounded by ``max_response_bytes``);
        the attempt's awaitable.

        ``check`` is called with the answer once its connection is released
        (the upstream meters and judges it there; what it raises propagates).

        After ``timeout_s`` the attempt is cancelled and raises
        :class:`OperationTimeout`. Nothing is armed for it when something else
        ends it in time: the upstream's pipeline with an attempt timeout of at
        most ``timeout_s`` (``attempt_bounded``;
        :func:`~iogate.http._factory.build_upstream` gives the pipeline the
        upstream's ``timeout``), or the call's deadline (:func:`remaining`)
        ending first. Else the transport's own :class:`Timeout` runs it.
        """
        if self._attempt_bounded:
            return self._fetch(method, url, headers, body, ctx, attempts, check)
        left = remaining()
        if left is not None and left <= self._attempt.timeout_s:
            return self._fetch(method, url, headers, body, ctx, attempts, check)
        attempt = partial(self._fetch, method, url, headers, body, ctx, attempts, check)
        return self._attempt.run(attempt, operation=method)

    async def _fetch(
        self,
        method: str,
        url: URL,
        headers: CIMultiDict[str],
        body: Any,
        ctx: Mapping[str, Any],
        attempts: int,
        check: Callable[[Response], None] | None,
    ) -> Response:
        """:meth:`fetch`'s request, untimed. The hot path of every upstream
        call: errors are translated inline (the same rules as
        :func:`translate_errors`) and a body of known length is read in one call.
        """
        started = _perf_counter()
        session = self._session
        if session is None:
            raise RuntimeError(f"upstream {self.name!r} is not open")
        try:
            async with session.request(
                method,
                url,
                headers=headers or None,  # aiohttp skips its header merge for None
                data=body,
                allow_redirects=False,
                timeout=self._phase_timeout,
            ) as resp:
                length = resp.content_length
                if length is not None and length <= self.max_response_bytes:
                    data = await resp.read()
                else:
                    data = await read_bounded(resp, self.max_response_bytes, ctx)
                answer = new_response(
                    resp.status,
                    resp.headers,
                    data,
                    _perf_counter() - started,
                    attempts,
                    resp.reason or "",
                )
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise translated(self.name, ctx, exc) from exc
        if check is not None:
            check(answer)
        return answer

    async def open_stream(
        self, method: str, url: URL, headers: CIMultiDict[str], body: Any
    ) -> aiohttp.ClientResponse:
        """Send a request and return once the headers are in; the caller releases it."""
        ctx = {"resource": self.name, "operation": method}
        with translate_errors(self.name, ctx):
            return await self.session.request(
                method,
                url,
                headers=headers,
                data=body() if callable(body) else body,
                allow_redirects=False,
                timeout=self._phase_timeout,
            )


async def read_bounded(resp: aiohttp.ClientResponse, limit: int, ctx: Mapping[str, Any]) -> bytes:
    """The whole body, or UpstreamError once it exceeds ``limit`` bytes."""
    octx: OperationContext = {"resource": ctx.get("resource"), "operation": ctx.get("operation")}
    if resp.content_length is not None and resp.content_length > limit:
        raise UpstreamError(
            f"response of {resp.content_length} bytes exceeds the {limit}-byte limit",
            status=resp.status,
            **octx,
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise UpstreamError(
                f"response exceeds the {limit}-byte limit", status=resp.status, **octx
            )
        chunks.append(chunk)
    return b"".join(chunks)


def translated(
    name: str, ctx: Mapping[str, Any], exc: TimeoutError | aiohttp.ClientError
) -> UpstreamError | OperationTimeout:
    """The iogate error for an aiohttp one (see the module docstring); chain it."""
    octx: OperationContext = {"resource": ctx.get("resource"), "operation": ctx.get("operation")}
    if isinstance(exc, TimeoutError):
        return OperationTimeout(f"no answer from upstream {name!r} in time", **octx)
    if isinstance(exc, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError):
        reason = _connection_reason(exc)
        return UpstreamConnectionError(f"cannot reach upstream {name!r}: {reason}", **octx)
    return UpstreamError(f"bad answer from upstream {name!r}: {type(exc).__name__}", **octx)


@contextmanager
def translate_errors(name: str, ctx: Mapping[str, Any]) -> Iterator[None]:
    """Translate aiohttp's errors raised in the block into iogate's, chained."""
    try:
        yield
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise translated(name, ctx, exc) from exc


def _connection_reason(exc: aiohttp.ClientError) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return exc.os_error.strerror or type(exc.os_error).__name__
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server disconnected"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "payload broken"
    return type(exc).__name__
