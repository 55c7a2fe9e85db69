"""uvicorn's httptools protocol with the request head bounded in time and size.

uvicorn (0.30 to 0.55 at least) bounds neither for its httptools parser, which
``iogate serve`` uses (httptools is a dependency): ``timeout_keep_alive`` only
runs between requests, after a response, and the parser keeps whatever a
header line grows to (one connection sending a 100 MiB header value made the
gateway hold 100 MiB). So a client that connects and sends nothing, or drips
its headers, held its connection (and its share of ``max_connections``)
forever. This subclass adds, per connection:

- ``head_timeout_s``: a request head (request line and headers) not complete
  that long after the connection opened, or after its first byte on a kept-
  alive connection, is answered ``408`` (``urn:iogate:problem:head-timeout``)
  and the connection closed;
- ``max_head_bytes``: a head still incomplete past that many bytes is answered
  ``431`` (``urn:iogate:problem:head-too-large``, RFC 6585 §5) and closed.

A head that arrives in one read (nearly every request) arms no timer: the
timer is armed when a connection opens (cancelled by its first head) and when
a read ends inside a head.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, ClassVar, Final

import orjson

from iogate.policies.clock import OnTimeTimer
from iogate.server.protocol import ProblemHttpToolsProtocol

__all__ = ["HEAD_TIMEOUT_ENV", "MAX_HEAD_BYTES_ENV", "BoundedHeadProtocol", "bounded_head_protocol"]

HEAD_TIMEOUT_ENV: Final = "IOGATE_HEAD_TIMEOUT_S"
"""Where ``iogate serve --workers N`` hands ``head_timeout`` to its worker processes."""
MAX_HEAD_BYTES_ENV: Final = "IOGATE_MAX_HEAD_BYTES"
"""Where ``iogate serve --workers N`` hands ``max_head_bytes`` to its worker processes."""

_REASONS: Final = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


class BoundedHeadProtocol(ProblemHttpToolsProtocol):
    """:class:`~iogate.server.protocol.ProblemHttpToolsProtocol` (a malformed request
    answered with a problem) with the request head bounded (see the module docstring).

    The class attributes come from :data:`HEAD_TIMEOUT_ENV` and
    :data:`MAX_HEAD_BYTES_ENV` when set (worker processes import this class by
    name); :func:`bounded_head_protocol` makes a subclass with given bounds.
    """

    head_timeout_s: ClassVar[float] = float(os.environ.get(HEAD_TIMEOUT_ENV, "10"))
    max_head_bytes: ClassVar[int] = int(os.environ.get(MAX_HEAD_BYTES_ENV, "65536"))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: OnTimeTimer | None = None
        self._head_bytes = -1  # bytes of the head being read; -1: between heads

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_bytes = 0  # the first head is awaited from now on
        self._head_timer = OnTimeTimer(self.loop, self.head_timeout_s, self._head_late)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._head_bytes < 0:
            return  # between heads (the usual case: a head arrives in one read)
        self._head_bytes += len(data)
        if self._head_bytes > self.max_head_bytes:
            detail = f"the request head is larger than {self.max_head_bytes} bytes"
            self._refuse(431, "head-too-large", "Request head too large", detail)
        elif self._head_timer is None:
            self._head_timer = OnTimeTimer(self.loop, self.head_timeout_s, self._head_late)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0

    def on_headers_complete(self) -> None:
        self._head_bytes = -1
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().on_headers_complete()

    def _head_late(self) -> None:
        self._head_timer = None
        if self._head_bytes >= 0:
            detail = f"the request head did not arrive within {self.head_timeout_s:g}s"
            self._refuse(408, "head-timeout", "Request head timed out", detail)

    def _refuse(self, status: int, slug: str, title: str, detail: str) -> None:
        """Answer a problem document and close (no ASGI request exists yet)."""
        self._head_bytes = -1
        if self.transport.is_closing():
            return
        body = orjson.dumps(
            {
                "type": f"urn:iogate:problem:{slug}",
                "title": title,
                "status": status,
                "detail": detail,
            }
        )
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/problem+json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s"
            % (status, _REASONS[status], len(body), body)
        )
        self.transport.close()


def bounded_head_protocol(
    *, head_timeout_s: float, max_head_bytes: int
) -> type[BoundedHeadProtocol]:
    """A :class:`BoundedHeadProtocol` subclass with these bounds, for
    ``uvicorn.run(..., http=...)`` (seconds; bytes).

    Raises:
        ValueError: a bound is not positive.
    """
    if head_timeout_s <= 0:
        raise ValueError(f"head_timeout_s must be > 0, got {head_timeout_s}")
    if max_head_bytes < 1:
        raise ValueError(f"max_head_bytes must be >= 1, got {max_head_bytes}")
    return type(
        "BoundedHead",
        (BoundedHeadProtocol,),
        {"head_timeout_s": head_timeout_s, "max_head_bytes": max_head_bytes},
    )
