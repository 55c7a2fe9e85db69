"""Who is calling, and with which scopes: the principal every face and service shares.

The gateway's key middleware turns a credential into a :class:`Principal`; the
batch engine, background tasks and the CLI act for one too. Scope names:

- ``db:<name>:read``, ``db:<name>:write`` — a named database;
- ``upstream:<name>`` — a named upstream API;
- ``cache:read``, ``cache:write`` — the gateway's cache;
- ``files:read``, ``files:write`` — the sandboxed file area;
- ``admin`` — circuit breakers, keys, everything else.

With authentication off the principal is :data:`ANONYMOUS`, holding every scope.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ANONYMOUS", "Principal"]


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of one request.

    Attributes:
        name: the key's name in the config (``"anonymous"`` when auth is off).
        scopes: the scopes granted; ``None`` means every scope (auth off).
        tables: the tables this key may name in SQL; ``None`` means any table.
        max_rows: the most rows one statement may return to this key (rows).
        max_bytes: the most bytes one response may carry to this key (bytes).
        collections: the MongoDB collections this key may name; ``None`` means any.
        roles: ``(database, role)`` pairs: the PostgreSQL role this key runs
            as on that database (``[keys.<name>] roles``); others use the
            database's ``read_role`` / ``write_role``.
    """

    name: str
    scopes: frozenset[str] | None = None
    tables: frozenset[str] | None = None
    max_rows: int | None = None
    max_bytes: int | None = None
    roles: tuple[tuple[str, str], ...] = ()
    collections: frozenset[str] | None = None

    def role_for(self, database: str) -> str | None:
        """The key's own role on ``database``, or ``None``."""
        for name, role in self.roles:
            if name == database:
                return role
        return None

    def allows(self, scope: str) -> bool:
        """Whether ``scope`` is granted (``admin`` grants every scope)."""
        if self.scopes is None:
            return True
        return scope in self.scopes or "admin" in self.scopes


ANONYMOUS = Principal("anonymous")
