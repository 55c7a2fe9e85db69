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
from opentelemetry.trace import SpanKind, StatusCode
from starlette.routing import Route

from iogate.observability._server_spans import DirectServerSpans, SdkServerSpans
from iogate.observability._tracing import Tracing
from iogate.observability.config import TracingConfig
from iogate.server.request_id import RequestIdMiddleware

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


async def _endpoint(_: Any) -> None:
    return None


#: a real route (Starlette's routes compare by value, so some versions make them unhashable)
_ROUTE = Route("/v1/things/{name}", _endpoint)


@pytest.fixture(params=["sdk", "direct"])
def factory(request: pytest.FixtureRequest) -> str:
    """``sdk``: a provider given to the gateway (``SdkServerSpans``);
    ``direct``: the provider of the tracing table (``DirectServerSpans``)."""
    return str(request.param)


def _serve(
    factory: str, status: int, headers: Sequence[tuple[bytes, bytes]] = ()
) -> tuple[list[ReadableSpan], dict[str, str]]:
    """One request through the middleware with tracing on (the sampler from
    ``OTEL_TRACES_SAMPLER``, as both providers read it); the finished spans,
    and the headers an upstream call made in the request would carry."""
    exporter = InMemorySpanExporter()
    if factory == "sdk":
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracing = Tracing(mode="on", tracer_provider=provider)
    else:
        tracing = Tracing(mode=TracingConfig(exporter="console"), span_exporter=exporter)
    child_tracer = tracing.tracer
    outgoing: dict[str, str] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scope["route"] = _ROUTE
        with child_tracer.start_as_current_span("SELECT main", kind=SpanKind.CLIENT):
            propagate.inject(outgoing)
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(_: Any) -> None:
        return None

    spans = tracing.server_spans()
    assert type(spans) is (SdkServerSpans if factory == "sdk" else DirectServerSpans)
    middleware = RequestIdMiddleware(app, spans=spans)
    scope = {"type": "http", "method": "GET", "path": "/v1/things/a", "headers": list(headers)}
    asyncio.run(middleware(scope, receive, send))
    tracing.shutdown()  # the table's batch processor: flushed
    return list(exporter.get_finished_spans()), outgoing


def test_the_server_span_is_named_after_the_route_and_parents_the_calls(factory: str) -> None:
    (child, server), _ = _serve(factory, 200)
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


def test_a_5xx_answer_is_an_error(factory: str) -> None:
    (_, server), _ = _serve(factory, 503)
    attributes = server.attributes or {}
    assert (attributes["http.response.status_code"], attributes["error.type"]) == (503, "503")
    assert server.status.status_code == StatusCode.ERROR


def test_the_callers_traceparent_and_tracestate_are_continued(factory: str) -> None:
    headers = [
        (b"traceparent", f"00-{CALLER_TRACE}-{CALLER_SPAN}-01".encode()),
        (b"tracestate", b"vendor=abc"),
    ]
    (_, server), outgoing = _serve(factory, 200, headers)
    assert format(server.context.trace_id, "032x") == CALLER_TRACE
    assert server.parent is not None
    assert server.parent.is_remote
    assert format(server.parent.span_id, "016x") == CALLER_SPAN
    assert server.context.trace_state.get("vendor") == "abc"
    assert outgoing["tracestate"] == "vendor=abc"


def test_a_request_the_sampler_drops_records_nothing(
    factory: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    spans, outgoing = _serve(factory, 200)
    assert spans == []
    flags = outgoing["traceparent"].rsplit("-", 1)[1]
    assert int(flags, 16) & 1 == 0  # unsampled: the calls under it are dropped too
    # the caller's unsampled traceparent is honoured (ParentBased, the default)
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_always_on")
    unsampled = [(b"traceparent", f"00-{CALLER_TRACE}-{CALLER_SPAN}-00".encode())]
    spans, outgoing = _serve(factory, 500, unsampled)
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


def test_a_ratio_sampler_is_asked_and_a_sampled_caller_still_wins(
    factory: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sampler other than the default goes through ``should_sample``."""
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0")
    spans, outgoing = _serve(factory, 200)
    assert spans == []
    assert int(outgoing["traceparent"].rsplit("-", 1)[1], 16) & 1 == 0
    sampled = [(b"traceparent", f"00-{CALLER_TRACE}-{CALLER_SPAN}-01".encode())]
    (_, server), _ = _serve(factory, 200, sampled)
    assert format(server.context.trace_id, "032x") == CALLER_TRACE
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "1")
    (child, server), _ = _serve(factory, 200)
    assert child.parent is not None
    assert child.parent.span_id == server.context.span_id


def test_the_direct_span_is_the_span_the_sdk_builds() -> None:
    """Everything but the ids and times is the same either way."""

    def shape(span: ReadableSpan) -> tuple[Any, ...]:
        scope = span.instrumentation_scope
        return (
            span.name,
            span.kind,
            dict(span.attributes or {}),
            span.status.status_code,
            # the table's provider names its service (iogate); the rest agrees
            {k: v for k, v in span.resource.attributes.items() if k != "service.name"},
            (scope.name, scope.version) if scope is not None else None,
            span.parent is None,
            span.context.is_remote,
            span.context.trace_flags.sampled,
            tuple(span.events),
            tuple(span.links),
            (span.dropped_attributes, span.dropped_events, span.dropped_links),
        )

    for status in (200, 404, 503):
        (_, sdk), _ = _serve("sdk", status)
        (_, direct), _ = _serve("direct", status)
        assert shape(direct) == shape(sdk)
        assert direct.resource.attributes["service.name"] == "iogate"
        assert direct.start_time is not None
        assert direct.end_time is not None
        assert direct.start_time <= direct.end_time


@pytest.mark.parametrize(
    ("variable", "value", "direct"),
    [
        ("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "3", False),
        ("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "4", False),
        ("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "5", True),
        ("OTEL_SPAN_EVENT_COUNT_LIMIT", "1", True),
    ],
)
def test_span_limits_that_would_cut_a_span_keep_the_sdk_path(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, direct: bool
) -> None:
    monkeypatch.setenv(variable, value)
    tracing = Tracing(mode=TracingConfig(exporter="console"), span_exporter=InMemorySpanExporter())
    try:
        assert isinstance(tracing.server_spans(), DirectServerSpans) is direct
    finally:
        tracing.shutdown()
