"""A caller's SQL rights on one database: the scope check, the engine's guard
and the result limits, from a :class:`~iogate.server.auth.Principal`.

Scope rule (documented in the README's "SQL safety"):

- raw SQL needs ``db:<name>:read`` (the statement then runs in the engine's
  read-only mode) or ``db:<name>:write`` (it may write);
- a named query ``q`` (``[databases.<name>.queries.q]``) needs
  ``db:<name>:query:q``, or ``db:<name>:read`` for a read query
  (``write = false``, run read-only) / ``db:<name>:write`` for a write query:
  a key holding only ``db:<name>:query:<q>`` scopes may call those queries and
  never send SQL of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from iogate.config import DatabaseConfig
from iogate.databases.guard import UNRESTRICTED, ResultLimits, SQLGuard
from iogate.server.auth import Principal

__all__ = ["SQLAccess", "named_query_access", "sql_access"]


@dataclass(frozen=True, slots=True)
class SQLAccess:
    """What one caller may do on one database: the engine's guard and the limits."""

    guard: SQLGuard
    limits: ResultLimits


@lru_cache(maxsize=256)
def _base_limits(max_rows: int, max_bytes: int) -> ResultLimits:
    return ResultLimits(max_rows=max_rows, max_bytes=max_bytes)


@lru_cache(maxsize=256)
def _open_access(max_rows: int, max_bytes: int) -> SQLAccess:
    return SQLAccess(UNRESTRICTED, _base_limits(max_rows, max_bytes))


def _limits(config: DatabaseConfig | None, principal: Principal) -> ResultLimits:
    if config is None:
        base = _base_limits(100_000, 32 * 1024 * 1024)
    else:
        base = _base_limits(config.max_rows, config.max_response_bytes)
    if principal.max_rows is None and principal.max_bytes is None:
        return base
    return base.tightened(principal.max_rows, principal.max_bytes)


def _guard(principal: Principal, read_only: bool) -> SQLGuard:
    tables = principal.tables
    if not read_only and tables is None:
        return UNRESTRICTED
    lowered = None if tables is None else frozenset(t.lower() for t in tables)
    return SQLGuard(read_only=read_only, tables=lowered)


def sql_access(principal: Principal, name: str, config: DatabaseConfig | None) -> SQLAccess:
    """The rights of ``principal`` to send raw SQL to database ``name``.

    Raises:
        PermissionError: it holds neither ``db:<name>:read`` nor ``db:<name>:write``.
    """
    if (
        principal.scopes is None
        and principal.tables is None
        and principal.max_rows is None
        and principal.max_bytes is None
    ):  # auth off: one cached answer per database limits
        limits = _limits(config, principal)
        return _open_access(limits.max_rows, limits.max_bytes)
    writes = principal.allows(f"db:{name}:write")
    if not writes and not principal.allows(f"db:{name}:read"):
        raise PermissionError(f"this key lacks the scope 'db:{name}:read'")
    return SQLAccess(_guard(principal, not writes), _limits(config, principal))


def named_query_access(
    principal: Principal, name: str, query: str, *, write: bool, config: DatabaseConfig | None
) -> SQLAccess:
    """The rights of ``principal`` to call the named query ``query`` of database
    ``name`` (a write query when ``write``). A read query always runs read-only.

    Raises:
        PermissionError: it lacks ``db:<name>:query:<query>`` and the read/write scope.
    """
    allowed = principal.allows(f"db:{name}:query:{query}") or principal.allows(
        f"db:{name}:{'write' if write else 'read'}"
    )
    if not allowed:
        raise PermissionError(f"this key lacks the scope 'db:{name}:query:{query}'")
    return SQLAccess(_guard(principal, not write), _limits(config, principal))
