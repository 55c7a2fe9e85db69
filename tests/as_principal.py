"""Serve an iogate app whose every request runs as a given Principal (what the
auth middleware does once API keys are configured), to test scope checks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from iogate.config import IogateConfig
from iogate.server.app import create_app
from iogate.server.auth import Principal
from tests.conftest import GatewayClient
from tests.servers import serve_asgi


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
    async with serve_asgi(AsPrincipal(app, principal)) as base_url, aiohttp.ClientSession() as s:
        yield GatewayClient(base_url, s), app
