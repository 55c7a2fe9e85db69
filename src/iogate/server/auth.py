"""Who is calling, and what they may do: the one check every route makes.

Every route that touches a resource calls :func:`authorize` (or asks
:func:`principal_of` when its behaviour depends on the scope, e.g. a
read-only key runs SQL in the engine's read-only mode). Scope names:

- ``db:<name>:read``, ``db:<name>:write`` — a named database;
- ``upstream:<name>`` — a named upstream API;
- ``cache:read``, ``cache:write`` — the gateway's cache;
- ``files:read``, ``files:write`` — the sandboxed file area;
- ``admin`` — circuit breakers, keys, everything else.

Until API keys are configured (issue 8) authentication is off: the
principal is anonymous and holds every scope.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

__all__ = ["ANONYMOUS", "Principal", "authorize", "principal_of"]


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of one request.

    Attributes:
        name: the key's name in the config (``"anonymous"`` when auth is off).
        scopes: the scopes granted; ``None`` means every scope (auth off).
        tables: the tables this key may name in SQL; ``None`` means any table.
        max_rows: the most rows one statement may return to this key (rows).
        max_bytes: the most bytes one response may carry to this key (bytes).
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


def principal_of(request: Request) -> Principal:
    """The caller of ``request`` (anonymous with every scope while auth is off)."""
    # scope["state"] is what request.state wraps; read it without building the wrapper
    principal: Principal | None = request.scope.get("state", {}).get("principal")
    return principal if principal is not None else ANONYMOUS


def authorize(request: Request, scope: str) -> Principal:
    """Return the caller if it holds ``scope``.

    Raises:
        PermissionError: the caller lacks ``scope`` (rendered as 403).
    """
    principal = principal_of(request)
    if not principal.allows(scope):
        raise PermissionError(f"this key lacks the scope {scope!r}")
    return principal
