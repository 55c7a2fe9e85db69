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
- opens one SERVER span per incoming HTTP request (:class:`ServerSpans`, from
  :class:`~iogate.server.request_id.RequestIdMiddleware`), continuing the
  caller's ``traceparent`` when it sends one, named ``"<METHOD> <route>"``
  with ``http.request.method``, ``http.route``, ``url.scheme`` and
  ``http.response.status_code`` (an ERROR status for 5xx, per the HTTP
  semantic conventions); the resource spans of the calls it makes are its
  children.

``[observability.tracing]`` (:class:`~iogate.observability.config.TracingConfig`)
makes the Gateway build its own SDK ``TracerProvider`` with a batch span
processor and an OTLP/HTTP or console exporter (the ``otel`` extra), shut
down (flushed) when the gateway closes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

from iogate.errors import ConfigError
from iogate.observability.config import TracingConfig
from iogate.policies.events import PolicyEvent

__all__ = ["ServerSpans", "TracedRunner", "Tracing"]

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

    Raises:
        ConfigError: ``mode="on"`` (or a table) and ``opentelemetry-api`` (or,
            for a table, the SDK or the OTLP exporter) is not installed.
    """

    __slots__ = ("_owned", "_trace", "tracer")

    def __init__(
        self,
        *,
        mode: Literal["auto", "on", "off"] | TracingConfig = "auto",
        tracer_provider: Any = None,
    ) -> None:
        self.tracer: Any = None
        self._trace: Any = None
        self._owned: Any = None
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
            provider = self._owned = _exporting_provider(mode)
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
        """The SERVER span factory of the HTTP face, ``None`` when not tracing."""
        return ServerSpans(self.tracer) if self.tracer is not None else None

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


def _exporting_provider(config: TracingConfig) -> Any:
    """An SDK ``TracerProvider`` exporting through ``config``'s exporter in batches."""
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

        exporter: Any
        if config.exporter == "console":
            exporter = ConsoleSpanExporter(service_name=config.service_name)
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=config.endpoint)
    except ImportError:
        raise ConfigError(
            "[observability.tracing] needs the OpenTelemetry SDK and OTLP exporter: "
            "pip install 'iogate[otel]'"
        ) from None
    provider = TracerProvider(resource=Resource.create({"service.name": config.service_name}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


class ServerSpans:
    """One SERVER span per incoming HTTP request (see the module docstring).

    :meth:`start` opens it through the tracer's ``start_span`` — so the
    provider's sampler decides, and span processors see ``on_start`` — and
    makes it current (the request's resource spans become its children);
    :meth:`end` names it after the matched route, sets the status code and
    ends it. A span the sampler dropped (``is_recording()`` false: the SDK
    gives a ``NonRecordingSpan`` carrying the trace id and an unsampled
    flag) is still made current, so the resource spans under it are dropped
    too (``ParentBased`` sampling) and upstream calls carry the unsampled
    ``traceparent``, but nothing is set on it. Only the
    ``traceparent``/``tracestate`` headers are read from the request; no path
    value, query or header is put on the span.

    The SDK's span is most of the cost (``python -m benchmarks --only
    metrics``, ``otel.sdk_span``: ``Tracer.start_span`` + ``end`` ~12 µs
    alone, ~16 µs with the attributes and a batch processor); around it this
    adds the ``traceparent`` scan and one context ``attach``/``detach``.
    """

    __slots__ = ("_attach", "_ctx_with", "_detach", "_error", "_extract", "_kind", "_tracer")

    def __init__(self, tracer: Any) -> None:
        from opentelemetry import context, propagate, trace
        from opentelemetry.trace import SpanKind, Status, StatusCode

        self._tracer = tracer
        self._kind = SpanKind.SERVER
        self._extract = propagate.extract
        self._attach = context.attach
        self._detach = context.detach
        self._ctx_with = trace.set_span_in_context
        self._error = Status(StatusCode.ERROR)

    def start(self, scope: Any) -> tuple[Any, Any]:
        """Open the span of the request of ASGI ``scope``; returns what :meth:`end` takes."""
        parent = None
        for key, _value in scope["headers"]:
            if key == b"traceparent":
                carrier = {
                    k.decode("latin-1"): v.decode("latin-1")
                    for k, v in scope["headers"]
                    if k in (b"traceparent", b"tracestate")
                }
                parent = self._extract(carrier)
                break
        method = scope.get("method", "")
        span = self._tracer.start_span(
            method,
            context=parent,
            kind=self._kind,
            attributes={"http.request.method": method, "url.scheme": scope.get("scheme", "http")},
        )
        return span, self._attach(self._ctx_with(span, parent))

    def end(self, started: tuple[Any, Any], scope: Any, status: int) -> None:
        """End the span: its name and ``http.route`` from the matched route,
        ``http.response.status_code`` (when an answer started), ERROR for 5xx."""
        span, token = started
        self._detach(token)
        if not span.is_recording():
            span.end()  # sampled out: nothing to name or set (end is a no-op)
            return
        route = getattr(scope.get("route"), "path", None)
        if route is not None:
            span.update_name(f"{scope.get('method', '')} {route}")
            span.set_attribute("http.route", route)
        if status:
            # set_attribute per key: set_attributes cleans the whole mapping
            # as a nested value first, which costs more for two or three keys
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_attribute("error.type", str(status))
                span.set_status(self._error)
        span.end()
