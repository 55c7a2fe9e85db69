"""The observability of one Gateway: its metrics, tracing, alerts and readiness.

:class:`Observability` is created by :class:`~iogate.gateway.Gateway` from the
``[observability]`` table and owns:

- :attr:`metrics` — the recorder every pipeline calls (:mod:`.metrics`); the
  gateway reports each resource to it (:meth:`attach`: its pipeline, pool or
  upstream meter) and the cache's statistics (:meth:`attach_cache`);
- :attr:`listener` — the policy-event listener every pipeline is built with
  (breaker transitions into the metrics; retries as span events);
- :attr:`tracing` — OpenTelemetry spans: :meth:`runner` is what a resource is
  built with, its pipeline wrapped in a span per call only when active
  (:mod:`.tracing`).

It receives resources; it never reaches into one, and the gateway wires
everything once, before any resource exists (``gateway.py``).
- :attr:`alerts` — rules judged every ``alert_interval`` seconds by a
  background task while the gateway is open (:mod:`.alerts`), webhook events
  POSTed through the named upstream;
- :meth:`readiness` — every resource probed in parallel (:mod:`.health`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from iogate.observability._alerts import Alerts
from iogate.observability._health import Readiness, check_readiness
from iogate.observability._logging import silence_parameter_loggers
from iogate.observability._tracing import Tracing
from iogate.observability.config import ObservabilityConfig
from iogate.observability.metrics import Metrics
from iogate.policies.events import EventListener, PolicyEvent

if TYPE_CHECKING:
    from iogate.databases.base import Database
    from iogate.http.upstream import Upstream
    from iogate.policies import Clock, Pipeline
    from iogate.policies.runner import CallRunner

__all__ = ["CACHE_REDIS", "Observability"]

CACHE_REDIS = "cache-redis"
"""The name readiness reports the cache's Redis tier under (``ready_optional``)."""

_log = logging.getLogger("iogate.alerts")


class Observability:
    """Metrics, tracing, alerts and readiness of one Gateway (see the module docstring).

    Args:
        config: the ``[observability]`` table.
        metrics: an existing recorder (default: a new one with the table's thresholds).
        clock: the policies' clock (windows of the metrics follow it).
        tracer_provider: an OpenTelemetry ``TracerProvider`` for the spans.
    """

    def __init__(
        self,
        config: ObservabilityConfig,
        *,
        metrics: Metrics | None = None,
        clock: Clock | None = None,
        tracer_provider: Any = None,
    ) -> None:
        self.config = config
        self.metrics = metrics or Metrics(
            clock=clock.monotonic if clock is not None else None,
            slow_s=config.slow_threshold,
            insight_p99_s=config.insight_p99,
            insight_success_rate=config.insight_success_rate,
            insight_min_calls=config.insight_min_calls,
        )
        self.tracing = Tracing(mode=config.tracing, tracer_provider=tracer_provider)
        self.alerts = Alerts(config.alerts)
        listeners: list[EventListener] = [self.metrics.on_policy_event]
        if self.tracing.active:
            listeners.append(self.tracing.on_event)
        self._listener = _chain(None, listeners)
        silence_parameter_loggers()  # a DEBUG root logger must not print SQL parameters
        self._task: asyncio.Task[None] | None = None

    @property
    def listener(self) -> EventListener:
        """The policy-event listener every pipeline is built with (metrics, and
        tracing when it is active)."""
        return self._listener

    def runner(
        self, pipeline: Pipeline, *, resource: str, kind: str, url: str | None
    ) -> CallRunner:
        """The runner a resource is built with: ``pipeline`` itself, or inside a
        span per call when tracing is active.

        Args:
            kind: ``"sqlite"``, ``"postgresql"``, ``"redis"`` or ``"upstream"``.
            url: the server's URL, for ``server.address`` / ``server.port``
                (``None`` for SQLite; never recorded whole).
        """
        host, port = _address(url) if url is not None else (None, None)
        runner: CallRunner = self.tracing.wrap(
            pipeline, resource=resource, kind=kind, host=host, port=port
        )
        return runner

    def attach(
        self,
        name: str,
        *,
        kind: str,
        pipeline: Pipeline,
        pool: Callable[[], Any] | None = None,
        meter: Any = None,
    ) -> None:
        """Report resource ``name`` (its pipeline, its pool statistics, and an
        upstream's meter) in the metrics."""
        self.metrics.attach(name, kind=kind, pipeline=pipeline, pool=pool, meter=meter)

    def attach_cache(self, stats: Callable[[], Any]) -> None:
        """Report the cache's figures (``TieredCache.stats``) in the metrics."""
        self.metrics.attach_cache(stats)

    async def readiness(
        self,
        databases: Mapping[str, Database],
        upstreams: Mapping[str, Upstream],
        *,
        cache_redis: Callable[[], Awaitable[object]] | None = None,
    ) -> Readiness:
        """Probe every resource in parallel under ``ready_deadline``: each
        database's round trip, each upstream's health request
        (:meth:`~iogate.http.upstream.Upstream.probe`) and the cache's Redis
        tier (``cache_redis``, reported as ``"cache-redis"``)."""
        probes: dict[str, tuple[str, Callable[[], Awaitable[object]]]] = {
            name: (db.kind, db.probe) for name, db in databases.items()
        }
        probes |= {name: ("upstream", up.probe) for name, up in upstreams.items()}
        if cache_redis is not None:
            probes[CACHE_REDIS] = ("redis", cache_redis)
        return await check_readiness(
            probes, deadline_s=self.config.ready_deadline, optional=self.config.ready_optional
        )

    def start(self, upstream_of: Callable[[str], Upstream]) -> None:
        """Start judging the alert rules every ``alert_interval`` seconds (if
        any); ``upstream_of(name)`` finds a webhook's upstream."""
        if self.alerts.rules and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._alert_loop(upstream_of))

    async def stop(self) -> None:
        """Stop the alert loop; flush and stop a span exporter of our own
        (``[observability.tracing]``; off the loop: an export is blocking I/O)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.tracing.exports:
            await asyncio.to_thread(self.tracing.shutdown)

    async def evaluate_alerts(self, upstream_of: Callable[[str], Upstream]) -> None:
        """Judge the rules once; POST each event of a rule with a webhook
        through ``upstream_of(rule's upstream)``."""
        for event, rule in self.alerts.evaluate(self.metrics.stats()):
            if rule.webhook is None:
                continue
            try:
                upstream = upstream_of(rule.webhook.upstream)
                await upstream.post(rule.webhook.path, json=dataclasses.asdict(event))
            except Exception as exc:  # noqa: BLE001 - a failed webhook is logged, never raised
                _log.error("alert webhook failed: %s", type(exc).__name__)

    async def _alert_loop(self, upstream_of: Callable[[str], Upstream]) -> None:
        while True:
            await asyncio.sleep(self.config.alert_interval)
            await self.evaluate_alerts(upstream_of)


def _chain(existing: EventListener | None, listeners: list[EventListener]) -> EventListener:
    every = [existing, *listeners] if existing is not None else list(listeners)
    if len(every) == 1:
        return every[0]

    def listener(event: PolicyEvent) -> None:
        for fn in every:
            fn(event)

    return listener


def _address(url: str) -> tuple[str | None, int | None]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None, None
    return parts.hostname, port
