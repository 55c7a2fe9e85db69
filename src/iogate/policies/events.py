"""Typed policy events and the listener type.

Every policy accepts ``on_event=`` (a callable taking one event) and calls it
synchronously when something noteworthy happens: a retry is scheduled, a
breaker changes state, a call is rejected, a timeout fires, a hedge starts, a
fallback is used. Events are frozen dataclasses deriving from
:class:`PolicyEvent`; the concrete classes live next to their policy
(``RetryScheduled`` in ``retry``, ``CircuitStateChanged`` in
``circuit_breaker``...). The success path emits nothing, so listeners cost
nothing while all is well. A listener that raises is a bug in the listener:
the exception propagates to the caller of the policy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["EventListener", "PolicyEvent"]


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyEvent:
    """Base of every policy event.

    Attributes:
        policy: the name of the policy instance (usually the resource name).
        at: the policy clock's reading when the event happened, seconds.
    """

    policy: str
    at: float


EventListener = Callable[[PolicyEvent], None]
"""A synchronous callable receiving every event of a policy."""
