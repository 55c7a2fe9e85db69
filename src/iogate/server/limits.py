"""Edge checks of SQL size for the routes that take SQL (``[server.limits]``).

:class:`~iogate.server.guard.GuardMiddleware` puts the app's
:class:`~iogate.config.LimitsConfig` in ``request.state.limits``; a
route taking SQL calls :func:`check_sql` before any I/O::

    check_sql(request, body.sql, body.params)

Request body size, ``X-Request-Timeout`` and per-key limits are enforced by
the middleware itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import Request

from iogate.config import LimitsConfig
from iogate.errors import InvalidInputError

__all__ = ["check_sql", "limits_of"]

_DEFAULT = LimitsConfig()


def limits_of(request: Request) -> LimitsConfig:
    """The app's ``[server.limits]`` (the defaults outside the gateway's middleware)."""
    # scope["state"] is what request.state wraps; read it without building the wrapper
    limits: LimitsConfig | None = request.scope.get("state", {}).get("limits")
    return limits if limits is not None else _DEFAULT


def check_sql(
    request: Request, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None
) -> None:
    """Refuse SQL longer than ``max_sql_chars`` or with more than ``max_params`` parameters.

    Raises:
        InvalidInputError: a limit is exceeded (400 ``invalid-input``).
    """
    limits = limits_of(request)
    if len(sql) > limits.max_sql_chars:
        raise InvalidInputError(f"SQL is longer than {limits.max_sql_chars} characters")
    if params is not None and len(params) > limits.max_params:
        raise InvalidInputError(f"more than {limits.max_params} parameters")
