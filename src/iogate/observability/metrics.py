"""Per-call metrics: counts, errors and latency histograms per (resource, operation, outcome).

:class:`Metrics` is the recorder the resilience pipeline calls once per call
(it satisfies :class:`iogate.policies.pipeline.CallRecorder`). Recording is
three dict lookups, a clock read, one ``bisect`` and a few additions — no lock
(the event loop runs one callback at a time), no allocation on the common
path, about 0.5 µs (``python -m benchmarks --only metrics``).

Each series keeps, since start, a log-linear latency histogram
(:mod:`iogate.observability._histogram`), the count, sum and exact maximum;
and a ring of :data:`SLOTS` per-interval histograms of :data:`SLOT_S` seconds
each, from which the "last minute" and "last five minutes" windows are
merged at snapshot time (a window covers the intervals overlapping it, so
"last minute" spans 60 to 70 s).

Everything else (pool gauges, breaker state and transitions, limiter,
retries, bulkhead, upstream status classes and tokens, cache figures) is
*read* at snapshot time from the sources :meth:`Metrics.attach` registers:
nothing is added to the hot path for them.

``stats()`` returns frozen, typed statistics; ``/v1/stats`` and
``/metrics`` render them.
"""

from __future__ import annotations

import logging
import math
import time
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from operator import add as _add
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from iogate.observability._histogram import (
    BUCKETS,
    EDGES,
    EXPORT_BUCKETS,
    cumulative_at,
    percentile,
    upper_bound,
)
from iogate.observability._statements import statement_of

if TYPE_CHECKING:
    from iogate.databases.stats import PoolStats
    from iogate.observability._meters import TokenUsage, UpstreamMeter
    from iogate.policies.events import PolicyEvent
    from iogate.policies.pipeline import Pipeline, PipelineSnapshot

__all__ = [
    "SLOTS",
    "SLOT_S",
    "Insight",
    "LatencySummary",
    "Metrics",
    "MetricsSnapshot",
    "OperationStats",
    "ResourceStats",
    "SeriesView",
    "SlowOperation",
    "WindowStats",
]

SLOT_S: Final = 10.0
"""Width of one window interval, seconds."""
SLOTS: Final = 31
"""Intervals kept: five minutes plus the current one."""

_log = logging.getLogger("iogate.slow")
_bisect = bisect_right
_EDGES = list(EDGES)


class _Series:
    """One (resource, operation, outcome): the window ring and the closed totals.

    A ring slot is a list of BUCKETS counts followed by the slot's duration sum.
    When an interval ends its slot is folded into the closed totals (and stays
    in the ring for the windows), so since-start figures are the closed totals
    plus the current slot, and a record touches the current slot only.
    """

    __slots__ = ("closed_cum", "counts", "cur", "end", "epochs", "max", "ring")

    def __init__(self) -> None:
        self.counts: list[Any] = [0] * BUCKETS  # closed intervals, then their duration sum
        self.counts.append(0.0)
        # closed counts below each export edge, then their total
        self.closed_cum = [0] * (len(EXPORT_BUCKETS) + 1)
        self.max = 0.0
        self.ring: list[list[Any] | None] = [None] * SLOTS
        self.epochs = [-1] * SLOTS
        self.cur: list[Any] = []
        self.end = -math.inf  # forces advance() on the first record

    def advance(self, now: float) -> None:
        """Close the current interval and start the one holding ``now``."""
        if self.cur:
            counts = self.counts = list(map(_add, self.counts, self.cur))
            self.closed_cum = cumulative_at(counts)
        epoch = int(now // SLOT_S)
        i = epoch % SLOTS
        slot: list[Any] = [0] * BUCKETS
        slot.append(0.0)
        self.ring[i] = slot
        self.epochs[i] = epoch
        self.cur = slot
        self.end = (epoch + 1) * SLOT_S

    def totals(self) -> tuple[list[int], int, float]:
        """Since-start counts per bucket, total and duration sum."""
        both = list(map(_add, self.counts, self.cur)) if self.cur else self.counts
        counts: list[int] = both[:BUCKETS]
        return counts, sum(counts), float(both[BUCKETS])

    def exported(self) -> tuple[list[int], int, float]:
        """Since-start cumulative counts at :data:`EXPORT_BUCKETS`, total and sum:
        the closed part is cached, only the current interval is summed."""
        cur = self.cur
        if not cur:
            return self.closed_cum[:-1], self.closed_cum[-1], float(self.counts[BUCKETS])
        cum = list(map(_add, self.closed_cum, cumulative_at(cur)))
        n = cum.pop()
        return cum, n, float(self.counts[BUCKETS] + cur[BUCKETS])

    def window(self, now: float, seconds: float) -> tuple[list[int], int, float]:
        """Merged counts, total and duration sum of the slots overlapping the last ``seconds``."""
        first = int((now - seconds) // SLOT_S)
        last = int(now // SLOT_S)
        merged: list[Any] = [0] * (BUCKETS + 1)
        for slot, epoch in zip(self.ring, self.epochs, strict=True):
            if slot is not None and first <= epoch <= last:
                merged = list(map(_add, merged, slot))
        counts: list[int] = merged[:BUCKETS]
        return counts, sum(counts), float(merged[BUCKETS])


class SeriesView(NamedTuple):
    """One series since start, as the Prometheus exporter reads it: ``cumulative``
    holds the counts below each edge of :data:`~.histogram.EXPORT_BUCKETS`
    (a named tuple: an exporter builds one per series per scrape)."""

    resource: str
    operation: str
    outcome: str
    total: int
    sum_s: float
    cumulative: list[int]


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Latency percentiles of a set of calls, milliseconds (0.0 when there were none).

    Percentiles are nearest-rank over log-linear buckets (within 12.5 %), capped
    at the exact maximum.
    """

    mean_ms: float = 0.0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    p999_ms: float = 0.0
    max_ms: float = 0.0


_EMPTY: Final = LatencySummary()


@dataclass(frozen=True, slots=True)
class WindowStats:
    """Calls of one operation in a time window (``window_s`` seconds long, ending now)."""

    window_s: float
    calls: int
    errors: int
    latency: LatencySummary

    @property
    def success_rate(self) -> float:
        """Share of calls that succeeded, 1.0 when there were none."""
        return 1.0 if self.calls == 0 else (self.calls - self.errors) / self.calls


@dataclass(frozen=True, slots=True)
class OperationStats:
    """Figures of one operation of one resource.

    Attributes:
        operation: ``"query"``, ``"fetch"``, ``"GET"``...
        calls: calls completed since start (successes and failures).
        errors: calls that raised.
        mean_ms / max_ms: latency since start, milliseconds.
        outcomes: calls by outcome (``"ok"`` or the error class name).
        latency: percentiles since start.
        last_minute / last_5_minutes: the same figures over the recent windows.
        errors_by_type: the outcomes other than ``"ok"``.
    """

    operation: str
    calls: int
    errors: int
    mean_ms: float
    max_ms: float
    outcomes: dict[str, int]
    latency: LatencySummary = field(default_factory=LatencySummary)
    last_minute: WindowStats = field(default_factory=lambda: WindowStats(60.0, 0, 0, _EMPTY))
    last_5_minutes: WindowStats = field(default_factory=lambda: WindowStats(300.0, 0, 0, _EMPTY))

    @property
    def success_rate(self) -> float:
        """Share of calls that succeeded, 1.0 when there were none."""
        return 1.0 if self.calls == 0 else (self.calls - self.errors) / self.calls

    @property
    def errors_by_type(self) -> dict[str, int]:
        """Failed calls by error class name."""
        return {k: v for k, v in self.outcomes.items() if k != "ok"}


@dataclass(frozen=True, slots=True)
class ResourceStats:
    """Figures of one resource: its operations, and the state of its pool and policies.

    Attributes:
        resource, calls, errors, mean_ms, operations: call figures since start.
        kind: ``"sqlite"``, ``"postgresql"``, ``"redis"``, ``"upstream"`` or
            ``""`` (a resource that was not attached, e.g. a user function).
        in_flight: calls running now (started, not finished).
        pool: the connection pool's gauges (databases).
        policies: counters and state of the resilience pipeline (breaker state
            and trips, limiter waits and rejections, retries, budget refusals...).
        transitions: breaker transitions seen, ``(from_state, to_state) -> count``.
        statuses: upstream answers by status class (``"2xx"``...), every attempt counted.
        tokens: LLM token usage per model (upstreams with a provider).
    """

    resource: str
    calls: int
    errors: int
    mean_ms: float
    operations: tuple[OperationStats, ...]
    kind: str = ""
    in_flight: int = 0
    pool: PoolStats | None = None
    policies: PipelineSnapshot | None = None
    transitions: dict[tuple[str, str], int] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    tokens: tuple[TokenUsage, ...] = ()

    def operation(self, name: str) -> OperationStats | None:
        """The figures of one operation, or ``None`` if it has not been called."""
        return next((o for o in self.operations if o.operation == name), None)


@dataclass(frozen=True, slots=True)
class SlowOperation:
    """One call slower than the slow threshold.

    Attributes:
        at: wall-clock time it ended (Unix seconds).
        statement: the SQL statement's fingerprint (literals and parameters
            replaced by ``?``), or ``None`` for non-SQL calls. Never parameters.
    """

    at: float
    resource: str
    operation: str
    outcome: str
    duration_ms: float
    statement: str | None


@dataclass(frozen=True, slots=True)
class Insight:
    """An operation that needs attention in the last five minutes.

    ``kind`` is ``"slow"`` (p99 above ``threshold`` ms) or ``"unreliable"``
    (success rate below ``threshold``); ``value`` is the measured figure.
    """

    resource: str
    operation: str
    kind: str
    value: float
    threshold: float
    calls: int


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """Every resource's figures at one instant, recent slow calls and insights."""

    resources: tuple[ResourceStats, ...]
    slow: tuple[SlowOperation, ...] = ()
    insights: tuple[Insight, ...] = ()
    cache: Any = None
    """The cache's own statistics snapshot (whatever its ``stats()`` returns), if attached."""

    def resource(self, name: str) -> ResourceStats | None:
        """The figures of one resource, or ``None`` if it is unknown and has seen no call."""
        return next((r for r in self.resources if r.resource == name), None)


@dataclass(slots=True)
class _Source:
    kind: str
    pipeline: Pipeline | None
    pool: Callable[[], PoolStats] | None
    meter: UpstreamMeter | None


class Metrics:
    """Counts and latency histograms of every call, per (resource, operation, outcome).

    Args:
        clock: monotonic seconds for the window intervals (default
            ``time.monotonic``; tests pass ``FakeClock().monotonic``).
        slow_s: calls at least this long (seconds) are kept in :attr:`slow` and
            logged on ``iogate.slow`` (``math.inf``: never).
        slow_kept: how many recent slow calls are kept (>= 1).
        insight_p99_s: an operation whose p99 over the last five minutes is
            above this (seconds) is reported as an :class:`Insight`.
        insight_success_rate: ... or whose success rate is below this (0..1).
        insight_min_calls: windows with fewer calls give no insight.

    Raises:
        ValueError: a bound above is violated.
    """

    __slots__ = (
        "_cache",
        "_index",
        "_now",
        "_slow",
        "_sources",
        "_transitions",
        "insight_min_calls",
        "insight_p99_s",
        "insight_success_rate",
        "slow_s",
    )

    def __init__(
        self,
        *,
        clock: Callable[[], float] | None = None,
        slow_s: float = 1.0,
        slow_kept: int = 100,
        insight_p99_s: float = 1.0,
        insight_success_rate: float = 0.95,
        insight_min_calls: int = 10,
    ) -> None:
        if not slow_s > 0:
            raise ValueError(f"slow_s must be > 0, got {slow_s!r}")
        if slow_kept < 1:
            raise ValueError(f"slow_kept must be >= 1, got {slow_kept!r}")
        if not 0.0 <= insight_success_rate <= 1.0:
            raise ValueError(
                f"insight_success_rate must be within 0..1, got {insight_success_rate}"
            )
        self._now = clock if clock is not None else time.monotonic
        self._index: dict[str, dict[str, dict[str, _Series]]] = {}
        self._slow: deque[SlowOperation] = deque(maxlen=slow_kept)
        self._sources: dict[str, _Source] = {}
        self._transitions: dict[str, dict[tuple[str, str], int]] = {}
        self._cache: Callable[[], Any] | None = None
        self.slow_s = slow_s
        self.insight_p99_s = insight_p99_s
        self.insight_success_rate = insight_success_rate
        self.insight_min_calls = insight_min_calls

    # -- the hot path ------------------------------------------------------------------------

    def record(
        self,
        resource: str,
        operation: str,
        outcome: str,
        duration_s: float,
        call: object = None,
        /,
    ) -> None:
        """Record one finished call.

        Args:
            resource: resource name.
            operation: operation name (low cardinality: never SQL text or URLs).
            outcome: ``"ok"`` or the class name of the error raised.
            duration_s: seconds the call took, all attempts included.
            call: the callable the pipeline ran; for a slow call of a SQL
                database (``partial(method, sql, params)``) the slow-operation
                log keeps its statement's fingerprint (never the parameters).
        """
        try:
            s = self._index[resource][operation][outcome]
        except KeyError:
            s = self._new_series(resource, operation, outcome)
        now = self._now()
        if now >= s.end:
            s.advance(now)
        cur = s.cur
        cur[_bisect(_EDGES, duration_s)] += 1
        cur[-1] += duration_s
        if duration_s > s.max:
            s.max = duration_s
            if duration_s >= self.slow_s:
                self._slow_call(resource, operation, outcome, duration_s, call)
        elif duration_s >= self.slow_s:
            self._slow_call(resource, operation, outcome, duration_s, call)

    # -- slow paths --------------------------------------------------------------------------

    def _new_series(self, resource: str, operation: str, outcome: str) -> _Series:
        by_op = self._index.setdefault(resource, {}).setdefault(operation, {})
        series = by_op.get(outcome)
        if series is None:
            series = by_op[outcome] = _Series()
        return series

    def _slow_call(
        self, resource: str, operation: str, outcome: str, duration_s: float, call: object
    ) -> None:
        source = self._sources.get(resource)
        statement = None
        if source is not None and source.kind in ("sqlite", "postgresql"):
            statement = statement_of(call, resource)
        slow = SlowOperation(
            time.time(), resource, operation, outcome, round(duration_s * 1000, 3), statement
        )
        self._slow.append(slow)
        _log.warning(
            "slow operation",
            extra={
                "resource": resource,
                "operation": operation,
                "outcome": outcome,
                "duration_ms": slow.duration_ms,
                "statement": statement,
            },
        )

    # -- sources read at snapshot time ----------------------------------------------------------

    def attach(
        self,
        resource: str,
        *,
        kind: str,
        pipeline: Pipeline | None = None,
        pool: Callable[[], PoolStats] | None = None,
        meter: UpstreamMeter | None = None,
    ) -> None:
        """Register what a snapshot reads for ``resource`` (the Gateway does this).

        Args:
            kind: ``"sqlite"``, ``"postgresql"``, ``"redis"`` or ``"upstream"``.
            pipeline: its resilience pipeline (in-flight calls, policy counters).
            pool: returns its pool gauges (``Database.stats``).
            meter: its upstream status-class and token counters.
        """
        self._sources[resource] = _Source(kind, pipeline, pool, meter)

    def attach_cache(self, stats: Callable[[], Any]) -> None:
        """Register the cache's statistics: a callable returning its stats snapshot
        (a dataclass whose numeric fields are exported as gauges)."""
        self._cache = stats

    def on_policy_event(self, event: PolicyEvent) -> None:
        """A policy ``on_event`` listener: counts circuit-breaker transitions."""
        to_state = getattr(event, "to_state", None)
        from_state = getattr(event, "from_state", None)
        if to_state is not None and from_state is not None:
            per = self._transitions.setdefault(event.policy, {})
            key = (str(from_state.value), str(to_state.value))
            per[key] = per.get(key, 0) + 1

    # -- reading -----------------------------------------------------------------------------

    @property
    def slow(self) -> tuple[SlowOperation, ...]:
        """The recent slow calls, oldest first."""
        return tuple(self._slow)

    def series(self) -> Iterator[SeriesView]:
        """Every (resource, operation, outcome) series since start (for exporters)."""
        for resource, by_op in self._index.items():
            for operation, by_outcome in by_op.items():
                for outcome, s in by_outcome.items():
                    cumulative, n, dsum = s.exported()
                    yield SeriesView(resource, operation, outcome, n, dsum, cumulative)

    def stats(self) -> MetricsSnapshot:
        """Frozen figures of every attached or called resource, sorted by name."""
        now = self._now()
        names = sorted(set(self._index) | set(self._sources))
        resources = tuple(self._resource(name, now) for name in names)
        insights = tuple(i for r in resources for i in self._insights(r))
        cache = self._cache() if self._cache is not None else None
        return MetricsSnapshot(resources, tuple(self._slow), insights, cache)

    def resource_states(self) -> tuple[ResourceStats, ...]:
        """Every attached resource's pool, policy, upstream and in-flight figures,
        without call figures (``operations`` empty, ``calls`` 0): what the
        Prometheus exporter reads beside :meth:`series`, cheaply."""
        return tuple(self._resource(name, 0.0, with_calls=False) for name in sorted(self._sources))

    def cache_stats(self) -> Any:
        """The attached cache's statistics snapshot, or ``None``."""
        return self._cache() if self._cache is not None else None

    def _resource(self, name: str, now: float, *, with_calls: bool = True) -> ResourceStats:
        ops = tuple(
            self._operation(op, by_outcome, now)
            for op, by_outcome in sorted(self._index.get(name, {}).items() if with_calls else ())
        )
        calls = sum(o.calls for o in ops)
        total_ms = sum(o.mean_ms * o.calls for o in ops)
        source = self._sources.get(name)
        pipeline = source.pipeline if source else None
        in_flight = 0
        policies = None
        if pipeline is not None:
            policies = pipeline.stats()
            in_flight = max(0, pipeline.started - pipeline.ok - pipeline.failed)
        meter = source.meter if source else None
        return ResourceStats(
            name,
            calls,
            sum(o.errors for o in ops),
            total_ms / calls if calls else 0.0,
            ops,
            kind=source.kind if source else "",
            in_flight=in_flight,
            pool=source.pool() if source and source.pool else None,
            policies=policies,
            transitions=dict(self._transitions.get(name, {})),
            statuses=meter.status_counts() if meter else {},
            tokens=meter.token_usage() if meter else (),
        )

    def _operation(
        self, operation: str, by_outcome: dict[str, _Series], now: float
    ) -> OperationStats:
        counts = [0] * BUCKETS
        calls = errors = 0
        total = 0.0
        max_s = 0.0
        outcomes: dict[str, int] = {}
        for outcome, s in sorted(by_outcome.items()):
            c, n, dsum = s.totals()
            counts = list(map(_add, counts, c))
            calls += n
            total += dsum
            max_s = max(max_s, s.max)
            outcomes[outcome] = n
            if outcome != "ok":
                errors += n
        return OperationStats(
            operation,
            calls,
            errors,
            total / calls * 1000 if calls else 0.0,
            max_s * 1000,
            outcomes,
            _summary(counts, calls, total, max_s),
            _window(by_outcome, now, 60.0),
            _window(by_outcome, now, 300.0),
        )

    def _insights(self, r: ResourceStats) -> Iterator[Insight]:
        for op in r.operations:
            w = op.last_5_minutes
            if w.calls < self.insight_min_calls:
                continue
            if w.latency.p99_ms > self.insight_p99_s * 1000:
                yield Insight(
                    r.resource,
                    op.operation,
                    "slow",
                    w.latency.p99_ms,
                    self.insight_p99_s * 1000,
                    w.calls,
                )
            if w.success_rate < self.insight_success_rate:
                yield Insight(
                    r.resource,
                    op.operation,
                    "unreliable",
                    round(w.success_rate, 6),
                    self.insight_success_rate,
                    w.calls,
                )

    # -- several processes -------------------------------------------------------------------

    def export_state(self) -> list[list[Any]]:
        """Every series' raw histograms as JSON-safe lists, for :meth:`merged`
        in another process (``iogate serve --workers``): per series its
        resource, operation, outcome, maximum (seconds), since-start counts and
        each kept interval as ``[epoch, counts]``; counts are sparse
        ``[[bucket, count], ...]`` with the duration sum at bucket ``BUCKETS``."""
        out: list[list[Any]] = []
        for resource, by_op in self._index.items():
            for operation, by_outcome in by_op.items():
                for outcome, s in by_outcome.items():
                    total = list(map(_add, s.counts, s.cur)) if s.cur else s.counts
                    ring = [
                        [epoch, _sparse(slot)]
                        for slot, epoch in zip(s.ring, s.epochs, strict=True)
                        if slot is not None
                    ]
                    out.append([resource, operation, outcome, s.max, _sparse(total), ring])
        return out

    def merged(self, states: list[list[list[Any]]]) -> Metrics:
        """A new recorder holding the sum of ``states`` (each one process's
        :meth:`export_state`): its since-start histograms and its intervals are
        the bucket-wise sums, so percentiles, windows and insights computed
        from it are those of every call of every process (merged histograms,
        never averaged percentiles). The intervals line up because they are
        numbered on the monotonic clock, which is the host's (Linux
        ``CLOCK_MONOTONIC``). Nothing is attached: pools and policies stay
        per process. Same clock and thresholds as this recorder."""
        out = Metrics(
            clock=self._now,
            slow_s=self.slow_s,
            insight_p99_s=self.insight_p99_s,
            insight_success_rate=self.insight_success_rate,
            insight_min_calls=self.insight_min_calls,
        )
        for state in states:
            for resource, operation, outcome, max_s, total, ring in state:
                s = out._new_series(resource, operation, outcome)
                s.counts = list(map(_add, s.counts, _dense(total)))
                s.max = max(s.max, max_s)
                for epoch, slot in ring:
                    i = epoch % SLOTS
                    if s.epochs[i] != epoch:
                        if s.epochs[i] > epoch:
                            continue  # an older interval than the one kept there
                        s.ring[i] = [0] * BUCKETS + [0.0]
                        s.epochs[i] = epoch
                    kept = s.ring[i]
                    assert kept is not None
                    s.ring[i] = list(map(_add, kept, _dense(slot)))
        for by_op in out._index.values():
            for by_outcome in by_op.values():
                for s in by_outcome.values():
                    s.closed_cum = cumulative_at(s.counts)
                    s.end = math.inf  # never recorded into
        return out

    def __repr__(self) -> str:
        return f"<Metrics series={sum(1 for _ in self.series())}>"


def _sparse(counts: list[Any]) -> list[list[Any]]:
    """The non-zero entries of a bucket list (sum last) as ``[index, value]``."""
    return [[i, v] for i, v in enumerate(counts) if v]


def _dense(pairs: list[list[Any]]) -> list[Any]:
    """:func:`_sparse` undone: BUCKETS counts and the duration sum."""
    counts: list[Any] = [0] * BUCKETS
    counts.append(0.0)
    for i, v in pairs:
        counts[i] = v
    return counts


def _summary(counts: list[int], n: int, total_s: float, max_s: float) -> LatencySummary:
    if n == 0:
        return _EMPTY
    return LatencySummary(
        mean_ms=round(total_s / n * 1000, 3),
        p50_ms=round(percentile(counts, n, 0.5, max_s) * 1000, 3),
        p90_ms=round(percentile(counts, n, 0.9, max_s) * 1000, 3),
        p99_ms=round(percentile(counts, n, 0.99, max_s) * 1000, 3),
        p999_ms=round(percentile(counts, n, 0.999, max_s) * 1000, 3),
        max_ms=round(max_s * 1000, 3),
    )


def _window(by_outcome: dict[str, _Series], now: float, seconds: float) -> WindowStats:
    counts = [0] * BUCKETS
    calls = errors = 0
    total = 0.0
    max_s = 0.0
    for outcome, s in by_outcome.items():
        c, n, dsum = s.window(now, seconds)
        if not n:
            continue
        counts = list(map(_add, counts, c))
        top = max(i for i, v in enumerate(c) if v)
        # The exact maximum of a window is not kept: its top bucket's edge
        # (capped at the series' maximum) stands in.
        max_s = max(max_s, min(upper_bound(top), s.max))
        calls += n
        total += dsum
        if outcome != "ok":
            errors += n
    return WindowStats(seconds, calls, errors, _summary(counts, calls, total, max_s))
