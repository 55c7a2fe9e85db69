"""RFC 9457 problem details: every error the gateway answers with.

Each iogate error class maps to one status and one stable ``type`` URI
(``urn:iogate:problem:<slug>``): the mapping is the library's
(:mod:`iogate.wire.problems`), this module renders it for FastAPI.
Framework errors (unknown route 404, 405, request validation 422) are
rendered the same way. Bodies carry the error's
safe message and context (``resource``, ``sqlstate``, ``retry_after_s``...),
never a stack trace, a parameter value or a credential; unexpected exceptions
become a generic 500 and are logged by class name only. ``PermissionError``
(what :func:`iogate.server.auth.authorize` raises) is a 403 ``forbidden``;
401 ``unauthorized``, 413, 429 and request-deadline 504 problems come from
:mod:`iogate.server.guard`. Every problem carries ``request_id`` when the
observability middleware set ``request.state.request_id``.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from iogate import errors
from iogate.wire.problems import (
    CONCURRENCY_LIMITED,
    FORBIDDEN,
    INTERNAL,
    INVALID_URL,
    PROBLEM_JSON,
    RATE_LIMITED,
    TIMEOUT,
    TOO_LARGE,
    UNAUTHORIZED,
    VALIDATION,
    ProblemType,
    http_problem,
    problem_body,
    problem_for,
    request_id_of,
)

__all__ = [
    "CONCURRENCY_LIMITED",
    "FORBIDDEN",
    "INVALID_URL",
    "PROBLEM_JSON",
    "RATE_LIMITED",
    "TIMEOUT",
    "TOO_LARGE",
    "UNAUTHORIZED",
    "ProblemType",
    "install_problem_handlers",
    "problem_body",
    "problem_for",
    "problem_response",
    "request_id_of",
]

_log = logging.getLogger("iogate.server")


def problem_response(
    status: int,
    body: dict[str, Any],
    *,
    retry_after_s: float | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """Render a problem body as ``application/problem+json``, with ``Retry-After``
    (whole seconds, rounded up, RFC 9110 §10.2.3) when given, and ``headers``."""
    headers = dict(headers) if headers else {}
    if retry_after_s is not None:
        headers["Retry-After"] = str(max(0, math.ceil(retry_after_s)))
    return Response(
        orjson.dumps(body), status_code=status, media_type=PROBLEM_JSON, headers=headers
    )


def install_problem_handlers(app: FastAPI) -> None:
    """Render every error ``app`` can raise as a problem."""

    async def on_iogate_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, errors.IogateError)
        kind, body = problem_for(exc)
        body["instance"] = request.url.path
        _add_request_id(request, body)
        return problem_response(kind.status, body, retry_after_s=body.get("retry_after_s"))

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        kind = http_problem(exc.status_code)
        detail = exc.detail if isinstance(exc.detail, str) else kind.title
        body = {"type": kind.uri, "title": kind.title, "status": kind.status, "detail": detail}
        body["instance"] = request.url.path
        _add_request_id(request, body)
        headers = dict(exc.headers) if exc.headers else None
        return problem_response(kind.status, body, headers=headers)

    async def on_permission_error(request: Request, exc: Exception) -> Response:
        # authorize() raises PermissionError(message) without an errno; one from
        # the operating system (a file) would name a path: not echoed.
        assert isinstance(exc, PermissionError)
        detail = str(exc) if exc.errno is None else "permission denied"
        body = problem_body(FORBIDDEN, detail, request.scope)
        return problem_response(FORBIDDEN.status, body)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        problems = [_validation_entry(e) for e in exc.errors()]
        first = problems[0] if problems else {"loc": [], "msg": "invalid request"}
        where = ".".join(first["loc"][1:] if first["loc"][:1] == ["body"] else first["loc"])
        body = {
            "type": VALIDATION.uri,
            "title": VALIDATION.title,
            "status": VALIDATION.status,
            "detail": f"{where}: {first['msg']}" if where else str(first["msg"]),
            "errors": problems,
            "instance": request.url.path,
        }
        _add_request_id(request, body)
        return problem_response(VALIDATION.status, body)

    app.add_exception_handler(errors.IogateError, on_iogate_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(PermissionError, on_permission_error)
    app.add_middleware(_UnexpectedErrorMiddleware)


def _validation_entry(error: dict[str, Any]) -> dict[str, Any]:
    """One entry of a 422's ``errors``. FastAPI reports a body it could not
    parse as ``loc ("body", <offset>)``, ``msg "JSON decode error"`` with the
    parser's reason in ``ctx``; it is shown as :func:`~iogate.server.deps.read_body`
    shows it (``loc ["body"]``, ``msg "Invalid JSON: <reason>"``), so every
    route words an unparsable body the same way."""
    ctx = error.get("ctx")
    if error.get("type") == "json_invalid" and isinstance(ctx, dict) and "error" in ctx:
        return {"loc": ["body"], "msg": f"Invalid JSON: {ctx['error']}", "type": "json_invalid"}
    return {
        "loc": [str(p) for p in error.get("loc", ())],
        "msg": error.get("msg", ""),
        "type": error.get("type"),
    }


def _add_request_id(request: Request, body: dict[str, Any]) -> None:
    rid = getattr(request.state, "request_id", None)
    if rid is not None:
        body["request_id"] = rid


class _UnexpectedErrorMiddleware:
    """Turns any other exception into a generic 500 problem, logged by class name
    only (Starlette's own 500 handler re-raises, and the server would then log
    the traceback)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            path = scope.get("path", "")
            _log.error("%s %s: unexpected %s", scope.get("method"), path, type(exc).__name__)
            if started:
                raise
            body = {
                "type": INTERNAL.uri,
                "title": INTERNAL.title,
                "status": INTERNAL.status,
                "detail": "the gateway failed to handle this request",
                "instance": path,
            }
            rid = request_id_of(scope)
            if rid is not None:
                body["request_id"] = rid
            await problem_response(INTERNAL.status, body)(scope, receive, send)
