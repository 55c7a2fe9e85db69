"""What every route needs: the app's Gateway, fast JSON rendering, and a
direct path for the hottest routes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.responses import Response
from starlette.routing import request_response

from iogate.gateway import Gateway

__all__ = ["gateway_of", "json_response", "read_body", "serve_directly"]

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
