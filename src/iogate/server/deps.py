"""What every route needs: the app's Gateway, and fast JSON rendering."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import Depends, Request
from starlette.responses import Response

from iogate.gateway import Gateway

__all__ = ["GatewayDep", "get_gateway", "json_response"]


def get_gateway(request: Request) -> Gateway:
    """The Gateway the app's lifespan created (``app.state.gateway``)."""
    gateway: Gateway = request.app.state.gateway
    return gateway


GatewayDep = Annotated[Gateway, Depends(get_gateway)]


def json_response(payload: Any, status: int = 200) -> Response:
    """Render an already JSON-safe payload with orjson (no second validation pass)."""
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")
