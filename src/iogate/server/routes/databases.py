"""Database routes: one statement (``/query``), a batch (``/batch``), a streamed
query (``/stream``, NDJSON), a statement's shape (``/describe``), named queries
(``/queries/{qname}``) and Redis commands (``/command``).

Every SQL route runs the statement as the caller (see
:mod:`iogate.batch._access`): a key without ``db:<name>:write`` runs in the
engine's read-only mode, a key with a table allowlist is held to it by the
engine, and results are capped at the database's ``max_rows`` /
``max_response_bytes`` (or the key's tighter caps) with ``truncated: true``.
The point-select path stays one dictionary lookup and one scope check longer
than a bare handler: no FastAPI dependency, no second validation pass.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

from iogate.batch._access import SQLAccess, named_query_access, sql_access
from iogate.cache._through import cached_query_body
from iogate.databases._values import to_json_rows
from iogate.databases.base import Params, QueryResult
from iogate.databases.guard import UNRESTRICTED, fit_body, result_body
from iogate.databases.streaming import RowStream
from iogate.errors import OperationError, UnknownResourceError
from iogate.gateway import Gateway
from iogate.server.auth import ANONYMOUS, Principal, authorize, principal_of
from iogate.server.deps import JsonBodyRoute, gateway_of, json_response, read_body, serve_directly
from iogate.server.limits import check_sql
from iogate.server.problems import problem_for
from iogate.server.schemas import (
    DescribeRequest,
    DescribeResponse,
    NamedQueryOut,
    NamedQueryRequest,
    QueryRequest,
    QueryResponse,
    RedisCommandRequest,
    RedisCommandResponse,
    StatementBatch,
    StatementBatchResponse,
    StreamRequest,
)
from iogate.wire.redis_commands import redis_scope, reply_json

__all__ = ["query_as_caller", "router", "run_query"]

router = APIRouter(tags=["databases"], route_class=JsonBodyRoute)

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Invalid SQL or parameters, or several statements (problem+json)"},
    403: {
        "description": "Scope missing, a write by a read-only key, a table outside the key's"
        " allowlist (problem+json)"
    },
    404: {"description": "No database of that name (problem+json)"},
    409: {"description": "A constraint was violated (problem+json)"},
    503: {"description": "Database unavailable or circuit open (problem+json)"},
    504: {"description": "Statement ran past its deadline (problem+json)"},
}
NDJSON = "application/x-ndjson"


async def run_query(
    gateway: Gateway,
    name: str,
    sql: str,
    params: Params,
    principal: Principal = ANONYMOUS,
    access: SQLAccess | None = None,
    cache_ttl_s: float | None = None,
) -> Response:
    """Run one statement as ``principal`` and render it as a :class:`QueryResponse`
    body (``access``: rights already decided, e.g. for a named query; a read
    with ``cache_ttl_s`` goes through the gateway cache, see routes.cache).

    Raises:
        PermissionError: no ``db:<name>:read``/``write`` scope (403).
    """
    database = gateway.database(name)
    if access is None:
        access = sql_access(principal, name, gateway.config.databases.get(name))
    started = time.perf_counter()
    limits = access.limits
    if cache_ttl_s is not None and access.guard is UNRESTRICTED:
        # Cached whole and cut per caller, so callers with different caps
        # share one entry; a restricted caller (read-only or with a table
        # allowlist) never reads through the cache, which would skip the
        # engine's checks.
        # The entry is read under the database's own caps (no caller's are
        # looser), so it is bounded too.
        ceiling = sql_access(ANONYMOUS, name, gateway.config.databases.get(name)).limits

        async def load() -> dict[str, Any]:
            result = await database.query(sql, params, limits=ceiling)
            return result_body(result, None, fit_bytes=False)

        body = await cached_query_body(gateway.cache, database, sql, params, cache_ttl_s, load)
        if len(body["rows"]) > limits.max_rows:
            body["rows"] = body["rows"][: limits.max_rows]
            body["row_count"] = limits.max_rows
            body["truncated"] = True
    else:
        if access.guard is UNRESTRICTED:
            result = await database.query(sql, params, limits=limits)
        else:
            result = await database.query_guarded(sql, params, guard=access.guard, limits=limits)
        body = result_body(result, limits, fit_bytes=False)
    duration_ms = (time.perf_counter() - started) * 1000
    body["duration_ms"] = round(duration_ms, 3)
    payload = orjson.dumps(body)
    if len(payload) > limits.max_bytes:
        payload = orjson.dumps(fit_body(body, limits.max_bytes))
    return Response(payload, media_type="application/json")


async def query_as_caller(request: Request, name: str, sql: str, params: Params) -> Response:
    """:func:`run_query` as the principal of ``request`` (``[server.limits]`` checked)."""
    check_sql(request, sql, params)
    return await run_query(gateway_of(request), name, sql, params, principal_of(request))


@router.post(
    "/v1/databases/{name}/query",
    response_model=QueryResponse,
    responses=_ERRORS,
    summary="Run one SQL statement",
)
async def query(name: str, body: QueryRequest, request: Request) -> Response:
    """Run one statement with bound parameters (``:name`` with an object, ``?``
    with a list). Reads return columns and rows; writes return rows affected
    in ``row_count``. One statement only: a string holding several is refused
    by the engine (400). Needs ``db:<name>:read`` (then it runs in the
    engine's read-only mode) or ``db:<name>:write``. Rows past the caller's
    ``max_rows`` or ``max_response_bytes`` are dropped and ``truncated`` is true.
    With ``cache_ttl_s`` (seconds) a read is answered through the gateway cache
    (keys with read-only or table-restricted access bypass it)."""
    check_sql(request, body.sql, body.params)
    return await run_query(
        gateway_of(request),
        name,
        body.sql,
        body.params,
        principal_of(request),
        cache_ttl_s=body.cache_ttl,
    )


async def _query_directly(request: Request) -> Response:
    """What :func:`query` does, as a plain endpoint (see :func:`serve_directly`)."""
    body = await read_body(request, QueryRequest)
    return await query(request.path_params["name"], body, request)


serve_directly(router, "/v1/databases/{name}/query", "POST", _query_directly)


@router.post(
    "/v1/databases/{name}/batch",
    response_model=StatementBatchResponse,
    responses=_ERRORS,
    summary="Run several SQL statements, in one transaction by default",
)
async def batch(name: str, body: StatementBatch, request: Request) -> Response:
    """Run the statements in order. ``transaction: true`` (default): all or
    nothing; the first failure rolls every statement back and is the response's
    problem (its ``detail`` starts with ``statement <index>:``).
    ``transaction: false``: each statement runs alone; a failure takes its
    place in ``results`` as ``{"error": <problem>}`` and the rest still run."""
    gateway = gateway_of(request)
    database = gateway.database(name)
    access = sql_access(principal_of(request), name, gateway.config.databases.get(name))
    for statement in body.statements:
        check_sql(request, statement.sql, statement.params)
    started = time.perf_counter()
    statements = [(s.sql, s.params) for s in body.statements]
    results = await database.batch(
        statements, transaction=body.transaction, guard=access.guard, limits=access.limits
    )
    rendered: list[dict[str, Any]] = []
    for result in results:
        if isinstance(result, QueryResult):
            rendered.append(result_body(result, access.limits))
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
    gateway = gateway_of(request)
    database = gateway.database(name)
    access = sql_access(principal_of(request), name, gateway.config.databases.get(name))
    check_sql(request, body.sql, body.params)
    rows = database.stream(body.sql, body.params, chunk_rows=body.chunk_size, guard=access.guard)
    await rows.__aenter__()  # statement errors become a problem response
    max_rows = min(body.max_rows, access.limits.max_rows)
    return StreamingResponse(_ndjson(rows, max_rows), media_type=NDJSON)


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
            yield b"".join(dumps(row) + b"\n" for row in to_json_rows(take))
            if len(take) < len(chunk):
                truncated = True
                break
        yield dumps({"row_count": count, "truncated": truncated}) + b"\n"
    except OperationError as exc:
        yield dumps({"error": problem_for(exc)[1]}) + b"\n"
    finally:
        await rows.__aexit__(None, None, None)


@router.post(
    "/v1/databases/{name}/describe",
    response_model=DescribeResponse,
    responses=_ERRORS,
    summary="Describe a statement's columns and parameters without running it",
)
async def describe(name: str, body: DescribeRequest, request: Request) -> Response:
    """Compile the statement and return its result columns (name and type) and
    its parameters (``:name`` placeholders by name; PostgreSQL also infers
    their types), without running it (PostgreSQL: a prepared statement's
    attributes and parameters; SQLite: ``sqlite3_prepare_v2``). Needs
    ``db:<name>:read``; the key's table allowlist applies."""
    gateway = gateway_of(request)
    database = gateway.database(name)
    access = sql_access(principal_of(request), name, gateway.config.databases.get(name))
    check_sql(request, body.sql)
    guard = None if access.guard is UNRESTRICTED else access.guard
    found = await database.describe(body.sql, guard=guard)
    return json_response(
        {
            "columns": [{"name": c.name, "type": c.type} for c in found.columns],
            "parameters": [{"name": p.name, "type": p.type} for p in found.parameters],
        }
    )


@router.get(
    "/v1/databases/{name}/queries",
    response_model=list[NamedQueryOut],
    responses={404: _ERRORS[404]},
    summary="List the database's named queries",
)
async def named_queries(name: str, request: Request) -> Response:
    """The named queries of ``[databases.<name>.queries]``: name, whether it
    writes, its description and its parameters (not its SQL)."""
    gateway = gateway_of(request)
    config = gateway.config.databases.get(name)
    if config is None:
        raise UnknownResourceError("database", name)
    principal = principal_of(request)
    listed = []
    for qname, query in sorted(config.queries.items()):
        try:
            named_query_access(principal, name, qname, write=query.write, config=config)
        except PermissionError:
            continue  # a key sees only the queries it may call
        listed.append({"name": qname, "write": query.write, "description": query.description})
    return json_response(listed)


@router.post(
    "/v1/databases/{name}/queries/{qname}",
    response_model=QueryResponse,
    responses=_ERRORS,
    summary="Call a named query with parameters",
)
async def named_query(name: str, qname: str, body: NamedQueryRequest, request: Request) -> Response:
    """Run the statement configured as ``[databases.<name>.queries.<qname>]``
    with ``params``. Needs ``db:<name>:query:<qname>``, or ``db:<name>:read``
    for a read query / ``db:<name>:write`` for a write query: a key holding only
    ``db:<name>:query:...`` scopes can call these and send no SQL of its own.
    A read query (``write = false``) runs in the engine's read-only mode."""
    gateway = gateway_of(request)
    config = gateway.config.databases.get(name)
    query = None if config is None else config.queries.get(qname)
    if config is None or query is None:
        raise UnknownResourceError("named query", f"{name}/{qname}")
    access = named_query_access(
        principal_of(request), name, qname, write=query.write, config=config
    )
    check_sql(request, query.sql, body.params)
    return await run_query(gateway, name, query.sql, body.params, access=access)


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
    authorize(request, f"db:{name}:{redis_scope(name_upper)}")
    started = time.perf_counter()
    reply = await database.command(name_upper, *body.args)
    duration_ms = round((time.perf_counter() - started) * 1000, 3)
    return json_response({"result": reply_json(reply), "duration_ms": duration_ms})
