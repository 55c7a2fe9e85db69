"""Serve an iogate app whose every request runs as a given Principal (what the
auth middleware does once API keys are configured), to test scope checks."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import uvicorn
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from iogate.config import IogateConfig
from iogate.server.app import create_app
from iogate.server.auth import Principal
from tests.conftest import GatewayClient


class AsPrincipal:
    """ASGI middleware: ``request.state.principal = principal`` on every request."""

    def __init__(self, app: ASGIApp, principal: Principal) -> None:
        self.app = app
        self.principal = principal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope.setdefault("state", {})["principal"] = self.principal
        await self.app(scope, receive, send)


@asynccontextmanager
async def serve_as(
    config: IogateConfig, principal: Principal
) -> AsyncIterator[tuple[GatewayClient, FastAPI]]:
    """The app of ``config`` on a free loopback port, every request as ``principal``."""
    app = create_app(config)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(AsPrincipal(app, principal), log_level="warning", lifespan="on")
    )
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    for _ in range(500):  # readiness of the server task, bounded
        if server.started or serving.done():
            break
        await asyncio.sleep(0.01)
    if not server.started:
        await serving
        raise RuntimeError("gateway did not start")
    try:
        async with aiohttp.ClientSession() as session:
            yield GatewayClient(f"http://127.0.0.1:{port}", session), app
    finally:
        server.should_exit = True
        await serving
        sock.close()
