"""API keys, scopes and request limits through the served gateway (real HTTP)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from iogate.config import parse_config
from iogate.gateway import Gateway
from iogate.server.app import create_app
from iogate.server.keys import hash_key, new_key
from tests.servers import serve_asgi as serve
from tests.upstream_app import UpstreamServer

SECRET = "sk-test-SECRET-0123456789"
KEYS = {name: new_key() for name in ("admin", "reader", "up", "old", "gone", "slow", "single")}


@dataclass
class Keyed:
    base: str
    http: aiohttp.ClientSession
    gateway: Gateway

    async def call(
        self,
        method: str,
        path: str,
        *,
        key: str | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], Any]:
        send = dict(headers or {})
        if key is not None:
            send["Authorization"] = f"Bearer {KEYS.get(key, key)}"
        async with self.http.request(method, self.base + path, json=json, headers=send) as resp:
            return resp.status, dict(resp.headers), await resp.json(content_type=None)


@pytest.fixture
async def keyed(sqlite_path: str, upstream: UpstreamServer) -> AsyncIterator[Keyed]:
    config = parse_config(
        {
            "server": {"limits": {"max_body_bytes": 4096}},
            "databases": {"main": {"url": f"sqlite:///{sqlite_path}"}},
            "upstreams": {
                "example": {
                    "base_url": upstream.base_url,
                    "headers": {"x-api-key": "${EXAMPLE_API_KEY}"},
                }
            },
            "keys": {
                "admin": {"sha256": hash_key(KEYS["admin"]), "scopes": ["admin"]},
                "reader": {"sha256": hash_key(KEYS["reader"]), "scopes": ["db:main:read"]},
                "up": {"sha256": hash_key(KEYS["up"]), "scopes": ["upstream:example"]},
                "old": {
                    "sha256": hash_key(KEYS["old"]),
                    "scopes": ["admin"],
                    "expires": datetime(2020, 1, 1, tzinfo=UTC),
                },
                "gone": {"sha256": hash_key(KEYS["gone"]), "scopes": ["admin"], "revoked": True},
                "slow": {
                    "sha256": hash_key(KEYS["slow"]),
                    "scopes": ["upstream:example"],
                    "rate_limit": 0.01,
                    "burst": 1,
                },
                "single": {
                    "sha256": hash_key(KEYS["single"]),
                    "scopes": ["upstream:example"],
                    "max_concurrent": 1,
                },
            },
        },
        environ={"EXAMPLE_API_KEY": SECRET},
    )
    gateway = Gateway(config)
    async with serve(create_app(gateway=gateway)) as base, aiohttp.ClientSession() as http:
        yield Keyed(base, http, gateway)


def _is_problem(headers: dict[str, str], body: Any, status: int, slug: str) -> None:
    assert headers["Content-Type"] == "application/problem+json"
    assert body["type"] == f"urn:iogate:problem:{slug}"
    assert body["status"] == status


async def test_missing_malformed_unknown_expired_revoked_keys_get_401(keyed: Keyed) -> None:
    cases = {
        None: "required",
        "Basic dXNlcjpwYXNz": "not 'Bearer",
        new_key(): "not valid",
        "old": "expired",
        "gone": "revoked",
    }
    for key, why in cases.items():
        headers = {"Authorization": key} if key and key.startswith("Basic") else None
        status, resp_headers, body = await keyed.call(
            "POST",
            "/v1/upstreams/example/request",
            key=None if headers else key,
            json={"path": "/echo"},
            headers=headers,
        )
        assert status == 401, key
        _is_problem(resp_headers, body, 401, "unauthorized")
        assert resp_headers["WWW-Authenticate"].startswith("Bearer")
        assert why in body["detail"]
        assert KEYS.get(key or "", key or "-") not in str(body)


async def test_open_paths_need_no_key(keyed: Keyed) -> None:
    status, _, body = await keyed.call("GET", "/health")
    assert (status, body["status"]) == (200, "ok")
    status, _, doc = await keyed.call("GET", "/openapi.json")
    assert status == 200
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    async with keyed.http.get(keyed.base + "/docs") as resp:
        assert resp.status == 200
    status, _headers, body = await keyed.call("GET", "/v1/stats")
    assert status == 401  # everything else needs a key


SCOPED: list[tuple[str, str, dict[str, Any] | None, str]] = [
    ("POST", "/v1/upstreams/example/request", {"path": "/echo"}, "upstream:example"),
    ("POST", "/v1/upstreams/nope/request", {"path": "/echo"}, "upstream:nope"),
    ("POST", "/v1/upstreams/example/batch", {"requests": [{"path": "/echo"}]}, "upstream:example"),
    ("POST", "/v1/upstreams/example/generate", {"prompt": "hi"}, "upstream:example"),
    ("POST", "/api/execute", {"api_name": "example", "endpoint": "/echo"}, "upstream:example"),
    ("GET", "/v1/stats", None, "admin"),
    ("GET", "/stats", None, "admin"),
    ("GET", "/v1/circuit-breakers", None, "admin"),
    ("POST", "/v1/circuit-breakers/main/reset", None, "admin"),
]


async def test_every_scope_refusal_is_403(keyed: Keyed, upstream: UpstreamServer) -> None:
    for method, path, body, scope in SCOPED:
        status, headers, problem = await keyed.call(method, path, key="reader", json=body)
        assert status == 403, path
        _is_problem(headers, problem, 403, "forbidden")
        assert scope in problem["detail"]
    assert upstream.seen == []  # nothing left the gateway
    status, _, answer = await keyed.call(
        "POST", "/v1/upstreams/example/request", key="up", json={"path": "/echo"}
    )
    assert (status, answer["status"]) == (200, 200)
    status, _, _ = await keyed.call("GET", "/v1/stats", key="up")
    assert status == 403
    status, _, stats = await keyed.call("GET", "/v1/stats", key="admin")
    assert status == 200
    assert stats["resources"]["example"]["calls"] == 1


async def test_admin_lists_and_resets_circuit_breakers(keyed: Keyed) -> None:
    status, _, body = await keyed.call("GET", "/v1/circuit-breakers", key="admin")
    assert status == 200
    states = {b["name"]: b["state"] for b in body["circuit_breakers"]}
    assert states == {"example": "closed", "main": "closed"}
    breaker = keyed.gateway.pipeline("example").circuit_breaker
    assert breaker is not None
    breaker.force_open()
    status, headers, problem = await keyed.call(
        "POST", "/v1/upstreams/example/request", key="admin", json={"path": "/echo"}
    )
    assert status == 503
    _is_problem(headers, problem, 503, "circuit-open")
    _, _, body = await keyed.call("GET", "/v1/circuit-breakers", key="admin")
    assert {b["name"]: b["state"] for b in body["circuit_breakers"]}["example"] == "forced_open"
    status, _, reset = await keyed.call("POST", "/v1/circuit-breakers/example/reset", key="admin")
    assert (status, reset["name"], reset["state"]) == (200, "example", "closed")
    status, _, answer = await keyed.call(
        "POST", "/v1/upstreams/example/request", key="admin", json={"path": "/echo"}
    )
    assert (status, answer["status"]) == (200, 200)
    status, headers, problem = await keyed.call(
        "POST", "/v1/circuit-breakers/nope/reset", key="admin"
    )
    assert status == 404
    _is_problem(headers, problem, 404, "unknown-resource")


async def test_rate_limit_per_key_is_429_with_retry_after(keyed: Keyed) -> None:
    body = {"path": "/echo"}
    status, _, _ = await keyed.call("POST", "/v1/upstreams/example/request", key="slow", json=body)
    assert status == 200
    status, headers, problem = await keyed.call(
        "POST", "/v1/upstreams/example/request", key="slow", json=body
    )
    assert status == 429
    _is_problem(headers, problem, 429, "rate-limited")
    assert int(headers["Retry-After"]) >= 1
    assert problem["retry_after_s"] > 0
    status, _, _ = await keyed.call("POST", "/v1/upstreams/example/request", key="up", json=body)
    assert status == 200  # another key's bucket is its own


async def _wait_seen(upstream: UpstreamServer, path: str) -> None:
    for _ in range(500):  # readiness: the upstream got the request (bounded poll)
        if any(s.path == path for s in upstream.seen):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the upstream never saw {path}")


async def test_concurrency_per_key_and_a_disconnect_frees_the_slot(
    keyed: Keyed, upstream: UpstreamServer
) -> None:
    hanging = asyncio.create_task(
        keyed.call("POST", "/v1/upstreams/example/request", key="single", json={"path": "/hang"})
    )
    await _wait_seen(upstream, "/api/hang")
    status, headers, problem = await keyed.call(
        "POST", "/v1/upstreams/example/request", key="single", json={"path": "/echo"}
    )
    assert status == 429
    _is_problem(headers, problem, 429, "concurrency-limited")
    assert "Retry-After" in headers
    hanging.cancel()  # the client goes away: the server cancels the request
    with pytest.raises(asyncio.CancelledError):
        await hanging
    for _ in range(500):  # bounded poll: the slot frees once the server cancelled it
        status, _, _ = await keyed.call(
            "POST", "/v1/upstreams/example/request", key="single", json={"path": "/echo"}
        )
        if status == 200:
            break
        await asyncio.sleep(0.01)
    assert status == 200


async def test_oversized_bodies_get_413_declared_or_streamed(keyed: Keyed) -> None:
    big = {"path": "/echo", "json": "x" * 5000}
    status, headers, problem = await keyed.call(
        "POST", "/v1/upstreams/example/request", key="up", json=big
    )
    assert status == 413
    _is_problem(headers, problem, 413, "too-large")

    async def chunks() -> AsyncIterator[bytes]:  # chunked: no Content-Length at all
        yield b'{"path": "/echo", "json": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}'

    async with keyed.http.post(
        keyed.base + "/v1/upstreams/example/request",
        data=chunks(),
        headers={"Authorization": f"Bearer {KEYS['up']}", "Content-Type": "application/json"},
    ) as resp:
        assert resp.status == 413
        problem = await resp.json(content_type=None)
    assert problem["type"] == "urn:iogate:problem:too-large"
    status, _, _ = await keyed.call(
        "POST", "/v1/upstreams/example/request", key="up", json={"path": "/echo"}
    )
    assert status == 200


async def test_request_timeout_header_is_the_deadline(keyed: Keyed) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    status, headers, problem = await keyed.call(
        "POST",
        "/v1/upstreams/example/request",
        key="up",
        json={"path": "/hang"},
        headers={"X-Request-Timeout": "0.3"},
    )
    assert status == 504
    _is_problem(headers, problem, 504, "timeout")
    assert loop.time() - started < 10  # not the upstream's 30 s timeout
    for bad in ("soon", "-1", "nan", "0"):
        status, headers, problem = await keyed.call(
            "GET", "/health", headers={"X-Request-Timeout": bad}
        )
        assert status == 400, bad
        _is_problem(headers, problem, 400, "bad-request")


async def test_no_key_secret_or_traceback_in_bodies_or_logs(
    keyed: Keyed, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # (/echo would reflect the upstream credential: that is the upstream's answer)
    bodies: list[str] = []
    calls: list[tuple[str, str, str | None, Any]] = [
        ("POST", "/v1/upstreams/example/request", "up", {"path": "/text"}),
        ("POST", "/v1/upstreams/example/request", "up", {"path": "//evil/x"}),
        ("POST", "/v1/upstreams/example/request", "reader", {"path": "/text"}),
        ("POST", "/v1/upstreams/example/request", "old", {"path": "/text"}),
        ("POST", "/v1/upstreams/example/request", "gone", {"path": "/text"}),
        ("POST", "/v1/upstreams/example/request", KEYS["up"] + "x", {"path": "/text"}),
        ("POST", "/v1/upstreams/example/request", "up", {"path": "/status/500"}),
        ("POST", "/v1/upstreams/example/batch", "up", {"requests": [{"path": "/text"}]}),
        ("GET", "/v1/stats", "admin", None),
        ("GET", "/nowhere", "admin", None),
        ("DELETE", "/v1/stats", "admin", None),
        ("POST", "/v1/upstreams/example/request", "up", {"bogus": 1}),
    ]
    for method, path, key, body in calls:
        _, headers, answer = await keyed.call(method, path, key=key, json=body)
        bodies.append(str(answer) + str(headers))
    text = "\n".join(bodies) + "\n" + caplog.text
    for key in KEYS.values():
        assert key not in text
    assert SECRET not in text
    assert "Traceback" not in text


async def test_every_problem_carries_the_request_id(sqlite_path: str) -> None:
    key = new_key()
    config = parse_config(
        {
            "databases": {"main": {"url": f"sqlite:///{sqlite_path}"}},
            "keys": {"r": {"sha256": hash_key(key), "scopes": ["db:main:read"]}},
        },
        environ={},
    )
    app = create_app(config)  # its RequestIdMiddleware takes the caller's X-Request-ID
    rid = {"X-Request-ID": "req-123"}
    auth = {"Authorization": f"Bearer {key}", **rid}
    async with serve(app) as base, aiohttp.ClientSession() as http:
        cases = [
            ("GET", "/v1/stats", rid, 401, "unauthorized"),
            ("GET", "/v1/stats", auth, 403, "forbidden"),
            ("GET", "/no/such/route", auth, 404, "not-found"),
            ("DELETE", "/v1/circuit-breakers", auth, 405, "method-not-allowed"),
            ("POST", "/v1/circuit-breakers/main/reset", auth, 403, "forbidden"),
        ]
        for method, path, headers, status, slug in cases:
            async with http.request(method, base + path, headers=headers) as resp:
                problem = await resp.json(content_type=None)
                assert resp.status == status, path
                assert resp.headers["Content-Type"] == "application/problem+json"
                if status == 405:
                    assert "GET" in resp.headers["Allow"]
            assert problem["type"] == f"urn:iogate:problem:{slug}"
            assert problem["request_id"] == "req-123"
        async with http.post(
            base + "/v1/upstreams/x/request", data=b"{not json", headers=auth
        ) as resp:
            problem = await resp.json(content_type=None)
        assert resp.status == 422
        assert problem["type"] == "urn:iogate:problem:invalid-request"
        assert problem["request_id"] == "req-123"
