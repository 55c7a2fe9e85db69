"""iogate.observability: what every call records, and how it is read.

:class:`Metrics` (latency histograms per resource, operation and outcome,
since start and over the last minute and five minutes) and its typed
statistics (:meth:`Metrics.stats` returns a :class:`MetricsSnapshot`), the
``[observability]`` configuration models, the alert events and an upstream's
token usage. Prometheus export, health, tracing, logging and the alert engine
are implementation modules (``_name.py``) that the gateway wires.
:func:`monitored` records a user's own coroutine into the same metrics
(``@iogate.observability.monitored``).
"""

from iogate.observability._alerts import AlertEvent
from iogate.observability._meters import TokenUsage
from iogate.observability._monitored import monitored
from iogate.observability.config import (
    AlertRuleConfig,
    ObservabilityConfig,
    TracingConfig,
    WebhookConfig,
)
from iogate.observability.metrics import (
    Insight,
    LatencySummary,
    Metrics,
    MetricsSnapshot,
    OperationStats,
    ResourceStats,
    SlowOperation,
    WindowStats,
)

__all__ = [
    "AlertEvent",
    "AlertRuleConfig",
    "Insight",
    "LatencySummary",
    "Metrics",
    "MetricsSnapshot",
    "ObservabilityConfig",
    "OperationStats",
    "ResourceStats",
    "SlowOperation",
    "TokenUsage",
    "TracingConfig",
    "WebhookConfig",
    "WindowStats",
    "monitored",
]
