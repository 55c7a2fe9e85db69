"""A client that goes away cancels its request on the server, database statement included."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import asyncpg
import pytest

from iogate.config import parse_config
from tests.conftest import serve_app
from tests.servers import PostgresServer

MARK = "iogate-disconnect-probe"
ACTIVE = (
    "SELECT count(*) FROM pg_stat_activity "
    "WHERE pid <> pg_backend_pid() AND state = 'active' AND query LIKE $1"
)


async def _active(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval(ACTIVE, f"%{MARK}%"))


async def test_disconnect_cancels_the_running_statement(
    pg: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    config = parse_config(
        {"databases": {"pg": {"url": pg.dsn, "pool_size": 2, "allow_privileged_login": True}}},
        environ={},
    )
    probe = await asyncpg.connect(pg.dsn)
    try:
        async with serve_app(config) as client:

            async def long_query() -> None:
                async with aiohttp.ClientSession() as http:
                    await http.post(
                        client.base_url + "/v1/databases/pg/query",
                        json={"sql": f"SELECT pg_sleep(60) /* {MARK} */"},
                    )

            task = asyncio.create_task(long_query())
            for _ in range(1000):  # readiness: the statement runs (bounded poll)
                if await _active(probe):
                    break
                await asyncio.sleep(0.01)
            assert await _active(probe) == 1
            task.cancel()  # the client disconnects
            loop = asyncio.get_running_loop()
            gone_at = loop.time() + 5.0
            while await _active(probe) and loop.time() < gone_at:  # bounded poll
                await asyncio.sleep(0.02)
            assert await _active(probe) == 0, "the statement outlived its client"
            status, _, body = await client.post("/v1/databases/pg/query", {"sql": "SELECT 1"})
            assert (status, body["rows"]) == (200, [[1]])  # type: ignore[index]
    finally:
        await probe.close()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []  # a client going away is not a server error
