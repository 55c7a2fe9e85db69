"""Outbound headers and credentials through the real gateway over HTTP.

The upstream is a raw asyncio TCP server written here (not aiohttp's parsed
view): it records the exact header bytes it receives, so duplicates and case
are visible, and it echoes the credentials it got back in every place an
answer can carry them, so the tests see what the gateway lets through.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import orjson
import pytest

from iogate.config import parse_config
from tests.conftest import GatewayClient, serve_app

HDR_KEY = "sk-raw-SECRET-0123456789"
BEARER = "tok-bearer-SECRET-987654"
QKEY = "q-SECRET-key-55555555"
SECRETS = (HDR_KEY, BEARER, QKEY)
ENVIRON = {"HDR_KEY": HDR_KEY, "BEARER": BEARER, "QKEY": QKEY}


@dataclass
class RawRequest:
    head: bytes  # request line and header lines, exactly as received
    body: bytes

    @property
    def target(self) -> str:
        return self.head.split(b"\r\n", 1)[0].split(b" ")[1].decode("latin-1")

    @property
    def lines(self) -> list[tuple[bytes, bytes]]:
        out = []
        for line in self.head.split(b"\r\n")[1:]:
            if line:
                name, _, value = line.partition(b":")
                out.append((name, value.strip()))
        return out

    def values(self, name: str) -> list[bytes]:
        """Every value of ``name`` (case-insensitive), in order, duplicates kept."""
        return [v for n, v in self.lines if n.lower() == name.lower().encode()]

    def query(self) -> list[tuple[str, str]]:
        return parse_qsl(urlsplit(self.target).query, keep_blank_values=True)


Respond = Callable[[RawRequest], list[bytes]]


def _answer(status: str, headers: list[tuple[str, str]], body: bytes) -> bytes:
    lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers)]
    lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1") + body


def _received_secret(req: RawRequest) -> str:
    """The credential this request carried (whichever the upstream uses)."""
    for value in req.values("x-api-key") + req.values("authorization"):
        return value.decode().removeprefix("Bearer ")
    return dict(req.query()).get("api_key", "")


def _echoing(req: RawRequest) -> list[bytes]:
    """Echo the received credential in headers, JSON, text, errors and SSE."""
    secret = _received_secret(req)
    path = urlsplit(req.target).path
    head = req.head.decode("latin-1")
    if path.endswith("/json"):
        body = orjson.dumps({"got": head, "nested": [{secret: secret}], "n": 1})
        return [_answer("200 OK", [("Content-Type", "application/json"), ("X-Echo", secret)], body)]
    if path.endswith("/escaped"):  # the secret spelled with JSON escapes only
        spelled = "".join(f"\\u{ord(c):04x}" for c in secret).encode()
        body = b'{"k": "' + spelled + b'"}'
        return [_answer("200 OK", [("Content-Type", "application/json")], body)]
    if path.endswith("/text"):
        return [_answer("200 OK", [("Content-Type", "text/plain")], f"you sent {head}".encode())]
    if path.endswith("/binary"):
        body = b"\xff\xfe" + secret.encode() + b"\x00"
        return [_answer("200 OK", [("Content-Type", "application/octet-stream")], body)]
    if path.endswith("/fail"):
        body = f"denied: {secret}".encode()
        return [_answer(f"500 Broken {secret}", [("Content-Type", "text/plain")], body)]
    if path.endswith("/chat/completions"):
        if b'"stream":true' not in req.body:
            body = orjson.dumps({"error": {"message": f"bad key {secret}"}})
            return [_answer(f"401 Bad {secret}", [("Content-Type", "application/json")], body)]
        # The secret split across three events, each written (and drained) apart.
        cut1, cut2 = 5, len(secret) - 4
        pieces = [f"key={secret[:cut1]}", secret[cut1:cut2], f"{secret[cut2:]} ok"]
        events = [
            b"data: " + orjson.dumps({"choices": [{"delta": {"content": p}}]}) + b"\n\n"
            for p in pieces
        ]
        done = {"choices": [{"delta": {}, "finish_reason": "stop"}]}
        events += [b"data: " + orjson.dumps(done) + b"\n\ndata: [DONE]\n\n"]
        start = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
        return [start, *events]
    return [_answer("200 OK", [("Content-Type", "text/plain")], b"ok")]


class RawUpstream:
    """An HTTP/1.1 server on a loopback port: one request per connection."""

    def __init__(self, respond: Respond) -> None:
        self.respond = respond
        self.seen: list[RawRequest] = []
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n"))[:-4]
            request = RawRequest(head, b"")
            length = request.values("content-length")
            if length:
                request.body = await reader.readexactly(int(length[0]))
            elif b"chunked" in b"".join(request.values("transfer-encoding")).lower():
                while size := int((await reader.readuntil(b"\r\n"))[:-2], 16):
                    request.body += (await reader.readexactly(size + 2))[:-2]
                await reader.readuntil(b"\r\n")
            self.seen.append(request)
            for chunk in self.respond(request):
                writer.write(chunk)
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass  # the client closed an idle connection
        finally:
            writer.close()


@asynccontextmanager
async def raw_upstream(respond: Respond) -> AsyncIterator[RawUpstream]:
    upstream = RawUpstream(respond)
    server = await asyncio.start_server(upstream._handle, "127.0.0.1", 0)
    upstream.port = server.sockets[0].getsockname()[1]
    try:
        yield upstream
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def raw() -> AsyncIterator[RawUpstream]:
    async with raw_upstream(_echoing) as upstream:
        yield upstream


@pytest.fixture
async def gw(raw: RawUpstream, tmp_path: Path) -> AsyncIterator[GatewayClient]:
    base = raw.base_url
    once = {"retry": {"max_attempts": 1}}  # a 5xx is relayed at once (and no breaker)
    bearer = {"scheme": "bearer", "secret": "${BEARER}"}
    config = parse_config(
        {
            "databases": {"main": {"url": f"sqlite:///{tmp_path / 'gw.db'}"}},
            "upstreams": {
                "hdr": {
                    "base_url": base,
                    "headers": {"x-api-key": "${HDR_KEY}"},
                    "policies": once,
                },
                "bearer": {"base_url": base, "auth": bearer, "policies": once},
                "query": {
                    "base_url": base,
                    "auth": {"scheme": "query", "secret": "${QKEY}"},
                    "policies": once,
                },
                "llm": {
                    "base_url": base + "/v1",
                    "provider": "openai",
                    "model": "m",
                    "auth": bearer,
                    "policies": once,
                },
            },
        },
        environ=ENVIRON,
    )
    # A fresh connection per call: a reused one waits for the peer's delayed ACK
    # (about 40 ms per call on loopback) and these tests make hundreds of calls.
    connector = aiohttp.TCPConnector(force_close=True)
    async with serve_app(config) as client, aiohttp.ClientSession(connector=connector) as session:
        yield GatewayClient(client.base_url, session)


async def _raw_post(gw: GatewayClient, path: str, body: Any) -> tuple[int, bytes]:
    """Status and every byte the client got (header lines and body)."""
    async with gw.session.post(gw.base_url + path, json=body) as resp:
        data = await resp.read()
        head = b"\r\n".join(k + b": " + v for k, v in resp.raw_headers)
        return resp.status, head + b"\r\n\r\n" + data


def _assert_clean(data: bytes) -> None:
    for secret in SECRETS:
        assert secret.encode() not in data
        # nor any of its escaped spellings, nor a long piece of it
        assert secret[4:-4].encode() not in data


# -- credentials win ---------------------------------------------------------------------


async def test_a_client_header_never_shadows_or_duplicates_a_configured_one(
    gw: GatewayClient, raw: RawUpstream
) -> None:
    evil = {"X-Api-Key": "evil", "X-API-KEY": "evil2", "x-api-key ": "x"}
    del evil["x-api-key "]  # (a name with a space is a 400: tested below)
    for route, body in (
        ("/v1/upstreams/hdr/request", {"path": "/p", "headers": evil}),
        ("/api/execute", {"api_name": "hdr", "endpoint": "/p", "headers": evil}),
        ("/v1/upstreams/hdr/batch", {"requests": [{"path": "/p", "headers": evil}]}),
        (
            "/v1/batch",
            {"steps": [{"kind": "upstream", "upstream": "hdr", "path": "/p", "headers": evil}]},
        ),
    ):
        status, _ = await _raw_post(gw, route, body)
        assert status == 200, route
        sent = raw.seen[-1]
        assert sent.values("x-api-key") == [HDR_KEY.encode()], route  # exactly once
        assert b"evil" not in sent.head
    assert len(raw.seen) == 4


async def test_bearer_auth_wins_over_a_client_authorization(
    gw: GatewayClient, raw: RawUpstream
) -> None:
    headers = {"authorization": "Bearer evil", "AUTHORIZATION": "Basic ZXZpbA=="}
    status, _ = await _raw_post(gw, "/v1/upstreams/bearer/request", {"headers": headers})
    assert status == 200
    assert raw.seen[-1].values("authorization") == [f"Bearer {BEARER}".encode()]
    assert b"evil" not in raw.seen[-1].head
    assert b"ZXZpbA" not in raw.seen[-1].head


async def test_the_query_secret_cannot_be_overridden_or_duplicated(
    gw: GatewayClient, raw: RawUpstream
) -> None:
    body = {
        "path": "/p?api_key=evil1&API_KEY=evil2&api%5Fkey=evil3&keep=1",
        "params": {"api_key": "evil4", "Api_Key": "evil5"},
    }
    status, _ = await _raw_post(gw, "/v1/upstreams/query/request", body)
    assert status == 200
    query = raw.seen[-1].query()
    assert [v for k, v in query if k.lower() == "api_key"] == [QKEY]
    assert ("keep", "1") in query
    assert "evil" not in raw.seen[-1].target


async def test_hop_by_hop_and_framing_headers_never_reach_the_upstream(
    gw: GatewayClient, raw: RawUpstream
) -> None:
    headers = {
        "Connection": "x-listed, close",
        "X-Listed": "1",
        "Keep-Alive": "timeout=999",
        "Proxy-Connection": "keep-alive",
        "TE": "trailers",
        "Trailer": "X-Late",
        "Transfer-Encoding": "chunked",
        "Upgrade": "websocket",
        "Host": "evil.example",
        "Content-Length": "999",
        "Proxy-Authorization": "Basic ZXZpbA==",
        "X-Kept": "yes",
    }
    for route, body in (
        ("/v1/upstreams/hdr/request", {"method": "POST", "path": "/p", "headers": headers}),
        ("/v1/upstreams/hdr/request", {"method": "POST", "json": {"a": 1}, "headers": headers}),
        ("/api/execute", {"api_name": "hdr", "method": "POST", "headers": headers, "data": [1]}),
        (
            "/v1/batch",
            {"steps": [{"kind": "upstream", "upstream": "hdr", "path": "/", "headers": headers}]},
        ),
    ):
        status, _ = await _raw_post(gw, route, body)
        assert status == 200, route
        sent = raw.seen[-1]
        for name in ("x-listed", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"):
            assert sent.values(name) == [], (route, name)
        assert sent.values("proxy-authorization") == []
        assert sent.values("transfer-encoding") == []  # aiohttp framed the body by length
        assert sent.values("host") == [f"127.0.0.1:{raw.port}".encode()]
        assert b"timeout=999" not in sent.head
        assert b"evil" not in sent.head
        assert b"x-listed" not in sent.head.lower()  # the Connection value is not the client's
        assert sent.values("x-kept") == [b"yes"]
        length = sent.values("content-length")  # aiohttp's own, if any
        assert length in ([], [str(len(sent.body)).encode()]), route


# -- invalid headers are 400 before any I/O -------------------------------------------------

BAD_NAMES = ["X Y", "X:Y", "X\rY", "X\nY", "X\x00Y", "Xé", "X-€", "", " X", "X\t"]
BAD_VALUES = ["a\r\nInjected: 1", "a\nb", "a\rb", "a\x00b", "a\x7fb", "a\x01b", "€uro"]


async def test_invalid_header_names_and_values_are_400_and_nothing_is_sent(
    gw: GatewayClient, raw: RawUpstream
) -> None:
    cases = [{name: "v"} for name in BAD_NAMES] + [{"X-Ok": value} for value in BAD_VALUES]
    for headers in cases:
        good = {"kind": "upstream", "upstream": "hdr", "path": "/p"}
        legacy = {"type": "api", "api_name": "hdr", "headers": headers}
        for route, body in (
            ("/v1/upstreams/hdr/request", {"path": "/p", "headers": headers}),
            ("/v1/upstreams/hdr/request", {"headers": headers, "cache_ttl": 5}),
            ("/api/execute", {"api_name": "hdr", "endpoint": "/p", "headers": headers}),
            ("/v1/upstreams/hdr/batch", {"requests": [{"path": "/p"}, {"headers": headers}]}),
            ("/batch/execute", {"operations": [{"type": "api", "api_name": "hdr"}, legacy]}),
            ("/v1/batch", {"steps": [good, {**good, "headers": headers}]}),
            ("/v1/tasks", {"steps": [good, {**good, "headers": headers}]}),
        ):
            status, data = await _raw_post(gw, route, body)
            assert status == 400, (route, headers)
            problem = orjson.loads(data.split(b"\r\n\r\n", 1)[1])
            assert problem["type"] == "urn:iogate:problem:invalid-input", (route, headers)
            assert "Injected" not in problem["detail"]  # a value is never quoted
    assert raw.seen == []  # refused before any I/O, on every route


async def test_a_bad_header_value_from_a_batch_reference_fails_that_step_before_sending(
    gw: GatewayClient, raw: RawUpstream
) -> None:
    steps = [
        {"kind": "cache", "op": "set", "key": "h", "value": "x\r\nInjected: 1"},
        {"kind": "cache", "op": "get", "key": "h"},
        {
            "kind": "upstream",
            "upstream": "hdr",
            "path": "/p",
            "headers": {"X-From-Ref": {"$ref": "steps.1.value"}},
        },
    ]
    status, data = await _raw_post(gw, "/v1/batch", {"steps": steps})
    assert status == 200
    result = orjson.loads(data.split(b"\r\n\r\n", 1)[1])["results"][2]
    assert result["ok"] is False
    assert result["problem"]["type"] == "urn:iogate:problem:invalid-input"
    assert raw.seen == []


# -- secrets never come back -----------------------------------------------------------------


async def test_echoed_secrets_are_redacted_from_every_relayed_answer(
    gw: GatewayClient, raw: RawUpstream
) -> None:
    for name in ("hdr", "bearer", "query"):
        for path in ("/json", "/escaped", "/text", "/binary", "/fail"):
            for route, body in (
                (f"/v1/upstreams/{name}/request", {"path": path}),
                (f"/v1/upstreams/{name}/request", {"path": path, "cache_ttl": 60}),
                (f"/v1/upstreams/{name}/request", {"path": path, "cache_ttl": 60}),  # a hit
                ("/api/execute", {"api_name": name, "endpoint": path}),
                (f"/v1/upstreams/{name}/batch", {"requests": [{"path": path}]}),
                ("/v1/batch", {"steps": [{"kind": "upstream", "upstream": name, "path": path}]}),
            ):
                status, data = await _raw_post(gw, route, body)
                assert status == 200, (route, path)
                _assert_clean(data)
                answer = orjson.loads(data.split(b"\r\n\r\n", 1)[1])
                answer = answer.get("results", [answer])[0]  # the batch routes' shapes
                answer = answer.get("value", answer)
                if answer.get("body_encoding") == "base64":
                    data = base64.b64decode(answer["body"])
                    assert data == b"\xff\xfe[REDACTED]\x00"
                    _assert_clean(data)
                assert b"[REDACTED]" in data, (route, path)  # it was echoed, and replaced
                if path == "/json":  # still valid JSON, structure kept
                    assert answer["headers"]["x-echo"] == "[REDACTED]"
                    assert answer["body"]["nested"] == [{"[REDACTED]": "[REDACTED]"}]
                    assert answer["body"]["n"] == 1
    assert all(_received_secret(r) in SECRETS for r in raw.seen)  # each call carried one


async def test_a_failed_batch_step_and_a_502_problem_carry_no_secret(
    gw: GatewayClient, raw: RawUpstream
) -> None:
    status, data = await _raw_post(
        gw, "/v1/batch", {"steps": [{"kind": "upstream", "upstream": "bearer", "path": "/fail"}]}
    )
    assert status == 200
    step = orjson.loads(data.split(b"\r\n\r\n", 1)[1])["results"][0]
    assert step["ok"] is False
    assert step["problem"]["upstream_status"] == 500
    assert step["problem"]["detail"] == "upstream answered 500 Broken [REDACTED]"
    _assert_clean(data)
    # generate: the upstream's 401 (reason phrase and body echo the key) is a 502 problem
    status, data = await _raw_post(gw, "/v1/upstreams/llm/generate", {"prompt": "hi"})
    assert status == 502
    problem = orjson.loads(data.split(b"\r\n\r\n", 1)[1])
    assert problem["upstream_status"] == 401
    assert problem["detail"] == "upstream answered 401 Bad [REDACTED]"
    assert problem["resource"] == "llm"
    _assert_clean(data)
    assert raw.seen[-1].values("authorization") == [f"Bearer {BEARER}".encode()]


async def test_a_secret_split_across_sse_chunks_is_redacted(
    gw: GatewayClient, raw: RawUpstream
) -> None:
    status, data = await _raw_post(
        gw, "/v1/upstreams/llm/generate", {"prompt": "hi", "stream": True}
    )
    assert status == 200
    _assert_clean(data)
    body = data.split(b"\r\n\r\n", 1)[1].decode()
    texts = [orjson.loads(d)["text"] for d in re.findall(r"event: delta\ndata: (.*)\n", body)]
    assert "".join(texts) == "key=[REDACTED] ok"
    for piece in (BEARER[:5], BEARER[5:-4], BEARER[-4:]):  # no delta carries a piece of it
        assert not any(piece in text for text in texts)
    assert body.rstrip().endswith('data: {"finish_reason":"stop","usage":null}')
