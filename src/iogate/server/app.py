"""The gateway's FastAPI application factory.

``create_app(config)`` builds an app whose lifespan creates and owns one
:class:`~iogate.gateway.Gateway`: every resource is opened before the first
request is served and closed at shutdown. Nothing lives at module level, so
several apps (tests) can run in one process.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from iogate import __version__
from iogate.config import IogateConfig, default_config
from iogate.gateway import Gateway
from iogate.server.guard import GuardMiddleware
from iogate.server.keys import KeyStore
from iogate.server.openapi import install_openapi
from iogate.server.problems import install_problem_handlers
from iogate.server.request_id import RequestIdMiddleware
from iogate.server.routes import (
    admin,
    batch,
    cache,
    databases,
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


def create_app(
    config: IogateConfig | None = None,
    *,
    gateway: Gateway | None = None,
    freeze_heap: bool = False,
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
        async with owned:
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
        docs_url="/docs" if server.docs else None,
        redoc_url="/redoc" if server.docs else None,
        openapi_url="/openapi.json" if server.docs else None,
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
        body_limits=body_limits,
    )
    # outermost (added last): every response, problem and log line has the id
    app.add_middleware(RequestIdMiddleware)
    # The routers use no prefix and no router-level dependencies, so their
    # routes are registered on the app itself: matching then is one flat list
    # (hot routes first) instead of include_router's per-request router layer,
    # which cost ~10 % of a point select's request time (issue 2 closing note).
    for module in (
        databases,
        mongo,
        upstreams,
        system,
        legacy,
        admin,
        batch,
        files,
        tasks,
        observability,
        cache,
    ):
        app.router.routes.extend(module.router.routes)
    return app
