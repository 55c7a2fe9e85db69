"""iogate.observability: what every call records, and how it is read.

:class:`Metrics` (latency histograms per resource, operation and outcome,
since start and over the last minute and five minutes) and its typed
:class:`MetricsSnapshot`; Prometheus export, health, tracing, logging and
alerts live in the modules beside it. :func:`monitored` records a user's
own coroutine into the same metrics (``@iogate.observability.monitored``).
"""

from iogate.observability._monitored import monitored
from iogate.observability.metrics import Metrics, MetricsSnapshot

__all__ = ["Metrics", "MetricsSnapshot", "monitored"]
