"""One external HTTP API: a pooled aiohttp session under a base URL.

- One :class:`aiohttp.ClientSession` per upstream, created in the running loop
  by :meth:`Upstream.open` and closed with it (aiohttp's documented usage: one
  session per application, not per request).
- Paths are resolved strictly under the base URL (:mod:`iogate.http.urls`);
  redirects are not followed, so a 3xx never carries a call to another host.
- Configured headers (credentials) always win over a caller's headers of the
  same name, never appear in a :class:`Response`, and are masked in ``repr``.
- An attempt's total timeout is the configured one or the call's remaining
  deadline (:func:`iogate.policies.remaining`), whichever is shorter.
- Each call runs through the upstream's :class:`~iogate.databases.base.CallRunner`
  (the resilience pipeline). A call is idempotent — may be retried — when its
  method is (RFC 9110 §9.2.2: GET, HEAD, OPTIONS, TRACE, PUT, DELETE) or it
  carries an ``Idempotency-Key`` header.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Self

import aiohttp
import orjson
from multidict import CIMultiDict
from yarl import URL

from iogate.databases.base import CallRunner
from iogate.errors import (
    InvalidInputError,
    OperationContext,
    OperationTimeout,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamHTTPError,
)
from iogate.http.urls import resolve_under
from iogate.lifecycle import AsyncResource
from iogate.policies.timeout import remaining

__all__ = ["IDEMPOTENT_METHODS", "Response", "Upstream"]

IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
_METHODS: Final = IDEMPOTENT_METHODS | {"POST", "PATCH"}
# Hop-by-hop (RFC 9110 §7.6.1) and framing headers a caller may not set.
_DROPPED_REQUEST_HEADERS: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
_EXCERPT_BYTES: Final = 512
_UNSET: Final[Any] = object()


@dataclass(frozen=True, slots=True)
class Response:
    """An upstream's answer.

    Attributes:
        status: HTTP status code.
        headers: response headers (case-insensitive mapping).
        body: the whole body, decompressed, at most ``max_response_bytes``.
        elapsed_s: seconds from sending the request to the last body byte.
        attempts: how many attempts the call took.
    """

    status: int
    headers: Mapping[str, str]
    body: bytes
    elapsed_s: float
    attempts: int = 1
    reason: str = field(default="", compare=False)

    @property
    def ok(self) -> bool:
        """Whether the status is below 400."""
        return self.status < 400

    @property
    def content_type(self) -> str:
        """The media type without parameters, lower-cased (``application/json``)."""
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()

    def json(self) -> Any:
        """The body parsed as JSON (orjson). Raises ``orjson.JSONDecodeError``."""
        return orjson.loads(self.body)

    def text(self, encoding: str | None = None) -> str:
        """The body decoded with ``encoding``, the charset of Content-Type, or UTF-8."""
        charset = encoding
        if charset is None:
            for part in self.headers.get("content-type", "").split(";")[1:]:
                key, _, value = part.strip().partition("=")
                if key.lower() == "charset":
                    charset = value.strip('"')
        return self.body.decode(charset or "utf-8", errors="replace")

    def raise_for_status(self) -> Self:
        """Return self when ``ok``; raise otherwise.

        Raises:
            UpstreamHTTPError: status ≥ 400, with ``status`` and a body excerpt.
        """
        if self.status >= 400:
            excerpt = self.body[:_EXCERPT_BYTES].decode("utf-8", errors="replace")
            raise UpstreamHTTPError(
                f"upstream answered {self.status} {self.reason}".rstrip(),
                status=self.status,
                body_excerpt=excerpt,
                attempts=self.attempts,
            )
        return self


class Upstream(AsyncResource):
    """A named external HTTP API.

    Args:
        name: resource name (``"openai"``).
        base_url: absolute ``http(s)://`` URL every path is resolved under.
        headers: default headers, e.g. credentials (masked in ``repr``).
        timeout_s: total seconds per attempt, connect included.
        connect_timeout_s: seconds to establish a connection.
        max_connections: size of the connection pool (aiohttp ``limit``).
        max_response_bytes: larger bodies raise UpstreamError.
        runner: the resilience pipeline each call runs through.

    Use ``async with Upstream(...) as api:`` or ``open()`` / ``close()``.
    """

    def __init__(
        self,
        name: str,
        *,
        base_url: str,
        headers: Mapping[str, str] | None = None,
        timeout_s: float = 30.0,
        connect_timeout_s: float = 10.0,
        max_connections: int = 100,
        max_response_bytes: int = 16 * 1024 * 1024,
        runner: CallRunner | None = None,
    ) -> None:
        if timeout_s <= 0 or connect_timeout_s <= 0:
            raise ValueError("timeout_s and connect_timeout_s must be > 0")
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections}")
        if max_response_bytes < 1:
            raise ValueError(f"max_response_bytes must be >= 1, got {max_response_bytes}")
        super().__init__(name)
        self.base_url = URL(base_url)
        if self.base_url.scheme not in ("http", "https") or not self.base_url.host:
            raise ValueError("base_url must be an absolute http:// or https:// URL")
        self._headers = CIMultiDict(headers or {})
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, connect=connect_timeout_s)
        self._max_connections = max_connections
        self.max_response_bytes = max_response_bytes
        self._runner = runner
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        masked = ", ".join(f"{k}: ***" for k in self._headers)
        return f"<Upstream {self.name!r} {self.base_url} headers={{{masked}}} {self.state.value}>"

    @property
    def _what(self) -> str:
        return "upstream"

    async def _open(self) -> None:
        """Create the session and its connection pool in the running event loop."""
        connector = aiohttp.TCPConnector(limit=self._max_connections, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=self._timeout, auto_decompress=True
        )

    async def _close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def ping(self) -> None:
        """Readiness of an upstream is not probed over the network (no I/O):
        raises RuntimeError only when it is not open."""
        self._require_open()

    async def request(
        self,
        method: str,
        path: str = "",
        *,
        params: Mapping[str, str | int | float] | None = None,
        headers: Mapping[str, str] | None = None,
        json: Any = _UNSET,
        data: bytes | str | None = None,
        idempotent: bool | None = None,
    ) -> Response:
        """Send one request under the base URL and read the whole answer.

        Any status is returned as a :class:`Response`; call
        :meth:`Response.raise_for_status` to turn 4xx/5xx into an error.

        Args:
            method: HTTP method (GET, HEAD, OPTIONS, TRACE, PUT, DELETE, POST, PATCH).
            path: relative path, may carry a query string (``"/v1/items?x=1"``).
            params: query parameters added to the path's.
            headers: extra request headers; configured ones win, hop-by-hop are dropped.
            json: a body serialized as JSON (orjson), with ``Content-Type: application/json``.
            data: a raw body (exclusive with ``json``).
            idempotent: override whether the call may be retried (default: by method
                or an ``Idempotency-Key`` header).

        Raises:
            InvalidInputError: bad method, path outside the base URL, json and data both.
            UpstreamConnectionError: the upstream could not be reached or dropped the connection.
            OperationTimeout: no complete answer within the timeout.
            UpstreamError: the body exceeds ``max_response_bytes``.
        """
        verb = method.upper()
        if verb not in _METHODS:
            raise InvalidInputError(f"unsupported HTTP method {method!r}")
        url = resolve_under(self.base_url, path)
        if params:
            url = url.update_query({k: str(v) for k, v in params.items()})
        send_headers = CIMultiDict[str]()
        for key, value in (headers or {}).items():
            if key.lower() not in _DROPPED_REQUEST_HEADERS and key not in self._headers:
                send_headers[key] = value
        send_headers.update(self._headers)
        body: bytes | str | None = data
        if json is not _UNSET:
            if data is not None:
                raise InvalidInputError("pass either json or data, not both")
            body = orjson.dumps(json)
            send_headers.setdefault("Content-Type", "application/json")
        if idempotent is None:
            idempotent = verb in IDEMPOTENT_METHODS or "idempotency-key" in send_headers

        async def attempt() -> Response:
            return await self._send(verb, url, send_headers, body)

        if self._runner is None:
            return await attempt()
        return await self._runner.run(attempt, operation=verb, idempotent=idempotent)

    async def get(self, path: str = "", **kw: Any) -> Response:
        """``request("GET", path, ...)``."""
        return await self.request("GET", path, **kw)

    async def post(self, path: str = "", **kw: Any) -> Response:
        """``request("POST", path, ...)``."""
        return await self.request("POST", path, **kw)

    async def put(self, path: str = "", **kw: Any) -> Response:
        """``request("PUT", path, ...)``."""
        return await self.request("PUT", path, **kw)

    async def patch(self, path: str = "", **kw: Any) -> Response:
        """``request("PATCH", path, ...)``."""
        return await self.request("PATCH", path, **kw)

    async def delete(self, path: str = "", **kw: Any) -> Response:
        """``request("DELETE", path, ...)``."""
        return await self.request("DELETE", path, **kw)

    async def _send(
        self, method: str, url: URL, headers: CIMultiDict[str], body: bytes | str | None
    ) -> Response:
        self._require_open()
        session = self._session
        assert session is not None
        ctx: OperationContext = {"resource": self.name, "operation": method}
        started = time.perf_counter()
        left = remaining()
        timeout = self._timeout
        if left is not None and (timeout.total is None or left < timeout.total):
            timeout = aiohttp.ClientTimeout(total=left, connect=timeout.connect)
        try:
            async with session.request(
                method, url, headers=headers, data=body, allow_redirects=False, timeout=timeout
            ) as resp:
                limit = self.max_response_bytes
                if resp.content_length is not None and resp.content_length > limit:
                    raise UpstreamError(
                        f"response of {resp.content_length} bytes exceeds the {limit}-byte limit",
                        status=resp.status,
                        **ctx,
                    )
                chunks: list[bytes] = []
                size = 0
                async for chunk in resp.content.iter_any():
                    size += len(chunk)
                    if size > limit:
                        raise UpstreamError(
                            f"response exceeds the {limit}-byte limit", status=resp.status, **ctx
                        )
                    chunks.append(chunk)
                return Response(
                    status=resp.status,
                    headers=resp.headers,
                    body=b"".join(chunks),
                    elapsed_s=time.perf_counter() - started,
                    reason=resp.reason or "",
                )
        except TimeoutError as exc:
            raise OperationTimeout(f"no answer from upstream {self.name!r} in time", **ctx) from exc
        except aiohttp.ClientConnectionError as exc:
            reason = _connection_reason(exc)
            raise UpstreamConnectionError(
                f"cannot reach upstream {self.name!r}: {reason}", **ctx
            ) from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(
                f"bad answer from upstream {self.name!r}: {type(exc).__name__}", **ctx
            ) from exc


def _connection_reason(exc: aiohttp.ClientConnectionError) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return exc.os_error.strerror or type(exc.os_error).__name__
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server disconnected"
    return type(exc).__name__
