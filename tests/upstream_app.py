"""A small real HTTP server used as the upstream API in tests (aiohttp.web).

Every request it receives is appended to ``app[SEEN]`` so tests can assert
what did (and did not) reach the upstream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web

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


def make_app() -> web.Application:
    app = web.Application(middlewares=[record])
    app[SEEN] = []
    app[HANG] = asyncio.Event()
    app[FLAKY] = {}
    app.router.add_route("*", "/api/echo", echo)
    app.router.add_route("*", "/api/echo/{tail:.*}", echo)
    app.router.add_get("/api/status/{code}", status)
    app.router.add_get("/api/text", text)
    app.router.add_get("/api/binary", binary)
    app.router.add_get("/api/big", big)
    app.router.add_get("/api/redirect", redirect)
    app.router.add_get("/api/hang", hang)
    app.router.add_route("*", "/api/flaky/{key}", flaky)
    app.router.add_get("/outside", echo)
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
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield UpstreamServer(f"http://127.0.0.1:{port}/api", app)
    finally:
        app[HANG].set()
        await runner.cleanup()
