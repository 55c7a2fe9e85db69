"""Headless Chromium for the tests: Debian's ``chromium`` package, driven by
Playwright for Python over its bundled driver (Playwright's own browser
download is never used: ``executable_path`` names Debian's binary).

The browser reaches loopback only: every request to another host is aborted
by a route handler *and* recorded, so a test asserts the page asked for
nothing outside the gateway; host resolution maps every other name to
nothing as a second fence, and Chromium's background services (updates,
safe browsing, sync...) are off.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from playwright.async_api import BrowserContext, Route, async_playwright

LOOPBACK = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})
ARGS = [
    "--no-sandbox",  # the tests run as root, where Chromium's sandbox cannot start
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
    "--no-proxy-server",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-domain-reliability",
    "--disable-sync",
    "--no-first-run",
    "--disable-features=Translate,OptimizationHints,MediaRouter,NetworkTimeServiceQuerying",
]


def chromium_path() -> str:
    """Debian's Chromium (``scripts/install-services.sh`` installs it)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        raise RuntimeError("Chromium is not installed: run scripts/install-services.sh")
    return found


@dataclass
class Browser:
    """A browser context limited to loopback, and what it was refused."""

    context: BrowserContext
    refused: list[str] = field(default_factory=list)
    """URLs of every request the pages made to a non-loopback host (aborted)."""


@asynccontextmanager
async def loopback_browser() -> AsyncIterator[Browser]:
    """A headless Chromium context that may reach 127.0.0.1 only."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium_path(), headless=True, args=ARGS
        )
        try:
            context = await browser.new_context(viewport={"width": 1400, "height": 900})
            out = Browser(context)

            async def fence(route: Route) -> None:
                url = route.request.url
                parts = urlsplit(url)
                if parts.scheme in ("data", "blob", "about") or parts.hostname in LOOPBACK:
                    await route.continue_()
                else:
                    out.refused.append(url)
                    await route.abort("blockedbyclient")

            await context.route("**/*", fence)
            yield out
        finally:
            await browser.close()
