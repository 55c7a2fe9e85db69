"""The closed set of outcome labels a finished call is recorded under.

Metrics (``/v1/stats`` outcomes, ``/metrics``' ``outcome`` label) never carry an
arbitrary Python exception name: a label set must stay closed for Prometheus
(every value is a series) and stable for dashboards and alert rules. A call's
outcome is:

- ``"ok"``;
- a refusal or a cut by a policy: ``"timeout"`` (an attempt timeout or a
  driver's own), ``"deadline"`` (the call's or the request's deadline passed,
  ``X-Request-Timeout`` included — the pipeline decides it, see
  :func:`outcome_of`), ``"circuit_open"``, ``"rate_limited"``,
  ``"bulkhead_full"``;
- ``"cancelled"``: the caller's task was cancelled (client gone, shutdown);
- the class name of the nearest class of the error tree (:mod:`iogate.errors`)
  for any other iogate error: ``"QueryError"``, ``"UpstreamHTTPError"``...
  (a user's subclass of ``QueryError`` counts as ``"QueryError"``);
- ``"error"``: any exception outside the tree (a user function's ``ValueError``).
"""

from __future__ import annotations

import asyncio
from typing import Final

from iogate import errors

__all__ = ["OUTCOMES", "outcome_of"]

_POLICY: Final[dict[type[BaseException], str]] = {
    errors.OperationTimeout: "timeout",
    errors.CircuitOpenError: "circuit_open",
    errors.RateLimitedError: "rate_limited",
    errors.BulkheadFullError: "bulkhead_full",
    asyncio.CancelledError: "cancelled",
}
_TREE: Final = frozenset(
    cls
    for name in errors.__all__
    if isinstance(cls := getattr(errors, name), type) and issubclass(cls, errors.IogateError)
)

OUTCOMES: Final = frozenset(
    {"ok", "deadline", "error", *_POLICY.values(), *(c.__name__ for c in _TREE)}
    - {c.__name__ for c in _POLICY}
)
"""Every label :func:`outcome_of` can return, plus ``"ok"`` and ``"deadline"``."""


def outcome_of(exc: BaseException) -> str:
    """The outcome label of a call that raised ``exc`` (see the module docstring).

    ``"deadline"`` is not decided here: an :class:`~iogate.errors.OperationTimeout`
    is ``"timeout"`` and a cancellation ``"cancelled"``; the pipeline, which
    knows whether the call's deadline has passed, turns either into
    ``"deadline"``.
    """
    for base in type(exc).__mro__:  # a few dict lookups, on the error path only
        policy = _POLICY.get(base)
        if policy is not None:
            return policy
        if base in _TREE:
            return base.__name__
    return "error"
