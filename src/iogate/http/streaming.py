"""An answer whose body is read as the caller iterates: :class:`StreamResponse`.

Backpressure comes from aiohttp's ``StreamReader``: it stops reading the
socket while its buffer is above the high-water mark (64 KiB by default), so a
slow consumer slows the producer instead of growing memory. Nothing here
buffers more than one chunk (plus one partial line or event).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp

from iogate.http._transport import read_bounded, translate_errors
from iogate.http.response import Response
from iogate.http.sse import ServerSentEvent, SSEDecoder

__all__ = ["StreamResponse"]


class StreamResponse:
    """Status and headers at once; the body on demand (iterate it once).

    Attributes:
        status: HTTP status.
        headers: response headers.
        attempts: attempts made to get these headers.
    """

    __slots__ = ("_body", "_ctx", "_raw", "_started", "attempts", "headers", "status")

    def __init__(
        self, raw: aiohttp.ClientResponse | None, *, attempts: int, ctx: Mapping[str, Any]
    ) -> None:
        self._raw = raw
        self._body: bytes | None = None
        self._ctx = ctx
        self._started = time.perf_counter()
        self.attempts = attempts
        self.status = raw.status if raw is not None else 0
        self.headers: Mapping[str, str] = raw.headers if raw is not None else {}

    @classmethod
    def from_response(cls, response: Response) -> StreamResponse:
        """A stream over an answer already read whole (an error status after retries)."""
        answer = cls(None, attempts=response.attempts, ctx={})
        answer.status = response.status
        answer.headers = response.headers
        answer._body = response.body
        return answer

    @property
    def ok(self) -> bool:
        """Whether the status is below 400."""
        return self.status < 400

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """The body's bytes as they arrive (chunk sizes are the network's).

        Raises:
            UpstreamConnectionError: the connection dropped mid-body.
            OperationTimeout: a read waited longer than ``read_timeout_s``.
        """
        if self._body is not None:
            if self._body:
                yield self._body
            return
        raw = self._raw
        assert raw is not None
        name = str(self._ctx.get("resource"))
        with translate_errors(name, self._ctx):
            async for chunk in raw.content.iter_any():
                yield chunk

    async def iter_lines(self) -> AsyncIterator[str]:
        """The body as text lines (UTF-8, line ends removed)."""
        pending = ""
        async for chunk in self.iter_chunks():
            pending += chunk.decode("utf-8", errors="replace")
            *lines, pending = pending.split("\n")
            for line in lines:
                yield line.removesuffix("\r")
        if pending:
            yield pending

    async def iter_events(self) -> AsyncIterator[ServerSentEvent]:
        """The body parsed as Server-Sent Events (:mod:`iogate.http.sse`)."""
        decoder = SSEDecoder()
        async for chunk in self.iter_chunks():
            for event in decoder.feed(chunk):
                yield event

    async def read_whole(self, limit: int) -> Response:
        """Read the rest of the body (at most ``limit`` bytes) into a :class:`Response`."""
        if self._body is None:
            assert self._raw is not None
            with translate_errors(str(self._ctx.get("resource")), self._ctx):
                self._body = await read_bounded(self._raw, limit, self._ctx)
        reason = self._raw.reason or "" if self._raw is not None else ""
        return Response(
            status=self.status,
            headers=self.headers,
            body=self._body,
            elapsed_s=time.perf_counter() - self._started,
            attempts=self.attempts,
            reason=reason,
        )

    def release(self) -> None:
        """Return the connection to the pool (or close it if the body was not read)."""
        if self._raw is not None:
            self._raw.release()

    def __repr__(self) -> str:
        return f"<StreamResponse {self.status} attempts={self.attempts}>"
