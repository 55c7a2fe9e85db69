"""Gateway endpoints of upstreams over HTTP: /batch and /generate (JSON and SSE),
with config-level auth, idempotency keys and provider kinds."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest

from iogate.config import parse_config
from iogate.http.sse import SSEDecoder
from tests.conftest import GatewayClient, serve_app
from tests.fakes.llm import FakeLLM, Fault, fake_llm_server
from tests.upstream_app import UpstreamServer

FAST_RETRY = {"retry": {"max_attempts": 3, "initial": 0.01, "max_delay": 0.02}}


@pytest.fixture
async def llm() -> AsyncIterator[FakeLLM]:
    async with fake_llm_server() as server:
        yield server


@pytest.fixture
async def gw(llm: FakeLLM, upstream: UpstreamServer) -> AsyncIterator[GatewayClient]:
    config = parse_config(
        {
            "upstreams": {
                "example": {"base_url": upstream.base_url, "policies": FAST_RETRY},
                "openai": {
                    "base_url": llm.base_url + "/v1",
                    "provider": "openai",
                    "model": "gpt-test",
                    "auth": {"scheme": "bearer", "secret": "${OPENAI_KEY}"},
                    "policies": FAST_RETRY,
                },
                "claude": {
                    "base_url": llm.base_url,
                    "provider": "anthropic",
                    "model": "claude-test",
                    "auth": {"scheme": "header", "secret": "${ANTHROPIC_KEY}"},
                },
                "tgi": {"base_url": llm.base_url, "provider": "tgi"},
            }
        },
        environ={"OPENAI_KEY": "sk-o-SECRET", "ANTHROPIC_KEY": "sk-a-SECRET"},
    )
    async with serve_app(config) as client:
        yield client


async def _sse(
    gw: GatewayClient, path: str, body: object
) -> tuple[int, str, list[tuple[str, object]]]:
    async with gw.session.post(gw.base_url + path, json=body) as resp:
        raw = await resp.read()
        events = SSEDecoder().feed(raw)
        return resp.status, resp.headers["content-type"], [(e.event, e.json()) for e in events]


async def test_batch_in_order_with_errors_isolated(
    gw: GatewayClient, upstream: UpstreamServer
) -> None:
    status, _, body = await gw.post(
        "/v1/upstreams/example/batch",
        {
            "requests": [
                {"path": "/seq/b1?codes=503,200"},
                {"path": "/../etc/passwd"},
                {"method": "POST", "path": "/echo/x", "json": {"a": 1}},
                {"path": "/status/404"},
            ],
            "max_concurrent": 2,
        },
    )
    assert status == 200
    assert isinstance(body, dict)
    results = body["results"]
    assert results[0]["status"] == 200
    assert results[0]["body"]["attempt"] == 2
    assert results[1]["error"]["status"] == 400
    assert results[2]["body"]["body"] == '{"a":1}'
    assert results[3]["status"] == 404
    assert not any(s.path == "/etc/passwd" for s in upstream.seen)


async def test_generate_json_with_retry_and_one_idempotency_key(
    gw: GatewayClient, llm: FakeLLM
) -> None:
    llm.script["/v1/chat/completions"] = [Fault(status=429, headers={"retry-after-ms": "10"})]
    status, _, body = await gw.post(
        "/v1/upstreams/openai/generate",
        {"prompt": "one two three", "max_tokens": 10, "temperature": 0},
    )
    assert status == 200
    assert body == {
        "text": "echo: one two three",
        "usage": {"input_tokens": 3, "output_tokens": 4},
        "finish_reason": "stop",
    }
    assert len(llm.seen) == 2
    assert llm.seen[0].headers["idempotency-key"] == llm.seen[1].headers["idempotency-key"]
    assert llm.seen[0].headers["authorization"] == "Bearer sk-o-SECRET"
    assert llm.seen[0].body["model"] == "gpt-test"


async def test_generate_stream_sse(gw: GatewayClient) -> None:
    status, ctype, events = await _sse(
        gw,
        "/v1/upstreams/claude/generate",
        {"messages": [{"role": "user", "content": "a b c"}], "max_tokens": 3, "stream": True},
    )
    assert status == 200
    assert ctype.startswith("text/event-stream")
    assert [e for e, _ in events] == ["delta", "delta", "delta", "done"]
    assert "".join(d["text"] for e, d in events if e == "delta") == "echo: a b"  # type: ignore[index]
    assert events[-1] == (
        "done",
        {"finish_reason": "max_tokens", "usage": {"input_tokens": 3, "output_tokens": 3}},
    )


async def test_generate_stream_error_mid_stream_is_an_error_event(
    gw: GatewayClient, llm: FakeLLM
) -> None:
    llm.script["/generate_stream"] = [Fault(error_after=1)]
    status, _, events = await _sse(
        gw, "/v1/upstreams/tgi/generate", {"prompt": "x y", "stream": True}
    )
    assert status == 200
    assert events[0] == ("delta", {"text": "echo:"})
    name, problem = events[-1]
    assert name == "error"
    assert isinstance(problem, dict)
    assert problem["status"] == 502


async def test_generate_errors_before_streaming_are_problems(
    gw: GatewayClient, llm: FakeLLM
) -> None:
    llm.script["/v1/messages"] = [
        Fault(status=400, body={"type": "error", "error": {"type": "invalid_request_error"}})
    ]
    status, headers, body = await gw.post(
        "/v1/upstreams/claude/generate", {"prompt": "x", "stream": True}
    )
    assert status == 502
    assert headers["Content-Type"] == "application/problem+json"
    assert isinstance(body, dict)
    assert body["upstream_status"] == 400
    assert "SECRET" not in str(body)
    status, _, body = await gw.post("/v1/upstreams/example/generate", {"prompt": "x"})
    assert status == 400
    status, _, _ = await gw.post("/v1/upstreams/openai/generate", {"prompt": "x", "messages": []})
    assert status == 400


async def test_request_endpoint_still_passes_statuses_through(gw: GatewayClient) -> None:
    status, _, body = await gw.post("/v1/upstreams/example/request", {"path": "/seq/r?codes=503"})
    assert status == 200
    assert isinstance(body, dict)
    assert body["status"] == 503
    assert body["body"]["attempt"] == 3


async def test_config_secret_masked(gw: GatewayClient) -> None:
    async with aiohttp.ClientSession() as s, s.get(gw.base_url + "/openapi.json") as resp:
        assert "sk-o-SECRET" not in await resp.text()


async def test_a_json_body_is_relayed_as_sent_even_beyond_64_bit_integers(
    gw: GatewayClient, upstream: UpstreamServer
) -> None:
    """orjson refuses integers beyond 64 bits; JSON carries them (RFC 8259
    §6), the edge accepts them, so the relay sends them (it answered 500)."""
    big = 2**70
    document = {"n": big, "text": "é\U0001f600", "list": [1.5, None, True]}
    status, _, body = await gw.post(
        "/v1/upstreams/example/request", {"method": "POST", "path": "/echo", "json": document}
    )
    assert status == 200
    assert isinstance(body, dict)
    assert json.loads(upstream.seen[-1].body) == document
    assert upstream.seen[-1].headers["content-type"] == "application/json"
    status, _, body = await gw.post(
        "/v1/upstreams/example/batch",
        {"requests": [{"method": "POST", "path": "/echo", "json": [big, -big]}]},
    )
    assert status == 200
    assert isinstance(body, dict)
    assert body["results"][0]["status"] == 200
    assert json.loads(upstream.seen[-1].body) == [big, -big]
