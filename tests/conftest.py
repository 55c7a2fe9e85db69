"""Fixtures: real servers on loopback, started once per session (databases)
or per test (the upstream app and the gateway)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from iogate.config import IogateConfig, parse_config
from iogate.server.app import create_app
from tests.servers import (
    MongoServer,
    PostgresServer,
    RedisServer,
    mongo_server,
    postgres_server,
    redis_server,
    serve_asgi,
)
from tests.upstream_app import UpstreamServer, upstream_server


@pytest.fixture(scope="session")
def pg() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="session")
def redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


@pytest.fixture(scope="session")
def mongo() -> Iterator[MongoServer]:
    """A MongoDB wire-protocol server (mongod if on PATH, else nx-27017)."""
    with mongo_server() as server:
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
    async with serve_asgi(create_app(config)) as base_url, aiohttp.ClientSession() as session:
        yield GatewayClient(base_url, session)


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
