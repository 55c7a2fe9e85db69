"""The gateway's FastAPI application factory.

``create_app(config)`` builds an app whose lifespan creates and owns one
:class:`~iogate.gateway.Gateway`: every resource is opened before the first
request is served and closed at shutdown. Nothing lives at module level, so
several apps (tests) can run in one process.
"""

from __future__ import annotations

import gc
import inspect
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from iogate import __version__
from iogate.config import IogateConfig, default_config
from iogate.gateway import Gateway
from iogate.observability._deployment import Deployment
from iogate.observability._health import check_references as check_config_references
from iogate.server.deps import JsonBodyRoute
from iogate.server.guard import GuardMiddleware
from iogate.server.keys import KeyStore
from iogate.server.openapi import install_openapi
from iogate.server.problems import install_problem_handlers
from iogate.server.request_id import RequestIdMiddleware
from iogate.server.routes import (
    admin,
    batch,
    cache,
    dashboard,
    databases,
    docs,
    files,
    legacy,
    mongo,
    observability,
    system,
    tasks,
    upstreams,
)

__all__ = ["create_app"]

_log = logging.getLogger("iogate.server")

_DESCRIPTION = """\
Named databases and upstream APIs over HTTP/JSON, every call pooled and
resilient. Errors are RFC 9457 `application/problem+json`.
"""


@asynccontextmanager
async def _serving(
    app: FastAPI, gateway: Gateway, check_references: bool, deployment_dir: Path | None
) -> AsyncIterator[None]:
    """What ``iogate serve`` adds once the gateway is open.

    Args:
        check_references: refuse to start (a :class:`~iogate.errors.ConfigError`)
            when a key's table or a named query names what no database has
            (:func:`~iogate.observability._health.check_references`).
        deployment_dir: the directory the workers of ``iogate serve --workers N``
            share: ``/metrics`` and ``/v1/stats`` then answer for every worker
            (:mod:`iogate.observability._deployment`).

    (``access_log``: log every request on ``iogate.request``; 4xx and 5xx
    answers always are, :mod:`iogate.server.request_id`.)
    """
    if check_references:
        await check_config_references(gateway.config, gateway.databases)
    if deployment_dir is None:
        yield
        return
    deployment = app.state.deployment = Deployment(deployment_dir, gateway.metrics)
    deployment.start()
    try:
        yield
    finally:
        await deployment.stop()


def create_app(
    config: IogateConfig | None = None,
    *,
    gateway: Gateway | None = None,
    freeze_heap: bool = False,
    access_log: bool = False,
    check_references: bool = False,
    deployment_dir: Path | None = None,
) -> FastAPI:
    """Build the gateway app.

    Args:
        config: the configuration (the embedded default when ``None``).
        gateway: an existing Gateway to serve instead; the app then opens and
            closes it in its lifespan just the same.
        freeze_heap: once the Gateway is open, collect and then move every
            object made at start-up (modules, routes, models, pools) to the
            collector's permanent generation (``gc.freeze``,
            docs.python.org/3/library/gc.html#gc.freeze), undone at shutdown.
            A full collection then walks only what requests made: under load
            it pauses the loop for about a millisecond instead of ~100 ms
            (the gateway benchmark's p99). ``iogate serve`` sets it; leave it
            off where many apps come and go in one process (tests).
        access_log, check_references, deployment_dir: ``iogate serve``'s
            (:func:`_serving`).
    """
    owned = gateway if gateway is not None else Gateway(config or default_config())
    server = owned.config.server
    keys = KeyStore(owned.config.keys, shared=owned.cluster) if owned.config.keys else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if keys is None:
            _log.warning(
                "authentication is off: no [keys] are configured, every caller may do "
                "everything (serve on loopback only)"
            )
        async with owned, _serving(app, owned, check_references, deployment_dir):
            app.state.gateway = owned
            app.state.started_at = time.monotonic()
            if freeze_heap:
                gc.collect()
                gc.freeze()
            try:
                yield
            finally:
                if freeze_heap:
                    gc.unfreeze()

    app = FastAPI(
        title="iogate",
        version=__version__,
        description=_DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served from packaged assets below (routes/docs.py)
        redoc_url=None,
        openapi_url="/openapi.json" if server.docs else None,
        **_without_native_telemetry(),
    )
    install_problem_handlers(app)
    install_openapi(app)
    file_area = owned.config.files
    body_limits = {"/v1/files/": file_area.max_file_bytes} if file_area is not None else None
    app.add_middleware(
        GuardMiddleware,
        keys=keys,
        limits=server.limits,
        docs_open=server.docs,
        dashboard_open=server.dashboard,
        body_limits=body_limits,
    )
    # outermost (added last): every response, problem and log line has the id;
    # it writes the request log and opens the SERVER span
    app.add_middleware(
        RequestIdMiddleware, access_log=access_log, spans=owned.observability.tracing.server_spans()
    )
    _add_routes(app, docs_open=server.docs, dashboard_open=server.dashboard)
    return app


_API_ROUTERS = (  # the data plane first: routes are matched one by one, in order
    databases,
    upstreams,
    batch,
    cache,
    mongo,
    system,
    legacy,
    admin,
    files,
    tasks,
    observability,
)


def _add_routes(app: FastAPI, *, docs_open: bool, dashboard_open: bool) -> None:
    # The routers use no prefix and no router-level dependencies, so their
    # routes are registered on the app itself: matching then is one flat list
    # (hot routes first) instead of include_router's per-request router layer,
    # which cost ~10 % of a point select's request time (issue 2 closing note).
    # Each API route is the app's own copy, which refuses a path outside its
    # literal prefix at once (JsonBodyRoute.flat_copy).
    for module in _API_ROUTERS:
        for route in module.router.routes:
            app.router.routes.append(
                route.flat_copy() if isinstance(route, JsonBodyRoute) else route
            )
    # pages last: they never stand before an API route in the match
    if docs_open:
        app.router.routes.extend(docs.routes(title=app.title, openapi_url="/openapi.json"))
    app.router.routes.extend(dashboard.routes(dashboard=dashboard_open, docs=docs_open))


def _without_native_telemetry() -> dict[str, Any]:
    """FastAPI's ``telemetry`` argument turning its own OpenTelemetry off,
    where FastAPI has it (since 0.162; nothing for older releases).

    Once a global tracer, meter or logger provider is set, FastAPI emits a
    SERVER span per request (and ``fastapi.dependencies`` /
    ``fastapi.endpoint`` spans), HTTP metrics and error logs of its own: the
    gateway's SERVER span (:mod:`iogate.observability._server_spans`),
    ``/metrics`` and request log are those, so its would double them; and
    whether it is on is checked against the three global providers on every
    request.
    """
    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
