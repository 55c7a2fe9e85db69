"""What every route needs: the app's Gateway, and fast JSON rendering."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request
from starlette.responses import Response

from iogate.gateway import Gateway

__all__ = ["gateway_of", "json_response"]


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
