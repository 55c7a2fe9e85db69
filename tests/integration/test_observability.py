"""Observability through the real gateway: /metrics, /v1/stats, X-Request-ID,
structured logs without secrets, /ready against a PostgreSQL that stops and
comes back, OpenTelemetry spans, alert webhooks."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import orjson
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from iogate.config import parse_config
from iogate.errors import QueryError
from iogate.gateway import Gateway
from iogate.http.providers import GenerateRequest
from iogate.observability._alerts import AlertEvent
from iogate.observability._logging import JsonFormatter, RequestIdFilter
from iogate.observability._prometheus import render
from iogate.server.keys import hash_key, new_key
from tests.conftest import GatewayClient, serve_app
from tests.fakes.llm import fake_llm_server
from tests.servers import PostgresServer, postgres_server
from tests.upstream_app import UpstreamServer

SECRET = "sk-live-TOPSECRET-42424242"
HEADER_SECRET = "hdr-SECRET-value-777"
PARAM = "param-value-never-logged-9731"


def _config(sqlite_path: str, upstream: UpstreamServer, **observability: object) -> object:
    return parse_config(
        {
            "databases": {"main": {"url": f"sqlite:///{sqlite_path}"}},
            "upstreams": {
                "example": {
                    "base_url": upstream.base_url,
                    "headers": {"x-api-key": "${HDR}"},
                    "auth": {"scheme": "bearer", "secret": "${TOKEN}"},
                }
            },
            "observability": observability,
        },
        environ={"TOKEN": SECRET, "HDR": HEADER_SECRET},
    )


async def _text(client: GatewayClient, path: str) -> tuple[int, dict[str, str], str]:
    async with client.session.get(client.base_url + path) as resp:
        return resp.status, dict(resp.headers), await resp.text()


async def test_metrics_endpoint_parses_with_the_prometheus_parser(
    gateway_client: GatewayClient,
) -> None:
    for sql in ("SELECT 1", "SELECT 2", "SELEKT 3"):
        await gateway_client.post("/v1/databases/main/query", {"sql": sql})
    await gateway_client.post("/v1/upstreams/example/request", {"path": "/status/503"})
    status, headers, text = await _text(gateway_client, "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }
    main_ok = (("operation", "query"), ("outcome", "ok"), ("resource", "main"))
    main_bad = (("operation", "query"), ("outcome", "QueryError"), ("resource", "main"))
    assert samples[("iogate_operation_duration_seconds_count", main_ok)] == 2
    assert samples[("iogate_operation_duration_seconds_count", main_bad)] == 1
    assert samples[("iogate_operation_duration_seconds_bucket", (("le", "+Inf"), *main_ok))] == 2
    assert samples[("iogate_pool_connections", (("resource", "main"), ("state", "in_use")))] == 0
    assert samples[("iogate_operations_in_flight", (("resource", "main"),))] == 0
    # the 503 was retried (3 attempts by default), each answer counted by class
    five = (("resource", "example"), ("status_class", "5xx"))
    assert samples[("iogate_upstream_responses_total", five)] == 3
    assert samples[("iogate_retries_total", (("resource", "example"),))] == 2
    closed = (("resource", "example"), ("state", "closed"))
    assert samples[("iogate_circuit_breaker_state", closed)] == 1
    # the gateway's cache, read at scrape time: per tier, and its own figures
    assert ("iogate_cache_hits_total", (("tier", "l1"),)) in samples
    assert ("iogate_cache_loads_total", ()) in samples
    assert ("iogate_cache_entries", (("tier", "l1"),)) in samples
    kinds = {fam.name: fam.type for fam in text_string_to_metric_families(text)}
    for counted in ("hits", "misses", "evictions", "loads", "coalesced", "invalidations"):
        assert kinds[f"iogate_cache_{counted}"] == "counter", counted
    # prometheus-client's process, platform and GC collectors
    assert samples[("process_resident_memory_bytes", ())] > 0
    assert ("python_gc_collections_total", (("generation", "0"),)) in samples
    assert kinds["python_info"] == "gauge"
    # the upstream's aiohttp pool: its limit, and the connection kept alive
    assert samples[("iogate_pool_max_connections", (("resource", "example"),))] == 100
    assert samples[("iogate_pool_acquisitions_total", (("resource", "example"),))] == 3
    assert ("iogate_pool_connections", (("resource", "example"), ("state", "idle"))) in samples
    # promtool (Debian's prometheus package) agrees the exposition is valid
    # and follows the naming conventions (it prints lint findings, exit 0 or 3)
    lint = subprocess.run(
        ["promtool", "check", "metrics"], input=text.encode(), capture_output=True, check=False
    )
    assert lint.returncode == 0, lint.stdout.decode() + lint.stderr.decode()
    # low cardinality: no SQL text, URL or secret in any label or value
    assert "SELECT" not in text
    assert "SELEKT" not in text
    assert "/status/503" not in text
    assert "SECRET" not in text


async def test_request_id_is_generated_propagated_and_in_problems(
    gateway_client: GatewayClient,
) -> None:
    async with gateway_client.session.get(gateway_client.base_url + "/health") as resp:
        generated = resp.headers["X-Request-ID"]
    assert len(generated) == 16
    int(generated, 16)
    given = {"X-Request-ID": "trace-abc.123:xyz"}
    url = gateway_client.base_url + "/v1/databases/nope/query"
    async with gateway_client.session.post(url, json={"sql": "SELECT 1"}, headers=given) as resp:
        assert resp.status == 404
        assert resp.headers["X-Request-ID"] == "trace-abc.123:xyz"
        problem = await resp.json(content_type=None)
    assert problem["request_id"] == "trace-abc.123:xyz"
    forged = {"X-Request-ID": "bad id with spaces " + "x" * 200}
    async with gateway_client.session.get(
        gateway_client.base_url + "/nope", headers=forged
    ) as resp:
        assert resp.status == 404
        replaced = resp.headers["X-Request-ID"]
        problem = await resp.json(content_type=None)
    assert replaced != forged["X-Request-ID"]
    assert problem["request_id"] == replaced
    # validation errors (422) carry it too
    async with gateway_client.session.post(
        gateway_client.base_url + "/v1/databases/main/query", json={"sql": ""}
    ) as resp:
        assert resp.status == 422
        assert (await resp.json(content_type=None))["request_id"] == resp.headers["X-Request-ID"]


async def test_stats_keep_their_keys_and_add_percentiles_windows_slow_and_insights(
    sqlite_path: str, upstream: UpstreamServer
) -> None:
    config = _config(sqlite_path, upstream, slow_threshold=1e-9, insight_min_calls=2)
    async with serve_app(config) as client:  # type: ignore[arg-type]
        sql = "SELECT ? AS v, 'literal' AS w"
        for _ in range(2):
            await client.post("/v1/databases/main/query", {"sql": sql, "params": [PARAM]})
        await client.post("/v1/databases/main/query", {"sql": "SELEKT 1"})
        status, _, stats = await client.get("/v1/stats")
    assert status == 200
    assert isinstance(stats, dict)
    main = stats["resources"]["main"]
    assert {"kind", "calls", "errors", "mean_ms", "operations"} <= set(main)
    query = main["operations"]["query"]
    assert {"calls", "errors", "success_rate", "mean_ms", "max_ms", "outcomes"} <= set(query)
    assert (query["calls"], query["errors"]) == (3, 1)
    assert set(query["latency_ms"]) == {"mean", "p50", "p90", "p99", "p99_9", "max"}
    assert query["latency_ms"]["p50"] <= query["latency_ms"]["p99"] <= query["latency_ms"]["max"]
    assert query["last_minute"]["calls"] == 3
    assert query["last_5_minutes"]["errors"] == 1
    assert main["pool"]["in_use"] == 0
    assert main["circuit_breaker"]["state"] == "closed"
    slow = [s for s in stats["slow_operations"] if s["resource"] == "main"]
    assert len(slow) == 3  # every call is slower than 1 ns
    assert {s["statement"] for s in slow} == {"SELECT ? AS v, ? AS w", "SELEKT ?"}
    assert PARAM not in orjson.dumps(stats).decode()
    insights = [(i["resource"], i["kind"]) for i in stats["insights"]]
    assert ("main", "unreliable") in insights  # 2 of 3 succeeded


async def test_logs_are_json_with_the_request_id_and_hold_no_secret(
    sqlite_path: str, upstream: UpstreamServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.handler.addFilter(RequestIdFilter())  # as configure_logging's handler does
    config = _config(sqlite_path, upstream, slow_threshold=1e-9)
    ids: list[str] = []
    async with serve_app(config) as client:  # type: ignore[arg-type]
        for body in (
            {"sql": "SELECT ? AS secret_param", "params": [PARAM]},
            {
                "sql": "SELECT :p + ",
                "params": {"p": PARAM},
            },  # a syntax error, params logged nowhere
        ):
            url = client.base_url + "/v1/databases/main/query"
            async with client.session.post(url, json=body) as resp:
                ids.append(resp.headers["X-Request-ID"])
        for path in ("/echo/x", "/status/500", "/seq/logs?codes=503,200"):
            url = client.base_url + "/v1/upstreams/example/request"
            async with client.session.post(url, json={"path": path}) as resp:
                ids.append(resp.headers["X-Request-ID"])
        async with client.session.get(client.base_url + "/ready") as resp:
            assert resp.status == 200
    assert upstream.seen[0].headers["authorization"] == f"Bearer {SECRET}"  # it was used
    lines = [JsonFormatter().format(r) for r in caplog.records]
    assert lines
    for line in lines:
        assert SECRET not in line
        assert HEADER_SECRET not in line
        assert PARAM not in line
        orjson.loads(line)
    slow = [orjson.loads(line) for line in lines if '"slow operation"' in line]
    by_request = {s["request_id"]: s for s in slow if s["resource"] == "main"}
    assert by_request[ids[0]]["statement"] == "SELECT ? AS secret_param"
    assert by_request[ids[1]]["outcome"] == "QueryError"
    assert {s["request_id"] for s in slow if s["resource"] == "example"} == set(ids[2:])


@pytest.fixture
def own_pg() -> Iterator[PostgresServer]:
    """A cluster of the test's own (it is stopped and started), set up outside the loop."""
    with postgres_server() as server:
        yield server


@pytest.mark.postgres
async def test_ready_turns_503_within_its_deadline_when_postgres_stops(
    sqlite_path: str, tmp_path: Path, own_pg: PostgresServer
) -> None:
    deadline = 1.0
    pg = own_pg
    config = parse_config(
        {
            "databases": {
                "main": {"url": f"sqlite:///{sqlite_path}"},
                "pg": {"url": pg.dsn, "connect_timeout": 5.0, "allow_privileged_login": True},
            },
            "observability": {"ready_deadline": deadline},
        },
        environ={},
    )
    async with serve_app(config) as client:
        status, _, body = await client.get("/ready")
        assert status == 200
        assert body["resources"]["pg"]["up"] is True  # type: ignore[index]
        await asyncio.to_thread(pg.stop)
        started = time.monotonic()
        status, _, body = await client.get("/ready")
        elapsed = time.monotonic() - started
        assert status == 503
        assert elapsed < deadline + 0.5
        resources = body["resources"]  # type: ignore[index]
        assert resources["pg"]["up"] is False
        assert resources["pg"]["error"]
        assert resources["main"]["up"] is True
        assert pg.dsn not in orjson.dumps(body).decode()
        await asyncio.to_thread(pg.start)
        await _until_ready(client, pg)


async def _until_ready(client: GatewayClient, pg: PostgresServer) -> None:
    """Poll /ready (a probe, not a sleep-as-synchronisation) until 200, bounded."""
    for _ in range(100):
        status, _, _ = await client.get("/ready")
        if status == 200:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"/ready did not return to 200 after PostgreSQL on {pg.port} restarted")


async def test_spans_carry_the_semantic_conventions(
    sqlite_path: str, upstream: UpstreamServer, pg: PostgresServer
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    config = parse_config(
        {
            "databases": {
                "main": {"url": f"sqlite:///{sqlite_path}"},
                "pg": {"url": pg.dsn, "allow_privileged_login": True},
            },
            "upstreams": {
                "example": {
                    "base_url": upstream.base_url,
                    "policies": {"retry": {"max_attempts": 3, "initial": 0.001, "max_delay": 0.01}},
                }
            },
        },
        environ={},
    )
    async with Gateway(config, tracer_provider=provider) as gw:
        assert await gw.database("main").fetch_val("SELECT ?", [PARAM]) == PARAM
        await gw.database("pg").fetch("SELECT 1")
        with pytest.raises(QueryError):
            await gw.database("main").fetch("SELEKT")
        resp = await gw.upstream("example").get("/seq/spans?codes=503,200")
        assert resp.status == 200
        missing = await gw.upstream("example").get("/status/404")
        assert missing.status == 404
    spans = {s.name: s for s in exporter.get_finished_spans()}
    sqlite_span = spans["fetch_one main"]
    assert sqlite_span.attributes is not None
    assert sqlite_span.attributes["db.system"] == "sqlite"
    assert sqlite_span.attributes["db.operation.name"] == "fetch_one"
    assert PARAM not in str(dict(sqlite_span.attributes))
    pg_span = spans["fetch pg"]
    assert pg_span.attributes is not None
    assert pg_span.attributes["db.system"] == "postgresql"
    assert pg_span.attributes["server.address"] == "127.0.0.1"
    assert pg_span.attributes["server.port"] == pg.port
    bad = spans["fetch main"]
    assert bad.attributes is not None
    assert bad.attributes["error.type"] == "QueryError"
    assert not bad.status.is_ok
    gets = [s for s in exporter.get_finished_spans() if s.name == "GET"]
    assert len(gets) == 2
    flaky, notfound = gets
    assert flaky.attributes is not None
    assert flaky.attributes["http.request.method"] == "GET"
    assert flaky.attributes["server.address"] == "127.0.0.1"
    assert flaky.attributes["http.response.status_code"] == 200
    assert [e.name for e in flaky.events] == ["retry"]  # the 503, retried once
    assert flaky.events[0].attributes["iogate.retry.attempt"] == 1  # type: ignore[index]
    assert notfound.attributes is not None
    assert notfound.attributes["http.response.status_code"] == 404


async def test_tracing_off_leaves_the_pipeline_as_the_runner(sqlite_path: str) -> None:
    config = parse_config(
        {
            "databases": {"main": {"url": f"sqlite:///{sqlite_path}"}},
            "observability": {"tracing": "off"},
        },
        environ={},
    )
    gw = Gateway(config)
    assert gw.database("main")._runner is gw.pipeline("main")
    assert not gw.observability.tracing.active


async def test_alert_rules_fire_resolve_and_post_a_webhook(
    sqlite_path: str, upstream: UpstreamServer
) -> None:
    config = parse_config(
        {
            "databases": {"main": {"url": f"sqlite:///{sqlite_path}"}},
            "upstreams": {"ops": {"base_url": upstream.base_url}},
            "observability": {
                "alerts": [
                    {
                        "resource": "main",
                        "max_error_rate": 0.25,
                        "window": "1m",
                        "min_calls": 4,
                        "webhook": {"upstream": "ops", "path": "/echo/alerts"},
                    }
                ]
            },
        },
        environ={},
    )
    events: list[AlertEvent] = []
    async with Gateway(config) as gw:
        gw.observability.alerts.subscribe(events.append)
        db = gw.database("main")
        await db.fetch("SELECT 1")
        for _ in range(3):
            with pytest.raises(QueryError):
                await db.fetch("SELEKT")
        await gw.observability.evaluate_alerts(gw.upstream)
        await gw.observability.evaluate_alerts(gw.upstream)  # still firing: no second event
        assert [(e.resource, e.condition, e.state, e.value) for e in events] == [
            ("main", "error_rate", "firing", 0.75)
        ]
        for _ in range(12):
            await db.fetch("SELECT 1")
        await gw.observability.evaluate_alerts(gw.upstream)
        assert [e.state for e in events] == ["firing", "resolved"]  # 3 of 16 failed: 19 %
    posted = [orjson.loads(r.body) for r in upstream.seen if r.path == "/api/echo/alerts"]
    assert [(p["condition"], p["state"]) for p in posted] == [
        ("error_rate", "firing"),
        ("error_rate", "resolved"),
    ]


async def test_library_users_get_the_same_typed_snapshot(sqlite_path: str) -> None:
    config = parse_config({"databases": {"main": {"url": f"sqlite:///{sqlite_path}"}}}, environ={})
    async with Gateway(config) as gw:
        await gw.database("main").fetch("SELECT 1")
        snap = gw.metrics.stats()
    main = snap.resource("main")
    assert main is not None
    assert main.kind == "sqlite"
    assert main.pool is not None
    op = main.operation("fetch")
    assert op is not None
    assert (op.calls, op.last_minute.calls, op.errors) == (1, 1, 0)
    assert 0 < op.latency.p50_ms <= op.latency.max_ms


async def test_ready_is_open_and_metrics_answer_without_resources(tmp_path: Path) -> None:
    async with serve_app(parse_config({}, environ={})) as client:
        status, _, body = await client.get("/ready")
        assert (status, body) == (200, {"status": "ready", "resources": {}})
        async with aiohttp.ClientSession() as http, http.get(client.base_url + "/metrics") as resp:
            assert resp.status == 200


async def test_llm_token_usage_is_counted_per_upstream_and_model() -> None:
    async with fake_llm_server() as llm:
        config = parse_config(
            {"upstreams": {"ai": {"base_url": llm.base_url + "/v1", "provider": "openai"}}},
            environ={},
        )
        async with Gateway(config) as gw:
            provider = gw.upstream("ai").provider
            assert provider is not None
            req = GenerateRequest(prompt="the quick brown fox", model="m-1", max_tokens=3)
            done = await provider.generate(req)
            async for _chunk in provider.stream(req):
                pass
            snap = gw.metrics.stats()
            text = render(gw.metrics).decode()
    assert done.usage is not None
    ai = snap.resource("ai")
    assert ai is not None
    assert [(t.model, t.input, t.output, t.calls) for t in ai.tokens] == [
        ("m-1", 2 * (done.usage.input_tokens or 0), 2 * (done.usage.output_tokens or 0), 2)
    ]
    assert ai.statuses["2xx"] == 2
    tokens = {
        (s.labels["model"], s.labels["direction"]): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == "iogate_llm_tokens_total"
    }
    assert tokens[("m-1", "output")] == 2 * (done.usage.output_tokens or 0)


async def test_metrics_need_admin_with_keys_and_ready_needs_none(sqlite_path: str) -> None:
    admin, reader = new_key(), new_key()
    config = parse_config(
        {
            "databases": {"main": {"url": f"sqlite:///{sqlite_path}"}},
            "keys": {
                "ops": {"sha256": hash_key(admin), "scopes": ["admin"]},
                "app": {"sha256": hash_key(reader), "scopes": ["db:main:read"]},
            },
        },
        environ={},
    )
    async with serve_app(config) as client:
        url = client.base_url
        async with client.session.get(url + "/metrics") as resp:
            assert resp.status == 401
        bearer = {"Authorization": f"Bearer {reader}"}
        async with client.session.get(url + "/metrics", headers=bearer) as resp:
            assert resp.status == 403
        bearer = {"Authorization": f"Bearer {admin}"}
        async with client.session.get(url + "/metrics", headers=bearer) as resp:
            assert resp.status == 200
            assert "iogate_pool_connections" in await resp.text()
        async with client.session.get(url + "/ready") as resp:
            assert resp.status == 200
