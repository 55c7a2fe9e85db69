"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc), served from packaged assets.

FastAPI's own pages load Swagger UI and ReDoc from a CDN, so without internet
they render blank. The gateway serves the same two pages (FastAPI's
``get_swagger_ui_html`` / ``get_redoc_html``) with every asset from the
``fastapi-offline`` package (PyPI; MIT): Swagger UI 5's bundle and CSS, ReDoc
2's standalone bundle and a favicon, copied from the CDN builds FastAPI
points at. It is a normal dependency, so ``make serve``'s install brings it;
the gateway uses its files only, not its ``FastAPIOffline`` app factory.
No page loads anything from elsewhere: fonts are the system's
(``with_google_fonts=False``), Swagger UI's online validator is off
(``validatorUrl: null``), and the one image ReDoc's bundle fetches from its
vendor's CDN (the "API docs by Redocly" logo, :data:`REDOC_LOGO`) is replaced,
once, when the bundle is first asked for, by an empty ``data:`` URL (ReDoc then
hides the image). The integration test loads both pages in Chromium with every
non-loopback request refused and fails on any attempt.

Paths (all in :data:`~iogate.server.guard.DOCS_PATHS`, open without a key
unless ``[server] docs = false``): ``/docs``, ``/docs/oauth2-redirect``,
``/redoc`` and the assets under ``/docs/assets/``. The assets are answered by
Starlette's ``FileResponse`` (file read off the event loop, ``ETag`` and
``Last-Modified`` for conditional requests) with a day of caching.
"""

from __future__ import annotations

import hashlib
from importlib.resources import files
from pathlib import Path
from typing import Final

import anyio
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import BaseRoute, Route

__all__ = ["ASSETS", "ASSET_PREFIX", "REDOC_LOGO", "routes"]

ASSET_PREFIX: Final = "/docs/assets/"
ASSETS: Final = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon.png": "image/png",
}
"""Asset file name → media type, each served at ``ASSET_PREFIX + name``."""

REDOC_LOGO: Final = b'"https://cdn.redoc.ly/redoc/logo-mini.svg"'
"""The CDN image URL in ``redoc.standalone.js`` (ReDoc 2), replaced by ``"data:,"``."""

_CACHE: Final = {"Cache-Control": "public, max-age=86400"}
_HEADERS: Final = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


def _asset_dir() -> Path:
    """The directory of ``fastapi-offline``'s packaged assets (a plain directory:
    the package is installed from a wheel, never zipped)."""
    return Path(str(files("fastapi_offline").joinpath("static")))


def routes(*, title: str, openapi_url: str) -> list[BaseRoute]:
    """The documentation pages and their assets, as routes to append to the app.

    Args:
        title: the API's title (page titles).
        openapi_url: where the pages read the OpenAPI document.
    """
    directory = _asset_dir()
    favicon = ASSET_PREFIX + "favicon.png"

    async def swagger(request: Request) -> Response:
        page = get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{title} - Swagger UI",
            oauth2_redirect_url="/docs/oauth2-redirect",
            swagger_js_url=ASSET_PREFIX + "swagger-ui-bundle.js",
            swagger_css_url=ASSET_PREFIX + "swagger-ui.css",
            swagger_favicon_url=favicon,
            swagger_ui_parameters={"validatorUrl": None},
        )
        page.headers.update(_HEADERS)
        return page

    async def oauth2_redirect(request: Request) -> Response:
        return get_swagger_ui_oauth2_redirect_html()

    async def redoc(request: Request) -> Response:
        page: HTMLResponse = get_redoc_html(
            openapi_url=openapi_url,
            title=f"{title} - ReDoc",
            redoc_js_url=ASSET_PREFIX + "redoc.standalone.js",
            redoc_favicon_url=favicon,
            with_google_fonts=False,
        )
        page.headers.update(_HEADERS)
        return page

    def asset(name: str, media_type: str) -> Route:
        path = directory / name

        async def serve(request: Request) -> Response:
            return FileResponse(path, media_type=media_type, headers={**_CACHE, **_HEADERS})

        return Route(ASSET_PREFIX + name, serve, methods=["GET"], include_in_schema=False)

    redoc_bundle: list[tuple[bytes, str]] = []  # (body, ETag), read on first use

    async def redoc_js(request: Request) -> Response:
        if not redoc_bundle:
            raw = await anyio.Path(directory / "redoc.standalone.js").read_bytes()
            body = raw.replace(REDOC_LOGO, b'"data:,"')
            redoc_bundle.append((body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'))
        body, etag = redoc_bundle[0]
        headers = {**_CACHE, **_HEADERS, "ETag": etag}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(body, media_type=ASSETS["redoc.standalone.js"], headers=headers)

    pages: list[BaseRoute] = [
        Route("/docs", swagger, methods=["GET"], include_in_schema=False),
        Route("/docs/oauth2-redirect", oauth2_redirect, methods=["GET"], include_in_schema=False),
        Route("/redoc", redoc, methods=["GET"], include_in_schema=False),
    ]
    pages += [
        asset(name, media_type)
        for name, media_type in ASSETS.items()
        if name != "redoc.standalone.js"
    ]
    pages.append(
        Route(
            ASSET_PREFIX + "redoc.standalone.js",
            redoc_js,
            methods=["GET"],
            include_in_schema=False,
        )
    )
    return pages
