"""The one exception hierarchy of iogate.

Every error iogate raises derives from :class:`IogateError`. Driver errors
(sqlite3, asyncpg, redis-py, aiohttp) are translated in exactly one place per
backend and chained (``raise ... from exc``), so the original is always on
``__cause__``::

    IogateError
    ├── ConfigError                     invalid configuration (names the key)
    │   └── PrivilegedLoginError        a privileged PostgreSQL login would serve callers
    ├── UnknownResourceError            no database / upstream of that name (also LookupError)
    ├── InvalidInputError               a call's arguments are refused before any I/O
    │   │                               (a path leaving the upstream's base URL...; also ValueError)
    │   ├── InvalidHeaderError          a caller's header name or value is not valid HTTP
    │   └── RefusedOperatorError        a MongoDB operator the gateway never runs ($where...)
    └── OperationError                  resource, operation, attempts, elapsed_s
        ├── OperationTimeout            deadline or attempt timeout (also TimeoutError)
        ├── CircuitOpenError            retry_after_s
        ├── RateLimitedError            retry_after_s
        ├── BulkheadFullError
        ├── DatabaseError               sqlstate (PostgreSQL) / sqlite error name
        │   ├── TransientDatabaseError  connection lost, serialization failure,
        │   │                           deadlock, SQLITE_BUSY: safe to retry reads
        │   ├── IntegrityError          constraint violations; constraint name
        │   ├── QueryError              bad SQL, bad parameters; position
        │   ├── ReadOnlyViolation       a write refused by the engine's read-only mode
        │   ├── PermissionDenied        the caller's database role lacks a privilege (42501)
        │   ├── DatabaseLoginError      the database refused iogate's login (28000, 28P01)
        │   └── TableNotAllowed         a table outside the caller's allowlist
    │       └── CollectionNotAllowed    a MongoDB collection outside the caller's allowlist
        └── UpstreamError               status, body excerpt
            ├── UpstreamConnectionError could not connect / connection dropped
            └── UpstreamHTTPError       the upstream answered with an error status

Each class maps to one RFC 9457 problem type (``iogate.wire.problems``; the
gateway renders it, ``iogate.server.problems``). Messages never contain parameter values,
credentials or stack traces: they are safe to show to a client.
"""

from __future__ import annotations

from typing import TypedDict, Unpack

__all__ = [
    "BulkheadFullError",
    "CircuitOpenError",
    "CollectionNotAllowed",
    "ConfigError",
    "DatabaseError",
    "DatabaseLoginError",
    "IntegrityError",
    "InvalidHeaderError",
    "InvalidInputError",
    "IogateError",
    "OperationContext",
    "OperationError",
    "OperationTimeout",
    "PermissionDenied",
    "PrivilegedLoginError",
    "QueryError",
    "RateLimitedError",
    "ReadOnlyViolation",
    "RefusedOperatorError",
    "TableNotAllowed",
    "TransientDatabaseError",
    "UnknownResourceError",
    "UpstreamConnectionError",
    "UpstreamError",
    "UpstreamHTTPError",
]


class OperationContext(TypedDict, total=False):
    """Keyword arguments every :class:`OperationError` accepts."""

    resource: str | None
    operation: str | None
    attempts: int
    elapsed_s: float | None


class IogateError(Exception):
    """Root of every error iogate raises."""


class ConfigError(IogateError):
    """The configuration is invalid.

    ``key`` is the dotted path of the offending key (``databases.pg.url``),
    or ``None`` when the file as a whole is unreadable.
    """

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key


class PrivilegedLoginError(ConfigError):
    """A PostgreSQL database's login role is privileged (superuser, a member of
    ``pg_execute_server_program``...) and some caller would run as it: the
    gateway refuses to start (see the README's "PostgreSQL roles")."""


class UnknownResourceError(IogateError, LookupError):
    """No database or upstream of that name is configured.

    ``kind`` is ``"database"`` or ``"upstream"``; ``name`` the name asked for.
    """

    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f"no {kind} named {name!r} is configured")
        self.kind = kind
        self.name = name


class InvalidInputError(IogateError, ValueError):
    """A call's arguments were refused before any I/O, e.g. an upstream path
    that would leave the upstream's base URL. The gateway answers 400."""


class InvalidHeaderError(InvalidInputError):
    """A caller's request header was refused before any I/O: its name is not
    an RFC 9110 §5.6.2 token, or its value holds CR, LF, NUL or another
    control character (RFC 9110 §5.5) or a character outside Latin-1.

    ``header`` is the offending name when it is itself valid, else ``None``.
    The message never quotes a value. The gateway answers 400 ``invalid-input``.
    """

    def __init__(self, message: str, *, header: str | None = None) -> None:
        super().__init__(message)
        self.header = header


class RefusedOperatorError(InvalidInputError):
    """A MongoDB request holds an operator or stage the gateway never runs for
    this caller (server-side JavaScript: ``$where``, ``$function``,
    ``$accumulator``; ``$out``/``$merge`` without the write scope...),
    refused before any I/O. ``operator`` names it. The gateway answers 400
    ``refused-operator``."""

    def __init__(self, message: str, *, operator: str) -> None:
        super().__init__(message)
        self.operator = operator


class OperationError(IogateError):
    """A call on a resource failed.

    Attributes:
        resource: name of the database or upstream (``"main"``), or ``None``.
        operation: what was called (``"fetch"``, ``"GET"``), or ``None``.
        attempts: how many attempts were made (1 when not retried).
        elapsed_s: seconds from the first attempt to the failure, if known.
    """

    def __init__(
        self,
        message: str = "",
        *,
        resource: str | None = None,
        operation: str | None = None,
        attempts: int = 1,
        elapsed_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.resource = resource
        self.operation = operation
        self.attempts = attempts
        self.elapsed_s = elapsed_s

    def __str__(self) -> str:
        where = ""
        if self.resource is not None:
            where = f"[{self.resource}" + (f".{self.operation}" if self.operation else "") + "] "
        return f"{where}{self.message}"


class OperationTimeout(OperationError, TimeoutError):
    """The call ran past its deadline or its attempt timeout and was cancelled."""


class CircuitOpenError(OperationError):
    """The resource's circuit breaker is open: the call was not attempted.

    ``retry_after_s`` is how many seconds remain until the breaker lets a
    trial call through (half-open), or ``None`` when forced open.
    """

    def __init__(
        self,
        message: str = "",
        *,
        retry_after_s: float | None = None,
        **kw: Unpack[OperationContext],
    ) -> None:
        super().__init__(message, **kw)
        self.retry_after_s = retry_after_s


class RateLimitedError(OperationError):
    """A rate limit refused the call, locally or by the upstream (HTTP 429).

    ``retry_after_s`` is the number of seconds after which a call may succeed,
    if known.
    """

    def __init__(
        self,
        message: str = "",
        *,
        retry_after_s: float | None = None,
        **kw: Unpack[OperationContext],
    ) -> None:
        super().__init__(message, **kw)
        self.retry_after_s = retry_after_s


class BulkheadFullError(OperationError):
    """The resource's bulkhead has no free slot and its queue is full or timed out."""


class DatabaseError(OperationError):
    """A database call failed.

    ``sqlstate`` is PostgreSQL's five-character SQLSTATE, or SQLite's error
    name (``"SQLITE_BUSY"``), when the driver reported one.
    """

    def __init__(
        self, message: str = "", *, sqlstate: str | None = None, **kw: Unpack[OperationContext]
    ) -> None:
        super().__init__(message, **kw)
        self.sqlstate = sqlstate


class TransientDatabaseError(DatabaseError):
    """A failure that may succeed on a new attempt: connection lost,
    serialization failure (40001), deadlock (40P01), SQLITE_BUSY / SQLITE_LOCKED.

    Only reads, or a whole transaction re-run as a unit, are retried on it.
    """


class IntegrityError(DatabaseError):
    """A constraint was violated (SQLSTATE class 23, SQLITE_CONSTRAINT).

    ``constraint`` is the constraint's name when the engine reports it.
    """

    def __init__(
        self,
        message: str = "",
        *,
        constraint: str | None = None,
        sqlstate: str | None = None,
        **kw: Unpack[OperationContext],
    ) -> None:
        super().__init__(message, sqlstate=sqlstate, **kw)
        self.constraint = constraint


class QueryError(DatabaseError):
    """The statement or its parameters are invalid (syntax error, unknown table,
    wrong number or type of parameters). ``position`` is the 1-based character
    offset of the error in the statement when the engine reports it."""

    def __init__(
        self,
        message: str = "",
        *,
        position: int | None = None,
        sqlstate: str | None = None,
        **kw: Unpack[OperationContext],
    ) -> None:
        super().__init__(message, sqlstate=sqlstate, **kw)
        self.position = position


class ReadOnlyViolation(DatabaseError):
    """The engine refused a write because the call ran in read-only mode."""


class PermissionDenied(DatabaseError):
    """The engine refused the statement because the database role it ran as
    lacks a privilege (SQLSTATE 42501: a table without a GRANT, ``COPY ... TO
    PROGRAM``, ``pg_read_file``, ``SET ROLE`` to a role it is not a member of)."""


class DatabaseLoginError(DatabaseError):
    """The database refused iogate's login (SQLSTATE 28000 invalid
    authorization, 28P01 wrong password): the database is unavailable to the
    caller until an operator fixes the credentials. Not retried."""


class TableNotAllowed(DatabaseError):
    """The statement touches a table outside the caller's allowlist (refused
    by the engine before it ran: SQLite's authorizer, PostgreSQL's plan)."""


class CollectionNotAllowed(TableNotAllowed):
    """The MongoDB request names a collection (its own, or one a ``$lookup``,
    ``$unionWith``, ``$out`` or ``$merge`` stage reaches) outside the caller's
    ``collections`` allowlist; refused before any I/O."""


class UpstreamError(OperationError):
    """A call to an upstream API failed.

    ``status`` is the HTTP status when the upstream answered, else ``None``;
    ``body_excerpt`` the first bytes of its body, decoded leniently.
    """

    def __init__(
        self,
        message: str = "",
        *,
        status: int | None = None,
        body_excerpt: str | None = None,
        **kw: Unpack[OperationContext],
    ) -> None:
        super().__init__(message, **kw)
        self.status = status
        self.body_excerpt = body_excerpt


class UpstreamConnectionError(UpstreamError):
    """The upstream could not be reached, or the connection dropped mid-call."""


class UpstreamHTTPError(UpstreamError):
    """The upstream answered with an error status (4xx / 5xx)."""
