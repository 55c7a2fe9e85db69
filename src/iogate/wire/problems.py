"""RFC 9457 problem details: how every iogate error becomes one problem document.

Each iogate error class maps to one status and one stable ``type`` URI
(``urn:iogate:problem:<slug>``); the body carries the error's safe message and
its context (``resource``, ``sqlstate``, ``retry_after_s``...), never a stack
trace, a parameter value or a credential. The HTTP gateway answers with these
documents (:mod:`iogate.server.problems` renders them as
``application/problem+json``); the batch engine and the background tasks store
the same documents for a failed step or task, and the CLI prints them — so none
of them needs the web framework.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from iogate import errors

__all__ = [
    "CONCURRENCY_LIMITED",
    "FORBIDDEN",
    "INTERNAL",
    "INVALID_URL",
    "PROBLEM_JSON",
    "RATE_LIMITED",
    "TIMEOUT",
    "TOO_LARGE",
    "UNAUTHORIZED",
    "VALIDATION",
    "ProblemType",
    "http_problem",
    "problem_body",
    "problem_for",
    "request_id_of",
]

PROBLEM_JSON = "application/problem+json"


@dataclass(frozen=True, slots=True)
class ProblemType:
    """One kind of problem: HTTP status, slug (the ``type`` URI's tail) and title."""

    status: int
    slug: str
    title: str

    @property
    def uri(self) -> str:
        """The stable ``type`` URI."""
        return f"urn:iogate:problem:{self.slug}"


# Most specific first: the first class an error is an instance of wins.
_BY_CLASS: tuple[tuple[type[BaseException], ProblemType], ...] = (
    (errors.UnknownResourceError, ProblemType(404, "unknown-resource", "Unknown resource")),
    (errors.RefusedOperatorError, ProblemType(400, "refused-operator", "Operator refused")),
    (errors.InvalidInputError, ProblemType(400, "invalid-input", "Invalid input")),
    (errors.ConfigError, ProblemType(500, "config-error", "Configuration error")),
    (errors.OperationTimeout, ProblemType(504, "timeout", "Operation timed out")),
    (errors.CircuitOpenError, ProblemType(503, "circuit-open", "Circuit breaker open")),
    (errors.RateLimitedError, ProblemType(429, "rate-limited", "Rate limited")),
    (errors.BulkheadFullError, ProblemType(503, "bulkhead-full", "Too many concurrent calls")),
    (errors.QueryError, ProblemType(400, "bad-query", "Invalid SQL or parameters")),
    (errors.IntegrityError, ProblemType(409, "integrity-violation", "Constraint violated")),
    (errors.ReadOnlyViolation, ProblemType(403, "read-only", "Write refused in read-only mode")),
    (
        errors.CollectionNotAllowed,
        ProblemType(403, "collection-not-allowed", "Collection not allowed"),
    ),
    (errors.TableNotAllowed, ProblemType(403, "table-not-allowed", "Table not allowed")),
    (
        errors.PermissionDenied,
        ProblemType(403, "permission-denied", "Refused by the database role's privileges"),
    ),
    (
        errors.DatabaseLoginError,
        ProblemType(503, "database-unavailable", "Database temporarily unavailable"),
    ),
    (
        errors.TransientDatabaseError,
        ProblemType(503, "database-unavailable", "Database temporarily unavailable"),
    ),
    (errors.DatabaseError, ProblemType(500, "database-error", "Database error")),
    (
        errors.UpstreamConnectionError,
        ProblemType(502, "upstream-unreachable", "Upstream unreachable"),
    ),
    (errors.UpstreamHTTPError, ProblemType(502, "upstream-error", "Upstream error")),
    (errors.UpstreamError, ProblemType(502, "upstream-error", "Upstream error")),
    (errors.OperationError, ProblemType(500, "operation-error", "Operation failed")),
)
INTERNAL = ProblemType(500, "internal-error", "Internal server error")
VALIDATION = ProblemType(422, "invalid-request", "Invalid request")
_HTTP = {
    400: ProblemType(400, "bad-request", "Bad request"),
    404: ProblemType(404, "not-found", "Not found"),
    405: ProblemType(405, "method-not-allowed", "Method not allowed"),
    413: ProblemType(413, "too-large", "Request body too large"),
}
_CONTEXT_ATTRS = (
    "resource",
    "operation",
    "sqlstate",
    "constraint",
    "position",
    "status",
    "step",
    "operator",
)
UNAUTHORIZED = ProblemType(401, "unauthorized", "Authentication required")
FORBIDDEN = ProblemType(403, "forbidden", "Forbidden")
TOO_LARGE = _HTTP[413]
RATE_LIMITED = ProblemType(429, "rate-limited", "Rate limited")
CONCURRENCY_LIMITED = ProblemType(429, "concurrency-limited", "Too many requests in flight")
TIMEOUT = ProblemType(504, "timeout", "Operation timed out")
INVALID_URL = ProblemType(400, "invalid-url", "Invalid URL")
_HTTP[401] = UNAUTHORIZED
_HTTP[403] = FORBIDDEN
_HTTP[429] = RATE_LIMITED


def http_problem(status: int) -> ProblemType:
    """The problem type of a framework error of HTTP ``status`` (404 unknown
    route, 405, 413...; ``http-error`` for a status without one of its own)."""
    return _HTTP.get(status) or ProblemType(status, "http-error", "Error")


def request_id_of(scope: Mapping[str, Any]) -> str | None:
    """The request id the observability middleware put in an ASGI ``scope``'s
    ``state``, if any."""
    state = scope.get("state")
    rid = state.get("request_id") if isinstance(state, dict) else None
    return rid if isinstance(rid, str) else None


def problem_body(kind: ProblemType, detail: str, scope: Mapping[str, Any]) -> dict[str, Any]:
    """A problem of ``kind`` for the request of ``scope``: type, title, status,
    detail, instance (the path) and ``request_id`` when one is known."""
    body: dict[str, Any] = {
        "type": kind.uri,
        "title": kind.title,
        "status": kind.status,
        "detail": detail,
        "instance": scope.get("path", ""),
    }
    rid = request_id_of(scope)
    if rid is not None:
        body["request_id"] = rid
    return body


def problem_for(exc: errors.IogateError) -> tuple[ProblemType, dict[str, Any]]:
    """The problem type of an iogate error and its body (type, title, status,
    detail and the error's context as extension members)."""
    kind = next((p for cls, p in _BY_CLASS if isinstance(exc, cls)), INTERNAL)
    body: dict[str, Any] = {
        "type": kind.uri,
        "title": kind.title,
        "status": kind.status,
        "detail": exc.message if isinstance(exc, errors.OperationError) else str(exc),
    }
    for attr in _CONTEXT_ATTRS:
        value = getattr(exc, attr, None)
        if value is not None:
            body["upstream_status" if attr == "status" else attr] = value
    if isinstance(exc, errors.OperationError) and exc.attempts > 1:
        body["attempts"] = exc.attempts
    retry_after = getattr(exc, "retry_after_s", None)
    if retry_after is not None:
        body["retry_after_s"] = retry_after
    return kind, body
