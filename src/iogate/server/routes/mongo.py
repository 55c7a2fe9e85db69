"""MongoDB routes: ``POST /v1/databases/{name}/find``, ``/aggregate``,
``/count``, ``/insert``, ``/update``, ``/delete`` — one route per operation
(each with its own body model and OpenAPI examples, and a scope that follows
from the route alone: the reads need ``db:<name>:read``, the writes
``db:<name>:write``; an aggregation with ``$out``/``$merge`` needs write).

Bodies and answers are MongoDB Extended JSON v2 (relaxed by default,
``"canonical": true`` on a read for the canonical form). What is refused
before any I/O, and the caps, are those of :mod:`iogate.batch._mongo`.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from iogate.batch._mongo import run_mongo
from iogate.server.auth import principal_of
from iogate.server.deps import JsonBodyRoute, gateway_of, json_response, read_body, serve_directly
from iogate.wire.mongo import (
    MongoAggregate,
    MongoCount,
    MongoDelete,
    MongoFind,
    MongoInsert,
    MongoOperation,
    MongoUpdate,
)

__all__ = ["router"]

router = APIRouter(tags=["mongodb"], route_class=JsonBodyRoute)

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {
        "description": "Refused operator ($where, $function, $accumulator...), malformed"
        " Extended JSON, or a filter or update the server refuses (problem+json)"
    },
    403: {
        "description": "Scope missing (a write, or $out/$merge, by a read key), or a"
        " collection outside the key's allowlist (problem+json)"
    },
    404: {"description": "No MongoDB database of that name (problem+json)"},
    409: {"description": "Duplicate key (problem+json)"},
    503: {"description": "Database unavailable or circuit open (problem+json)"},
    504: {"description": "The call ran past its deadline (problem+json)"},
}


async def _answer(request: Request, name: str, op: MongoOperation) -> Response:
    started = time.perf_counter()
    body = await run_mongo(gateway_of(request), name, op, principal_of(request))
    body["duration_ms"] = round((time.perf_counter() - started) * 1000, 3)
    return json_response(body)


@router.post(
    "/v1/databases/{name}/find",
    responses=_ERRORS,
    summary="MongoDB: find documents",
)
async def find(name: str, body: MongoFind, request: Request) -> Response:
    """The documents of ``collection`` matching ``filter`` (with ``projection``,
    ``sort``, ``skip``, ``limit``): ``{"documents": [...], "count": n,
    "truncated": bool, "duration_ms": ...}``. At most the caller's
    ``max_rows`` documents are read from the server (one more to know there
    are more), and reading stops past ``max_response_bytes``. With
    ``cache_ttl`` (seconds) the answer may come from the gateway cache; every
    write through the gateway to the collection invalidates it. Needs
    ``db:<name>:read``."""
    return await _answer(request, name, body)


@router.post(
    "/v1/databases/{name}/aggregate",
    responses=_ERRORS,
    summary="MongoDB: run an aggregation pipeline",
)
async def aggregate(name: str, body: MongoAggregate, request: Request) -> Response:
    """The documents ``pipeline`` produces on ``collection`` (answer as
    ``find``). A final ``$limit`` of ``max_rows + 1`` is added to a read
    pipeline. Collections reached by ``$lookup``, ``$graphLookup`` and
    ``$unionWith`` must be in the key's allowlist. Needs ``db:<name>:read``;
    ``$out``/``$merge`` need ``db:<name>:write``."""
    return await _answer(request, name, body)


@router.post(
    "/v1/databases/{name}/count",
    responses=_ERRORS,
    summary="MongoDB: count documents",
)
async def count(name: str, body: MongoCount, request: Request) -> Response:
    """How many documents of ``collection`` match ``filter``: ``{"count": n}``.
    Needs ``db:<name>:read``."""
    return await _answer(request, name, body)


@router.post(
    "/v1/databases/{name}/insert",
    responses=_ERRORS,
    summary="MongoDB: insert documents",
)
async def insert(name: str, body: MongoInsert, request: Request) -> Response:
    """Insert ``documents`` (a missing ``_id`` becomes an ObjectId):
    ``{"inserted_count": n, "inserted_ids": [...]}``. A duplicate key is a
    409 ``integrity-violation``. Never retried by the gateway. Needs
    ``db:<name>:write``."""
    return await _answer(request, name, body)


@router.post(
    "/v1/databases/{name}/update",
    responses=_ERRORS,
    summary="MongoDB: update or replace documents",
)
async def update(name: str, body: MongoUpdate, request: Request) -> Response:
    """Apply ``update`` (``{"$set": ...}``, or a pipeline) to the first document
    matching ``filter`` (every one with ``many``), or replace it with
    ``replacement``; ``upsert`` inserts when none matches.
    ``{"matched_count", "modified_count", "upserted_ids"}``. Needs ``db:<name>:write``."""
    return await _answer(request, name, body)


@router.post(
    "/v1/databases/{name}/delete",
    responses=_ERRORS,
    summary="MongoDB: delete documents",
)
async def delete(name: str, body: MongoDelete, request: Request) -> Response:
    """Delete the first document matching ``filter`` (every one with ``many``):
    ``{"deleted_count": n}``. Needs ``db:<name>:write``."""
    return await _answer(request, name, body)


def _direct(model: type[MongoOperation]) -> Any:
    async def endpoint(request: Request) -> Response:
        body = await read_body(request, model)
        return await _answer(request, request.path_params["name"], body)

    return endpoint


for _op, _model in (
    ("find", MongoFind),
    ("aggregate", MongoAggregate),
    ("count", MongoCount),
    ("insert", MongoInsert),
    ("update", MongoUpdate),
    ("delete", MongoDelete),
):
    serve_directly(router, f"/v1/databases/{{name}}/{_op}", "POST", _direct(_model))
