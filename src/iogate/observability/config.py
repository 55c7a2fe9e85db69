"""``[observability]``: slow-operation log, insights, alerts, logs, readiness, tracing.

::

    [observability]
    slow_threshold = 1.0            # seconds; slower calls are logged and listed in /v1/stats
    insight_p99 = 1.0               # seconds; a p99 above this over 5 minutes is an insight
    insight_success_rate = 0.95     # a success rate below this over 5 minutes is an insight
    insight_min_calls = 10          # fewer calls in the window: no insight
    log_format = "json"             # "json" (one object per line) or "text"
    log_level = "INFO"
    ready_deadline = 2.0            # seconds /ready waits for every ping
    ready_optional = ["cache-redis"]   # resources whose failure does not make /ready 503
    tracing = "auto"                # OpenTelemetry spans: "auto" (if installed), "on", "off"
                                    # or a table (iogate serve exports the spans itself):
    # [observability.tracing]
    # exporter = "otlp"             # "otlp" (OTLP/HTTP protobuf) or "console" (stdout)
    # endpoint = "http://127.0.0.1:4318/v1/traces"   # OTLP only; default: the SDK's
    # service_name = "iogate"       # the resource's service.name
    alert_interval = 10.0           # seconds between alert evaluations

    [[observability.alerts]]
    resource = "pg"                 # or "*" for every resource
    max_error_rate = 0.05           # over the window, with at least min_calls calls
    max_p99 = 0.5                   # seconds
    window = "1m"                   # "1m" or "5m"
    min_calls = 20
    webhook = { upstream = "ops", path = "/alerts" }   # optional POST of each event
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["AlertRuleConfig", "ObservabilityConfig", "TracingConfig", "WebhookConfig"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WebhookConfig(_Model):
    """Where alert events are POSTed: a configured upstream and a path under it."""

    upstream: str
    path: str = "/"


class AlertRuleConfig(_Model):
    """One alert rule: thresholds on a resource's error rate and/or p99 latency.

    Attributes:
        resource: a resource name, or ``"*"`` for each resource.
        max_error_rate: fires when the share of failed calls in the window is above (0..1).
        max_p99: fires when the p99 latency in the window is above this many seconds.
        window: ``"1m"`` (last minute) or ``"5m"`` (last five minutes).
        min_calls: a window with fewer calls is not judged.
        webhook: also POST each event (JSON) to this upstream.
    """

    resource: str = "*"
    max_error_rate: float | None = Field(default=None, ge=0, le=1)
    max_p99: float | None = Field(default=None, gt=0)
    window: Literal["1m", "5m"] = "1m"
    min_calls: int = Field(default=20, ge=1)
    webhook: WebhookConfig | None = None

    @model_validator(mode="after")
    def _one_threshold(self) -> AlertRuleConfig:
        if self.max_error_rate is None and self.max_p99 is None:
            raise ValueError("an alert rule needs max_error_rate and/or max_p99")
        return self


class TracingConfig(_Model):
    """``[observability.tracing]``: trace every call and request and export the spans.

    Attributes:
        exporter: ``"otlp"`` (OTLP over HTTP/protobuf, the ``otel`` extra's
            ``opentelemetry-exporter-otlp-proto-http``) or ``"console"`` (one
            JSON document per span on stdout, for a first look).
        endpoint: the OTLP collector's traces URL (default: the SDK's,
            ``$OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or
            ``http://localhost:4318/v1/traces``); only with ``otlp``.
        service_name: ``service.name`` of the spans' resource.
    """

    exporter: Literal["otlp", "console"] = "otlp"
    endpoint: str | None = None
    service_name: str = Field(default="iogate", min_length=1)

    @model_validator(mode="after")
    def _endpoint_for_otlp(self) -> TracingConfig:
        if self.endpoint is not None and self.exporter != "otlp":
            raise ValueError("observability.tracing.endpoint is only for exporter = 'otlp'")
        return self


class ObservabilityConfig(_Model):
    """The ``[observability]`` table (see the module docstring for its shape)."""

    slow_threshold: float = Field(default=1.0, gt=0)
    insight_p99: float = Field(default=1.0, gt=0)
    insight_success_rate: float = Field(default=0.95, ge=0, le=1)
    insight_min_calls: int = Field(default=10, ge=1)
    log_format: Literal["json", "text"] = "json"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    ready_deadline: float = Field(default=2.0, gt=0, le=60)
    ready_optional: list[str] = Field(default_factory=list)
    tracing: Literal["auto", "on", "off"] | TracingConfig = "auto"
    alert_interval: float = Field(default=10.0, gt=0)
    alerts: list[AlertRuleConfig] = Field(default_factory=list)
