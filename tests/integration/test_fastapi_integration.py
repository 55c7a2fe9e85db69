"""``iogate.fastapi`` in a user's own app: lifespan, Depends providers,
problem handlers, ``@monitored``, and the gateway's routes mounted under the
user's own auth dependency."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import aiohttp
import pytest
from fastapi import Depends, FastAPI, Header, HTTPException

import iogate
from iogate import fastapi as iogate_fastapi
from iogate.observability import monitored
from iogate.server.keys import hash_key, new_key
from iogate.wire.principal import Principal
from tests.servers import serve_asgi

PRINCIPALS = {
    "admin-token": Principal("ops", frozenset({"admin"})),
    "reader-token": Principal("reader", frozenset({"db:main:read"})),
}


async def user_auth(x_token: Annotated[str | None, Header()] = None) -> Principal:
    principal = PRINCIPALS.get(x_token or "")
    if principal is None:
        raise HTTPException(401, "who are you?")
    return principal


def build_app(sqlite_path: str, key: str) -> FastAPI:
    config: dict[str, Any] = {
        "databases": {"main": {"url": f"sqlite:///{sqlite_path}"}},
        "keys": {"svc": {"sha256": hash_key(key), "scopes": ["db:main:read"]}},
    }
    app = FastAPI(lifespan=iogate_fastapi.lifespan(config))
    iogate_fastapi.install_problem_handlers(app)

    @monitored("app", metrics=lambda: app.state.gateway.metrics)
    async def count_notes(db: iogate.SQLDatabase) -> int:
        return int(await db.fetch_val("SELECT count(*) FROM notes"))

    @app.post("/notes")
    async def add(
        body: dict[str, str],
        db: Annotated[iogate.SQLDatabase, Depends(iogate_fastapi.database("main"))],
    ) -> dict[str, int]:
        await db.execute("CREATE TABLE IF NOT EXISTS notes (text TEXT NOT NULL)")
        await db.execute("INSERT INTO notes (text) VALUES (:text)", {"text": body["text"]})
        return {"notes": await count_notes(db)}

    @app.get("/broken")
    async def broken(
        db: Annotated[iogate.SQLDatabase, Depends(iogate_fastapi.database("nope"))],
    ) -> None:
        raise AssertionError("never reached")

    @app.get("/bad-sql")
    async def bad_sql(
        db: Annotated[iogate.SQLDatabase, Depends(iogate_fastapi.database("main"))],
        cache: iogate_fastapi.CacheDep,
        gw: iogate_fastapi.GatewayDep,
    ) -> None:
        assert cache is gw.cache
        await db.fetch("SELEC nonsense")

    app.include_router(iogate_fastapi.gateway_router(auth=user_auth), prefix="/gw")
    app.include_router(
        iogate_fastapi.gateway_router(auth=iogate_fastapi.api_key_principal), prefix="/keyed"
    )
    return app


@pytest.fixture
async def client(sqlite_path: str) -> AsyncIterator[tuple[str, aiohttp.ClientSession, str]]:
    key = new_key()
    async with (
        serve_asgi(build_app(sqlite_path, key)) as base,
        aiohttp.ClientSession() as session,
    ):
        yield base, session, key


async def _call(
    session: aiohttp.ClientSession, method: str, url: str, **kw: Any
) -> tuple[int, dict[str, str], Any]:
    async with session.request(method, url, **kw) as resp:
        headers = {k.lower(): v for k, v in resp.headers.items()}
        return resp.status, headers, await resp.json(content_type=None)


async def test_user_routes_use_the_gateway_and_errors_are_problems(
    client: tuple[str, aiohttp.ClientSession, str],
) -> None:
    base, session, _ = client
    status, _, body = await _call(session, "POST", base + "/notes", json={"text": "hi"})
    assert (status, body) == (200, {"notes": 1})
    status, headers, body = await _call(session, "GET", base + "/broken")
    assert status == 404
    assert headers["content-type"] == "application/problem+json"
    assert body["type"] == "urn:iogate:problem:unknown-resource"
    status, headers, body = await _call(session, "GET", base + "/bad-sql")
    assert status == 400
    assert body["type"].startswith("urn:iogate:problem:")
    assert "Traceback" not in str(body)
    status, _, body = await _call(session, "GET", base + "/no-such-route")
    assert (status, body["status"]) == (404, 404)


async def test_gateway_routes_run_as_the_users_principal(
    client: tuple[str, aiohttp.ClientSession, str],
) -> None:
    base, session, _ = client
    await _call(session, "POST", base + "/notes", json={"text": "one"})
    status, _, body = await _call(session, "GET", base + "/gw/health")
    assert (status, body["status"]) == (200, "ok")  # probes need no auth
    status, _, _ = await _call(session, "GET", base + "/gw/ready")
    assert status == 200
    query = {"sql": "SELECT count(*) AS n FROM notes"}
    status, _, body = await _call(session, "POST", base + "/gw/v1/databases/main/query", json=query)
    assert (status, body["detail"]) == (401, "who are you?")
    reader = {"x-token": "reader-token"}
    status, _, body = await _call(
        session, "POST", base + "/gw/v1/databases/main/query", json=query, headers=reader
    )
    assert (status, body["rows"]) == (200, [[1]])
    write = {"sql": "DELETE FROM notes"}
    status, _, body = await _call(
        session, "POST", base + "/gw/v1/databases/main/query", json=write, headers=reader
    )
    # the reader runs in the engine's read-only mode
    assert (status, body["type"]) == (403, "urn:iogate:problem:read-only")
    status, _, body = await _call(session, "GET", base + "/gw/v1/stats", headers=reader)
    assert (status, body["type"]) == (403, "urn:iogate:problem:forbidden")
    admin = {"x-token": "admin-token"}
    status, _, body = await _call(session, "GET", base + "/gw/v1/stats", headers=admin)
    assert status == 200
    # the user's own coroutine, recorded by @monitored, beside the database
    assert body["resources"]["app"]["kind"] == "function"
    assert body["resources"]["app"]["operations"]["count_notes"]["calls"] == 1
    assert body["resources"]["main"]["kind"] == "sqlite"
    async with session.get(base + "/gw/metrics", headers=admin) as resp:
        assert resp.status == 200
        text = await resp.text()
    assert 'resource="app"' in text
    assert 'operation="count_notes"' in text


async def test_api_key_principal_checks_the_configs_keys(
    client: tuple[str, aiohttp.ClientSession, str],
) -> None:
    base, session, key = client
    await _call(session, "POST", base + "/notes", json={"text": "one"})
    url = base + "/keyed/v1/databases/main/query"
    query = {"sql": "SELECT count(*) FROM notes"}
    status, headers, body = await _call(session, "POST", url, json=query)
    assert status == 401
    assert headers["www-authenticate"].startswith("Bearer")
    status, _, body = await _call(
        session, "POST", url, json=query, headers={"authorization": "Bearer iog_wrong"}
    )
    assert status == 401
    assert "iog_wrong" not in str(body)
    status, _, body = await _call(
        session, "POST", url, json=query, headers={"authorization": f"Bearer {key}"}
    )
    assert (status, body["rows"]) == (200, [[1]])


async def test_lifespan_from_a_path_and_a_bad_config(tmp_path: Path) -> None:
    toml = tmp_path / "iogate.toml"
    toml.write_text(f'[databases.main]\nurl = "sqlite:///{tmp_path / "x.db"}"\n')
    app = FastAPI(lifespan=iogate_fastapi.lifespan(toml))
    async with app.router.lifespan_context(app):
        gw = app.state.gateway
        assert await gw.database("main").fetch_val("SELECT 41 + 1") == 42
    assert not hasattr(app.state, "gateway")
    assert gw.state.name == "CLOSED"
    toml.write_text("[databases.main]\nurl = 'ftp://nope'\n")
    with pytest.raises(iogate.ConfigError, match=r"databases\.main\.url"):
        iogate_fastapi.lifespan(toml)
