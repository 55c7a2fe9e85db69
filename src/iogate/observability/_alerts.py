"""Alerts: thresholds on a resource's error rate and p99 latency, as events.

:class:`Alerts` judges a :class:`~iogate.observability.metrics.MetricsSnapshot`
against its rules (:class:`~iogate.observability.config.AlertRuleConfig`) and
emits an :class:`AlertEvent` when a condition starts (``"firing"``) and when
it ends (``"resolved"``) — not on every evaluation, as Alertmanager groups
repeats. Events go to every callback registered with :meth:`Alerts.subscribe`
(synchronous; a callback that raises is logged by class name and skipped)
and, for rules with a ``webhook``, are returned to the caller to POST (the
Gateway's background loop does that through the named upstream, so the
webhook gets the upstream's pool, auth and resilience).

A resource's error rate is its failed calls over all calls in the window;
its p99 is the highest p99 of its operations in the window (its slowest
operation decides). A window with fewer than ``min_calls`` calls is not
judged (and does not resolve a firing alert).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from iogate.observability.config import AlertRuleConfig
from iogate.observability.metrics import MetricsSnapshot, ResourceStats, WindowStats

__all__ = ["AlertEvent", "AlertListener", "Alerts"]

_log = logging.getLogger("iogate.alerts")


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertEvent:
    """A threshold crossed (``state="firing"``) or no longer crossed (``"resolved"``).

    Attributes:
        resource: the resource judged.
        condition: ``"error_rate"`` (a share, 0..1) or ``"p99"`` (seconds).
        value / threshold: the measured figure and the rule's bound, same unit.
        window: ``"1m"`` or ``"5m"``.
        calls: calls in the window.
        at: wall-clock time of the evaluation (Unix seconds).
        rule: index of the rule in ``[[observability.alerts]]``.
    """

    resource: str
    condition: str
    state: str
    value: float
    threshold: float
    window: str
    calls: int
    at: float
    rule: int


AlertListener = Callable[[AlertEvent], None]


class Alerts:
    """Evaluates alert rules and notifies listeners (see the module docstring).

    Args:
        rules: the rules, in config order.
        clock: wall-clock seconds for :attr:`AlertEvent.at` (default ``time.time``).
    """

    __slots__ = ("_clock", "_firing", "_listeners", "rules")

    def __init__(
        self, rules: Sequence[AlertRuleConfig], *, clock: Callable[[], float] | None = None
    ) -> None:
        self.rules = tuple(rules)
        self._clock = clock if clock is not None else time.time
        self._listeners: list[AlertListener] = []
        self._firing: set[tuple[int, str, str]] = set()

    def subscribe(self, listener: AlertListener) -> Callable[[], None]:
        """Call ``listener(event)`` for every event; returns a function that unsubscribes."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    @property
    def firing(self) -> frozenset[tuple[int, str, str]]:
        """The (rule index, resource, condition) currently firing."""
        return frozenset(self._firing)

    def evaluate(self, snapshot: MetricsSnapshot) -> list[tuple[AlertEvent, AlertRuleConfig]]:
        """Judge ``snapshot``; notify listeners of every new firing or resolved
        condition and return those events with their rule (for webhooks)."""
        out: list[tuple[AlertEvent, AlertRuleConfig]] = []
        now = self._clock()
        for index, rule in enumerate(self.rules):
            for r in snapshot.resources:
                if rule.resource not in ("*", r.resource):
                    continue
                calls, errors, p99_ms = _window(r, rule.window)
                if calls < rule.min_calls:
                    continue
                checks: list[tuple[str, float, float]] = []
                if rule.max_error_rate is not None:
                    checks.append(("error_rate", errors / calls, rule.max_error_rate))
                if rule.max_p99 is not None:
                    checks.append(("p99", p99_ms / 1000, rule.max_p99))
                for condition, value, threshold in checks:
                    key = (index, r.resource, condition)
                    above = value > threshold
                    if above == (key in self._firing):
                        continue
                    if above:
                        self._firing.add(key)
                    else:
                        self._firing.discard(key)
                    event = AlertEvent(
                        resource=r.resource,
                        condition=condition,
                        state="firing" if above else "resolved",
                        value=round(value, 6),
                        threshold=threshold,
                        window=rule.window,
                        calls=calls,
                        at=now,
                        rule=index,
                    )
                    out.append((event, rule))
                    self._notify(event)
        return out

    def _notify(self, event: AlertEvent) -> None:
        _log.warning(
            "alert %s",
            event.state,
            extra={"resource": event.resource, "condition": event.condition, "value": event.value},
        )
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception as exc:  # noqa: BLE001 - one bad listener must not stop the others
                _log.error("alert listener failed: %s", type(exc).__name__)


def _window(r: ResourceStats, window: str) -> tuple[int, int, float]:
    stats: list[WindowStats] = [
        op.last_minute if window == "1m" else op.last_5_minutes for op in r.operations
    ]
    calls = sum(w.calls for w in stats)
    errors = sum(w.errors for w in stats)
    p99 = max((w.latency.p99_ms for w in stats if w.calls), default=0.0)
    return calls, errors, p99
