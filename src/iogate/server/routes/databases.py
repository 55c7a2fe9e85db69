"""Database routes: one statement (``/query``), a batch (``/batch``), a streamed
query (``/stream``, NDJSON) and Redis commands (``/command``)."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

from iogate.databases.base import Params, QueryResult
from iogate.databases.streaming import RowStream
from iogate.databases.values import to_json_row
from iogate.errors import IogateError, OperationError
from iogate.gateway import Gateway
from iogate.server.deps import gateway_of, json_response
from iogate.server.problems import problem_for
from iogate.server.routes.cache import cached_query_body
from iogate.server.schemas import (
    BatchRequest,
    BatchResponse,
    QueryRequest,
    QueryResponse,
    RedisCommandRequest,
    RedisCommandResponse,
    StreamRequest,
)

__all__ = ["router", "run_query"]

router = APIRouter(tags=["databases"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Invalid SQL or parameters (problem+json)"},
    404: {"description": "No database of that name (problem+json)"},
    409: {"description": "A constraint was violated (problem+json)"},
    503: {"description": "Database unavailable or circuit open (problem+json)"},
    504: {"description": "Statement ran past its deadline (problem+json)"},
}
NDJSON = "application/x-ndjson"


def _result_body(result: QueryResult) -> dict[str, Any]:
    return {
        "columns": [c.name for c in result.columns],
        "column_types": [c.type for c in result.columns],
        "rows": [to_json_row(row) for row in result.rows],
        "row_count": result.row_count,
        "last_insert_id": result.last_insert_id,
    }


async def run_query(
    gateway: Gateway, name: str, sql: str, params: Params, cache_ttl: float | None = None
) -> Response:
    """Run one statement and render it as a :class:`QueryResponse` body (a read
    with ``cache_ttl`` goes through the gateway cache, see routes.cache)."""
    database = gateway.database(name)
    started = time.perf_counter()
    if cache_ttl is None:
        body = _result_body(await database.query(sql, params))
    else:

        async def load() -> dict[str, Any]:
            return _result_body(await database.query(sql, params))

        body = await cached_query_body(gateway, database, sql, params, cache_ttl, load)
    duration_ms = (time.perf_counter() - started) * 1000
    body["duration_ms"] = round(duration_ms, 3)
    return json_response(body)


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
    return await run_query(gateway_of(request), name, body.sql, body.params, body.cache_ttl)


@router.post(
    "/v1/databases/{name}/batch",
    response_model=BatchResponse,
    responses=_ERRORS,
    summary="Run several SQL statements, in one transaction by default",
)
async def batch(name: str, body: BatchRequest, request: Request) -> Response:
    """Run the statements in order. ``transaction: true`` (default): all or
    nothing; the first failure rolls every statement back and is the response's
    problem (its ``detail`` starts with ``statement <index>:``).
    ``transaction: false``: each statement runs alone; a failure takes its
    place in ``results`` as ``{"error": <problem>}`` and the rest still run."""
    database = gateway_of(request).database(name)
    started = time.perf_counter()
    statements = [(s.sql, s.params) for s in body.statements]
    results = await database.batch(statements, transaction=body.transaction)
    rendered: list[dict[str, Any]] = []
    for result in results:
        if isinstance(result, QueryResult):
            rendered.append(_result_body(result))
        else:
            rendered.append({"error": problem_for(result)[1]})
    duration_ms = round((time.perf_counter() - started) * 1000, 3)
    return json_response({"results": rendered, "duration_ms": duration_ms})


@router.post(
    "/v1/databases/{name}/stream",
    responses={**_ERRORS, 200: {"content": {NDJSON: {}}, "description": "NDJSON lines"}},
    summary="Stream a query's rows as NDJSON",
)
async def stream(name: str, body: StreamRequest, request: Request) -> Response:
    """Stream the rows of a query as newline-delimited JSON, with bounded
    memory (a server-side cursor on PostgreSQL, chunked reads on SQLite).

    Lines: first ``{"columns": [...], "column_types": [...]}``, then one JSON
    array per row (iogate's value encoding), then
    ``{"row_count": n, "truncated": bool}`` — ``truncated`` when ``max_rows``
    stopped the stream before the end. An error before the first line is an
    ordinary problem response; an error later ends the stream with
    ``{"error": <problem>}``."""
    database = gateway_of(request).database(name)
    rows = database.stream(body.sql, body.params, chunk_size=body.chunk_size)
    await rows.__aenter__()  # statement errors become a problem response
    return StreamingResponse(_ndjson(rows, body.max_rows), media_type=NDJSON)


async def _ndjson(rows: RowStream, max_rows: int) -> AsyncIterator[bytes]:
    count, truncated = 0, False
    dumps = orjson.dumps
    try:
        yield (
            dumps(
                {
                    "columns": [c.name for c in rows.columns],
                    "column_types": [c.type for c in rows.columns],
                }
            )
            + b"\n"
        )
        async for chunk in rows.chunks():
            if count >= max_rows:
                truncated = True
                break
            take = chunk[: max_rows - count]
            count += len(take)
            yield b"".join(dumps(to_json_row(tuple(r))) + b"\n" for r in take)
            if len(take) < len(chunk):
                truncated = True
                break
        yield dumps({"row_count": count, "truncated": truncated}) + b"\n"
    except OperationError as exc:
        yield dumps({"error": problem_for(exc)[1]}) + b"\n"
    finally:
        await rows.__aexit__(None, None, None)


@router.post(
    "/v1/databases/{name}/command",
    response_model=RedisCommandResponse,
    responses=_ERRORS,
    summary="Run one Redis command of the allowlist",
)
async def command(name: str, body: RedisCommandRequest, request: Request) -> Response:
    """Run one Redis command (``{"command": "SET", "args": ["k", "v", "EX", 60]}``)
    if the resource's allowlist has it (default: single-key reads and writes;
    never FLUSHALL, FLUSHDB, CONFIG, KEYS, SHUTDOWN, DEBUG...: 400 otherwise).
    String replies are UTF-8 text, or ``{"base64": ...}`` when not valid UTF-8."""
    database = gateway_of(request).redis(name)
    name_upper = database.check_command(body.command)
    started = time.perf_counter()
    reply = await database.command(name_upper, *body.args)
    duration_ms = round((time.perf_counter() - started) * 1000, 3)
    return json_response({"result": _redis_json(reply), "duration_ms": duration_ms})


def _redis_json(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, list | tuple | set):
        return [_redis_json(v) for v in value]
    if isinstance(value, dict):
        return {str(_redis_json(k)): _redis_json(v) for k, v in value.items()}
    if isinstance(value, IogateError):
        return {"error": problem_for(value)[1]}
    if isinstance(value, float) and value != value:
        return str(value)
    return value
