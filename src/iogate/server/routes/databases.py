"""``POST /v1/databases/{name}/query``: one SQL statement on a named database."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from iogate.databases.base import Params
from iogate.databases.values import to_json_row
from iogate.gateway import Gateway
from iogate.server.deps import gateway_of, json_response
from iogate.server.schemas import QueryRequest, QueryResponse

__all__ = ["router", "run_query"]

router = APIRouter(tags=["databases"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Invalid SQL or parameters (problem+json)"},
    404: {"description": "No database of that name (problem+json)"},
    409: {"description": "A constraint was violated (problem+json)"},
    503: {"description": "Database unavailable or circuit open (problem+json)"},
    504: {"description": "Statement ran past its deadline (problem+json)"},
}


async def run_query(gateway: Gateway, name: str, sql: str, params: Params) -> Response:
    """Run one statement and render it as a :class:`QueryResponse` body."""
    database = gateway.database(name)
    started = time.perf_counter()
    result = await database.query(sql, params)
    duration_ms = (time.perf_counter() - started) * 1000
    return json_response(
        {
            "columns": [c.name for c in result.columns],
            "column_types": [c.type for c in result.columns],
            "rows": [to_json_row(row) for row in result.rows],
            "row_count": result.row_count,
            "last_insert_id": result.last_insert_id,
            "duration_ms": round(duration_ms, 3),
        }
    )


@router.post(
    "/v1/databases/{name}/query",
    response_model=QueryResponse,
    responses=_ERRORS,
    summary="Run one SQL statement",
)
async def query(name: str, body: QueryRequest, request: Request) -> Response:
    """Run one statement with bound parameters (``:name`` with an object, ``?``
    with a list). Reads return columns and rows; writes return rows affected
    in ``row_count``."""
    return await run_query(gateway_of(request), name, body.sql, body.params)
