"""The HTTP API, served by uvicorn on loopback, spoken to over real HTTP."""

import gc
from typing import Any

from iogate.config import parse_config
from iogate.server.app import create_app
from tests.conftest import GatewayClient, serve_app
from tests.servers import PostgresServer, free_port
from tests.upstream_app import UpstreamServer

SECRET = "sk-test-SECRET-0123456789"


async def _setup_users(client: GatewayClient) -> None:
    status, _, _ = await client.post(
        "/v1/databases/main/query",
        {"sql": "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT UNIQUE NOT NULL)"},
    )
    assert status == 200


async def test_query_endpoint_reads_and_writes(gateway_client: GatewayClient) -> None:
    await _setup_users(gateway_client)
    status, _, body = await gateway_client.post(
        "/v1/databases/main/query",
        {"sql": "INSERT INTO users (email) VALUES (:e)", "params": {"e": "ada@example.com"}},
    )
    assert status == 200
    assert body["row_count"] == 1
    assert body["last_insert_id"] == 1
    status, headers, body = await gateway_client.post(
        "/v1/databases/main/query",
        {"sql": "SELECT id, email FROM users WHERE id = ?", "params": [1]},
    )
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert isinstance(body, dict)
    assert body["columns"] == ["id", "email"]
    assert body["rows"] == [[1, "ada@example.com"]]
    assert body["row_count"] == 1
    assert body["duration_ms"] >= 0


async def test_errors_are_problem_details(gateway_client: GatewayClient) -> None:
    await _setup_users(gateway_client)
    cases: list[tuple[str, dict[str, Any], int, str]] = [
        ("/v1/databases/nope/query", {"sql": "SELECT 1"}, 404, "unknown-resource"),
        ("/v1/databases/main/query", {"sql": "SELEC 1"}, 400, "bad-query"),
        ("/v1/databases/main/query", {"sql": "SELECT :x"}, 400, "bad-query"),
        ("/v1/databases/main/query", {"sql": ""}, 422, "invalid-request"),
        ("/v1/databases/main/query", {"sql": "SELECT 1", "extra": 1}, 422, "invalid-request"),
        ("/v1/upstreams/nope/request", {"path": "/echo"}, 404, "unknown-resource"),
        ("/v1/upstreams/example/request", {"path": "//evil/x"}, 400, "invalid-input"),
        ("/v1/upstreams/example/request", {"method": "CONNECT"}, 400, "invalid-input"),
    ]
    for path, body, status, slug in cases:
        got_status, headers, problem = await gateway_client.post(path, body)
        assert (got_status, path, body) == (status, path, body)
        assert headers["Content-Type"] == "application/problem+json"
        assert isinstance(problem, dict)
        assert problem["type"] == f"urn:iogate:problem:{slug}"
        assert problem["status"] == status
        assert "Traceback" not in str(problem)
    await gateway_client.post(
        "/v1/databases/main/query", {"sql": "INSERT INTO users (email) VALUES ('a@x')"}
    )
    status, _, problem = await gateway_client.post(
        "/v1/databases/main/query", {"sql": "INSERT INTO users (email) VALUES ('a@x')"}
    )
    assert status == 409
    assert problem["type"] == "urn:iogate:problem:integrity-violation"  # type: ignore[index]
    status, _, problem = await gateway_client.get("/no/such/route")
    assert status == 404
    assert problem["type"] == "urn:iogate:problem:not-found"


async def test_upstream_request_endpoint(
    gateway_client: GatewayClient, upstream: UpstreamServer
) -> None:
    status, _, body = await gateway_client.post(
        "/v1/upstreams/example/request",
        {"method": "POST", "path": "/echo/events", "params": {"q": 1}, "json": {"user": 7}},
    )
    assert status == 200
    assert isinstance(body, dict)
    assert body["status"] == 200
    assert body["body_encoding"] == "json"
    assert body["body"]["path"] == "/api/echo/events"
    assert body["body"]["body"] == '{"user":7}'
    assert body["body"]["query"] == {"q": "1"}
    assert upstream.seen[-1].headers["x-api-key"] == SECRET  # sent upstream...
    assert "content-length" not in body["headers"]
    # ...where the echo server reflects it; the gateway itself never adds it:
    status, _, body = await gateway_client.post("/v1/upstreams/example/request", {"path": "/text"})
    assert body == {  # type: ignore[comparison-overlap]
        "status": 200,
        "headers": body["headers"],  # type: ignore[index]
        "body": "héllo",
        "body_encoding": "text",
        "duration_ms": body["duration_ms"],  # type: ignore[index]
    }
    assert SECRET not in str(body)
    status, _, body = await gateway_client.post(
        "/v1/upstreams/example/request", {"path": "/status/404"}
    )
    assert status == 200
    assert body["status"] == 404


async def test_unreachable_upstream_is_502() -> None:
    config = parse_config(
        {"upstreams": {"down": {"base_url": f"http://127.0.0.1:{free_port()}/"}}}, environ={}
    )
    async with serve_app(config) as client:
        status, _headers, problem = await client.post("/v1/upstreams/down/request", {"path": "/"})
        assert status == 502
        assert problem["type"] == "urn:iogate:problem:upstream-unreachable"  # type: ignore[index]


async def test_original_short_paths(gateway_client: GatewayClient) -> None:
    await _setup_users(gateway_client)
    status, _, body = await gateway_client.post(
        "/database/execute",
        {"db_name": "main", "query": "INSERT INTO users (email) VALUES (?)", "params": ["x@y"]},
    )
    assert status == 200
    assert body["row_count"] == 1
    status, _, body = await gateway_client.post(
        "/database/execute", {"db_name": "main", "query": "SELECT email FROM users"}
    )
    assert body["rows"] == [["x@y"]]  # type: ignore[index]
    status, _, body = await gateway_client.post(
        "/api/execute",
        {"api_name": "example", "method": "POST", "endpoint": "/echo", "data": {"k": "v"}},
    )
    assert status == 200
    assert body["body"]["body"] == '{"k":"v"}'
    for path in ("/health", "/stats", "/v1/stats"):
        status, _, _ = await gateway_client.get(path)
        assert status == 200


async def test_stats_count_calls_errors_and_latency(gateway_client: GatewayClient) -> None:
    status, _, stats = await gateway_client.get("/v1/stats")
    assert status == 200
    assert stats["resources"]["main"]["calls"] == 0  # type: ignore[index]
    assert stats["resources"]["example"]["kind"] == "upstream"  # type: ignore[index]
    await gateway_client.post("/v1/databases/main/query", {"sql": "SELECT 1"})
    await gateway_client.post("/v1/databases/main/query", {"sql": "SELECT 2"})
    await gateway_client.post("/v1/databases/main/query", {"sql": "SELEC"})
    await gateway_client.post("/v1/upstreams/example/request", {"path": "/echo"})
    _status, _, stats = await gateway_client.get("/v1/stats")
    main = stats["resources"]["main"]  # type: ignore[index]
    assert (main["kind"], main["calls"], main["errors"]) == ("sqlite", 3, 1)
    assert main["operations"]["query"]["outcomes"] == {"ok": 2, "QueryError": 1}
    assert main["mean_ms"] > 0
    example = stats["resources"]["example"]  # type: ignore[index]
    assert (example["calls"], example["errors"]) == (1, 0)
    assert example["operations"]["GET"]["calls"] == 1
    _, _, legacy = await gateway_client.get("/stats")
    assert legacy["resources"]["main"]["calls"] == 3  # type: ignore[index]


async def test_postgres_through_the_gateway(pg: PostgresServer) -> None:
    config = parse_config(
        {"databases": {"pg": {"url": pg.dsn, "pool_size": 4, "allow_privileged_login": True}}},
        environ={},
    )
    async with serve_app(config) as client:
        status, _, body = await client.post(
            "/v1/databases/pg/query",
            {
                "sql": "SELECT :n::int AS n, 'x'::text AS t, now() > :d::timestamptz AS later",
                "params": {"n": 5, "d": "2020-01-01T00:00:00Z"},
            },
        )
        assert status == 200
        assert body["columns"] == ["n", "t", "later"]  # type: ignore[index]
        assert body["column_types"] == ["int4", "text", "bool"]  # type: ignore[index]
        assert body["rows"] == [[5, "x", True]]  # type: ignore[index]
        status, _, problem = await client.post("/v1/databases/pg/query", {"sql": "SELECT 1/0"})
        assert status == 400
        assert problem["sqlstate"] == "22012"


async def test_openapi_document_lists_every_endpoint(gateway_client: GatewayClient) -> None:
    status, _, doc = await gateway_client.get("/openapi.json")
    assert status == 200
    paths = doc["paths"]  # type: ignore[index]
    for path in (
        "/v1/databases/{name}/query",
        "/v1/upstreams/{name}/request",
        "/health",
        "/v1/stats",
        "/database/execute",
        "/api/execute",
    ):
        assert path in paths, path
    assert "/stats" not in paths  # the original alias is served but not documented twice


async def test_query_route_validates_like_a_declared_body(gateway_client: GatewayClient) -> None:
    """/query is served without FastAPI's dependency solving (serve_directly);
    its bad bodies get the same 422 problems as a route with a declared body."""

    async def problem(path: str, raw: bytes) -> dict[str, Any]:
        url = gateway_client.base_url + path
        headers = {"Content-Type": "application/json"}
        async with gateway_client.session.post(url, data=raw, headers=headers) as resp:
            assert resp.status == 422
            assert resp.headers["Content-Type"] == "application/problem+json"
            found: dict[str, Any] = await resp.json(content_type=None)
            return found

    for raw in (b'{"params": [1]}', b'{"sql": 5}', b"{not json", b""):
        direct = await problem("/v1/databases/main/query", raw)
        declared = await problem("/v1/databases/main/stream", raw)
        assert direct["type"] == declared["type"] == "urn:iogate:problem:invalid-request"
        assert [e["loc"][0] for e in direct["errors"]] == ["body"] * len(direct["errors"])
        assert direct["instance"] == "/v1/databases/main/query"
    missing = await problem("/v1/databases/main/query", b'{"params": [1]}')
    assert missing["detail"] == "sql: Field required"
    assert missing["errors"][0]["loc"] == ["body", "sql"]


async def test_query_route_needs_a_json_content_type(gateway_client: GatewayClient) -> None:
    """A browser may POST text/plain cross-site without a preflight: such a body
    must not run a statement (FastAPI's strict content type, kept on /query)."""
    body = b'{"sql": "CREATE TABLE csrf (x)"}'
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        for path in ("/v1/databases/main/query", "/v1/databases/main/stream"):
            headers = {"Content-Type": content_type} if content_type else {}
            url = gateway_client.base_url + path
            async with gateway_client.session.post(url, data=body, headers=headers) as resp:
                assert (resp.status, path, content_type) == (422, path, content_type)
    status, _, result = await gateway_client.post(
        "/v1/databases/main/query",
        {"sql": "SELECT count(*) FROM sqlite_master WHERE name = 'csrf'"},
    )
    assert status == 200
    assert result["rows"] == [[0]]  # type: ignore[index]
    headers = {"Content-Type": "application/merge-patch+json; charset=utf-8"}
    url = gateway_client.base_url + "/v1/databases/main/query"
    async with gateway_client.session.post(url, data=b'{"sql": "SELECT 1"}', headers=headers) as r:
        assert r.status == 200


async def test_freeze_heap_moves_startup_objects_out_of_the_collectors_view(
    sqlite_path: str,
) -> None:
    config = parse_config({"databases": {"main": {"url": f"sqlite:///{sqlite_path}"}}}, environ={})
    app = create_app(config, freeze_heap=True)
    assert gc.get_freeze_count() == 0
    async with app.router.lifespan_context(app):
        frozen = gc.get_freeze_count()
        assert frozen > 10_000  # modules, routes, models, the open pools
        assert len(gc.get_objects()) < frozen
    assert gc.get_freeze_count() == 0
