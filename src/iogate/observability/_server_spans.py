"""One SERVER span per incoming HTTP request (OpenTelemetry HTTP server
semantic conventions), opened and ended by
:class:`~iogate.server.request_id.RequestIdMiddleware`.

Every span is named ``"<METHOD> <route>"`` (the matched route's template, or
the method alone when no route matched) and carries ``http.request.method``,
``url.scheme``, ``http.route`` and ``http.response.status_code``; a 5xx answer
is an ERROR with ``error.type`` set to the status (the semantic conventions
leave 4xx UNSET on a server). It continues the caller's ``traceparent`` /
``tracestate`` (the globally configured propagator, W3C Trace Context by
default) and is current while the request runs, so the request's resource
spans are its children and its upstream calls carry its trace. Only the
``traceparent`` / ``tracestate`` headers are read; no path value, query or
header is put on a span.

Two factories, one interface (:class:`ServerSpans`):

- :class:`SdkServerSpans`, for a tracer provider given to the Gateway or
  configured globally: each span goes through ``Tracer.start_span`` and
  ``Span.end``, so any sampler and any span processor (``on_start``
  included) sees it as it would any span. The SDK's recording span is
  built for changes while it runs — a lock, bounded attributes, events,
  links — and ``end`` copies it into a ``ReadableSpan``: ~16 µs per request.
- :class:`DirectServerSpans`, for the provider the Gateway builds itself
  (``[observability.tracing]``), whose only span processor is the
  ``BatchSpanProcessor`` it added (``on_start`` a no-op): a SERVER span's
  attributes are all known when the answer has been sent, so it is made
  current as a ``NonRecordingSpan`` over its ``SpanContext`` while the
  request runs and built once, finished, as the SDK's ``ReadableSpan``
  handed to that processor's ``on_end`` at the end — the object the SDK's
  own ``end`` hands it. The provider's ``id_generator``, ``resource`` and
  ``sampler`` are used as the SDK uses them; the default
  ``parentbased_always_on`` sampler's decision (follow the parent's sampled
  flag, sample a root) is taken inline, any other sampler is asked through
  ``should_sample`` as ``start_span`` asks it. ~4 µs per request
  (``make bench ONLY=metrics``, ``iogate.server_span``).

A request the sampler drops is still made current with an unsampled
context, so its resource spans are dropped too (``ParentBased``) and its
upstream calls carry the unsampled ``traceparent``; nothing is recorded.
"""

from __future__ import annotations

import random
import time
from typing import Any, Final, Protocol

__all__ = ["DirectServerSpans", "SdkServerSpans", "ServerSpans"]

_time_ns = time.time_ns
_getrandbits = random.getrandbits
#: request methods whose span shapes :class:`DirectServerSpans` keeps (RFC 9110, RFC 5789)
_STANDARD_METHODS: Final = frozenset(
    ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
)
#: at most this many (method, scheme, route, status) shapes are kept
_MAX_SHAPES: Final = 4096


class ServerSpans(Protocol):
    """What :class:`~iogate.server.request_id.RequestIdMiddleware` calls per request."""

    def start(self, scope: Any) -> Any:
        """Open the span of the request of ASGI ``scope`` and make it current;
        returns what :meth:`end` takes."""

    def end(self, started: Any, scope: Any, status: int) -> None:
        """End the span opened by :meth:`start`: ``status`` is the answer's
        HTTP status, 0 when no answer started."""


def _carrier(headers: Any) -> dict[str, str] | None:
    """The ``traceparent`` / ``tracestate`` of ASGI ``headers`` as a
    propagator carrier, ``None`` (one scan, no allocation) without a
    ``traceparent``."""
    for key, _value in headers:
        if key == b"traceparent":
            return {
                k.decode("latin-1"): v.decode("latin-1")
                for k, v in headers
                if k in (b"traceparent", b"tracestate")
            }
    return None


class SdkServerSpans:
    """SERVER spans through the tracer's ``start_span`` (see the module docstring).

    Args:
        tracer: an OpenTelemetry ``Tracer`` (any implementation).
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
        carrier = _carrier(scope["headers"])
        parent = self._extract(carrier) if carrier is not None else None
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


class DirectServerSpans:
    """SERVER spans built once, finished, for the gateway's own provider (see
    the module docstring).

    Args:
        provider: the SDK ``TracerProvider`` the gateway built.
        processor: its only span processor (a ``BatchSpanProcessor``): each
            sampled span is handed to its ``on_end``.
        scope: the ``InstrumentationScope`` of the gateway's tracer.
    """

    __slots__ = (
        "_attach",
        "_current",
        "_detach",
        "_error",
        "_extract",
        "_ids",
        "_make",
        "_non_recording",
        "_on_end",
        "_parent_of",
        "_random",
        "_resource",
        "_sampled",
        "_sampler",
        "_scope",
        "_server",
        "_shapes",
        "_span_context",
        "_unsampled",
        "_unset",
        "_with_span",
    )

    def __init__(self, provider: Any, processor: Any, scope: Any) -> None:
        from opentelemetry import context, propagate, trace
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
        from opentelemetry.sdk.trace.sampling import DEFAULT_ON
        from opentelemetry.trace import (
            NonRecordingSpan,
            SpanContext,
            SpanKind,
            Status,
            StatusCode,
            TraceFlags,
        )

        self._ids = provider.id_generator
        self._random = type(self._ids) is RandomIdGenerator
        self._shapes: dict[tuple[str, str, str | None, int], tuple[str, dict[str, Any], Any]] = {}
        self._resource = provider.resource
        # None: the default sampler, decided inline (see the module docstring)
        self._sampler = None if provider.sampler is DEFAULT_ON else provider.sampler
        self._on_end = processor.on_end
        self._scope = scope
        self._make = ReadableSpan
        self._span_context = SpanContext
        self._non_recording = NonRecordingSpan
        self._server = SpanKind.SERVER
        self._sampled = TraceFlags(TraceFlags.SAMPLED)
        self._unsampled = TraceFlags(TraceFlags.DEFAULT)
        self._error = Status(StatusCode.ERROR)
        self._unset = Status(StatusCode.UNSET)
        self._extract = propagate.extract
        self._parent_of = trace.get_current_span
        self._current = context.get_current
        self._with_span = trace.set_span_in_context
        self._attach = context.attach
        self._detach = context.detach

    @staticmethod
    def within(limits: Any) -> bool:
        """Whether SDK ``SpanLimits`` ``limits`` leave every span of this
        factory whole (at most 5 attributes, none cut short): the SDK's span
        would apply them, these spans do not."""
        count = limits.max_span_attributes
        return limits.max_span_attribute_length is None and (count is None or count >= 5)

    def start(self, scope: Any) -> tuple[Any, Any, Any, int, Any]:
        """Make the request's span context current; returns what :meth:`end` takes."""
        started = _time_ns()
        carrier = _carrier(scope["headers"])
        # the caller's context, or the current one (read once: the span's
        # parent and the context the span is set in)
        parent_context = self._extract(carrier) if carrier is not None else self._current()
        found = self._parent_of(parent_context).get_span_context()
        parent = found if found.is_valid else None
        ids = self._ids
        if parent is not None:
            trace_id = parent.trace_id
        elif self._random:  # RandomIdGenerator's draw, inline: nonzero 128 bits
            trace_id = _getrandbits(128) or ids.generate_trace_id()
        else:
            trace_id = ids.generate_trace_id()
        sampler = self._sampler
        extra = None
        if sampler is None:  # ParentBased(ALWAYS_ON)
            sampled = parent is None or parent.trace_flags.sampled
            trace_state = parent.trace_state if parent is not None else None
        else:
            method = scope.get("method", "")
            decision = sampler.should_sample(
                parent_context,
                trace_id,
                method,
                self._server,
                {"http.request.method": method, "url.scheme": scope.get("scheme", "http")},
            )
            sampled = decision.decision.is_sampled()
            trace_state = decision.trace_state
            extra = decision.attributes or None
        if self._random:
            span_id = _getrandbits(64) or ids.generate_span_id()
        else:
            span_id = ids.generate_span_id()
        span_context = self._span_context(
            trace_id,
            span_id,
            False,
            self._sampled if sampled else self._unsampled,
            trace_state,
        )
        token = self._attach(self._with_span(self._non_recording(span_context), parent_context))
        if not sampled:
            return None, None, token, 0, None
        return span_context, parent, token, started, extra

    def end(self, started: tuple[Any, Any, Any, int, Any], scope: Any, status: int) -> None:
        """Hand the finished span to the processor (nothing when sampled out)."""
        span_context, parent, token, start_time, extra = started
        self._detach(token)
        if span_context is None:  # sampled out
            return
        # the route's template, not the route: a route object need not be hashable
        key = (
            scope["method"],
            scope.get("scheme", "http"),
            getattr(scope.get("route"), "path", None),
            status,
        )
        shape = self._shapes.get(key)
        if shape is None:
            shape = self._shape(*key)
        name, attributes, state = shape
        if extra is not None:
            attributes = {**attributes, **extra}
        # positional, in the order of ReadableSpan's signature (SDK >= 1.11:
        # name, context, parent, resource, attributes, events, links, kind,
        # instrumentation_info, status, start_time, end_time,
        # instrumentation_scope): keywords cost ~0.6 us more per span
        self._on_end(
            self._make(
                name,
                span_context,
                parent,
                self._resource,
                attributes,
                (),
                (),
                self._server,
                None,
                state,
                start_time,
                _time_ns(),
                self._scope,
            )
        )

    def _shape(
        self, method: str, scheme: str, path: str | None, status: int
    ) -> tuple[str, dict[str, Any], Any]:
        """The name, attributes and status of a span of ``method`` on the route
        of template ``path`` (``None`` when no route matched),
        answered ``status``, kept for the next such span when ``method`` is a
        standard one (a client's own method names can't grow the table). The
        attributes are shared by those spans: a ``ReadableSpan`` gives them
        out as a read-only mapping."""
        attributes: dict[str, Any] = {"http.request.method": method, "url.scheme": scheme}
        name = method
        if path is not None:
            name = f"{method} {path}"
            attributes["http.route"] = path
        state = self._unset
        if status:
            attributes["http.response.status_code"] = status
            if status >= 500:
                attributes["error.type"] = str(status)
                state = self._error
        shape = (name, attributes, state)
        if method in _STANDARD_METHODS and len(self._shapes) < _MAX_SHAPES:
            self._shapes[(method, scheme, path, status)] = shape
        return shape
