"""Who is calling, and what they may do: the one check every route makes.

Every route that touches a resource calls :func:`authorize` (or asks
:func:`principal_of` when its behaviour depends on the scope, e.g. a
read-only key runs SQL in the engine's read-only mode). Scope names:

- ``db:<name>:read``, ``db:<name>:write`` — a named database;
- ``upstream:<name>`` — a named upstream API;
- ``cache:read``, ``cache:write`` — the gateway's cache;
- ``files:read``, ``files:write`` — the sandboxed file area;
- ``admin`` — circuit breakers, keys, everything else.

The principal itself (:class:`~iogate.wire.principal.Principal`) lives in the
library, which the batch engine and the tasks share; this module reads it off a
request. Until API keys are configured authentication is off: the principal is
anonymous and holds every scope.
"""

from __future__ import annotations

from fastapi import Request

from iogate.wire.principal import ANONYMOUS, Principal

__all__ = ["ANONYMOUS", "Principal", "authorize", "principal_of"]


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
