"""Per-call metrics: counts, errors and latency per (resource, operation).

:class:`Metrics` is the recorder the resilience pipeline calls once per call
(it satisfies :class:`iogate.policies.pipeline.CallRecorder`). Recording is a
dict lookup and a few additions: no lock is needed because the event loop
runs one callback at a time.

``snapshot()`` returns frozen, typed statistics; the gateway's ``/v1/stats``
renders them.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Metrics", "MetricsSnapshot", "OperationStats", "ResourceStats"]


class _Series:
    __slots__ = ("calls", "errors", "max_s", "outcomes", "total_s")

    def __init__(self) -> None:
        self.calls = 0
        self.errors = 0
        self.total_s = 0.0
        self.max_s = 0.0
        self.outcomes: dict[str, int] = {}


@dataclass(frozen=True, slots=True)
class OperationStats:
    """Figures of one operation of one resource since start.

    Attributes:
        operation: ``"query"``, ``"fetch"``, ``"GET"``...
        calls: calls completed (successes and failures).
        errors: calls that raised.
        mean_ms / max_ms: latency in milliseconds.
        outcomes: calls by outcome (``"ok"`` or the error class name).
    """

    operation: str
    calls: int
    errors: int
    mean_ms: float
    max_ms: float
    outcomes: dict[str, int]

    @property
    def success_rate(self) -> float:
        """Share of calls that succeeded, 1.0 when there were none."""
        return 1.0 if self.calls == 0 else (self.calls - self.errors) / self.calls


@dataclass(frozen=True, slots=True)
class ResourceStats:
    """Figures of one resource, totalled over its operations."""

    resource: str
    calls: int
    errors: int
    mean_ms: float
    operations: tuple[OperationStats, ...]


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """Every resource's figures at one instant."""

    resources: tuple[ResourceStats, ...]

    def resource(self, name: str) -> ResourceStats | None:
        """The figures of one resource, or ``None`` if it has seen no call."""
        return next((r for r in self.resources if r.resource == name), None)


class Metrics:
    """Counts and latencies of every call, per (resource, operation)."""

    __slots__ = ("_series",)

    def __init__(self) -> None:
        self._series: dict[tuple[str, str], _Series] = {}

    def record(self, resource: str, operation: str, outcome: str, duration_s: float) -> None:
        """Record one finished call.

        Args:
            resource: resource name.
            operation: operation name (low cardinality: never SQL text or URLs).
            outcome: ``"ok"`` or the class name of the error raised.
            duration_s: seconds the call took, all attempts included.
        """
        key = (resource, operation)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series()
        series.calls += 1
        series.total_s += duration_s
        if duration_s > series.max_s:
            series.max_s = duration_s
        if outcome != "ok":
            series.errors += 1
        series.outcomes[outcome] = series.outcomes.get(outcome, 0) + 1

    def snapshot(self) -> MetricsSnapshot:
        """Frozen figures of every resource seen so far, sorted by name."""
        by_resource: dict[str, list[OperationStats]] = {}
        for (resource, operation), s in sorted(self._series.items()):
            mean_ms = s.total_s / s.calls * 1000 if s.calls else 0.0
            by_resource.setdefault(resource, []).append(
                OperationStats(
                    operation, s.calls, s.errors, mean_ms, s.max_s * 1000, dict(s.outcomes)
                )
            )
        resources = []
        for resource, ops in by_resource.items():
            calls = sum(o.calls for o in ops)
            total_ms = sum(o.mean_ms * o.calls for o in ops)
            resources.append(
                ResourceStats(
                    resource,
                    calls,
                    sum(o.errors for o in ops),
                    total_ms / calls if calls else 0.0,
                    tuple(ops),
                )
            )
        return MetricsSnapshot(tuple(resources))
