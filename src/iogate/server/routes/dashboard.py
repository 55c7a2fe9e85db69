"""The live dashboard (``/dashboard``) and the root redirect (``/``).

The dashboard is one hand-written page, a script and a style sheet packaged
in ``iogate/server/dashboard/`` (no build step, no dependency, nothing loaded
from elsewhere). In the browser, the script polls every second what the
gateway already serves: ``GET /v1/stats`` (resources, breakers, pools, calls,
latency, limiter, cache tiers, slow operations, insights), ``GET /v1/alerts``
and ``GET /health``. The files hold no data, so they are open paths
(:data:`~iogate.server.guard.DASHBOARD_PATHS`); once keys are configured the
two data routes need an ``admin`` key, which the page asks for and keeps in
the tab's ``sessionStorage`` (never in a URL, where it would reach logs and
history). The page's ``Content-Security-Policy`` allows scripts, styles and
requests to this origin only.

``[server] dashboard = false`` removes the three routes; ``/`` then
redirects to ``/docs`` (or is absent when the docs are off too).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib.resources import files
from pathlib import Path
from typing import Final

from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

__all__ = ["CSP", "routes"]

CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""The page's Content-Security-Policy: only this origin (and a ``data:`` favicon)."""

_FILES: Final = {
    "/dashboard": ("index.html", "text/html; charset=utf-8"),
    "/dashboard/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/dashboard/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}
_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidated (ETag): a new version shows at once
}


def _directory() -> Path:
    return Path(str(files("iogate.server").joinpath("dashboard")))


def routes(*, dashboard: bool, docs: bool) -> list[BaseRoute]:
    """The dashboard's routes (when ``dashboard``) and ``GET /`` redirecting to
    ``/dashboard``, else to ``/docs`` (when ``docs``), else nothing."""
    out: list[BaseRoute] = []
    if dashboard:
        directory = _directory()
        for path, (name, media_type) in _FILES.items():
            endpoint = _file(directory / name, media_type)
            out.append(Route(path, endpoint, methods=["GET"], include_in_schema=False))
    target = "/dashboard" if dashboard else "/docs" if docs else None
    if target is not None:

        async def root(request: Request) -> Response:
            return RedirectResponse(target, status_code=307)

        out.append(Route("/", root, methods=["GET"], include_in_schema=False))
    return out


def _file(path: Path, media_type: str) -> Callable[[Request], Awaitable[Response]]:
    async def serve(request: Request) -> Response:
        return FileResponse(path, media_type=media_type, headers=_HEADERS)

    return serve
