"""What every route needs: the app's Gateway, fast JSON rendering, one JSON
parser for every request body, and a direct path for the hottest routes."""

from __future__ import annotations

import copy
import json
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import orjson
from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from pydantic_core import from_json
from starlette.responses import Response
from starlette.routing import Match, request_response
from starlette.types import Scope

from iogate.gateway import Gateway

__all__ = [
    "JsonBodyRoute",
    "gateway_of",
    "json_response",
    "read_body",
    "serve_directly",
]

M = TypeVar("M", bound=BaseModel)


def gateway_of(request: Request) -> Gateway:
    """The Gateway the app's lifespan created (``app.state.gateway``).

    A plain call rather than a FastAPI dependency: dependency resolution costs
    a measurable share of a point select's request time (see the closing note
    of issue 2), and this lookup needs none of its features.
    """
    gateway: Gateway = request.app.state.gateway
    return gateway


def json_response(payload: Any, status: int = 200) -> Response:
    """Render an already JSON-safe payload with orjson (no second validation pass)."""
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


async def read_body(request: Request, model: type[M]) -> M:
    """The request's JSON body validated as ``model``, straight from the bytes
    (pydantic-core parses and validates in one pass).

    As FastAPI's strict content type (its default) does, a body is read as
    JSON only when sent as ``application/json`` or ``application/*+json``: a
    browser may POST ``text/plain`` cross-site without a CORS preflight, and
    that must never run a statement on a gateway whose auth is off.

    Raises:
        RequestValidationError: the body is not JSON, not sent as JSON, or not
            a valid ``model``; the errors carry FastAPI's ``("body", ...)``
            locations, so the problem+json answer (422) is the one a declared
            body gives.
    """
    body = await request.body()
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if body and not (
        media == "application/json"
        or (media.startswith("application/") and media.endswith("+json"))
    ):
        raise RequestValidationError(
            [
                {
                    "type": "model_attributes_type",
                    "loc": ("body",),
                    "msg": "Input should be a valid dictionary or object to extract fields from",
                    "input": None,
                }
            ]
        )
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None


class _StrictJsonRequest(Request):
    """A request whose ``json()`` is pydantic-core's parser (jiter), the one
    :func:`read_body` uses, instead of Starlette's ``json.loads``."""

    async def json(self) -> Any:
        """The body parsed as strict UTF-8 JSON.

        ``json.loads`` accepts an unpaired surrogate escape (``"\\ud800"``)
        and, for bytes, CESU-8 surrogates (``surrogatepass``); such a string
        cannot be encoded again (orjson, aiohttp, SQLite and the file system
        all refuse it) and would fail deep inside a route as a 500. jiter
        refuses both, and invalid UTF-8, while parsing; integers keep their
        exact value (no 64-bit limit), as with ``json.loads``.

        Raises:
            json.JSONDecodeError: the body is not strict JSON; FastAPI answers
                it as a 422 ``json_invalid`` validation error.
        """
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = from_json(body)
            except ValueError as exc:
                raise json.JSONDecodeError(str(exc), "", 0) from None
        return self._json


class JsonBodyRoute(APIRoute):
    """The route class of every gateway router: a route that declares a JSON
    body parses it with :meth:`_StrictJsonRequest.json` (jiter), so no route
    ever sees a string that cannot be encoded (a lone surrogate) or a body
    that is not UTF-8; routes without a body are served exactly as
    :class:`fastapi.routing.APIRoute` serves them (no extra frame).

    Use as ``APIRouter(route_class=JsonBodyRoute)``.

    A route registered on the app itself (:meth:`flat_copy`) also refuses
    a request whose path does not begin with the route's literal prefix (the
    path up to its first parameter) in one string comparison, before
    Starlette's regular expression and FastAPI's per-route context lookup: the
    app matches its routes one by one, in order, so the 15th route cost
    ~13 µs of matching per request (issue 22).
    """

    _literal_prefix: str | None = None  # set on a flat_copy()

    def flat_copy(self) -> JsonBodyRoute:
        """This route, for the app's own route list with no router prefix or
        mount above it (``iogate serve``'s app), where its declared path is the
        path a request must begin with. A copy: the routers' routes are shared
        with :func:`iogate.fastapi.gateway_router`, which may be included under
        a prefix."""
        route = copy.copy(self)
        route._literal_prefix = self.path_format.split("{", 1)[0]
        return route

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        """Starlette's match (``FULL``, ``PARTIAL`` for another method, ``NONE``),
        refusing at once a path that cannot match (see the class docstring)."""
        prefix = self._literal_prefix
        path = scope["path"]
        if prefix is not None and not path.startswith(prefix) and not scope.get("root_path"):
            return Match.NONE, {}  # (under a root path, Starlette's own match strips it)
        return super().matches(scope)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """FastAPI's handler, given a :class:`_StrictJsonRequest` when the
        route has a body."""
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def strict_json(request: Request) -> Response:
            return await handler(_StrictJsonRequest(request.scope, request.receive, request._send))

        return strict_json


def serve_directly(
    router: APIRouter, path: str, method: str, endpoint: Callable[[Request], Awaitable[Response]]
) -> None:
    """Serve the declared route ``method path`` of ``router`` with ``endpoint``.

    The declared FastAPI route stays what OpenAPI documents (parameters, body
    model, responses); requests go to ``endpoint``, a plain Starlette endpoint
    that reads the path parameters and body itself (:func:`read_body`). This
    skips FastAPI's per-request dependency solving — its parameter
    introspection and a second JSON pass cost about a fifth of a point
    select's request time — so use it only for routes whose endpoint does the
    same validation by hand.

    Raises:
        LookupError: no such route on ``router``.
    """
    for route in router.routes:
        if isinstance(route, APIRoute) and route.path == path and method in (route.methods or ()):
            route.app = request_response(endpoint)
            return
    raise LookupError(f"no route {method} {path}")
