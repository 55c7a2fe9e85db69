"""iogate inside your own FastAPI app: lifespan, dependencies, problems, routes.

::

    from typing import Annotated
    from fastapi import Depends, FastAPI
    import iogate
    from iogate import fastapi as iogate_fastapi

    app = FastAPI(lifespan=iogate_fastapi.lifespan("iogate.toml"))
    iogate_fastapi.install_problem_handlers(app)

    @app.get("/users/{user_id}")
    async def user(
        user_id: int,
        db: Annotated[iogate.SQLDatabase, Depends(iogate_fastapi.database("main"))],
    ) -> dict[str, object]:
        row = await db.fetch_one("SELECT * FROM users WHERE id = :id", {"id": user_id})
        ...

- :func:`lifespan` opens one :class:`~iogate.gateway.Gateway` (from a config
  path, a dict, an :class:`~iogate.config.IogateConfig` or a ready Gateway)
  before the first request and closes it at shutdown; :func:`open_gateway` is
  the same as an ``async with`` for an app that has a lifespan of its own.
- :func:`gateway`, :func:`cache`, :func:`metrics`, :func:`files`,
  :func:`tasks` and the factories :func:`database`, :func:`redis` and
  :func:`upstream` (by name) are ``Depends`` providers.
- :func:`install_problem_handlers` renders every iogate error (and FastAPI's
  own 404/405/422) as an RFC 9457 ``application/problem+json`` answer: the
  gateway's own handlers and the library's one mapping
  (:mod:`iogate.wire.problems`), with ``Retry-After`` on 429 and 503.
- :func:`gateway_router` serves the gateway's own routes (``/v1/...``,
  ``/health``, ``/ready``, ``/metrics``) inside your app, each caller resolved
  by *your* auth dependency (one returning a :class:`~iogate.wire.principal.Principal`);
  :func:`api_key_principal` is one that checks the config's ``[keys]``.

This module imports FastAPI: ``import iogate`` does not load it.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Annotated, Any, Final

from fastapi import APIRouter, Depends, FastAPI, Request
from starlette.exceptions import HTTPException

from iogate.cache.tiered import TieredCache
from iogate.config import IogateConfig, load_config, parse_config
from iogate.databases import RedisDatabase, SQLDatabase
from iogate.errors import RateLimitedError, UnknownResourceError
from iogate.files import FileStore
from iogate.gateway import Gateway
from iogate.http.upstream import Upstream
from iogate.observability.metrics import Metrics
from iogate.server.keys import KeyEntry, KeyStore
from iogate.server.problems import install_problem_handlers
from iogate.server.routes import admin as _admin
from iogate.server.routes import batch as _batch
from iogate.server.routes import cache as _cache
from iogate.server.routes import databases as _databases
from iogate.server.routes import files as _files
from iogate.server.routes import observability as _observability
from iogate.server.routes import system as _system
from iogate.server.routes import tasks as _tasks
from iogate.server.routes import upstreams as _upstreams
from iogate.tasks import TaskManager
from iogate.wire.principal import Principal

if TYPE_CHECKING:
    from iogate.tasks.distributed import SaqTaskManager

__all__ = [
    "CacheDep",
    "GatewayDep",
    "GatewaySource",
    "MetricsDep",
    "api_key_principal",
    "cache",
    "database",
    "files",
    "gateway",
    "gateway_router",
    "install_problem_handlers",
    "lifespan",
    "metrics",
    "open_gateway",
    "redis",
    "tasks",
    "upstream",
]

GatewaySource = Gateway | IogateConfig | Mapping[str, Any] | str | os.PathLike[str]
"""What :func:`lifespan` builds its Gateway from: a ready :class:`Gateway`
(opened once: an app served twice needs a source it can build from again), an
:class:`IogateConfig`, a dict shaped like ``iogate.toml`` (``${ENV}`` read
from ``os.environ``), or the path of an ``iogate.toml``."""

_KEYS: Final = "iogate_keys"  # app.state attribute of api_key_principal's KeyStore


def _config_of(source: GatewaySource) -> IogateConfig | Gateway:
    if isinstance(source, Gateway | IogateConfig):
        return source
    if isinstance(source, Mapping):
        return parse_config(source)
    return load_config(source)


@asynccontextmanager
async def open_gateway(
    app: FastAPI,
    source: GatewaySource,
    *,
    prepare: Callable[[Gateway], object] | None = None,
    freeze_heap: bool = False,
) -> AsyncIterator[Gateway]:
    """Open a Gateway for ``app`` (``async with``), closing it on exit.

    While open, ``app.state.gateway`` is the Gateway (what every provider of
    this module and every gateway route reads) and ``app.state.started_at``
    its start (``time.monotonic()``, for ``/v1/stats``' uptime).

    Args:
        app: the FastAPI (or Starlette) app.
        source: see :data:`GatewaySource`.
        prepare: called with the built Gateway before it opens — the place to
            register task runners (``gateway.tasks.register``) so that
            interrupted tasks of that kind are re-queued on open.
        freeze_heap: once open, collect and move every object made so far to
            the collector's permanent generation (``gc.freeze``), undone on
            exit, as ``iogate serve`` does: a full collection under load then
            walks only what requests made (about 1 ms instead of ~100 ms
            pauses). Leave it off where many apps come and go in one process.

    Raises:
        ConfigError: the config is missing or invalid.
        DatabaseError, UpstreamError: a resource failed to open (those already
            open are closed first).
    """
    built = _config_of(source)
    gw = built if isinstance(built, Gateway) else Gateway(built)
    if prepare is not None:
        prepare(gw)
    async with gw:
        app.state.gateway = gw
        app.state.started_at = time.monotonic()
        if gw.config.keys:
            setattr(app.state, _KEYS, KeyStore(gw.config.keys, shared=gw.cluster))
        if freeze_heap:
            gc.collect()
            gc.freeze()
        try:
            yield gw
        finally:
            if freeze_heap:
                gc.unfreeze()
            del app.state.gateway
            if hasattr(app.state, _KEYS):
                delattr(app.state, _KEYS)


def lifespan(
    source: GatewaySource,
    *,
    prepare: Callable[[Gateway], object] | None = None,
    freeze_heap: bool = False,
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """A FastAPI ``lifespan=`` that opens a Gateway (see :func:`open_gateway`).

    A path or a dict is read and validated now, so a bad config fails at
    import time; a new Gateway is built from it at every start (tests may
    start one app several times).

    Raises:
        ConfigError: the config is missing or invalid.
    """
    built = _config_of(source)

    @asynccontextmanager
    async def run(app: FastAPI) -> AsyncIterator[None]:
        async with open_gateway(app, built, prepare=prepare, freeze_heap=freeze_heap):
            yield

    return run


# -- Depends providers -----------------------------------------------------------


# The providers are coroutine functions: FastAPI runs a plain ``def``
# dependency in a worker thread (anyio's thread pool), which costs a thread
# hand-off per request; a coroutine is awaited in the request's own task.


def _gateway_of(request: Request) -> Gateway:
    found = getattr(request.app.state, "gateway", None)
    if found is None:
        raise RuntimeError("no open iogate Gateway: use lifespan=iogate.fastapi.lifespan(...)")
    gw: Gateway = found
    return gw


async def gateway(request: Request) -> Gateway:
    """The app's open Gateway (``Depends(iogate.fastapi.gateway)``).

    Raises:
        RuntimeError: the app has no open Gateway (no :func:`lifespan`).
    """
    return _gateway_of(request)


async def cache(request: Request) -> TieredCache:
    """The Gateway's cache (``Depends(iogate.fastapi.cache)``)."""
    return _gateway_of(request).cache


async def metrics(request: Request) -> Metrics:
    """The Gateway's metrics (``Depends(iogate.fastapi.metrics)``)."""
    return _gateway_of(request).metrics


async def files(request: Request) -> FileStore:
    """The Gateway's file area (``Depends(iogate.fastapi.files)``).

    Raises:
        UnknownResourceError: no ``[files]`` is configured (404 problem).
    """
    store = _gateway_of(request).files
    if store is None:
        raise UnknownResourceError("file area", "files")
    return store


async def tasks(request: Request) -> TaskManager | SaqTaskManager:
    """The Gateway's background tasks (``Depends(iogate.fastapi.tasks)``): the
    embedded :class:`TaskManager`, or the SAQ-backed manager with ``backend = "saq"``.

    Raises:
        UnknownResourceError: tasks are off (no SQL database for them; 404).
    """
    manager = _gateway_of(request).tasks
    if manager is None:
        raise UnknownResourceError("task manager", "tasks")
    return manager


def database(name: str) -> Callable[[Request], Awaitable[SQLDatabase]]:
    """A provider of the SQL database ``name``: ``Depends(database("main"))``.

    The provider raises :class:`~iogate.errors.UnknownResourceError` (404
    problem) when no SQL database of that name is configured.
    """

    async def provide(request: Request) -> SQLDatabase:
        return _gateway_of(request).database(name)

    provide.__name__ = f"iogate_database_{name}"
    return provide


def redis(name: str) -> Callable[[Request], Awaitable[RedisDatabase]]:
    """A provider of the Redis database ``name``: ``Depends(redis("kv"))``."""

    async def provide(request: Request) -> RedisDatabase:
        return _gateway_of(request).redis(name)

    provide.__name__ = f"iogate_redis_{name}"
    return provide


def upstream(name: str) -> Callable[[Request], Awaitable[Upstream]]:
    """A provider of the upstream API ``name``: ``Depends(upstream("openai"))``."""

    async def provide(request: Request) -> Upstream:
        return _gateway_of(request).upstream(name)

    provide.__name__ = f"iogate_upstream_{name}"
    return provide


GatewayDep = Annotated[Gateway, Depends(gateway)]
"""``gw: GatewayDep`` in a route's signature."""
CacheDep = Annotated[TieredCache, Depends(cache)]
"""``cache: CacheDep`` in a route's signature."""
MetricsDep = Annotated[Metrics, Depends(metrics)]
"""``metrics: MetricsDep`` in a route's signature."""


# -- the gateway's own routes ---------------------------------------------------


async def api_key_principal(request: Request) -> Principal:
    """An auth dependency for :func:`gateway_router`: the caller of the
    config's ``[keys]`` (``Authorization: Bearer <key>``), as ``iogate serve``
    resolves it, its rate limit taken (``rate_limit``/``burst``).

    Without ``[keys]`` every caller is refused: an app that mounts the
    gateway's routes decides who may use them.

    Raises:
        HTTPException: 401 (missing, malformed, unknown, expired or revoked key),
            with ``WWW-Authenticate: Bearer`` (RFC 6750 §3).
        RateLimitedError: the key is over its rate limit (429, ``Retry-After``).
    """
    store: KeyStore | None = getattr(request.app.state, _KEYS, None)
    if store is None:
        raise HTTPException(401, "no API keys are configured", _BEARER)
    header = request.headers.get("authorization")
    found = store.authenticate(header.encode("latin-1") if header is not None else None)
    if not isinstance(found, KeyEntry):
        raise HTTPException(401, found.detail, _BEARER)
    wait = store.throttle(found) if found.shared is None else await store.throttle_shared(found)
    if wait is not None:
        raise RateLimitedError(
            f"key {found.principal.name!r} is over its rate limit", retry_after_s=wait
        )
    return found.principal


_BEARER: Final = {"WWW-Authenticate": 'Bearer realm="iogate"'}
# the gateway's routers, hot routes first (as iogate.server.app registers them)
_ROUTE_MODULES: Final = (
    _databases,
    _upstreams,
    _system,
    _admin,
    _batch,
    _files,
    _tasks,
    _observability,
    _cache,
)
_OPEN_PATHS: Final = frozenset({"/health", "/ready"})


def gateway_router(
    *, auth: Callable[..., Principal] | Callable[..., Awaitable[Principal]]
) -> APIRouter:
    """The gateway's own routes, to include in your app:
    ``app.include_router(gateway_router(auth=my_auth), prefix="/gateway")``.

    Served: every ``/v1/...`` route of ``iogate serve`` (databases, upstreams,
    batches, cache, files, tasks, stats, circuit breakers), ``/metrics``, and
    the open probes ``/health`` and ``/ready``; with the same bodies, scopes
    and problems. Each request but the probes first runs ``auth``, a FastAPI
    dependency (it may take ``Request``, headers, other dependencies) that
    returns the caller's :class:`~iogate.wire.principal.Principal` or raises
    (e.g. ``HTTPException(401)``); every route then checks that principal's
    scopes as the gateway does. :func:`api_key_principal` checks ``[keys]``.

    The app needs :func:`lifespan` (the routes use ``app.state.gateway``) and
    :func:`install_problem_handlers`. Include it after your own routes:
    Starlette matches routes in order, so your hot routes then skip these.
    Write ``auth`` as ``async def`` (FastAPI runs a plain ``def`` dependency
    in a worker thread). What ``iogate serve``'s own middleware
    does at its edge stays with your app: ``[server.limits]`` body size and
    body timeout, ``X-Request-Timeout``, per-key ``max_concurrent`` and
    disconnect cancellation are not applied here (row, byte and SQL limits
    are: the routes read ``[server.limits]`` themselves).

    Raises:
        TypeError: (per request) ``auth`` returned something other than a Principal.
    """

    # the dependency in the default: a closure's name cannot be resolved from a
    # string annotation (this module uses postponed annotations)
    async def bind(request: Request, principal: Principal = Depends(auth)) -> None:  # noqa: B008
        if not isinstance(principal, Principal):
            raise TypeError(f"the auth dependency returned {type(principal).__name__}")
        state = request.scope.setdefault("state", {})
        state["principal"] = principal
        if "limits" not in state:
            state["limits"] = _gateway_of(request).config.server.limits

    guarded = APIRouter()
    probes = APIRouter()
    for module in _ROUTE_MODULES:
        for route in module.router.routes:
            path = getattr(route, "path", "")
            if path in _OPEN_PATHS:
                probes.routes.append(route)
            elif path.startswith("/v1/") or path == "/metrics":
                guarded.routes.append(route)
    router = APIRouter()
    router.include_router(probes)
    router.include_router(guarded, dependencies=[Depends(bind)])
    return router
