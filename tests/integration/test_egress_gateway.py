"""Egress guard through the gateway route: a request never leaves its upstream's
base URL, and per-upstream allowlists of methods and paths hold before any I/O."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from iogate.config import parse_config
from tests.conftest import GatewayClient, serve_app
from tests.upstream_app import UpstreamServer

ESCAPES = [
    "http://127.0.0.1:1/x",  # absolute URL
    "https://example.com/",
    "//127.0.0.1/outside",  # scheme-relative
    "//evil.example/x",
    "/../outside",  # dot segments
    "/echo/../../outside",
    "..",
    "/%2e%2e/outside",  # percent-encoded
    "/%2E%2E/outside",
    "/%252e%252e/outside",  # doubly encoded
    "/..%2foutside",
    "/echo/%2e%2e%2f%2e%2e%2foutside",
    "/\\..\\outside",  # backslashes
    "/echo#frag",
    "/echo\r\nHost: evil",  # header injection attempt
    "mailto:x@y",
]


@pytest.fixture
async def guarded(sqlite_path: str, upstream: UpstreamServer) -> AsyncIterator[GatewayClient]:
    config = parse_config(
        {
            "upstreams": {
                "example": {"base_url": upstream.base_url},
                "narrow": {
                    "base_url": upstream.base_url,
                    "allowed_methods": ["GET"],
                    "allowed_paths": ["/echo", "/status/"],
                },
            },
        },
        environ={},
    )
    async with serve_app(config) as client:
        yield client


async def test_paths_cannot_leave_the_base_url(
    guarded: GatewayClient, upstream: UpstreamServer
) -> None:
    for path in ESCAPES:
        for route, body in (
            ("/v1/upstreams/example/request", {"path": path}),
            ("/api/execute", {"api_name": "example", "endpoint": path}),
        ):
            status, headers, problem = await guarded.post(route, body)
            assert status == 400, (route, path)
            assert headers["Content-Type"] == "application/problem+json"
            assert problem["type"] == "urn:iogate:problem:invalid-input"  # type: ignore[index]
        status, _, answer = await guarded.post(
            "/v1/upstreams/example/batch", {"requests": [{"path": path}]}
        )
        assert status == 200
        assert answer["results"][0]["error"]["type"] == "urn:iogate:problem:invalid-input"  # type: ignore[index]
    assert upstream.seen == []  # refused before any I/O


async def test_a_redirect_to_another_host_is_not_followed(
    guarded: GatewayClient, upstream: UpstreamServer
) -> None:
    status, _, answer = await guarded.post("/v1/upstreams/example/request", {"path": "/redirect"})
    assert status == 200
    assert answer["status"] == 302  # type: ignore[index]  # handed back, not followed
    assert answer["headers"]["location"] == "http://127.0.0.2:9/elsewhere"  # type: ignore[index]
    assert [s.path for s in upstream.seen] == ["/api/redirect"]


async def test_method_and_path_allowlists(guarded: GatewayClient, upstream: UpstreamServer) -> None:
    allowed = [("GET", "/echo"), ("GET", "/echo/deeper?x=1"), ("GET", "/status/204")]
    allowed.append(("GET", "/%65cho"))  # RFC 3986 §6.2.2.2: the same path as /echo
    for method, path in allowed:
        status, _, answer = await guarded.post(
            "/v1/upstreams/narrow/request", {"method": method, "path": path}
        )
        assert (status, method, path) == (200, method, path)
        assert answer["status"] in (200, 204)  # type: ignore[index]
    seen = len(upstream.seen)
    refused = [
        ("POST", "/echo"),
        ("DELETE", "/echo"),
        ("GET", "/echoes"),  # a prefix is matched by whole segments
        ("GET", "/text"),
        ("GET", "/statuses/1"),  # "/status/" is the segment "/status"
        ("GET", "/%65choes"),  # percent-encoding changes nothing
        ("GET", ""),
    ]
    for method, path in refused:
        status, _, problem = await guarded.post(
            "/v1/upstreams/narrow/request", {"method": method, "path": path}
        )
        assert (status, method, path) == (400, method, path)
        assert problem["type"] == "urn:iogate:problem:invalid-input"  # type: ignore[index]
        assert "not allowed" in problem["detail"]  # type: ignore[index]
    assert len(upstream.seen) == seen
