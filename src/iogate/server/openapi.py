"""The OpenAPI document: FastAPI's, plus what the routes cannot declare themselves.

The routes return orjson responses directly (no second validation pass), so
their schemas are declared with ``response_model``; this module adds, to
every operation of the generated document:

- the ``bearer`` security scheme (``Authorization: Bearer <key>``) on every
  path but the open ones (``/health``, ``/ready``);
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


def _problem_content(status: str, slug: str, detail: str) -> dict[str, Any]:
    example = {
        "type": f"urn:iogate:problem:{slug}",
        "title": slug.replace("-", " ").capitalize(),
        "status": int(status),
        "detail": detail,
        "instance": "/v1/databases/main/query",
    }
    return {"application/problem+json": {"schema": _REF, "example": example}}


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
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
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
