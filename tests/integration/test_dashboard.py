"""The live dashboard and the offline docs, end to end in headless Chromium.

The gateway runs under uvicorn on a free loopback port with a SQLite database
and a loopback upstream, and API keys on; the browser may reach loopback only
(tests/browser.py) and every request it tried elsewhere fails the test.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from iogate.config import IogateConfig, parse_config
from iogate.server.app import create_app
from iogate.server.keys import hash_key, new_key
from tests.browser import loopback_browser
from tests.servers import serve_asgi
from tests.upstream_app import UpstreamServer

ADMIN = new_key()
READER = new_key()
UPDATE_BOUND_MS = 2000  # the page polls every second: a change shows within two


def _config(sqlite_path: str, upstream: UpstreamServer, **server: object) -> IogateConfig:
    return parse_config(
        {
            "server": server,
            "databases": {"main": {"url": f"sqlite:///{sqlite_path}"}},
            "upstreams": {"example": {"base_url": upstream.base_url}},
            "keys": {
                "ops": {"sha256": hash_key(ADMIN), "scopes": ["admin"]},
                "reader": {"sha256": hash_key(READER), "scopes": ["db:main:read"]},
            },
            "observability": {
                "alerts": [{"resource": "main", "max_error_rate": 0.5, "min_calls": 1}]
            },
        },
        environ={},
    )


@pytest.fixture
async def gateway(sqlite_path: str, upstream: UpstreamServer) -> AsyncIterator[str]:
    async with serve_asgi(create_app(_config(sqlite_path, upstream))) as base:
        yield base


def _admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN}"}


async def test_dashboard_lists_resources_and_shows_a_breaker_forced_open(
    gateway: str, tmp_path: Path
) -> None:
    async with aiohttp.ClientSession(headers=_admin()) as http:
        query = {"sql": "SELECT 1 AS one"}
        async with http.post(f"{gateway}/v1/databases/main/query", json=query) as resp:
            assert resp.status == 200
        call = {"method": "GET", "path": "/echo"}
        async with http.post(f"{gateway}/v1/upstreams/example/request", json=call) as resp:
            assert resp.status == 200
        async with loopback_browser() as browser:
            page = await browser.context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(f"{gateway}/")  # redirects to /dashboard
            assert page.url == f"{gateway}/dashboard"
            # keys are on: the page asks for an admin key before showing anything
            await page.wait_for_selector("#login:not([hidden])", timeout=5000)
            assert await page.is_hidden("#main")
            await page.fill("#key", READER)  # a key without the admin scope is refused
            await page.click("#login button[type=submit]")
            await page.wait_for_selector("#login-error:text('refused')", timeout=5000)
            await page.fill("#key", ADMIN)
            await page.click("#login button[type=submit]")
            await page.wait_for_selector("tr[data-resource='example']", timeout=5000)

            names = await page.eval_on_selector_all(
                "#resources tr.resource", "rows => rows.map(r => r.dataset.resource)"
            )
            assert names == ["example", "main"]
            main = page.locator("tr[data-resource='main']")
            assert await main.locator("td.kind").text_content() == "sqlite"
            assert await main.locator("[data-role=breaker]").text_content() == "closed"
            assert re.fullmatch(
                r"\d+ / \d+ / 0 \(of \d+\)", await main.locator("td").nth(8).inner_text()
            )
            upstream_row = page.locator("tr[data-resource='example']")
            assert await upstream_row.locator("td.kind").text_content() == "upstream"
            assert await page.locator("#alerts li[data-rule='0']").count() == 1
            assert "memory (L1)" in await page.locator("#cache").inner_text()
            assert await page.get_attribute("#status", "data-state") == "live"

            # force the upstream's breaker open through the admin route
            url = f"{gateway}/v1/circuit-breakers/example/open"
            async with http.post(url) as resp:
                assert resp.status == 200
                assert (await resp.json())["state"] == "forced_open"
            forced = time.monotonic()
            badge = "tr[data-resource='example'] [data-role=breaker]"
            await page.wait_for_function(
                f"""() => {{
                    const b = document.querySelector("{badge}");
                    return b && b.dataset.state === "forced_open" && b.textContent === "open";
                }}""",
                timeout=UPDATE_BOUND_MS,
                polling=50,
            )
            assert time.monotonic() - forced < UPDATE_BOUND_MS / 1000
            transitions = await upstream_row.locator("td").nth(2).inner_text()
            assert "closed → forced_open \N{MULTIPLICATION SIGN}1" in transitions
            assert await main.locator("[data-role=breaker]").text_content() == "closed"
            await page.screenshot(path=tmp_path / "dashboard.png", full_page=True)

            assert (tmp_path / "dashboard.png").stat().st_size > 10_000

            # a reset shows as closed again
            async with http.post(f"{gateway}/v1/circuit-breakers/example/reset") as resp:
                assert resp.status == 200
            await page.wait_for_selector(f"{badge}[data-state='closed']", timeout=UPDATE_BOUND_MS)
        assert errors == []
        assert browser.refused == []


async def test_docs_render_with_no_network_but_loopback(gateway: str, tmp_path: Path) -> None:
    async with loopback_browser() as browser:
        page = await browser.context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(f"{gateway}/docs")
        # Swagger UI rendered the document: its title and the operations
        await page.wait_for_selector(".swagger-ui .info .title", timeout=8000)
        assert "iogate" in await page.inner_text(".swagger-ui .info .title")
        await page.wait_for_selector(
            "#operations-admin-open_breaker_v1_circuit_breakers__name__open_post", timeout=8000
        )
        await page.screenshot(path=tmp_path / "docs.png")
        await page.goto(f"{gateway}/redoc")
        await page.wait_for_selector("h1:has-text('iogate')", timeout=8000)
        await page.wait_for_selector("h2:has-text('Force a circuit breaker open')", timeout=8000)
        await page.screenshot(path=tmp_path / "redoc.png")
    assert errors == []
    assert browser.refused == []
