"""A caller's SQL rights on one database: the scope check, the engine's guard
and the result limits, from a :class:`~iogate.wire.principal.Principal`.

Scope rule (documented in the README's "SQL safety"):

- raw SQL needs ``db:<name>:read`` (the statement then runs in the engine's
  read-only mode) or ``db:<name>:write`` (it may write);
- a named query ``q`` (``[databases.<name>.queries.q]``) needs
  ``db:<name>:query:q``, or ``db:<name>:read`` for a read query
  (``write = false``, run read-only) / ``db:<name>:write`` for a write query:
  a key holding only ``db:<name>:query:<q>`` scopes may call those queries and
  never send SQL of its own.

Role rule (README "PostgreSQL roles"): a call runs as the key's own role on
that database (``[keys.<k>] roles``), else a read-scoped call as the
database's ``read_role`` and a write-scoped one (the anonymous caller while
auth is off included) as its ``write_role``; with none of these, as the
database's login. The role travels in the guard (:attr:`SQLGuard.role`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from iogate.config import DatabaseConfig
from iogate.databases.guard import UNRESTRICTED, ResultLimits, SQLGuard
from iogate.wire.principal import Principal

__all__ = ["SQLAccess", "named_query_access", "role_of", "sql_access"]


@dataclass(frozen=True, slots=True)
class SQLAccess:
    """What one caller may do on one database: the engine's guard and the limits."""

    guard: SQLGuard
    limits: ResultLimits


@lru_cache(maxsize=256)
def _base_limits(max_rows: int, max_bytes: int) -> ResultLimits:
    return ResultLimits(max_rows=max_rows, max_bytes=max_bytes)


@lru_cache(maxsize=256)
def _open_access(max_rows: int, max_bytes: int, role: str | None) -> SQLAccess:
    guard = UNRESTRICTED if role is None else SQLGuard(role=role)
    return SQLAccess(guard, _base_limits(max_rows, max_bytes))


def _limits(config: DatabaseConfig | None, principal: Principal) -> ResultLimits:
    if config is None:
        base = _base_limits(100_000, 32 * 1024 * 1024)
    else:
        base = _base_limits(config.max_rows, config.max_response_bytes)
    if principal.max_rows is None and principal.max_bytes is None:
        return base
    return base.tightened(principal.max_rows, principal.max_bytes)


def role_of(
    principal: Principal, name: str, config: DatabaseConfig | None, *, write: bool
) -> str | None:
    """The database role ``principal`` runs as on database ``name`` for a
    write-scoped (``write``) or read-scoped call (see the module docstring);
    ``None``: the database's login."""
    if principal.roles:
        own = principal.role_for(name)
        if own is not None:
            return own
    if config is None:
        return None
    return config.write_role if write else config.read_role


def _guard(
    principal: Principal, read_only: bool, name: str, config: DatabaseConfig | None
) -> SQLGuard:
    role = role_of(principal, name, config, write=not read_only)
    return _make_guard(read_only, principal.tables, role)


@lru_cache(maxsize=1024)
def _make_guard(read_only: bool, tables: frozenset[str] | None, role: str | None) -> SQLGuard:
    if not read_only and tables is None and role is None:
        return UNRESTRICTED
    lowered = None if tables is None else frozenset(t.lower() for t in tables)
    return SQLGuard(read_only=read_only, tables=lowered, role=role)


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
        role = None if config is None else config.write_role
        return _open_access(limits.max_rows, limits.max_bytes, role)
    writes = principal.allows(f"db:{name}:write")
    if not writes and not principal.allows(f"db:{name}:read"):
        raise PermissionError(f"this key lacks the scope 'db:{name}:read'")
    return SQLAccess(_guard(principal, not writes, name, config), _limits(config, principal))


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
    return SQLAccess(_guard(principal, not write, name, config), _limits(config, principal))
