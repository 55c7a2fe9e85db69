"""Prometheus text exposition of :class:`~iogate.observability.metrics.Metrics`.

:class:`MetricsCollector` is a prometheus-client custom collector: it reads
the recorder's sources (pools, policies, upstream meters, cache) *at scrape
time*, so recording stays a few list updates and nothing is registered per
call (the pattern prometheus-client documents for proxying other systems'
metrics). Each scrape renders through its own
:class:`~prometheus_client.CollectorRegistry` — never the global one.

The one large family, ``iogate_operation_duration_seconds`` (16 samples per
series), is written straight into the same text format by
:func:`histogram_text`, with each series' label string escaped once and
cached: prometheus-client's generic ``generate_latest`` builds and escapes
every sample anew and took ~200 ms for 1,000 series on the 2-core benchmark
machine, against a 50 ms scrape budget (``python -m benchmarks --only
metrics`` measures both).

Names follow the Prometheus conventions (base units, ``_total`` counters for
every monotonic count, cache figures included, ``_seconds``, ``_bytes``);
labels are low-cardinality only: resource and operation names, outcome (the
closed set of :mod:`iogate._outcomes`), states and status classes, LLM model
names — never SQL text, URLs, keys or parameters. Upstreams report their
aiohttp connection pool in the same ``iogate_pool_*`` families as databases.

The duration histogram's ``le`` bounds are powers of four from 2**-17 s
(7.6 µs) to 2**5 s (32 s): they are exact edges of the recorder's log-linear
buckets, so every exported count is exact (a duration equal to a bound
counts in the next bucket).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from operator import add as _concat
from typing import Any, Final

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from iogate.observability._histogram import EXPORT_BUCKETS, lower_bound
from iogate.observability.metrics import Metrics, ResourceStats

__all__ = [
    "CONTENT_TYPE",
    "EXPORT_BOUNDS",
    "LabelCache",
    "MetricsCollector",
    "histogram_text",
    "process_registry",
    "render",
]

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

EXPORT_BOUNDS: Final = tuple(lower_bound(b) for b in EXPORT_BUCKETS)
"""The ``le`` bounds of ``iogate_operation_duration_seconds``, seconds."""
_LE: Final = tuple(repr(b) for b in EXPORT_BOUNDS)
_STATES: Final = ("closed", "open", "half_open", "forced_open", "disabled")


class MetricsCollector(Collector):
    """Collects every iogate metric from ``metrics`` when scraped."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        """The metric families (all but the duration histogram, see
        :func:`histogram_text`), built from the recorder's current figures."""
        snap = self._metrics.resource_states()
        yield from _resource_families(snap)
        cache = self._metrics.cache_stats()
        if cache is not None and dataclasses.is_dataclass(cache):
            yield from _cache_families(cache)


_CACHE_GAUGES: Final = frozenset({"entries", "max_entries", "max_bytes", "subscribed"})
"""Cache figures that go up and down (the L1's ``bytes`` too); every other
number is a count since start, exported as a counter (``_total``)."""
_CACHE_RENAMED: Final = {("l2", "bytes"): "written_bytes"}


def _cache_families(stats: Any) -> Iterator[Metric]:
    """The cache's figures: its own counts unlabelled (``iogate_cache_loads_total``),
    each tier's (a nested snapshot: ``l1``, ``l2``) under a ``tier`` label
    (``iogate_cache_hits_total{tier="l1"}``, ``iogate_cache_entries{tier="l1"}``).
    Monotonic counts are counters, sizes gauges (:data:`_CACHE_GAUGES`)."""
    families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}

    def add(tier: str | None, name: str, value: float) -> None:
        name = _CACHE_RENAMED.get((tier or "", name), name)
        family = families.get(name)
        if family is None:
            gauge = name in _CACHE_GAUGES or (name == "bytes" and tier == "l1")
            cls = GaugeMetricFamily if gauge else CounterMetricFamily
            help_text = f"Cache {name.replace('_', ' ')}" + ("" if gauge else " since start")
            labels = ["tier"] if tier is not None else []
            family = families[name] = cls(f"iogate_cache_{name}", help_text, labels=labels)
        family.add_metric([tier] if tier is not None else [], value)

    for f in dataclasses.fields(stats):
        value = getattr(stats, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            for g in dataclasses.fields(value):
                inner = getattr(value, g.name)
                if isinstance(inner, int | float):  # bool: 0/1 (``subscribed``)
                    add(f.name, g.name, float(inner))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            add(None, f.name, float(value))
    yield from families.values()


_HIST: Final = "iogate_operation_duration_seconds"
_HIST_HEAD: Final = (
    f"# HELP {_HIST} Duration of calls through the resilience pipeline, retries included\n"
    f"# TYPE {_HIST} histogram\n"
)


def _escape(value: str) -> str:
    """A label value escaped per the text format: backslash, double quote, newline."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class LabelCache:
    """What a server keeps between scrapes: per (resource, operation, outcome)
    the 15 line prefixes of its histogram samples (name and escaped labels),
    built once; and the registry of prometheus-client's process, platform and
    GC collectors (building them reads ``/proc/stat`` and ``platform``: ~9 ms)."""

    __slots__ = ("_prefixes", "_process")

    def __init__(self) -> None:
        self._prefixes: dict[tuple[str, str, str], tuple[str, ...]] = {}
        self._process: CollectorRegistry | None = None

    def process_registry(self) -> CollectorRegistry:
        """The process, platform and GC collectors, in a registry of their own."""
        registry = self._process
        if registry is None:
            registry = self._process = process_registry()
        return registry

    def get(self, resource: str, operation: str, outcome: str) -> tuple[str, ...]:
        """The prefixes: one ``_bucket`` per ``le`` bound, ``+Inf``, ``_count``, ``_sum``."""
        key = (resource, operation, outcome)
        prefixes = self._prefixes.get(key)
        if prefixes is None:
            lab = (
                f'resource="{_escape(resource)}",operation="{_escape(operation)}",'
                f'outcome="{_escape(outcome)}"'
            )
            prefixes = self._prefixes[key] = (
                *(f'{_HIST}_bucket{{{lab},le="{le}"}} ' for le in (*_LE, "+Inf")),
                f"{_HIST}_count{{{lab}}} ",
                f"{_HIST}_sum{{{lab}}} ",
            )
        return prefixes


def histogram_text(metrics: Metrics, labels: LabelCache | None = None) -> str:
    """``iogate_operation_duration_seconds`` in the text format 0.0.4: per series,
    cumulative ``_bucket`` counts at :data:`EXPORT_BOUNDS` and ``+Inf``, ``_count``
    and ``_sum`` (seconds)."""
    cache = labels if labels is not None else LabelCache()
    out = [_HIST_HEAD]
    append = out.append
    for s in metrics.series():
        count = str(s.total)
        values = [*map(str, s.cumulative), count, count, repr(s.sum_s)]
        append("\n".join(map(_concat, cache.get(s.resource, s.operation, s.outcome), values)))
        append("\n")
    return "".join(out)


def _resource_families(resources: tuple[ResourceStats, ...]) -> Iterator[Metric]:
    """Every per-resource family: calls in flight, then the pool's, the policies'
    and the upstream's (in that order)."""
    in_flight = GaugeMetricFamily(
        "iogate_operations_in_flight", "Calls running now", labels=("resource",)
    )
    for r in resources:
        in_flight.add_metric([r.resource], r.in_flight)
    yield in_flight
    yield from _pool_families(resources)
    yield from _policy_families(resources)
    yield from _upstream_families(resources)


def _pool_families(resources: tuple[ResourceStats, ...]) -> Iterator[Metric]:
    """The connection pool of each resource that has one."""
    pool = GaugeMetricFamily(
        "iogate_pool_connections",
        "Open connections of the pool by state (in_use, idle)",
        labels=("resource", "state"),
    )
    pool_max = GaugeMetricFamily(
        "iogate_pool_max_connections", "The pool's bound", labels=("resource",)
    )
    waiting = GaugeMetricFamily(
        "iogate_pool_waiting", "Callers waiting for a connection", labels=("resource",)
    )
    acquired = CounterMetricFamily(
        "iogate_pool_acquisitions", "Connections lent since open", labels=("resource",)
    )
    wait_p99 = GaugeMetricFamily(
        "iogate_pool_acquire_wait_p99_seconds",
        "99th percentile of the wait for a connection (last 1024)",
        labels=("resource",),
    )
    for r in resources:
        name = r.resource
        if r.pool is not None:
            pool.add_metric([name, "in_use"], r.pool.in_use)
            pool.add_metric([name, "idle"], r.pool.idle)
            pool_max.add_metric([name], r.pool.max_size)
            waiting.add_metric([name], r.pool.waiting)
            acquired.add_metric([name], r.pool.acquired_total)
            wait_p99.add_metric([name], r.pool.acquire_wait_p99_s)
    yield from (pool, pool_max, waiting, acquired, wait_p99)


def _policy_families(resources: tuple[ResourceStats, ...]) -> Iterator[Metric]:
    """The resilience policies' figures: breaker, rate limiter, bulkhead, retries."""
    breaker = GaugeMetricFamily(
        "iogate_circuit_breaker_state",
        "1 for the breaker's current state",
        labels=("resource", "state"),
    )
    transitions = CounterMetricFamily(
        "iogate_circuit_breaker_transitions",
        "Breaker state changes",
        labels=("resource", "from_state", "to_state"),
    )
    not_permitted = CounterMetricFamily(
        "iogate_circuit_breaker_rejections",
        "Calls refused by an open breaker",
        labels=("resource",),
    )
    limiter_waits = CounterMetricFamily(
        "iogate_rate_limiter_waits", "Calls that waited for a token", labels=("resource",)
    )
    limiter_rejections = CounterMetricFamily(
        "iogate_rate_limiter_rejections", "Calls refused by the rate limiter", labels=("resource",)
    )
    bulkhead_rejections = CounterMetricFamily(
        "iogate_bulkhead_rejections", "Calls refused by the bulkhead", labels=("resource",)
    )
    retries = CounterMetricFamily("iogate_retries", "Retry attempts made", labels=("resource",))
    refusals = CounterMetricFamily(
        "iogate_retry_budget_refusals", "Retries the retry budget refused", labels=("resource",)
    )
    for r in resources:
        name = r.resource
        p = r.policies
        if p is not None:
            if p.circuit_breaker is not None:
                cb = p.circuit_breaker
                current = str(cb.state.value)
                for state in _STATES:
                    breaker.add_metric([name, state], 1.0 if state == current else 0.0)
                not_permitted.add_metric([name], cb.not_permitted_calls)
            if p.rate_limiter is not None:
                limiter_waits.add_metric([name], p.rate_limiter.waited)
                limiter_rejections.add_metric([name], p.rate_limiter.rejected)
            if p.bulkhead is not None:
                bulkhead_rejections.add_metric([name], p.bulkhead.rejected)
            if p.retry is not None:
                retries.add_metric([name], p.retry.retries)
            if p.retry_budget is not None:
                refusals.add_metric([name], p.retry_budget.rejections)
        for (src, dst), n in sorted(r.transitions.items()):
            transitions.add_metric([name, src, dst], n)
    yield from (
        breaker,
        transitions,
        not_permitted,
        limiter_waits,
        limiter_rejections,
        bulkhead_rejections,
        retries,
        refusals,
    )


def _upstream_families(resources: tuple[ResourceStats, ...]) -> Iterator[Metric]:
    """An upstream's answers by status class, and an LLM upstream's tokens."""
    statuses = CounterMetricFamily(
        "iogate_upstream_responses",
        "Upstream answers by status class, every attempt",
        labels=("resource", "status_class"),
    )
    tokens = CounterMetricFamily(
        "iogate_llm_tokens",
        "LLM tokens used, from the answers' usage",
        labels=("resource", "model", "direction"),
    )
    for r in resources:
        name = r.resource
        for cls, n in r.statuses.items():
            statuses.add_metric([name, cls], n)
        for t in r.tokens:
            tokens.add_metric([name, t.model, "input"], t.input)
            tokens.add_metric([name, t.model, "output"], t.output)
    yield from (statuses, tokens)


def render(metrics: Metrics, *, labels: LabelCache | None = None, process: bool = True) -> bytes:
    """The Prometheus text format (0.0.4) of everything ``metrics`` knows, and
    (``process``) prometheus-client's process, platform and GC collectors
    (``process_cpu_seconds_total``, ``process_resident_memory_bytes``,
    ``process_open_fds``..., ``python_info``, ``python_gc_collections_total``;
    the process figures read ``/proc`` on Linux, absent elsewhere).

    Args:
        labels: a label cache kept between scrapes (the server keeps one per app).
        process: include the process, platform and GC collectors.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MetricsCollector(metrics))
    body = histogram_text(metrics, labels).encode() + generate_latest(registry)
    if process:
        cache = labels if labels is not None else LabelCache()
        body += generate_latest(cache.process_registry())
    return body


def process_registry() -> CollectorRegistry:
    """A registry of prometheus-client's process, platform and GC collectors."""
    registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry
