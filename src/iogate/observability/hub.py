"""The observability of one Gateway: its metrics, tracing, alerts and readiness.

:class:`Observability` is created by :class:`~iogate.gateway.Gateway` from the
``[observability]`` table and owns:

- :attr:`metrics` — the recorder every pipeline calls (:mod:`.metrics`), to
  which :meth:`instrument` attaches each resource's pipeline, pool and
  upstream meter, the cache's statistics, and a policy-event listener
  (breaker transitions; retries as span events);
- :attr:`tracing` — OpenTelemetry spans, wrapping each resource's runner
  only when active (:mod:`.tracing`);
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
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from iogate.observability.alerts import Alerts
from iogate.observability.config import ObservabilityConfig
from iogate.observability.health import Readiness, check_readiness
from iogate.observability.logging import silence_parameter_loggers
from iogate.observability.metrics import Metrics
from iogate.observability.tracing import Tracing
from iogate.policies.events import EventListener, PolicyEvent

if TYPE_CHECKING:
    from iogate.gateway import Gateway
    from iogate.policies import Clock, Pipeline

__all__ = ["Observability"]

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
        silence_parameter_loggers()  # a DEBUG root logger must not print SQL parameters
        self._task: asyncio.Task[None] | None = None

    def instrument(self, gateway: Gateway) -> None:
        """Attach every resource of ``gateway`` to the metrics and, when tracing is
        active, run its calls through a traced runner."""
        for name, db in gateway.databases.items():
            pipeline = gateway.pipeline(name)
            self._listen(pipeline)
            self.metrics.attach(name, kind=db.kind, pipeline=pipeline, pool=db.stats)
            cfg = gateway.config.databases[name]
            host, port = _address(cfg.url) if db.kind != "sqlite" else (None, None)
            # The runner is the backend's; wrapping it here keeps the backends unaware.
            db._runner = self.tracing.wrap(
                db._runner,
                resource=name,
                kind=db.kind,
                host=host,
                port=port,
            )
        for name, upstream in gateway.upstreams.items():
            pipeline = gateway.pipeline(name)
            self._listen(pipeline)
            self.metrics.attach(name, kind="upstream", pipeline=pipeline, meter=upstream.meter)
            upstream._runner = self.tracing.wrap(
                upstream._runner,
                resource=name,
                kind="upstream",
                host=upstream.base_url.host,
                port=upstream.base_url.port,
            )
        stats = getattr(gateway.cache, "stats", None)
        if callable(stats):
            self.metrics.attach_cache(stats)

    def _listen(self, pipeline: Pipeline) -> None:
        listeners: list[EventListener] = [self.metrics.on_policy_event]
        if self.tracing.active:
            listeners.append(self.tracing.on_event)
        for policy in (pipeline.retry, pipeline.circuit_breaker):
            if policy is not None:
                policy.on_event = _chain(policy.on_event, listeners)

    async def readiness(self, gateway: Gateway) -> Readiness:
        """Probe every resource of ``gateway`` in parallel under ``ready_deadline``."""
        probes: dict[str, tuple[str, Callable[[], Awaitable[object]]]] = {
            name: (db.kind, db.probe) for name, db in gateway.databases.items()
        }
        probes |= {name: ("upstream", up.ping) for name, up in gateway.upstreams.items()}
        return await check_readiness(
            probes, deadline_s=self.config.ready_deadline, optional=self.config.ready_optional
        )

    def start(self, gateway: Gateway) -> None:
        """Start judging the alert rules every ``alert_interval`` seconds (if any)."""
        if self.alerts.rules and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._alert_loop(gateway))

    async def stop(self) -> None:
        """Stop the alert loop."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def evaluate_alerts(self, gateway: Gateway) -> None:
        """Judge the rules once; POST each event of a rule with a webhook."""
        for event, rule in self.alerts.evaluate(self.metrics.snapshot()):
            if rule.webhook is None:
                continue
            try:
                upstream = gateway.upstream(rule.webhook.upstream)
                await upstream.post(rule.webhook.path, json=dataclasses.asdict(event))
            except Exception as exc:  # noqa: BLE001 - a failed webhook is logged, never raised
                _log.error("alert webhook failed: %s", type(exc).__name__)

    async def _alert_loop(self, gateway: Gateway) -> None:
        while True:
            await asyncio.sleep(self.config.alert_interval)
            await self.evaluate_alerts(gateway)


def _chain(existing: EventListener | None, listeners: list[EventListener]) -> EventListener:
    every = [existing, *listeners] if existing is not None else list(listeners)

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
