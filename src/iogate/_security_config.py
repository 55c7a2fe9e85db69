"""Configuration of what makes the gateway safe to expose: API keys and limits.

``[keys.<name>]`` — one API key and its policy bundle. The config holds only
the SHA-256 hex digest of the key (``iogate keys create`` prints both)::

    [keys.reporting]
    sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    scopes = ["db:main:read", "upstream:example"]
    expires = 2027-01-01T00:00:00Z     # optional, a TOML offset date-time
    revoked = false                     # true: refused (401) without deleting the entry
    tables = ["users", "orders"]        # optional: the only tables its SQL may name
    collections = ["users"]             # optional: the only MongoDB collections it may name
    max_rows = 10000                    # optional: rows per statement
    max_bytes = 10485760                # optional: bytes per response
    rate_limit = 50.0                   # optional: requests per second (token bucket)
    burst = 100                         # bucket size (default: max(1, rate_limit))
    max_concurrent = 8                  # optional: requests in flight at once
    roles = { pg = "analyst" }          # optional: PostgreSQL role per database

``[server.limits]`` — request limits of every caller (keys or not)::

    [server.limits]
    max_body_bytes = 10485760     # larger request bodies get 413
    max_sql_chars = 100000        # longer SQL gets 400 (invalid-input)
    max_params = 10000            # more parameters per statement get 400
    max_request_timeout = 300.0   # the largest X-Request-Timeout honoured, seconds
    body_timeout = 30.0           # a body not fully arrived by then gets 408, seconds
    max_connections = 1000        # open connections `iogate serve` answers (503 beyond)
    head_timeout = 10.0           # a request head not complete by then: 408, closed, seconds
    max_head_bytes = 65536        # a longer request head: 431, closed

Scopes are those of :mod:`iogate.wire.principal`: ``db:<name>:read``,
``db:<name>:write``, ``upstream:<name>``, ``cache:read``, ``cache:write``,
``files:read``, ``files:write``, ``admin``.
"""

from __future__ import annotations

import re
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["KeyConfig", "LimitsConfig", "ROLE_PATTERN", "SCOPE_PATTERN"]

SCOPE_PATTERN = re.compile(
    r"^(db:[A-Za-z][A-Za-z0-9_-]{0,63}:(read|write|query:[A-Za-z][A-Za-z0-9_-]{0,63})"
    r"|upstream:[A-Za-z][A-Za-z0-9_-]{0,63}"
    r"|cache:(read|write)|files:(read|write)|admin)$"
)
"""A valid scope name."""

ROLE_PATTERN = re.compile(r"^(?!pg_)[a-z_][a-z0-9_]{0,62}$")
"""A PostgreSQL role name iogate runs as: a lower-case identifier (what an
unquoted name folds to), at most 63 bytes, not ``pg_``-prefixed (reserved)."""

_DB_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


def check_role(role: str) -> str:
    """``role`` if it is a valid :data:`ROLE_PATTERN` name.

    Raises:
        ValueError: it is not (the message names the rule).
    """
    if not ROLE_PATTERN.match(role):
        raise ValueError(
            f"invalid role name {role!r}: use a lower-case PostgreSQL identifier"
            " (a-z, 0-9, _; at most 63 characters; not starting with pg_)"
        )
    return role


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KeyConfig(_Model):
    """``[keys.<name>]``: one API key (as its SHA-256 digest) and its policy bundle.

    Attributes:
        sha256: the key's SHA-256 digest, 64 hex digits (never the key itself).
        scopes: the scopes granted (``admin`` grants every scope).
        expires: when the key stops working (a timezone-aware date-time); absent: never.
        revoked: refuse the key (401) while keeping its entry for the record.
        tables: the only tables this key's SQL may name; absent: any table.
        collections: the only MongoDB collections this key may name (its
            requests' own and those its pipelines reach); absent: any.
        max_rows: the most rows one statement returns to this key (rows).
        max_bytes: the most bytes one response carries to this key (bytes).
        rate_limit: requests per second this key may make (a token bucket,
            :class:`iogate.policies.TokenBucket`; 429 with ``Retry-After`` beyond).
        burst: the bucket's size (requests); default ``max(1, rate_limit)``.
        max_concurrent: requests of this key in flight at once (429 beyond).
        roles: PostgreSQL database name → the role this key's SQL runs as on
            it (read- and write-scoped calls alike; reads stay ``READ ONLY``),
            instead of the database's ``read_role`` / ``write_role``.
    """

    sha256: str = Field(pattern=r"^[0-9A-Fa-f]{64}$")
    scopes: list[str] = Field(default_factory=list)
    expires: datetime | None = None
    revoked: bool = False
    tables: list[str] | None = None
    collections: list[str] | None = None
    max_rows: int | None = Field(default=None, ge=1)
    max_bytes: int | None = Field(default=None, ge=1)
    rate_limit: float | None = Field(default=None, gt=0)
    burst: int | None = Field(default=None, ge=1)
    max_concurrent: int | None = Field(default=None, ge=1)
    roles: dict[str, str] = Field(default_factory=dict)

    @field_validator("roles")
    @classmethod
    def _valid_roles(cls, roles: dict[str, str]) -> dict[str, str]:
        for database, role in roles.items():
            if not _DB_NAME.match(database):
                raise ValueError(f"invalid database name {database!r}")
            check_role(role)
        return roles

    @field_validator("sha256")
    @classmethod
    def _lower(cls, digest: str) -> str:
        return digest.lower()

    @field_validator("scopes")
    @classmethod
    def _known_scopes(cls, scopes: list[str]) -> list[str]:
        for scope in scopes:
            if not SCOPE_PATTERN.match(scope):
                raise ValueError(
                    f"unknown scope {scope!r} (db:<name>:read|write, upstream:<name>, "
                    "cache:read|write, files:read|write, admin)"
                )
        return scopes

    @field_validator("expires")
    @classmethod
    def _aware(cls, expires: datetime | None) -> datetime | None:
        if expires is not None and expires.tzinfo is None:
            raise ValueError("expires needs a UTC offset, e.g. 2027-01-01T00:00:00Z")
        return expires


class LimitsConfig(_Model):
    """``[server.limits]``: limits on every request, checked at the edge.

    Attributes:
        max_body_bytes: the largest request body, bytes (413 beyond; counted while
            the body streams in, whatever ``Content-Length`` says).
        max_sql_chars: the longest SQL text of one statement, characters.
        max_params: the most parameters of one statement.
        max_request_timeout: the largest ``X-Request-Timeout`` honoured, seconds
            (a larger value is capped to it).
        body_timeout: seconds a request body may take to arrive, counted from
            the route's first read of it; a body still incomplete then is
            answered 408 (``urn:iogate:problem:body-timeout``) with
            ``Connection: close`` (checked by the guard's sweep, so within
            about 0.1 s after it). For file uploads (streamed to disk) it
            bounds the wait for each piece of the body instead.
        max_connections: open connections ``iogate serve`` answers at once,
            whether idle or busy (uvicorn's ``limit_concurrency``, set to one
            more than this since uvicorn counts the asking connection too):
            a request arriving on a connection beyond it gets uvicorn's own
            ``503 Service Unavailable`` (``text/plain``, ``Connection: close``).
        head_timeout: seconds a request head (request line and headers) may
            take in ``iogate serve``, from the connection's opening or the
            head's first byte; then 408 (``urn:iogate:problem:head-timeout``)
            and the connection is closed (:mod:`iogate.server._head`: uvicorn
            has no such bound).
        max_head_bytes: the largest request head ``iogate serve`` reads,
            bytes; beyond, 431 (``urn:iogate:problem:head-too-large``) and the
            connection is closed.
    """

    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1)
    max_sql_chars: int = Field(default=100_000, ge=1)
    max_params: int = Field(default=10_000, ge=0)
    max_request_timeout: float = Field(default=300.0, gt=0)
    body_timeout: float = Field(default=30.0, gt=0)
    max_connections: int = Field(default=1000, ge=1)
    head_timeout: float = Field(default=10.0, gt=0)
    max_head_bytes: int = Field(default=64 * 1024, ge=1024)
