"""The gateway's edge: one pure-ASGI middleware run before any route.

Per HTTP request, in this order:

1. **Authentication** (when keys are configured): ``Authorization: Bearer <key>``
   → :class:`~iogate.server.keys.KeyStore` (one SHA-256, one dict lookup) →
   ``scope["state"]["principal"]`` (what :func:`~iogate.server.auth.principal_of`
   reads). Missing, malformed, unknown, expired or revoked keys get 401 with
   ``WWW-Authenticate: Bearer`` (RFC 6750 §3). Open paths: ``/health``,
   ``/ready``; unless ``[server] docs = false``, ``/docs``,
   ``/docs/oauth2-redirect``, ``/redoc``, their assets under ``/docs/assets/``
   and ``/openapi.json`` (the document names no secret; clients need it to find
   their way); unless ``[server] dashboard = false``, the dashboard's page and
   its script and style sheet (they hold no data: the figures come from
   ``/v1/stats`` and the other admin routes, which need an ``admin`` key); and
   ``/`` (a redirect to one of those) when either is on.
2. **Per-key limits**: its token bucket (429, ``Retry-After``) and its
   requests in flight (429 beyond ``max_concurrent``).
3. **Body size and time**: a ``Content-Length`` above ``max_body_bytes`` is
   refused at once; the body is also counted while it streams in, so a
   missing or lying ``Content-Length`` still ends in 413. A body that has not
   fully arrived ``body_timeout`` seconds after the route first asked for it
   is answered 408 with ``Connection: close`` (the request's task is
   cancelled; uvicorn closes the connection after that answer). The same
   sweep below checks it: a request whose body arrives in one message costs a
   set insertion and removal, and no timer of its own.
4. **Deadline**: ``X-Request-Timeout: <seconds>`` (capped at
   ``max_request_timeout``) runs the request in an
   :class:`iogate.policies.deadline_scope`: every call it makes sees the
   deadline (:func:`iogate.policies.remaining`), and a request still running
   when it passes is cancelled (504).
5. **Client disconnect**: once the body is read, a request still running
   one to two :data:`WATCH_AFTER_S` later gets a watcher task that waits for
   ``http.disconnect`` and cancels the request's task — a database statement
   in flight is cancelled with it (asyncpg sends a cancel request to the
   server). One timer per app sweeps the running requests every
   :data:`WATCH_AFTER_S` while there are any; fast requests never start a
   watcher and cost a set insertion and removal. (A route that never reads
   the body — none of the gateway's POST routes — is not watched.)

Not ``BaseHTTPMiddleware``: that runs the app in another task and copies the
response through a stream; this costs one header scan per request.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from typing import Final

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from iogate.config import LimitsConfig
from iogate.errors import OperationTimeout
from iogate.policies import deadline_scope
from iogate.policies.timeout import current_task
from iogate.server.keys import KeyEntry, KeyRefusal, KeyStore
from iogate.server.problems import (
    CONCURRENCY_LIMITED,
    RATE_LIMITED,
    TIMEOUT,
    TOO_LARGE,
    UNAUTHORIZED,
    ProblemType,
    problem_body,
    problem_response,
)

__all__ = [
    "BODY_TIMEOUT",
    "DASHBOARD_PATHS",
    "DOCS_PATHS",
    "OPEN_PATHS",
    "WATCH_AFTER_S",
    "GuardMiddleware",
]

OPEN_PATHS: Final = frozenset({"/health", "/ready"})
DOCS_PATHS: Final = frozenset(
    {
        "/docs",
        "/docs/oauth2-redirect",
        "/redoc",
        "/openapi.json",
        "/docs/assets/swagger-ui-bundle.js",
        "/docs/assets/swagger-ui.css",
        "/docs/assets/redoc.standalone.js",
        "/docs/assets/favicon.png",
    }
)
DASHBOARD_PATHS: Final = frozenset(
    {"/dashboard", "/dashboard/dashboard.js", "/dashboard/dashboard.css"}
)
WATCH_AFTER_S: Final = 0.05
"""The sweep period: a request still running 1-2 periods after its body was
read starts a disconnect watcher (seconds)."""

_AUTHORIZATION: Final = b"authorization"
_CONTENT_LENGTH: Final = b"content-length"
_REQUEST_TIMEOUT: Final = b"x-request-timeout"


class GuardMiddleware:
    """Authentication, per-key limits, body size, deadline and disconnect
    cancellation (see the module docstring).

    Args:
        app: the ASGI app.
        keys: the key store, or ``None`` for auth off (every caller anonymous).
        limits: ``[server.limits]``.
        docs_open: ``/docs``, ``/redoc``, their assets and ``/openapi.json`` need no key.
        dashboard_open: the dashboard's page and assets need no key.
        body_limits: path prefix → largest body there (bytes), replacing
            ``max_body_bytes`` under that prefix (``/v1/files/`` takes
            ``[files] max_file_bytes``: uploads are streamed to disk). There
            ``body_timeout`` bounds the wait for each piece of the body, not
            the whole body: a large upload may take longer, a stalled one not.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        keys: KeyStore | None,
        limits: LimitsConfig,
        docs_open: bool = True,
        dashboard_open: bool = False,
        body_limits: Mapping[str, int] | None = None,
    ) -> None:
        self.app = app
        self.body_limits = tuple((body_limits or {}).items())
        self.keys = keys if keys else None
        self.limits = limits
        open_paths = set(OPEN_PATHS)
        if docs_open:
            open_paths |= DOCS_PATHS
        if dashboard_open:
            open_paths |= DASHBOARD_PATHS
        if docs_open or dashboard_open:
            open_paths.add("/")
        self.open_paths = frozenset(open_paths)
        self.running: set[_Run] = set()  # requests whose body is read, not yet answered
        self.reading: set[_Run] = set()  # requests whose body is being read
        self._sweeper: asyncio.TimerHandle | None = None

    def watch(self, run: _Run, loop: asyncio.AbstractEventLoop) -> None:
        """Track ``run`` for the disconnect sweep (arming the sweep timer if idle)."""
        self.running.add(run)
        if self._sweeper is None:
            self._sweeper = loop.call_later(WATCH_AFTER_S, self._sweep, loop)

    def time_body(self, run: _Run, loop: asyncio.AbstractEventLoop) -> None:
        """Track ``run``'s body for the ``body_timeout`` sweep until it has arrived."""
        self.reading.add(run)
        if self._sweeper is None:
            self._sweeper = loop.call_later(WATCH_AFTER_S, self._sweep, loop)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        for run in self.running:
            if run.seen:
                run.start_watcher(loop)
            else:
                run.seen = True
        if self.reading:
            # A body's clock starts at the first sweep that sees it reading:
            # 408 comes between body_timeout and body_timeout + 2 periods.
            now, limit = loop.time(), self.limits.body_timeout
            late = []
            for run in self.reading:
                if run.body_since is None:
                    run.body_since = now
                elif now - run.body_since >= limit:
                    late.append(run)
            for run in late:
                self.reading.discard(run)
                run.expire_body()
        self._sweeper = None
        if self.running or self.reading:
            self._sweeper = loop.call_later(WATCH_AFTER_S, self._sweep, loop)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        authorization = length = timeout = None
        for name, value in scope["headers"]:
            if name == _AUTHORIZATION:
                authorization = value
            elif name == _CONTENT_LENGTH:
                length = value
            elif name == _REQUEST_TIMEOUT:
                timeout = value
        state = scope.get("state")
        if state is None:
            state = scope["state"] = {}
        state["limits"] = self.limits
        entry: KeyEntry | None = None
        slot: str | None = None  # a slot of max_concurrent shared through [cluster]
        keys = self.keys
        if keys is not None and scope["path"] not in self.open_paths:
            found = keys.authenticate(authorization)
            if isinstance(found, KeyRefusal):
                await _refuse(scope, receive, send, UNAUTHORIZED, found.detail, auth=True)
                return
            entry = found
            state["principal"] = entry.principal
            if entry.shared is None:
                wait = keys.throttle(entry)
            else:
                wait = await keys.throttle_shared(entry)
            if wait is not None:
                detail = f"key {entry.principal.name!r} is over its rate limit"
                await _refuse(scope, receive, send, RATE_LIMITED, detail, retry_after_s=wait)
                return
            if entry.slots is not None:
                slot = await entry.slots.enter()
                full = slot is None
            else:
                full = entry.max_concurrent is not None and entry.in_flight >= entry.max_concurrent
            if full:
                detail = (
                    f"key {entry.principal.name!r} has {entry.max_concurrent} requests in flight"
                )
                await _refuse(scope, receive, send, CONCURRENCY_LIMITED, detail, retry_after_s=1.0)
                return
        max_body = self.limits.max_body_bytes
        streamed = False
        for prefix, limit in self.body_limits:
            if scope["path"].startswith(prefix):
                max_body, streamed = limit, True
                break
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                declared = 0  # the server rejects a bad Content-Length; counted below anyway
            if declared > max_body:
                _leave(entry, slot)
                await _refuse(scope, receive, send, TOO_LARGE, _too_large(max_body))
                return
        seconds: float | None = None
        if timeout is not None:
            seconds = _parse_timeout(timeout)
            if seconds is None:
                detail = "X-Request-Timeout must be a positive number of seconds"
                _leave(entry, slot)
                await _refuse(scope, receive, send, _BAD_TIMEOUT, detail)
                return
            seconds = min(seconds, self.limits.max_request_timeout)
        if entry is not None:
            entry.in_flight += 1
        try:
            await _Run(self, scope, receive, send, max_body, streamed).run(seconds)
        finally:
            if entry is not None:
                entry.in_flight -= 1
                _leave(entry, slot)


def _leave(entry: KeyEntry | None, slot: str | None) -> None:
    """Give back a slot of a key's ``max_concurrent`` shared through ``[cluster]``."""
    if slot is not None and entry is not None and entry.slots is not None:
        entry.slots.leave(slot)


_BAD_TIMEOUT: Final = ProblemType(400, "bad-request", "Bad request")
BODY_TIMEOUT: Final = ProblemType(408, "body-timeout", "Request body timed out")


def _too_large(max_body: int) -> str:
    return f"the request body is larger than {max_body} bytes"


def _parse_timeout(raw: bytes) -> float | None:
    try:
        seconds = float(raw)
    except ValueError:
        return None
    return seconds if seconds > 0 and math.isfinite(seconds) else None


async def _refuse(
    scope: Scope,
    receive: Receive,
    send: Send,
    kind: ProblemType,
    detail: str,
    *,
    auth: bool = False,
    retry_after_s: float | None = None,
    close: bool = False,
) -> None:
    body = problem_body(kind, detail, scope)
    headers = {"WWW-Authenticate": 'Bearer realm="iogate"'} if auth else None
    if close:
        headers = {"Connection": "close"}  # uvicorn then closes the connection
    if retry_after_s is not None:
        body["retry_after_s"] = round(retry_after_s, 3)
    response = problem_response(kind.status, body, retry_after_s=retry_after_s, headers=headers)
    await response(scope, receive, send)


class _Run:
    """One request's run: body counting, deadline and disconnect watching."""

    __slots__ = (
        "body_done",
        "body_expired",
        "body_since",
        "disconnected",
        "guard",
        "max_body",
        "receive",
        "received",
        "scope",
        "seen",
        "send",
        "started",
        "streamed",
        "task",
        "timing",
        "watcher",
    )

    def __init__(
        self,
        guard: GuardMiddleware,
        scope: Scope,
        receive: Receive,
        send: Send,
        max_body: int,
        streamed: bool = False,
    ) -> None:
        self.guard = guard
        self.streamed = streamed  # body_timeout bounds each piece, not the whole body
        self.scope = scope
        self.receive = receive
        self.send = send
        self.max_body = max_body
        self.received = 0
        self.body_done = False
        self.timing = False  # its body is in the guard's `reading` set
        self.body_since: float | None = None
        self.body_expired = False
        self.started = False
        self.disconnected = False
        self.seen = False
        self.task: asyncio.Task[object] | None = None
        self.watcher: asyncio.Task[None] | None = None

    async def counting_receive(self) -> Message:
        if not self.body_done and not self.timing and self.task is not None:
            self.timing = True
            self.guard.time_body(self, self.task.get_loop())
        message = await self.receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.max_body:
                raise HTTPException(413, _too_large(self.max_body))
            if not message.get("more_body", False) and not self.body_done:
                self.body_done = True
                self.guard.reading.discard(self)
                if self.task is not None:
                    self.guard.watch(self, self.task.get_loop())
            elif self.streamed:
                self.body_since = None  # a piece arrived: its clock starts again
        return message

    def expire_body(self) -> None:
        """The body did not arrive in time: cancel the request (answered 408 in :meth:`run`)."""
        if self.task is not None and not self.task.done() and not self.body_done:
            self.body_expired = True
            self.task.cancel()

    async def tracking_send(self, message: Message) -> None:
        """``send``, noting whether the response started (only with a deadline:
        a timed-out request is answered 504 unless it has begun answering)."""
        if message["type"] == "http.response.start":
            self.started = True
        await self.send(message)

    def start_watcher(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait for the client's ``http.disconnect`` in a task of its own."""
        if self.watcher is None and self.task is not None:
            self.watcher = loop.create_task(self._wait_disconnect())

    async def _wait_disconnect(self) -> None:
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                break
        if self.task is not None and not self.task.done():
            self.disconnected = True
            self.task.cancel()

    async def run(self, seconds: float | None) -> None:
        task = current_task()
        self.task = task
        baseline = task.cancelling()
        try:
            app = self.guard.app
            if seconds is None:
                await app(self.scope, self.counting_receive, self.send)
            else:
                async with deadline_scope(seconds, operation="request"):
                    await app(self.scope, self.counting_receive, self.tracking_send)
        except asyncio.CancelledError:
            self._stop()
            if self.body_expired and task.uncancel() <= baseline:
                detail = (
                    f"the request body did not arrive within {self.guard.limits.body_timeout:g}s"
                )
                await _refuse(self.scope, self.receive, self.send, BODY_TIMEOUT, detail, close=True)
                return
            if self.disconnected and task.uncancel() <= baseline:
                return  # the client is gone: nobody to answer
            raise
        except OperationTimeout:
            self._stop()
            if self.started:
                raise
            detail = f"the request's deadline of {seconds:g}s passed"
            await _refuse(self.scope, self.receive, self.send, TIMEOUT, detail)
        except HTTPException as exc:  # 413 raised from the body outside a route
            self._stop()
            if exc.status_code != 413:
                raise
            await _refuse(self.scope, self.receive, self.send, TOO_LARGE, str(exc.detail))
        finally:
            self._stop()

    def _stop(self) -> None:
        """Disarm the disconnect watcher (no await: nothing can cancel us meanwhile)."""
        self.guard.running.discard(self)
        if self.timing:
            self.guard.reading.discard(self)
        if self.watcher is not None:
            self.watcher.cancel()
        self.task = None
