"""``POST /v1/upstreams/{name}/request``: one request to a configured upstream API."""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from iogate.gateway import Gateway
from iogate.http.upstream import Response as UpstreamAnswer
from iogate.server.deps import gateway_of, json_response
from iogate.server.schemas import UpstreamRequest, UpstreamResponse

__all__ = ["encode_body", "router", "run_upstream"]

router = APIRouter(tags=["upstreams"])

# Not forwarded to the client: hop-by-hop, and framing the gateway redoes.
_SKIP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "content-encoding",
        "upgrade",
        "te",
        "trailer",
        "proxy-authenticate",
    }
)
_UNSET: Any = object()


async def run_upstream(
    gateway: Gateway,
    name: str,
    *,
    method: str,
    path: str,
    params: Mapping[str, str | int | float | bool] | None,
    headers: Mapping[str, str] | None,
    json: Any = _UNSET,
    body: str | None = None,
) -> Response:
    """Send one request and render the answer as an :class:`UpstreamResponse` body."""
    upstream = gateway.upstream(name)
    query = {k: _query_value(v) for k, v in params.items()} if params else None
    started = time.perf_counter()
    if json is _UNSET:
        answer = await upstream.request(method, path, params=query, headers=headers, data=body)
    else:
        answer = await upstream.request(method, path, params=query, headers=headers, json=json)
    duration_ms = (time.perf_counter() - started) * 1000
    content, encoding = encode_body(answer)
    return json_response(
        {
            "status": answer.status,
            "headers": _forwarded_headers(answer.headers),
            "body": content,
            "body_encoding": encoding,
            "duration_ms": round(duration_ms, 3),
        }
    )


def encode_body(answer: UpstreamAnswer) -> tuple[Any, str]:
    """The body as parsed JSON (JSON media types), text (UTF-8), or base64."""
    if not answer.body:
        return None, "empty"
    media = answer.content_type
    if media == "application/json" or media.endswith("+json"):
        try:
            return orjson.loads(answer.body), "json"
        except orjson.JSONDecodeError:
            pass
    try:
        return answer.body.decode("utf-8"), "text"
    except UnicodeDecodeError:
        return base64.b64encode(answer.body).decode("ascii"), "base64"


def _forwarded_headers(headers: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in headers.items():
        name = key.lower()
        if name in _SKIP_HEADERS:
            continue
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


def _query_value(value: str | int | float | bool) -> str | int | float:
    return ("true" if value else "false") if isinstance(value, bool) else value


@router.post(
    "/v1/upstreams/{name}/request",
    response_model=UpstreamResponse,
    responses={
        400: {"description": "Invalid method or a path leaving the base URL (problem+json)"},
        404: {"description": "No upstream of that name (problem+json)"},
        502: {"description": "Upstream unreachable (problem+json)"},
        504: {"description": "Upstream did not answer in time (problem+json)"},
    },
    summary="Send one request to an upstream API",
)
async def request(name: str, body: UpstreamRequest, request: Request) -> Response:
    """Forward one request under the upstream's base URL with its configured
    headers. Any upstream status comes back in ``status``; only failures to
    get an answer are errors."""
    json = body.json_body if "json_body" in body.model_fields_set else _UNSET
    return await run_upstream(
        gateway_of(request),
        name,
        method=body.method,
        path=body.path,
        params=body.params,
        headers=body.headers,
        json=json,
        body=body.body,
    )
