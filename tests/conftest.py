"""Fixtures: real servers on loopback, started once per session (databases)
or per test (the upstream app and the gateway)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
import uvicorn

from iogate.config import IogateConfig, parse_config
from iogate.server.app import create_app
from tests.servers import PostgresServer, RedisServer, postgres_server, redis_server
from tests.upstream_app import UpstreamServer, upstream_server


@pytest.fixture(scope="session")
def pg() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="session")
def redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


@pytest.fixture
async def upstream() -> AsyncIterator[UpstreamServer]:
    async with upstream_server() as server:
        yield server


@pytest.fixture
def sqlite_path(tmp_path: Path) -> str:
    return str(tmp_path / "var" / "test.db")


class GatewayClient:
    """An iogate app served by uvicorn on a free loopback port, and a client to it."""

    def __init__(self, base_url: str, session: aiohttp.ClientSession) -> None:
        self.base_url = base_url
        self.session = session

    async def post(self, path: str, body: object) -> tuple[int, dict[str, str], object]:
        async with self.session.post(self.base_url + path, json=body) as resp:
            return resp.status, dict(resp.headers), await resp.json(content_type=None)

    async def get(self, path: str) -> tuple[int, dict[str, str], object]:
        async with self.session.get(self.base_url + path) as resp:
            return resp.status, dict(resp.headers), await resp.json(content_type=None)


@asynccontextmanager
async def serve_app(config: IogateConfig) -> AsyncIterator[GatewayClient]:
    app = create_app(config)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    for _ in range(500):  # readiness of the server task, bounded
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    if not server.started:
        await task  # surfaces the start-up error
        raise RuntimeError("gateway did not start")
    try:
        async with aiohttp.ClientSession() as session:
            yield GatewayClient(f"http://127.0.0.1:{port}", session)
    finally:
        server.should_exit = True
        await task
        sock.close()


@pytest.fixture
async def gateway_client(
    sqlite_path: str, upstream: UpstreamServer
) -> AsyncIterator[GatewayClient]:
    """The gateway with database ``main`` (SQLite) and upstream ``example``."""
    config = parse_config(
        {
            "databases": {"main": {"url": f"sqlite:///{sqlite_path}"}},
            "upstreams": {
                "example": {
                    "base_url": upstream.base_url,
                    "headers": {"x-api-key": "${EXAMPLE_API_KEY}"},
                }
            },
        },
        environ={"EXAMPLE_API_KEY": "sk-test-SECRET-0123456789"},
    )
    async with serve_app(config) as client:
        yield client
