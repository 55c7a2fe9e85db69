"""A small real HTTP server used as the upstream API in tests (aiohttp.web).

Every request it receives is appended to ``app[SEEN]`` so tests can assert
what did (and did not) reach the upstream.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web

from tests.servers import serve_aiohttp

SEEN = web.AppKey("seen", list)
HANG = web.AppKey("hang", asyncio.Event)
FLAKY = web.AppKey("flaky", dict)


@dataclass
class SeenRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes = field(repr=False)
    at: float = field(default_factory=time.monotonic, repr=False)  # arrival (monotonic s)


@web.middleware
async def record(request: web.Request, handler):  # type: ignore[no-untyped-def]
    body = await request.read()
    request.app[SEEN].append(
        SeenRequest(
            request.method,
            request.raw_path.split("?", 1)[0],
            dict(request.query),
            {k.lower(): v for k, v in request.headers.items()},
            body,
        )
    )
    return await handler(request)


async def echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response(
        {
            "method": request.method,
            "path": request.raw_path.split("?", 1)[0],
            "query": dict(request.query),
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "body": body.decode("utf-8", "replace"),
        }
    )


async def status(request: web.Request) -> web.Response:
    code = int(request.match_info["code"])
    return web.json_response({"error": f"status {code}"}, status=code)


async def text(request: web.Request) -> web.Response:
    return web.Response(text="héllo", content_type="text/plain")


async def binary(request: web.Request) -> web.Response:
    return web.Response(body=bytes(range(256)), content_type="application/octet-stream")


async def big(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse()  # chunked: no Content-Length
    await resp.prepare(request)
    for _ in range(64):
        await resp.write(b"x" * 1024)
    await resp.write_eof()
    return resp


async def redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound("http://127.0.0.2:9/elsewhere")


async def flaky(request: web.Request) -> web.Response:
    """Drops the connection without answering the first ``?fail=N`` times per key."""
    key = request.match_info["key"]
    count = request.app[FLAKY][key] = request.app[FLAKY].get(key, 0) + 1
    if count <= int(request.query.get("fail", "1")):
        assert request.transport is not None
        request.transport.close()
    return web.json_response({"attempt": count})


async def hang(request: web.Request) -> web.Response:
    await request.app[HANG].wait()  # released at teardown
    return web.json_response({"late": True})


async def hang_once(request: web.Request) -> web.Response:
    """Hangs (until teardown) on the first request per key; answers the others."""
    key = request.match_info["key"]
    count = request.app[FLAKY][key] = request.app[FLAKY].get(key, 0) + 1
    if count == 1:
        await request.app[HANG].wait()
    return web.json_response({"attempt": count})


SEQ = web.AppKey("seq", dict)
INFLIGHT = web.AppKey("inflight", list)


async def sequence(request: web.Request) -> web.Response:
    """Answers the statuses of ``?codes=503,429,200`` in turn per key (then the last
    one again); ``?h=name:value`` headers go on error answers."""
    key = request.match_info["key"]
    count = request.app[SEQ][key] = request.app[SEQ].get(key, 0) + 1
    codes = [int(c) for c in request.query.get("codes", "200").split(",")]
    code = codes[min(count, len(codes)) - 1]
    headers: dict[str, str] = {}
    if code >= 400:
        for item in request.query.getall("h", []):
            name, _, value = item.partition(":")
            headers[name] = value
    return web.json_response({"attempt": count, "status": code}, status=code, headers=headers)


async def cached(request: web.Request) -> web.Response:
    """ETag ``"v1"``, Cache-Control from ``?cc=``; a matching If-None-Match gets 304."""
    headers = {"ETag": '"v1"', "Cache-Control": request.query.get("cc", "max-age=60")}
    if request.headers.get("If-None-Match") == '"v1"':
        return web.Response(status=304, headers=headers)
    return web.json_response({"n": len(request.app[SEEN])}, headers=headers)


async def slow(request: web.Request) -> web.Response:
    """Tracks concurrent requests (max in ``app[INFLIGHT][0]``); answers after ``?ms=``."""
    inflight = request.app[INFLIGHT]
    inflight[1] += 1
    inflight[0] = max(inflight[0], inflight[1])
    try:
        await asyncio.sleep(int(request.query.get("ms", "20")) / 1000)  # server latency
    finally:
        inflight[1] -= 1
    return web.json_response({"i": request.match_info["i"]})


async def upload_sink(request: web.Request) -> web.Response:
    """Parses a multipart body (the recording middleware already read it, so the
    stdlib email parser does); answers each part's name, filename, size and SHA-256."""
    import hashlib
    from email.parser import BytesParser
    from email.policy import HTTP

    raw = await request.read()
    head = f"Content-Type: {request.headers['Content-Type']}\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + raw)
    parts = []
    for part in message.iter_parts():
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        parts.append(
            {
                "name": part.get_param("name", header="content-disposition"),
                "filename": part.get_filename(),
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        )
    return web.json_response({"parts": parts})


async def blob(request: web.Request) -> web.StreamResponse:
    """``?kb=`` KiB of a repeating pattern, chunked; ``?cut=1`` drops the connection halfway."""
    kb = int(request.query.get("kb", "256"))
    resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    await resp.prepare(request)
    for i in range(kb):
        if request.query.get("cut") and i == kb // 2:
            assert request.transport is not None
            request.transport.close()
            return resp
        await resp.write(bytes([i % 256]) * 1024)
    await resp.write_eof()
    return resp


async def events(request: web.Request) -> web.StreamResponse:
    """A Server-Sent Events stream exercising the WHATWG field rules."""
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    for piece in (
        b": comment\r\n",
        b"event: greet\r\ndata: hello\r\ndata:  world\r\nid: 7\r\n\r",
        b'\ndata: {"n": 1}\n\n',
        b"retry: 1500\ndata: last\n\n",
        b"data: unterminated",
    ):
        await resp.write(piece)
    await resp.write_eof()
    return resp


def make_app() -> web.Application:
    app = web.Application(middlewares=[record])
    app[SEEN] = []
    app[HANG] = asyncio.Event()
    app[FLAKY] = {}
    app[SEQ] = {}
    app[INFLIGHT] = [0, 0]
    app.router.add_route("*", "/api/echo", echo)
    app.router.add_route("*", "/api/echo/{tail:.*}", echo)
    app.router.add_get("/api/status/{code}", status)
    app.router.add_get("/api/text", text)
    app.router.add_get("/api/binary", binary)
    app.router.add_get("/api/big", big)
    app.router.add_get("/api/redirect", redirect)
    app.router.add_get("/api/hang", hang)
    app.router.add_get("/api/hang-once/{key}", hang_once)
    app.router.add_route("*", "/api/flaky/{key}", flaky)
    app.router.add_get("/outside", echo)
    app.router.add_route("*", "/api/seq/{key}", sequence)
    app.router.add_get("/api/cached", cached)
    app.router.add_route("*", "/api/slow/{i}", slow)
    app.router.add_post("/api/upload", upload_sink)
    app.router.add_get("/api/blob", blob)
    app.router.add_get("/api/events", events)
    return app


@dataclass
class UpstreamServer:
    base_url: str
    app: web.Application

    @property
    def seen(self) -> list[SeenRequest]:
        return self.app[SEEN]


@asynccontextmanager
async def upstream_server() -> AsyncIterator[UpstreamServer]:
    """Serve :func:`make_app` on 127.0.0.1 and a free port in the running loop."""
    app = make_app()
    async with serve_aiohttp(app) as port:
        try:
            yield UpstreamServer(f"http://127.0.0.1:{port}/api", app)
        finally:
            app[HANG].set()
