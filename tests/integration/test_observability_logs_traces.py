"""The request log (one structured line per 4xx/5xx answer, the access log),
W3C trace context on upstream requests, SERVER spans parenting the resource
spans, the OTLP exporter of ``[observability.tracing]``, and the ``deadline``
outcome of a call cut by ``X-Request-Timeout`` (issue 21)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from iogate.config import parse_config
from iogate.gateway import Gateway
from iogate.observability._logging import JsonFormatter, RequestIdFilter
from iogate.server.app import create_app
from iogate.server.keys import hash_key, new_key
from tests.servers import serve_aiohttp, serve_asgi
from tests.upstream_app import UpstreamServer

PARAM = "param-value-never-logged-5521"


class _Lines(logging.Handler):
    """Every ``iogate.request`` record, formatted by the gateway's JsonFormatter."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.addFilter(RequestIdFilter())
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    @property
    def docs(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.lines]


@pytest.fixture
def request_log() -> Iterator[_Lines]:
    handler = _Lines()
    logger = logging.getLogger("iogate.request")
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


def _config(sqlite_path: str, upstream: UpstreamServer, key: str) -> Any:
    return parse_config(
        {
            "databases": {"main": {"url": f"sqlite:///{sqlite_path}"}},
            "upstreams": {"example": {"base_url": upstream.base_url}},
            "keys": {"ops": {"sha256": hash_key(key), "scopes": ["admin"]}},
        },
        environ={},
    )


@asynccontextmanager
async def _served(app: Any, key: str) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    headers = {"Authorization": f"Bearer {key}"}
    async with serve_asgi(app) as base, aiohttp.ClientSession(headers=headers) as session:
        yield base, session


async def _post(
    session: aiohttp.ClientSession, url: str, body: object, **headers: str
) -> tuple[int, dict[str, Any]]:
    async with session.post(url, json=body, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


async def test_error_answers_log_one_structured_line_each(
    sqlite_path: str, upstream: UpstreamServer, request_log: _Lines
) -> None:
    key = new_key()
    app = create_app(_config(sqlite_path, upstream, key))
    async with _served(app, key) as (base, session):
        query = f"{base}/v1/databases/main/query"
        ddl = "CREATE TABLE t (v TEXT PRIMARY KEY)"
        assert (await _post(session, query, {"sql": ddl}))[0] == 200
        insert = {"sql": "INSERT INTO t VALUES (?)", "params": [PARAM]}
        assert (await _post(session, query, insert))[0] == 200
        conflict, _ = await _post(session, query, insert)
        bad, _ = await _post(session, query, {"sql": "SELEKT ?", "params": [PARAM]})
        late, _ = await _post(
            session,
            f"{base}/v1/upstreams/example/request",
            {"path": "/hang"},
            **{"X-Request-Timeout": "0.2"},
        )
    assert (conflict, bad, late) == (409, 400, 504)
    docs = request_log.docs
    # the 200s are not logged without the access log; each error exactly once
    assert [d["status"] for d in docs] == [409, 400, 504]
    by_status = {d["status"]: d for d in docs}
    assert by_status[409]["level"] == "INFO"
    assert by_status[400]["level"] == "INFO"
    assert by_status[504]["level"] == "ERROR"
    assert by_status[409]["problem_type"] == "urn:iogate:problem:integrity-violation"
    assert by_status[504]["problem_type"] == "urn:iogate:problem:timeout"
    for doc in docs:
        assert doc["method"] == "POST"
        assert doc["key"] == "ops"
        assert doc["duration_ms"] > 0
        assert doc["request_id"]
    assert by_status[409]["path"] == "/v1/databases/{name}/query"
    assert by_status[504]["duration_ms"] >= 200
    text = "\n".join(request_log.lines)
    assert PARAM not in text
    assert key not in text
    assert "/hang" not in text  # the upstream path is a value, never logged


async def test_access_log_is_the_same_line_for_every_answer(
    sqlite_path: str, upstream: UpstreamServer, request_log: _Lines
) -> None:
    key = new_key()
    app = create_app(_config(sqlite_path, upstream, key), access_log=True)
    async with _served(app, key) as (base, session):
        status, _ = await _post(session, f"{base}/v1/databases/main/query", {"sql": "SELECT 1"})
        async with session.get(f"{base}/nowhere/{PARAM}") as resp:
            assert resp.status == 404
        async with session.get(f"{base}/v1/cache/%FF") as resp:  # refused at the edge
            assert resp.status == 400
    assert status == 200
    ok, missing, undecodable = request_log.docs
    assert undecodable["problem_type"] == "urn:iogate:problem:invalid-url"
    assert ok["message"] == "POST /v1/databases/{name}/query 200"
    assert (ok["status"], ok["level"], ok["key"]) == (200, "INFO", "ops")
    assert ok["problem_type"] is None
    assert ok["duration_ms"] > 0
    assert missing["path"] is None  # no route: nothing of the request's path
    assert missing["problem_type"] == "urn:iogate:problem:not-found"
    assert PARAM not in "\n".join(request_log.lines)


async def test_a_call_cut_by_x_request_timeout_is_a_deadline_outcome(
    sqlite_path: str, upstream: UpstreamServer
) -> None:
    key = new_key()
    app = create_app(_config(sqlite_path, upstream, key))
    async with _served(app, key) as (base, session):
        status, _ = await _post(
            session,
            f"{base}/v1/upstreams/example/request",
            {"path": "/hang"},
            **{"X-Request-Timeout": "0.1"},
        )
        async with session.get(f"{base}/v1/stats") as resp:
            stats = await resp.json()
    assert status == 504
    outcomes = stats["resources"]["example"]["operations"]["GET"]["outcomes"]
    assert outcomes == {"deadline": 1}


async def test_traceparent_reaches_the_upstream_under_a_server_span(
    sqlite_path: str, upstream: UpstreamServer
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    key = new_key()
    gateway = Gateway(_config(sqlite_path, upstream, key), tracer_provider=provider)
    app = create_app(gateway=gateway)
    caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    caller = f"00-{caller_trace}-00f067aa0ba902b7-01"
    async with _served(app, key) as (base, session):
        url = f"{base}/v1/upstreams/example/request"
        status, _ = await _post(session, url, {"path": "/echo"})
        assert status == 200
        status, _ = await _post(session, url, {"path": "/echo"}, traceparent=caller)
        assert status == 200
        status, _ = await _post(session, f"{base}/v1/databases/main/query", {"sql": "SELECT 1"})
    spans = exporter.get_finished_spans()
    servers = [s for s in spans if s.kind == SpanKind.SERVER]
    clients = [s for s in spans if s.kind == SpanKind.CLIENT]
    assert [s.name for s in servers] == [
        "POST /v1/upstreams/{name}/request",
        "POST /v1/upstreams/{name}/request",
        "POST /v1/databases/{name}/query",
    ]
    assert servers[0].attributes is not None
    assert servers[0].attributes["http.response.status_code"] == 200
    assert servers[0].attributes["http.route"] == "/v1/upstreams/{name}/request"
    # each resource span is the child of its request's SERVER span
    assert len(clients) == 3
    for server, client in zip(servers, clients, strict=True):
        assert client.parent is not None
        assert client.parent.span_id == server.context.span_id
        assert client.context.trace_id == server.context.trace_id
    # the caller's traceparent is continued
    assert servers[0].parent is None
    assert servers[1].parent is not None
    assert format(servers[1].context.trace_id, "032x") == caller_trace
    # every upstream request carried the W3C context of its CLIENT span
    sent = [r.headers["traceparent"] for r in upstream.seen]
    assert len(sent) == 2
    for header, client in zip(sent, clients[:2], strict=True):
        version, trace_id, parent_id, flags = header.split("-")
        assert version == "00"
        assert int(flags, 16) & 1  # sampled (newer SDKs also set the "random" bit)
        assert trace_id == format(client.context.trace_id, "032x")
        assert parent_id == format(client.context.span_id, "016x")


async def test_otlp_exporter_of_the_tracing_table_sends_the_spans(
    sqlite_path: str, upstream: UpstreamServer
) -> None:
    """The table's own provider: its SERVER spans (built finished,
    ``DirectServerSpans``) and the resource spans under them reach a real
    OTLP/HTTP collector, and the caller's trace is continued."""
    received: list[bytes] = []

    async def traces(request: web.Request) -> web.Response:
        received.append(await request.read())
        return web.Response(content_type="application/x-protobuf", body=b"")

    collector = web.Application()
    collector.router.add_post("/v1/traces", traces)
    key = new_key()
    caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    async with serve_aiohttp(collector) as port:
        config = parse_config(
            {
                "databases": {"main": {"url": f"sqlite:///{sqlite_path}"}},
                "upstreams": {"example": {"base_url": upstream.base_url}},
                "keys": {"ops": {"sha256": hash_key(key), "scopes": ["admin"]}},
                "observability": {
                    "tracing": {
                        "exporter": "otlp",
                        "endpoint": f"http://127.0.0.1:{port}/v1/traces",
                        "service_name": "gw-test",
                    }
                },
            },
            environ={},
        )
        async with Gateway(config) as gw:
            assert gw.observability.tracing.active
            assert await gw.database("main").fetch_val("SELECT 1") == 1
            app = create_app(gateway=gw)
            async with _served(app, key) as (base, session):
                query = f"{base}/v1/databases/main/query"
                status, _ = await _post(session, query, {"sql": "SELECT 1"})
                assert status == 200
                relay = f"{base}/v1/upstreams/example/request"
                caller = f"00-{caller_trace}-00f067aa0ba902b7-01"
                status, _ = await _post(session, relay, {"path": "/echo"}, traceparent=caller)
                assert status == 200
        # closing flushed the batch processor (in a thread: the loop answered it)
        assert received
    spans = []
    for body in received:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource_spans in request.resource_spans:
            attrs = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            assert attrs["service.name"] == "gw-test"
            spans += [s for scope in resource_spans.scope_spans for s in scope.spans]
    by_name = {s.name: s for s in spans}
    assert sorted(by_name) == [
        "GET",
        "POST /v1/databases/{name}/query",
        "POST /v1/upstreams/{name}/request",
        "fetch_one main",
        "query main",
    ]
    query_span = by_name["POST /v1/databases/{name}/query"]
    assert query_span.kind == query_span.SPAN_KIND_SERVER
    assert query_span.parent_span_id == b""
    route = {a.key: a.value for a in query_span.attributes}
    assert route["http.route"].string_value == "/v1/databases/{name}/query"
    assert route["http.response.status_code"].int_value == 200
    assert by_name["query main"].parent_span_id == query_span.span_id
    relayed = by_name["POST /v1/upstreams/{name}/request"]
    assert relayed.trace_id.hex() == caller_trace
    assert relayed.parent_span_id.hex() == "00f067aa0ba902b7"
    assert by_name["GET"].parent_span_id == relayed.span_id
    assert by_name["GET"].trace_id.hex() == caller_trace
    assert upstream.seen[-1].headers["traceparent"].split("-")[1] == caller_trace
