"""``X-Request-ID``: propagated or generated, on the response, in every log line.

:class:`RequestIdMiddleware` is a pure ASGI middleware (Starlette's
``BaseHTTPMiddleware`` costs a task and a stream per request). For each HTTP
request it takes the caller's ``X-Request-ID`` when it is a sane token (1..128
characters of ``A-Z a-z 0-9 - _ . :``; anything else could forge log lines)
or generates one — 16 hex digits: 8 random per middleware instance (so
processes differ) and an 8-digit counter (no system call per request; an id
names a request, it is not a secret) — then:

- sets ``request.state.request_id`` (``scope["state"]``),
- sets :data:`iogate.observability._logging.REQUEST_ID` for the request's
  context, so every log line written while serving it carries the id,
- adds ``X-Request-ID`` to the response headers.

Problem responses carry it as the ``request_id`` extension member
(:mod:`iogate.server.problems`).

Being the outermost layer, it is also the gateway's edge for the URL: a path
or query string whose percent-escapes do not decode as UTF-8 (``%FF``, or
``%ED%A0%80``, a surrogate in CESU-8) is answered ``400 invalid-url`` before
authentication or any route. The server decodes such escapes to U+FFFD, so
``/v1/cache/%FF`` and ``/v1/cache/%FE`` would otherwise name the same key
and ``PUT /v1/files/%FF`` would create a file the caller did not name. The
check costs one ``in`` test per request whose URL holds no ``%``.
"""

from __future__ import annotations

import itertools
import os
import re
from typing import Final
from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from iogate.observability._logging import REQUEST_ID
from iogate.server.problems import INVALID_URL, problem_body, problem_response

__all__ = ["HEADER", "RequestIdMiddleware"]

HEADER: Final = b"x-request-id"
_VALID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")


class RequestIdMiddleware:
    """Pure ASGI middleware giving every HTTP request an id (see the module docstring)."""

    __slots__ = ("_counter", "_prefix", "app")

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._prefix = os.urandom(4).hex()
        self._counter = itertools.count(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = None
        for key, value in scope["headers"]:
            if key == HEADER:
                raw = value
                break
        if raw is None or _VALID.fullmatch(raw) is None:
            raw = f"{self._prefix}{next(self._counter) & 0xFFFFFFFF:08x}".encode()
        rid = raw.decode()
        state = scope.get("state")
        if state is None:
            state = scope["state"] = {}
        state["request_id"] = rid
        header = (HEADER, raw)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        token = REQUEST_ID.set(rid)
        try:
            path = scope.get("raw_path") or b""
            query = scope.get("query_string") or b""
            if b"%" in path or b"%" in query:
                refused = _undecodable(path, query)
                if refused is not None:
                    body = problem_body(INVALID_URL, refused, scope)
                    await problem_response(INVALID_URL.status, body)(scope, receive, send_with_id)
                    return
            await self.app(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(token)


def _undecodable(path: bytes, query: bytes) -> str | None:
    """Why a URL is refused, or ``None``: its path or query string holds
    percent-escapes that are not UTF-8 once decoded (RFC 3986 §2.5: text in a
    URI is UTF-8, then percent-encoded)."""
    for part, label in ((path, "path"), (query, "query string")):
        try:
            unquote_to_bytes(part).decode("utf-8")
        except UnicodeDecodeError:
            return f"the request {label} is not UTF-8 once percent-decoded"
    return None
