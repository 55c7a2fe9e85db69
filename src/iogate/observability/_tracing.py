"""OpenTelemetry spans per operation (the optional extra ``iogate[otel]``).

:class:`Tracing` is built once per Gateway. It imports ``opentelemetry`` at
construction — never per call — and when it is absent (or ``tracing =
"off"``, or ``"auto"`` with no tracer provider configured) it wraps nothing:
the resources keep calling their pipeline directly, so tracing costs nothing.

When active, each resource's runner is a :class:`TracedRunner`: one CLIENT
span around the whole pipeline call (retries included), named and
attributed per the OpenTelemetry semantic conventions:

- databases: span ``"<operation> <resource>"``, ``db.system`` (``sqlite``,
  ``postgresql``, ``redis``), ``db.operation.name``, ``db.namespace`` (the
  resource name), ``server.address`` / ``server.port`` (PostgreSQL, Redis);
- upstreams: span ``"<METHOD>"``, ``http.request.method``,
  ``server.address``, ``server.port``, ``http.response.status_code``;
- ``error.type`` (the error class name) and an ERROR status when the call
  raised; every scheduled retry is a span event ``"retry"`` with
  ``iogate.retry.attempt``, ``iogate.retry.delay_s`` and ``error.type``.

No SQL text, parameter, URL path or header is put on a span.

When active, the gateway also:

- puts the W3C trace context (``traceparent``, ``tracestate``; the globally
  configured propagator, W3C Trace Context by default) on every upstream
  request, from an ``aiohttp.TraceConfig`` hook (:meth:`Tracing.trace_configs`)
  run while the call's CLIENT span is current — the upstream's server joins
  the trace;
- opens one SERVER span per incoming HTTP request
  (:mod:`iogate.observability._server_spans`, from
  :class:`~iogate.server.request_id.RequestIdMiddleware`), continuing the
  caller's ``traceparent`` when it sends one; the resource spans of the
  calls it makes are its children.

``[observability.tracing]`` (:class:`~iogate.observability.config.TracingConfig`)
makes the Gateway build its own SDK ``TracerProvider`` with a batch span
processor and an OTLP/HTTP or console exporter (the ``otel`` extra), shut
down (flushed) when the gateway closes; its SERVER spans are handed to that
processor finished (:class:`~iogate.observability._server_spans.DirectServerSpans`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

from iogate.errors import ConfigError
from iogate.observability._server_spans import DirectServerSpans, SdkServerSpans, ServerSpans
from iogate.observability.config import TracingConfig
from iogate.policies.events import PolicyEvent

__all__ = ["TracedRunner", "Tracing"]

T = TypeVar("T")


class TracedRunner:
    """A :class:`~iogate.databases.base.CallRunner` that runs each call of
    ``runner`` inside a span (see the module docstring)."""

    __slots__ = ("_attrs", "_db", "_kind", "_name", "_runner", "_status", "_tracer")

    def __init__(
        self, runner: Any, tracer: Any, *, resource: str, kind: str, attributes: dict[str, Any]
    ) -> None:
        from opentelemetry.trace import SpanKind, Status, StatusCode

        self._runner = runner
        self._tracer = tracer
        self._name = resource
        self._db = kind != "upstream"
        self._kind = SpanKind.CLIENT
        self._status = (Status, StatusCode.ERROR)
        self._attrs = attributes

    async def run(
        self, fn: Callable[[], Awaitable[T]], /, *, operation: str, idempotent: bool = True
    ) -> T:
        """Run ``fn`` through the wrapped runner inside one span."""
        attrs = dict(self._attrs)
        if self._db:
            attrs["db.operation.name"] = operation
            name = f"{operation} {self._name}"
        else:
            attrs["http.request.method"] = operation
            name = operation
        with self._tracer.start_as_current_span(
            name,
            kind=self._kind,
            attributes=attrs,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                result: T = await self._runner.run(fn, operation=operation, idempotent=idempotent)
            except BaseException as exc:
                span.set_attribute("error.type", type(exc).__name__)
                status = getattr(exc, "status", None)
                if isinstance(status, int) and not self._db:
                    span.set_attribute("http.response.status_code", status)
                span.set_status(self._status[0](self._status[1]))
                raise
            status = getattr(result, "status", None)
            if isinstance(status, int) and not self._db:
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_attribute("error.type", str(status))
                    span.set_status(self._status[0](self._status[1]))
            return result


class Tracing:
    """Whether and how a Gateway traces its calls.

    Args:
        mode: ``"auto"`` (trace when OpenTelemetry is installed and a tracer
            provider is given or configured globally), ``"on"`` (require it),
            ``"off"``, or a :class:`~iogate.observability.config.TracingConfig`
            (trace, and export through a provider of our own unless
            ``tracer_provider`` is given).
        tracer_provider: an OpenTelemetry ``TracerProvider`` (default: the
            global one).
        span_exporter: with a table, an SDK ``SpanExporter`` to export
            through instead of the one the table names (a custom backend,
            or an in-memory exporter in tests).

    Raises:
        ConfigError: ``mode="on"`` (or a table) and ``opentelemetry-api`` (or,
            for a table, the SDK or the OTLP exporter) is not installed.
    """

    __slots__ = ("_owned", "_processor", "_trace", "tracer")

    def __init__(
        self,
        *,
        mode: Literal["auto", "on", "off"] | TracingConfig = "auto",
        tracer_provider: Any = None,
        span_exporter: Any = None,
    ) -> None:
        self.tracer: Any = None
        self._trace: Any = None
        self._owned: Any = None
        self._processor: Any = None
        if mode == "off":
            return
        try:
            from opentelemetry import trace
        except ImportError:
            if mode != "auto":
                raise ConfigError(
                    "observability.tracing needs OpenTelemetry: pip install 'iogate[otel]'"
                ) from None
            return
        provider = tracer_provider
        if provider is None and isinstance(mode, TracingConfig):
            provider, self._processor = _exporting_provider(mode, span_exporter)
            self._owned = provider
        if provider is None:
            provider = trace.get_tracer_provider()
            if mode == "auto" and isinstance(
                provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider
            ):
                return  # nothing would record the spans
        from iogate import __version__

        self._trace = trace
        self.tracer = provider.get_tracer("iogate", __version__)

    @property
    def active(self) -> bool:
        """Whether calls are traced."""
        return self.tracer is not None

    @property
    def exports(self) -> bool:
        """Whether the spans go through a provider built here (``[observability.tracing]``)."""
        return self._owned is not None

    def trace_configs(self) -> tuple[Any, ...]:
        """The ``aiohttp.TraceConfig`` hooks an upstream's session is built with:
        one that injects the current trace context into every request's
        headers when tracing is active, else none (no hook, no cost)."""
        if self.tracer is None:
            return ()
        import aiohttp
        from opentelemetry.propagate import inject

        async def on_request_start(
            session: Any, context: Any, params: aiohttp.TraceRequestStartParams
        ) -> None:
            inject(params.headers)  # the call's CLIENT span is current here

        config = aiohttp.TraceConfig()
        config.on_request_start.append(on_request_start)
        return (config,)

    def server_spans(self) -> ServerSpans | None:
        """The SERVER span factory of the HTTP face, ``None`` when not tracing:
        the direct one over the provider built here, the SDK's path for any
        other (:mod:`iogate.observability._server_spans`)."""
        if self.tracer is None:
            return None
        if self._owned is not None:
            from opentelemetry.sdk.trace import SpanLimits, Tracer
            from opentelemetry.sdk.util.instrumentation import InstrumentationScope

            from iogate import __version__

            # not OTEL_SDK_DISABLED's no-op tracer, and span limits (from the
            # environment, as the provider reads them) too loose to cut a span
            if isinstance(self.tracer, Tracer) and DirectServerSpans.within(SpanLimits()):
                scope = InstrumentationScope("iogate", __version__)  # as get_tracer names it
                return DirectServerSpans(self._owned, self._processor, scope)
        return SdkServerSpans(self.tracer)

    def shutdown(self) -> None:
        """Flush and stop the provider built for ``[observability.tracing]``
        (nothing when the provider was given or global)."""
        owned, self._owned = self._owned, None
        if owned is not None:
            owned.shutdown()

    def wrap(
        self, runner: Any, *, resource: str, kind: str, host: str | None, port: int | None
    ) -> Any:
        """``runner`` itself when tracing is off, else a :class:`TracedRunner` over it.

        Args:
            kind: ``"sqlite"``, ``"postgresql"``, ``"redis"`` or ``"upstream"``.
            host, port: the server's address (``None`` for SQLite).
        """
        if self.tracer is None:
            return runner
        attrs: dict[str, Any] = {"iogate.resource": resource}
        if kind != "upstream":
            attrs["db.system"] = kind
            attrs["db.namespace"] = resource
        if host:
            attrs["server.address"] = host
        if port:
            attrs["server.port"] = port
        return TracedRunner(runner, self.tracer, resource=resource, kind=kind, attributes=attrs)

    def on_event(self, event: PolicyEvent) -> None:
        """A policy listener: a scheduled retry becomes an event on the current span."""
        if self._trace is None or not hasattr(event, "delay_s"):
            return
        span = self._trace.get_current_span()
        span.add_event(
            "retry",
            {
                "iogate.retry.attempt": getattr(event, "attempt", 0),
                "iogate.retry.delay_s": getattr(event, "delay_s", 0.0),
                "error.type": str(getattr(event, "error", "")),
            },
        )


def _exporting_provider(config: TracingConfig, exporter: Any = None) -> tuple[Any, Any]:
    """An SDK ``TracerProvider`` exporting through ``config``'s exporter (or
    ``exporter``) in batches, and its ``BatchSpanProcessor``."""
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

        if exporter is None and config.exporter == "console":
            exporter = ConsoleSpanExporter(service_name=config.service_name)
        elif exporter is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=config.endpoint)
    except ImportError:
        raise ConfigError(
            "[observability.tracing] needs the OpenTelemetry SDK and OTLP exporter: "
            "pip install 'iogate[otel]'"
        ) from None
    provider = TracerProvider(resource=Resource.create({"service.name": config.service_name}))
    processor = BatchSpanProcessor(exporter)
    provider.add_span_processor(processor)
    return provider, processor
