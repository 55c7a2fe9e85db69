"""Mixed batches over HTTP: ``POST /v1/batch`` and the original ``POST /batch/execute``.

Both run :func:`iogate.batch.run_batch` with the caller's principal: each step
is checked against its own scope (``db:<name>:read``/``write``,
``upstream:<name>``, ``cache:read``/``cache:write``), so a batch has no scope
of its own and a refused step is a 403 problem in its result, not a refused
batch. ``[server] max_batch_steps`` bounds the steps (400 beyond it).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.responses import Response

from iogate.batch import Batch, run_batch
from iogate.batch.model import MAX_STEPS, DatabaseStep, check_literal_headers
from iogate.errors import InvalidInputError
from iogate.server.auth import principal_of
from iogate.server.deps import JsonBodyRoute, gateway_of, json_response, read_body, serve_directly
from iogate.server.limits import check_sql
from iogate.server.routes.legacy import upstream_for_url
from iogate.server.schemas import RedisOperationIn, positional_params
from iogate.wire.redis_commands import operation_command

__all__ = ["BatchResponse", "LegacyBatchRequest", "router"]

router = APIRouter(tags=["batch"], route_class=JsonBodyRoute)

_EXAMPLE = {
    "steps": [
        {
            "kind": "database",
            "database": "main",
            "sql": "SELECT id FROM users WHERE email = :e",
            "params": {"e": "a@b.c"},
        },
        {
            "kind": "upstream",
            "upstream": "example",
            "method": "POST",
            "path": "/events",
            "json": {"user": {"$ref": "steps.0.rows.0.0"}},
            "when": {"ok": 0},
        },
        {"kind": "cache", "op": "delete", "key": "user:a@b.c"},
    ],
    "max_concurrent": 4,
    "fail_fast": False,
}


class StepResultOut(BaseModel):
    """One step's outcome: ``value`` when ``ok``, else an RFC 9457 ``problem``
    (with ``step``); ``skipped`` when its condition was false."""

    ok: bool
    value: Any = None
    problem: dict[str, Any] | None = None
    skipped: bool = False
    duration_ms: float


class BatchResponse(BaseModel):
    """One result per step, in input order."""

    results: list[StepResultOut]
    duration_ms: float


class LegacyOperation(BaseModel):
    """One operation of ``POST /batch/execute`` (the original design's shape)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["database", "api", "upstream", "cache"]
    db_name: str = "main"
    query: str | RedisOperationIn | None = Field(
        default=None, description="SQL text, or a Redis operation object on a Redis database."
    )
    sql: str | None = Field(default=None, max_length=1_000_000, description="As query.")
    params: Any = None
    api_name: str | None = None
    url: str | None = Field(default=None, max_length=8192)
    api_type: Literal["http"] = Field(
        default="http", description="Provider generations are not batch steps: http only."
    )
    method: str = "GET"
    endpoint: str = Field(default="", max_length=8192)
    data: Any = None
    json_data: Any = None
    headers: dict[str, str] | None = None
    op: Literal["get", "set", "delete"] | None = None
    key: str | None = None
    value: Any = None
    ttl: float | None = Field(default=None, gt=0)

    @field_validator("params")
    @classmethod
    def _positional(cls, params: Any) -> Any:
        return positional_params(params)

    @property
    def statement(self) -> str | None:
        """The SQL text under either name."""
        if self.sql is not None:
            return self.sql
        return self.query if isinstance(self.query, str) else None


class LegacyBatchRequest(BaseModel):
    """``POST /batch/execute``: ``operations`` of ``type`` database (``db_name``,
    ``query`` or ``sql``, ``params``; or ``query`` as a Redis operation object
    on a Redis database), api (``api_name`` and/or ``url``, ``method``,
    ``endpoint``, ``data`` or ``json_data``, ``params``, ``headers``) or cache
    (``op``, ``key``, ``value``, ``ttl``)."""

    model_config = ConfigDict(extra="forbid")

    operations: list[LegacyOperation] = Field(min_length=1, max_length=MAX_STEPS)
    max_concurrent: int = Field(default=4, ge=1, le=256)
    fail_fast: bool = False
    timeout: float = Field(default=30.0, gt=0, le=3600)


async def _run(request: Request, body: Batch) -> Response:
    gateway = gateway_of(request)
    limit = gateway.config.server.max_batch_steps
    if len(body.steps) > limit:
        raise InvalidInputError(f"a batch may hold at most {limit} steps, got {len(body.steps)}")
    for step in body.steps:
        if isinstance(step, DatabaseStep):
            check_sql(request, step.sql, step.params)
    check_literal_headers(body)  # a bad header refuses the batch before any step runs
    result = await run_batch(gateway, body, principal=principal_of(request))
    return json_response(result.to_json())


@router.post(
    "/v1/batch",
    response_model=BatchResponse,
    responses={
        400: {"description": "More steps than [server] max_batch_steps (problem+json)"},
        422: {"description": "Malformed steps, references or conditions (problem+json)"},
    },
    summary="Run a mixed batch of database, upstream, cache and Redis steps",
    openapi_extra={"requestBody": {"content": {"application/json": {"example": _EXAMPLE}}}},
)
async def batch(body: Batch, request: Request) -> Response:
    """Run ordered steps under one deadline (``timeout`` seconds), at most
    ``max_concurrent`` at a time. A step waits only for the earlier steps it
    uses: ``{"$ref": "steps.<i>.<path>"}`` values in its data, and the steps
    its ``when`` condition tests (``ok``, ``error``, ``status``, ``not``,
    ``and``, ``or``). Database steps with the same ``transaction`` name commit
    together. A ``redis`` step (``{"kind": "redis", "database", "command":
    [name, *args]}``) runs one allowlisted command; a read command needs
    ``db:<name>:read``, any other ``db:<name>:write``. One failing step never
    fails the others unless ``fail_fast``.
    Results come back in input order: ``{"ok", "value"|"problem", "duration_ms"}``."""
    return await _run(request, body)


async def _batch_directly(request: Request) -> Response:
    """What :func:`batch` does, as a plain endpoint (see :func:`serve_directly`)."""
    return await _run(request, await read_body(request, Batch))


serve_directly(router, "/v1/batch", "POST", _batch_directly)


@router.post(
    "/batch/execute",
    response_model=BatchResponse,
    summary="Run a mixed batch (original path)",
    tags=["original paths"],
)
async def batch_execute(body: LegacyBatchRequest, request: Request) -> Response:
    """Same as ``POST /v1/batch``; each operation is translated to a step:
    ``database`` → ``{"kind": "database", "database": db_name, "sql": query}``
    (a Redis operation object as ``query`` → ``{"kind": "redis", "command": [...]}``),
    ``api`` → ``{"kind": "upstream", "upstream": api_name, "path": endpoint,
    "json": data}`` (a ``url`` must lie under a configured upstream's base URL,
    400 otherwise), ``cache`` as is."""
    gateway = gateway_of(request)
    steps: list[dict[str, Any]] = []
    for index, op in enumerate(body.operations):
        if op.type == "database":
            if isinstance(op.query, RedisOperationIn):
                redis_op = op.query
                try:
                    command = operation_command(
                        redis_op.operation, redis_op.key, redis_op.value, redis_op.ttl
                    )
                except InvalidInputError as exc:
                    raise InvalidInputError(f"operations.{index}: {exc}") from None
                steps.append({"kind": "redis", "database": op.db_name, "command": command})
                continue
            sql = op.statement
            if not sql or (op.sql is not None and op.query is not None):
                raise InvalidInputError(
                    f"operations.{index}: a database operation needs a query (or sql), not both"
                )
            steps.append(
                {"kind": "database", "database": op.db_name, "sql": sql, "params": op.params}
            )
        elif op.type in ("api", "upstream"):
            name, path = op.api_name, op.endpoint
            if op.url is not None:
                if op.endpoint:
                    raise InvalidInputError(f"operations.{index}: give url or endpoint, not both")
                try:
                    name, path = upstream_for_url(gateway, op.url, op.api_name)
                except InvalidInputError as exc:
                    raise InvalidInputError(f"operations.{index}: {exc}") from None
            if not name:
                raise InvalidInputError(
                    f"operations.{index}: an api operation needs an api_name or a url"
                )
            step: dict[str, Any] = {
                "kind": "upstream",
                "upstream": name,
                "method": op.method,
                "path": path,
                "params": op.params,
                "headers": op.headers,
            }
            if {"data", "json_data"} <= op.model_fields_set:
                raise InvalidInputError(f"operations.{index}: give data or json_data, not both")
            if "json_data" in op.model_fields_set:
                step["json"] = op.json_data
            elif "data" in op.model_fields_set:
                step["json"] = op.data
            steps.append(step)
        else:
            if op.op is None or op.key is None:
                raise InvalidInputError(f"operations.{index}: a cache operation needs op and key")
            steps.append(
                {"kind": "cache", "op": op.op, "key": op.key, "value": op.value, "ttl": op.ttl}
            )
    try:
        translated = Batch.model_validate(
            {
                "steps": steps,
                "max_concurrent": body.max_concurrent,
                "fail_fast": body.fail_fast,
                "timeout": body.timeout,
            }
        )
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"]).replace("steps", "operations", 1)
        raise InvalidInputError(f"{where}: {first['msg']}") from None
    return await _run(request, translated)
