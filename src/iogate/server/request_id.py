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

It also writes the request log (logger ``iogate.request``): every answer with
a 4xx status logs one record at INFO and every 5xx one at ERROR, and with
``access_log`` every other answer one at INFO, all alike — message
``"<METHOD> <path template> <status>"`` and the fields ``method``, ``path``
(the route's template, ``/v1/databases/{name}/query``, never the request's
own path, whose segments are values; ``None`` when no route matched),
``status``, ``problem_type`` (the problem document's ``type``, read from the
first body chunk of an ``application/problem+json`` answer), ``duration_ms``
(from the first byte of the request to the end of the answer), ``key`` (the
API key's *name*, never the key) and ``request_id``. No query string, header or
body value is logged. With :class:`~iogate.observability._tracing.Tracing`
active, each request is a SERVER span (:mod:`iogate.observability._tracing`)
that parents the resource spans of the calls it makes.

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
import logging
import os
import re
import time
from typing import Any, Final
from urllib.parse import unquote_to_bytes

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from iogate.observability._logging import REQUEST_ID, write_json_line
from iogate.observability._server_spans import ServerSpans
from iogate.server.problems import INVALID_URL, problem_body, problem_response

__all__ = ["HEADER", "RequestIdMiddleware"]

HEADER: Final = b"x-request-id"
_VALID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")
_PROBLEM_JSON: Final = b"application/problem+json"
_perf_counter = time.perf_counter
_log = logging.getLogger("iogate.request")
_INFO: Final = logging.INFO
_ERROR: Final = logging.ERROR


class RequestIdMiddleware:
    """Pure ASGI middleware giving every HTTP request an id (see the module docstring)."""

    __slots__ = ("_counter", "_prefix", "_spans", "access_log", "app")

    def __init__(
        self, app: ASGIApp, *, access_log: bool = False, spans: ServerSpans | None = None
    ) -> None:
        """Args:
        access_log: also log every 1xx-3xx answer (4xx and 5xx always are).
        spans: the SERVER span factory when tracing is active, else ``None``.
        """
        self.app = app
        self.access_log = access_log
        self._spans = spans
        self._prefix = os.urandom(4).hex()
        self._counter = itertools.count(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = _perf_counter()
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
        answer: list[Any] = [0, None]  # status, then the problem's first body chunk

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message["headers"] = [*message.get("headers", ()), header]
                status = answer[0] = message["status"]
                if status >= 400:
                    answer[1] = b"" if (b"content-type", _PROBLEM_JSON) in headers else None
            elif answer[1] == b"" and message["type"] == "http.response.body":
                answer[1] = message.get("body", b"") or None
            await send(message)

        token = REQUEST_ID.set(rid)
        spans = self._spans
        span = spans.start(scope) if spans is not None else None
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
            if spans is not None and span is not None:
                spans.end(span, scope, answer[0])
            if answer[0] >= 400 or self.access_log:
                _log_request(scope, answer[0], answer[1], started)
            REQUEST_ID.reset(token)


def _log_request(scope: Scope, status: int, problem: bytes | None, started: float) -> None:
    """One record of the request log (see the module docstring)."""
    level = _ERROR if status >= 500 else _INFO
    if not _log.isEnabledFor(level):
        return
    duration_ms = round((_perf_counter() - started) * 1e6) / 1000  # µs precision, as round(_, 3)
    route = scope.get("route")
    path = getattr(route, "path", None)
    problem_type = None
    if problem:
        try:
            problem_type = orjson.loads(problem).get("type")
        except (orjson.JSONDecodeError, AttributeError):
            problem_type = None
    state = scope.get("state") or {}
    principal = state.get("principal")
    method = scope.get("method", "")
    fields = {
        "method": method,
        "path": path,
        "status": status,
        "problem_type": problem_type,
        "duration_ms": duration_ms,
        "key": getattr(principal, "name", None),
    }
    # the line without a LogRecord when configure_logging's handler is the
    # only one it reaches; else makeRecord + handle, which is Logger.log
    # without findCaller's stack walk (the caller is always this function)
    args = (method, path, status)
    if write_json_line(_log, level, "%s %s %d" % args, fields):  # noqa: UP031 - getMessage's format
        return
    _log.handle(
        _log.makeRecord(_log.name, level, __file__, 0, "%s %s %d", args, None, extra=fields)
    )


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
