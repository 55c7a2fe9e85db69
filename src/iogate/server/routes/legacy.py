"""The original design's short paths, served by the same code as ``/v1``.

``POST /database/execute`` ``{"db_name", "query", "params"}`` and
``POST /api/execute`` ``{"api_name", "method", "endpoint", "data", "params"}``
answer exactly like ``/v1/databases/{name}/query`` and
``/v1/upstreams/{name}/request``. ``GET /stats`` and ``GET /health`` live in
:mod:`iogate.server.routes.system`.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from iogate.server.auth import authorize
from iogate.server.deps import JsonBodyRoute, gateway_of
from iogate.server.routes.databases import query_as_caller
from iogate.server.routes.upstreams import run_upstream
from iogate.server.schemas import (
    ApiExecuteRequest,
    DatabaseExecuteRequest,
    QueryResponse,
    UpstreamResponse,
)

__all__ = ["router"]

router = APIRouter(tags=["original paths"], route_class=JsonBodyRoute)


@router.post("/database/execute", response_model=QueryResponse, summary="Run SQL (original path)")
async def database_execute(body: DatabaseExecuteRequest, request: Request) -> Response:
    """Same as ``POST /v1/databases/{db_name}/query`` with ``query`` as ``sql``."""
    return await query_as_caller(request, body.db_name, body.query, body.params)


@router.post("/api/execute", response_model=UpstreamResponse, summary="Call an API (original path)")
async def api_execute(body: ApiExecuteRequest, request: Request) -> Response:
    """Same as ``POST /v1/upstreams/{api_name}/request``; ``data`` is sent as a
    JSON body when given. Scope ``upstream:<api_name>``."""
    authorize(request, f"upstream:{body.api_name}")
    extra = {"json": body.data} if "data" in body.model_fields_set else {}
    return await run_upstream(
        gateway_of(request),
        body.api_name,
        method=body.method,
        path=body.endpoint,
        params=body.params,
        headers=body.headers,
        **extra,
    )
