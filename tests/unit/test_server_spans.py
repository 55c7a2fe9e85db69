"""SERVER spans of :class:`RequestIdMiddleware` (issue 21): named after the
route, parents of the spans the request makes, the caller's ``traceparent``
and ``tracestate`` continued, 5xx an ERROR, and nothing recorded for a
request the sampler drops."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from opentelemetry import propagate
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, Sampler
from opentelemetry.trace import SpanKind, StatusCode

from iogate.observability._tracing import Tracing
from iogate.observability.config import TracingConfig
from iogate.server.request_id import RequestIdMiddleware

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


class _Route:
    path = "/v1/things/{name}"


def _serve(
    status: int, headers: Sequence[tuple[bytes, bytes]] = (), *, sampler: Sampler | None = None
) -> tuple[list[ReadableSpan], dict[str, str]]:
    """One request through the middleware with tracing on; the finished
    spans, and the headers an upstream call made in the request would carry."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler) if sampler is not None else TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    child_tracer = provider.get_tracer("test")
    outgoing: dict[str, str] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scope["route"] = _Route()
        with child_tracer.start_as_current_span("SELECT main", kind=SpanKind.CLIENT):
            propagate.inject(outgoing)
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(_: Any) -> None:
        return None

    spans = Tracing(mode="on", tracer_provider=provider).server_spans()
    middleware = RequestIdMiddleware(app, spans=spans)
    scope = {"type": "http", "method": "GET", "path": "/v1/things/a", "headers": list(headers)}
    asyncio.run(middleware(scope, receive, send))
    return list(exporter.get_finished_spans()), outgoing


def test_the_server_span_is_named_after_the_route_and_parents_the_calls() -> None:
    (child, server), _ = _serve(200)
    assert (server.name, server.kind) == ("GET /v1/things/{name}", SpanKind.SERVER)
    assert dict(server.attributes or {}) == {
        "http.request.method": "GET",
        "url.scheme": "http",
        "http.route": "/v1/things/{name}",
        "http.response.status_code": 200,
    }
    assert server.status.status_code == StatusCode.UNSET
    assert server.parent is None
    assert child.parent is not None
    assert child.parent.span_id == server.context.span_id
    assert server.start_time is not None
    assert server.end_time is not None
    assert child.start_time is not None
    assert server.start_time <= child.start_time


def test_a_5xx_answer_is_an_error() -> None:
    (_, server), _ = _serve(503)
    attributes = server.attributes or {}
    assert (attributes["http.response.status_code"], attributes["error.type"]) == (503, "503")
    assert server.status.status_code == StatusCode.ERROR


def test_the_callers_traceparent_and_tracestate_are_continued() -> None:
    headers = [
        (b"traceparent", f"00-{CALLER_TRACE}-{CALLER_SPAN}-01".encode()),
        (b"tracestate", b"vendor=abc"),
    ]
    (_, server), outgoing = _serve(200, headers)
    assert format(server.context.trace_id, "032x") == CALLER_TRACE
    assert server.parent is not None
    assert server.parent.is_remote
    assert format(server.parent.span_id, "016x") == CALLER_SPAN
    assert server.context.trace_state.get("vendor") == "abc"
    assert outgoing["tracestate"] == "vendor=abc"


def test_a_request_the_sampler_drops_records_nothing() -> None:
    spans, outgoing = _serve(200, sampler=ALWAYS_OFF)
    assert spans == []
    flags = outgoing["traceparent"].rsplit("-", 1)[1]
    assert int(flags, 16) & 1 == 0  # unsampled: the calls under it are dropped too
    # the caller's unsampled traceparent is honoured (ParentBased, the default)
    unsampled = [(b"traceparent", f"00-{CALLER_TRACE}-{CALLER_SPAN}-00".encode())]
    spans, outgoing = _serve(500, unsampled)
    assert spans == []
    version, trace_id, _parent, flags = outgoing["traceparent"].split("-")
    assert (version, trace_id, int(flags, 16) & 1) == ("00", CALLER_TRACE, 0)


def test_the_provider_of_the_tracing_table_reads_the_sampler_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.1")
    tracing = Tracing(mode=TracingConfig(exporter="console"))
    try:
        assert "TraceIdRatioBased{0.1}" in tracing.tracer.sampler.get_description()
    finally:
        tracing.shutdown()
