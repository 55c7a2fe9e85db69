"""The OpenAPI document: FastAPI's, plus what the routes cannot declare themselves.

The routes return orjson responses directly (no second validation pass), so
their schemas are declared with ``response_model``; this module adds, to
every operation of the generated document:

- the ``bearer`` security scheme (``Authorization: Bearer <key>``) on every
  path but the open ones (``/health``, ``/ready``);
- a request and a response example for each operation (:data:`EXAMPLES`);
- the error responses every request may get (and the route-declared ones),
  each ``application/problem+json`` with the
  :class:`~iogate.server.schemas.ProblemDetails` schema and an example:
  401, 403, 413, 422, 429, 500, 504 — replacing FastAPI's default
  422 schema, which the gateway never sends.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from iogate.server.guard import OPEN_PATHS
from iogate.server.schemas import ProblemDetails

__all__ = ["install_openapi"]

_ERRORS: dict[str, tuple[str, str, str]] = {
    "401": (
        "Missing, unknown, expired or revoked API key",
        "unauthorized",
        "the API key is not valid",
    ),
    "403": (
        "The key lacks the scope this call needs",
        "forbidden",
        "this key lacks the scope 'admin'",
    ),
    "413": (
        "Request body above [server.limits] max_body_bytes",
        "too-large",
        "the request body is larger than 10485760 bytes",
    ),
    "422": (
        "The request body or parameters do not match the schema",
        "invalid-request",
        "sql: String should have at least 1 character",
    ),
    "429": (
        "The key's rate limit or concurrency limit (see Retry-After)",
        "rate-limited",
        "key 'reporting' is over its rate limit",
    ),
    "500": (
        "The gateway failed (no details are disclosed)",
        "internal-error",
        "the gateway failed to handle this request",
    ),
    "504": (
        "The X-Request-Timeout deadline or the resource's deadline passed",
        "timeout",
        "the request's deadline of 2s passed",
    ),
}
_REF = {"$ref": "#/components/schemas/ProblemDetails"}

_QUERY = {"sql": "SELECT id, email FROM users WHERE id = :id", "params": {"id": 1}}
_ROWS = {
    "columns": ["id", "email"],
    "column_types": ["int4", "text"],
    "rows": [[1, "ada@example.com"]],
    "row_count": 1,
    "last_insert_id": None,
    "duration_ms": 0.41,
}
_ANSWER = {
    "status": 200,
    "headers": {"content-type": "application/json"},
    "body": {"items": []},
    "body_encoding": "json",
    "duration_ms": 12.3,
}
_BREAKER = {
    "name": "main",
    "state": "closed",
    "failure_rate": 0.0,
    "slow_call_rate": None,
    "buffered_calls": 20,
    "failed_calls": 0,
    "successful_calls": 20,
    "not_permitted_calls": 0,
    "trips": 0,
    "retry_after_s": None,
}
# (request body example, 200 response example) by (method, path): what /docs shows.
EXAMPLES: dict[tuple[str, str], tuple[Any, Any]] = {
    ("post", "/v1/databases/{name}/query"): (_QUERY, _ROWS),
    ("post", "/database/execute"): (
        {"db_name": "main", "query": _QUERY["sql"], "params": _QUERY["params"]},
        _ROWS,
    ),
    ("post", "/v1/databases/{name}/batch"): (
        {
            "statements": [
                {"sql": "INSERT INTO users (email) VALUES (?)", "params": ["bob@example.com"]},
                {"sql": "SELECT count(*) AS n FROM users"},
            ],
            "transaction": True,
        },
        {
            "results": [
                {**_ROWS, "columns": [], "column_types": [], "rows": [], "last_insert_id": 2},
                {**_ROWS, "columns": ["n"], "column_types": ["int8"], "rows": [[2]]},
            ],
            "duration_ms": 1.9,
        },
    ),
    ("post", "/v1/databases/{name}/stream"): (
        {"sql": "SELECT id, email FROM users", "max_rows": 1000, "chunk_size": 500},
        None,
    ),
    ("post", "/v1/databases/{name}/command"): (
        {"command": "GET", "args": ["user:1"]},
        {"result": "ada", "duration_ms": 0.2},
    ),
    ("post", "/v1/upstreams/{name}/request"): (
        {"method": "GET", "path": "/items", "params": {"limit": 5}},
        _ANSWER,
    ),
    ("post", "/api/execute"): (
        {"api_name": "example", "method": "GET", "endpoint": "/items", "params": {"limit": 5}},
        _ANSWER,
    ),
    ("post", "/v1/upstreams/{name}/batch"): (
        {"requests": [{"path": "/items/1"}, {"path": "/items/2"}], "max_concurrent": 4},
        {"results": [_ANSWER, _ANSWER], "duration_ms": 25.0},
    ),
    ("post", "/v1/upstreams/{name}/generate"): (
        {"prompt": "Say hello.", "max_tokens": 16},
        {
            "text": "Hello!",
            "usage": {"input_tokens": 4, "output_tokens": 3},
            "finish_reason": "stop",
        },
    ),
    ("get", "/health"): (None, {"status": "ok", "version": "0.1.0"}),
    ("get", "/v1/stats"): (
        None,
        {
            "uptime_s": 60.0,
            "resources": {
                "main": {
                    "kind": "sqlite",
                    "calls": 2,
                    "errors": 0,
                    "mean_ms": 0.5,
                    "operations": {
                        "query": {
                            "calls": 2,
                            "errors": 0,
                            "success_rate": 1.0,
                            "mean_ms": 0.5,
                            "max_ms": 0.7,
                            "outcomes": {"ok": 2},
                        }
                    },
                }
            },
        },
    ),
    ("get", "/v1/circuit-breakers"): (None, {"circuit_breakers": [_BREAKER]}),
    ("post", "/v1/circuit-breakers/{name}/reset"): (None, _BREAKER),
    ("post", "/v1/circuit-breakers/{name}/open"): (
        None,
        {**_BREAKER, "state": "forced_open", "buffered_calls": 0, "successful_calls": 0},
    ),
    ("get", "/v1/alerts"): (
        None,
        {
            "interval_s": 10.0,
            "rules": [
                {
                    "rule": 0,
                    "resource": "*",
                    "window": "1m",
                    "max_error_rate": 0.05,
                    "max_p99_s": None,
                    "min_calls": 20,
                    "webhook": False,
                }
            ],
            "firing": [{"rule": 0, "resource": "main", "condition": "error_rate"}],
        },
    ),
}


def _problem_content(status: str, slug: str, detail: str) -> dict[str, Any]:
    example = {
        "type": f"urn:iogate:problem:{slug}",
        "title": slug.replace("-", " ").capitalize(),
        "status": int(status),
        "detail": detail,
        "instance": "/v1/databases/main/query",
    }
    return {"application/problem+json": {"schema": _REF, "example": example}}


def _add_examples(operation: dict[str, Any], request: Any, response: Any) -> None:
    body = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if request is not None and body is not None and "example" not in body:
        body["example"] = request
    ok = operation.get("responses", {}).get("200", {}).get("content", {}).get("application/json")
    if response is not None and ok is not None and "example" not in ok:
        ok["example"] = response


def install_openapi(app: FastAPI) -> None:
    """Make ``app.openapi()`` return the completed document (built once, cached)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        doc = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        components = doc.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        schemas["ProblemDetails"] = ProblemDetails.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
        components["securitySchemes"] = {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "An API key (`iog_...`, from `iogate keys create`); "
                "required once [keys] are configured.",
            }
        }
        for path, operations in doc.get("paths", {}).items():
            for method, operation in operations.items():
                responses = operation.setdefault("responses", {})
                _add_examples(operation, *EXAMPLES.get((method, path), (None, None)))
                errors = {"422", "500"} if path in OPEN_PATHS else set(_ERRORS)
                if path not in OPEN_PATHS:
                    operation["security"] = [{"bearer": []}]
                if "parameters" not in operation and "requestBody" not in operation:
                    errors.discard("422")
                if "requestBody" not in operation:
                    errors.discard("413")
                for status in sorted(errors | {s for s in responses if s in _ERRORS}):
                    description, slug, detail = _ERRORS[status]
                    entry = responses.setdefault(status, {"description": description})
                    entry["content"] = _problem_content(status, slug, detail)
                for status, entry in responses.items():
                    if status.isdigit() and int(status) >= 400 and status not in _ERRORS:
                        entry["content"] = {"application/problem+json": {"schema": _REF}}
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
