"""Honest health (issue 21): ``/ready`` and ``iogate check`` probe every
upstream (its ``health_path``, or a HEAD of its base URL, through its own pool
and credentials) and the cache's Redis tier; names the config refers to must
exist (alert rules, webhooks, ``ready_optional``, a key's tables, named queries)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from iogate.config import parse_config
from iogate.errors import ConfigError
from iogate.gateway import Gateway
from iogate.observability._health import check_references
from iogate.server.app import create_app
from tests.servers import RedisServer, free_port, serve_asgi
from tests.subprocess_env import child_env
from tests.upstream_app import UpstreamServer

TOKEN = "tok-health-SECRET-31337"


async def _ready(config: Any) -> tuple[int, dict[str, Any]]:
    async with (
        serve_asgi(create_app(config)) as base,
        aiohttp.ClientSession() as session,
        session.get(f"{base}/ready") as resp,
    ):
        return resp.status, await resp.json()


async def test_ready_probes_upstreams_through_their_pool_and_auth(
    upstream: UpstreamServer, sqlite_path: str
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/api"
    config = parse_config(
        {
            "databases": {"main": {"url": f"sqlite:///{sqlite_path}"}},
            "upstreams": {
                "healthy": {
                    "base_url": upstream.base_url,
                    "health_path": "/echo/health",
                    "auth": {"scheme": "bearer", "secret": "${TOKEN}"},
                },
                "sick": {"base_url": upstream.base_url, "health_path": "/status/503"},
                "teapot": {
                    "base_url": upstream.base_url,
                    "health_path": "/status/418",
                    "health_status": 418,
                },
                "plain": {"base_url": upstream.base_url},  # HEAD /api: a 404/405 is "up"
                "gone": {"base_url": dead},
            },
            "observability": {"ready_optional": ["gone"], "ready_deadline": 1.0},
        },
        environ={"TOKEN": TOKEN},
    )
    status, body = await _ready(config)
    resources = body["resources"]
    assert {n: r["up"] for n, r in resources.items()} == {
        "main": True,
        "healthy": True,
        "sick": False,
        "teapot": True,
        "plain": True,
        "gone": False,
    }
    assert status == 503  # "sick" is required
    assert resources["sick"]["error"] == "UpstreamHTTPError"
    assert resources["gone"]["error"] == "UpstreamConnectionError"
    assert resources["gone"]["required"] is False
    # each probe was a real request, with the upstream's configured credentials
    probes = {(r.method, r.path): r for r in upstream.seen}
    assert probes[("GET", "/api/echo/health")].headers["authorization"] == f"Bearer {TOKEN}"
    assert ("HEAD", "/api") in probes
    assert ("GET", "/api/status/503") in probes


async def test_ready_probes_the_cache_redis_tier(redis: RedisServer, sqlite_path: str) -> None:
    def config(url: str) -> Any:
        return parse_config(
            {
                "databases": {"main": {"url": f"sqlite:///{sqlite_path}"}},
                "cache": {"redis_url": url},
                "observability": {"ready_deadline": 1.0},
            },
            environ={},
        )

    status, body = await _ready(config(redis.url))
    assert status == 200
    assert body["resources"]["cache-redis"]["up"] is True
    status, body = await _ready(config(f"redis://127.0.0.1:{free_port()}/0"))
    assert status == 503
    assert body["resources"]["cache-redis"]["up"] is False


@pytest.mark.parametrize(
    ("observability", "message"),
    [
        (
            {"alerts": [{"resource": "nope", "max_p99": 1.0}]},
            "no database or upstream named 'nope'",
        ),
        (
            {"alerts": [{"max_p99": 1.0, "webhook": {"upstream": "ops"}}]},
            "webhook.upstream: no upstream named 'ops'",
        ),
        ({"ready_optional": ["missing"]}, "no database or upstream named 'missing'"),
    ],
)
def test_names_without_sql_are_checked_when_parsed(
    observability: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(
            {"databases": {"main": {"url": "sqlite:///:memory:"}}, "observability": observability},
            environ={},
        )


async def test_key_tables_and_named_queries_must_exist(sqlite_path: str) -> None:
    def config(tables: list[str], sql: str) -> Any:
        return parse_config(
            {
                "databases": {
                    "main": {"url": f"sqlite:///{sqlite_path}", "queries": {"q": {"sql": sql}}}
                },
                "keys": {"app": {"sha256": "0" * 64, "scopes": ["db:main:read"], "tables": tables}},
            },
            environ={},
        )

    async with Gateway(config([], "SELECT 1")) as gw:
        await gw.database("main").execute("CREATE TABLE items (id INTEGER PRIMARY KEY)")
    good = config(["items", "main.items"], "SELECT id FROM items WHERE id = :id")
    async with Gateway(good) as gw:
        await check_references(good, gw.databases)
    bad_table = config(["items", "itmes"], "SELECT 1")
    async with Gateway(bad_table) as gw:
        with pytest.raises(ConfigError, match=r"keys\.app\.tables: no table 'itmes'"):
            await check_references(bad_table, gw.databases)
    bad_query = config(["items"], "SELECT nope FROM items")
    async with Gateway(bad_query) as gw:
        with pytest.raises(ConfigError, match=r"databases\.main\.queries\.q does not compile"):
            await check_references(bad_query, gw.databases)


async def _iogate(*args: str, cwd: Path) -> tuple[int, str, str]:
    """Run the CLI without blocking the loop (the test's upstream answers in it)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "iogate",
        *args,
        cwd=cwd,
        env=child_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_check_probes_upstreams_and_refuses_unknown_names(
    tmp_path: Path, upstream: UpstreamServer
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/api"
    (tmp_path / "up.toml").write_text(
        '[databases.main]\nurl = "sqlite:///main.db"\n'
        f'[upstreams.fine]\nbase_url = "{upstream.base_url}"\nhealth_path = "/echo"\n'
        f'[upstreams.gone]\nbase_url = "{dead}"\n'
    )
    code, out, err = await _iogate("check", "-c", "up.toml", cwd=tmp_path)
    assert code == 1, out + err
    lines = {line.split()[1]: line for line in out.splitlines() if "│" in line}
    assert "ok" in lines["fine"]
    assert "down: UpstreamConnectionError" in lines["gone"]
    assert ("GET", "/api/echo") in {(r.method, r.path) for r in upstream.seen}
    # a key's table that no database has: exit 2, one line, from check and serve
    (tmp_path / "bad.toml").write_text(
        '[databases.main]\nurl = "sqlite:///main.db"\n'
        '[keys.app]\nsha256 = "' + "0" * 64 + '"\nscopes = ["db:main:read"]\n'
        'tables = ["ghost"]\n'
    )
    for command in (
        ["check", "-c", "bad.toml"],
        ["serve", "-c", "bad.toml", "--port", str(free_port())],
    ):
        code, out, err = await _iogate(*command, cwd=tmp_path)
        assert code == 2, (command, out, err)
        errors = [line for line in err.splitlines() if "ghost" in line]
        assert len(errors) == 1, err
        assert "keys.app.tables: no table 'ghost' in any SQL database" in errors[0]
        assert "Traceback" not in err
