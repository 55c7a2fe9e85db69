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
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

from iogate.errors import ConfigError
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
            ``"off"``.
        tracer_provider: an OpenTelemetry ``TracerProvider`` (default: the
            global one).

    Raises:
        ConfigError: ``mode="on"`` and ``opentelemetry-api`` is not installed.
    """

    __slots__ = ("_trace", "tracer")

    def __init__(
        self, *, mode: Literal["auto", "on", "off"] = "auto", tracer_provider: Any = None
    ) -> None:
        self.tracer: Any = None
        self._trace: Any = None
        if mode == "off":
            return
        try:
            from opentelemetry import trace
        except ImportError:
            if mode == "on":
                raise ConfigError(
                    "observability.tracing = 'on' needs OpenTelemetry: pip install 'iogate[otel]'"
                ) from None
            return
        provider = tracer_provider
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
