"""The pages the gateway serves (docs, dashboard, ``/``), their open paths,
the admin routes the dashboard reads or drives, and the OpenAPI document's
component names — over HTTP, without a browser (tests/integration/test_dashboard.py
loads the pages in Chromium)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from multidict import CIMultiDict

from iogate.config import IogateConfig, parse_config
from iogate.server.app import create_app
from iogate.server.guard import DASHBOARD_PATHS, DOCS_PATHS
from iogate.server.keys import hash_key, new_key
from iogate.server.routes.dashboard import CSP
from iogate.server.routes.docs import ASSET_PREFIX, ASSETS, REDOC_LOGO
from tests.servers import serve_asgi
from tests.waiting import until

ADMIN = new_key()
READER = new_key()
URL = re.compile(rb"""https?://[^\s"'<>)]+""")


def _config(sqlite_path: str, *, keys: bool = True, **server: Any) -> IogateConfig:
    raw: dict[str, Any] = {
        "server": server,
        "databases": {"main": {"url": f"sqlite:///{sqlite_path}"}},
        "observability": {
            "alert_interval": 0.05,
            "alerts": [{"resource": "main", "max_error_rate": 0.5, "min_calls": 2}],
        },
    }
    if keys:
        raw["keys"] = {
            "ops": {"sha256": hash_key(ADMIN), "scopes": ["admin"]},
            "reader": {"sha256": hash_key(READER), "scopes": ["db:main:read"]},
        }
    return parse_config(raw, environ={})


@pytest.fixture
async def base(sqlite_path: str) -> AsyncIterator[str]:
    async with serve_asgi(create_app(_config(sqlite_path))) as url:
        yield url


async def _get(
    http: aiohttp.ClientSession, url: str, key: str | None = None
) -> tuple[int, CIMultiDict[str], bytes]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with http.get(url, headers=headers, allow_redirects=False) as resp:
        return resp.status, resp.headers.copy(), await resp.read()


async def test_pages_and_their_assets_are_open_and_name_no_external_url(base: str) -> None:
    async with aiohttp.ClientSession() as http:
        status, headers, _ = await _get(http, base + "/")
        assert (status, headers["Location"]) == (307, "/dashboard")
        for path in ("/docs", "/redoc", "/docs/oauth2-redirect", *DASHBOARD_PATHS):
            status, headers, body = await _get(http, base + path)
            assert status == 200, path
            assert URL.findall(body) == [], path  # HTML, and our own script and styles
        for name, media_type in ASSETS.items():
            status, headers, body = await _get(http, base + ASSET_PREFIX + name)
            assert (status, headers["Content-Type"]) == (200, media_type), name
            assert len(body) > 1000
        # the one image ReDoc's bundle would fetch from its vendor's CDN is gone
        _, headers, redoc = await _get(http, base + ASSET_PREFIX + "redoc.standalone.js")
        assert REDOC_LOGO.strip(b'"') not in redoc
        assert b"cdn." not in redoc
        again = {"If-None-Match": headers["ETag"]}
        async with http.get(base + ASSET_PREFIX + "redoc.standalone.js", headers=again) as resp:
            assert resp.status == 304
        _, headers, swagger = await _get(http, base + "/docs")
        assert b'"validatorUrl": null' in swagger
        assert b"/docs/assets/swagger-ui-bundle.js" in swagger
        _, headers, _ = await _get(http, base + "/dashboard")
        assert headers["Content-Security-Policy"] == CSP
        assert "connect-src 'self'" in CSP
        # every open page path is really served (a typo would open nothing, or a 404)
        for path in DOCS_PATHS | DASHBOARD_PATHS:
            status, _, _ = await _get(http, base + path)
            assert status == 200, path
        # the figures need the admin scope
        for path in ("/v1/stats", "/v1/alerts"):
            assert (await _get(http, base + path))[0] == 401, path
            assert (await _get(http, base + path, READER))[0] == 403, path
            assert (await _get(http, base + path, ADMIN))[0] == 200, path


@pytest.mark.parametrize(
    ("server", "root", "served", "absent"),
    [
        ({"dashboard": False}, "/docs", ["/docs", "/redoc"], ["/dashboard"]),
        ({"docs": False}, "/dashboard", ["/dashboard"], ["/docs", "/redoc", "/openapi.json"]),
        ({"docs": False, "dashboard": False}, None, [], ["/", "/docs", "/dashboard"]),
    ],
)
async def test_pages_follow_the_server_table(
    sqlite_path: str,
    server: dict[str, bool],
    root: str | None,
    served: list[str],
    absent: list[str],
) -> None:
    app = create_app(_config(sqlite_path, keys=False, **server))
    async with serve_asgi(app) as url, aiohttp.ClientSession() as http:
        status, headers, _ = await _get(http, url + "/")
        if root is None:
            assert status == 404
        else:
            assert (status, headers["Location"]) == (307, root)
        for path in served:
            assert (await _get(http, url + path))[0] == 200, path
        for path in absent:
            assert (await _get(http, url + path))[0] == 404, path
        assert (await _get(http, url + ASSET_PREFIX + "swagger-ui.css"))[0] == (
            200 if server.get("docs", True) else 404
        )
    # with keys on, a page that is off is not an open path either
    app = create_app(_config(sqlite_path, **server))
    async with serve_asgi(app) as url, aiohttp.ClientSession() as http:
        for path in absent:
            assert (await _get(http, url + path))[0] == 401, path


async def test_breaker_forced_open_and_reset_through_the_admin_routes(base: str) -> None:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    query = {"sql": "SELECT 1"}
    async with aiohttp.ClientSession(headers=admin) as http:
        url = base + "/v1/circuit-breakers/main/open"
        async with http.post(url, headers={"Authorization": f"Bearer {READER}"}) as resp:
            assert resp.status == 403
        async with http.post(base + "/v1/circuit-breakers/nope/open") as resp:
            assert resp.status == 404
        # a page of another site cannot drive the breakers (auth may be off)
        for cross in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
            async with http.post(url, headers=cross) as resp:
                assert resp.status == 403
                assert "another site" in (await resp.json(content_type=None))["detail"]
        async with http.post(base + "/v1/databases/main/query", json=query) as resp:
            assert resp.status == 200
        async with http.post(url, headers={"Origin": base}) as resp:
            assert resp.status == 200
            assert (await resp.json())["state"] == "forced_open"
        async with http.post(base + "/v1/databases/main/query", json=query) as resp:
            assert resp.status == 503
            assert (await resp.json(content_type=None))["type"].endswith("circuit-open")
        _, _, raw = await _get(http, base + "/v1/stats")
        stats = orjson.loads(raw)
        breaker = stats["resources"]["main"]["circuit_breaker"]
        assert breaker["state"] == "forced_open"
        assert breaker["transitions"] == {"closed->forced_open": 1}
        async with http.post(base + "/v1/circuit-breakers/main/reset") as resp:
            assert (await resp.json())["state"] == "closed"
        async with http.post(base + "/v1/databases/main/query", json=query) as resp:
            assert resp.status == 200


async def test_alerts_route_shows_rules_and_what_fires(base: str) -> None:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    async with aiohttp.ClientSession(headers=admin) as http:
        _, _, raw = await _get(http, base + "/v1/alerts")
        alerts = orjson.loads(raw)
        assert alerts == {
            "interval_s": 0.05,
            "rules": [
                {
                    "rule": 0,
                    "resource": "main",
                    "window": "1m",
                    "max_error_rate": 0.5,
                    "max_p99_s": None,
                    "min_calls": 2,
                    "webhook": False,
                }
            ],
            "firing": [],
        }
        for _ in range(3):
            body = {"sql": "SELEKT 1"}
            async with http.post(base + "/v1/databases/main/query", json=body) as resp:
                assert resp.status == 400
        firing: list[Any] = []

        async def fired() -> bool:
            nonlocal firing
            _, _, raw = await _get(http, base + "/v1/alerts")
            firing = orjson.loads(raw)["firing"]
            return bool(firing)

        await until(fired, turns=1, what="the alert firing")  # evaluated every 50 ms
        assert firing == [{"rule": 0, "resource": "main", "condition": "error_rate"}]


async def test_openapi_component_names_carry_no_module_path(base: str) -> None:
    async with aiohttp.ClientSession() as http:
        _, _, raw = await _get(http, base + "/openapi.json")
    doc = orjson.loads(raw)
    names = list(doc["components"]["schemas"])
    assert [n for n in names if "__" in n or not re.fullmatch(r"[A-Za-z0-9_.-]+", n)] == []
    assert {"Batch", "StatementBatch", "AlertsResponse", "CircuitBreakerOut"} <= set(names)
    assert "/v1/alerts" in doc["paths"]
    assert "/v1/circuit-breakers/{name}/open" in doc["paths"]
    for path in ("/docs", "/redoc", "/dashboard", "/"):
        assert path not in doc["paths"]
