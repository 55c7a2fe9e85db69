"""Routes of the upstream APIs.

- ``POST /v1/upstreams/{name}/request``: one request; any upstream status comes
  back in ``status`` (after retries, the last answer).
- ``POST /v1/upstreams/{name}/batch``: many requests with a concurrency cap;
  results in input order, each an answer or ``{"error": <problem>}``.
- ``POST /v1/upstreams/{name}/generate``: an LLM generation through the
  upstream's provider adapter: ``{text, usage, finish_reason}``, or with
  ``stream: true`` Server-Sent Events — ``event: delta`` (``{"text"}``) per
  chunk, then ``event: done`` (``{"finish_reason", "usage"}``), or ``event: error``
  (a problem body) if the provider fails mid-stream. Errors before the first
  chunk are ordinary problem responses.
"""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

from iogate.errors import InvalidInputError, IogateError
from iogate.gateway import Gateway
from iogate.http.batch import BatchRequest
from iogate.http.providers import CompletionChunk, GenerateRequest, Provider
from iogate.http.upstream import Response as UpstreamAnswer
from iogate.server.auth import authorize
from iogate.server.deps import JsonBodyRoute, gateway_of, json_response
from iogate.server.problems import problem_for
from iogate.server.routes.cache import cached_upstream_body
from iogate.server.schemas import (
    GenerateBody,
    GenerateResponse,
    UpstreamBatchRequest,
    UpstreamBatchResponse,
    UpstreamRequest,
    UpstreamResponse,
)

__all__ = ["encode_body", "render_answer", "router", "run_upstream"]

router = APIRouter(tags=["upstreams"], route_class=JsonBodyRoute)

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
    cache_ttl: float | None = None,
) -> Response:
    """Send one request and render the answer as an :class:`UpstreamResponse` body
    (with ``cache_ttl``, a 2xx answer is kept in the gateway cache, see routes.cache)."""
    upstream = gateway.upstream(name)
    query = {k: _query_value(v) for k, v in params.items()} if params else None
    started = time.perf_counter()

    async def send() -> dict[str, Any]:
        if json is _UNSET:
            answer = await upstream.request(method, path, params=query, headers=headers, data=body)
        else:
            answer = await upstream.request(method, path, params=query, headers=headers, json=json)
        return render_answer(answer, (time.perf_counter() - started) * 1000)

    if cache_ttl is None:
        return json_response(await send())
    request_key = [method.upper(), path, query, headers, None if json is _UNSET else json, body]
    rendered = await cached_upstream_body(
        gateway, name, request_key=request_key, ttl=cache_ttl, load=send
    )
    rendered["duration_ms"] = round((time.perf_counter() - started) * 1000, 3)
    return json_response(rendered)


def render_answer(answer: UpstreamAnswer, duration_ms: float) -> dict[str, Any]:
    """An answer in the :class:`UpstreamResponse` shape."""
    content, encoding = encode_body(answer)
    return {
        "status": answer.status,
        "headers": _forwarded_headers(answer.headers),
        "body": content,
        "body_encoding": encoding,
        "duration_ms": round(duration_ms, 3),
    }


def encode_body(answer: UpstreamAnswer) -> tuple[Any, str]:
    """The body as parsed JSON (JSON media types), text (UTF-8), or base64."""
    if not answer.body:
        return None, "empty"
    media = answer.content_type
    if media == "application/json" or media.endswith("+json"):
        try:
            return orjson.loads(answer.body), "json"
        except orjson.JSONDecodeError:
            pass  # labelled JSON but is not: returned as text (or base64) below
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
    get an answer are errors. Scope ``upstream:<name>``."""
    authorize(request, f"upstream:{name}")
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
        cache_ttl=body.cache_ttl,
    )


@router.post(
    "/v1/upstreams/{name}/batch",
    response_model=UpstreamBatchResponse,
    responses={404: {"description": "No upstream of that name (problem+json)"}},
    summary="Send many requests to an upstream with a concurrency cap",
)
async def batch(name: str, body: UpstreamBatchRequest, request: Request) -> Response:
    """Each request runs through the upstream's pipeline; one failure never
    fails the others. Results are in input order. Scope ``upstream:<name>``."""
    authorize(request, f"upstream:{name}")
    upstream = gateway_of(request).upstream(name)
    items = [
        BatchRequest(
            method=r.method,
            path=r.path,
            params={k: _query_value(v) for k, v in r.params.items()} if r.params else None,
            headers=r.headers,
            data=r.body,
            **({"json": r.json_body} if "json_body" in r.model_fields_set else {}),
        )
        for r in body.requests
    ]
    started = time.perf_counter()
    results = await upstream.batch(items, max_concurrent=body.max_concurrent)
    out: list[dict[str, Any]] = []
    for result in results:
        if isinstance(result, IogateError):
            out.append({"error": problem_for(result)[1]})
        elif isinstance(result, Exception):
            out.append({"error": {"title": "Request failed", "detail": type(result).__name__}})
        else:
            out.append(render_answer(result, result.elapsed_s * 1000))
    duration_ms = round((time.perf_counter() - started) * 1000, 3)
    return json_response({"results": out, "duration_ms": duration_ms})


@router.post(
    "/v1/upstreams/{name}/generate",
    response_model=GenerateResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE when stream"},
        400: {"description": "No provider configured, or bad input (problem+json)"},
        502: {"description": "The provider failed (problem+json)"},
    },
    summary="Generate text with the upstream's LLM provider",
)
async def generate(name: str, body: GenerateBody, request: Request) -> Response:
    """``{prompt | messages, model, max_tokens, temperature, stream}`` →
    ``{text, usage, finish_reason}``, or Server-Sent Events when ``stream``.
    Scope ``upstream:<name>``."""
    authorize(request, f"upstream:{name}")
    upstream = gateway_of(request).upstream(name)
    provider = upstream.provider
    if provider is None:
        raise InvalidInputError(f"upstream {name!r} has no provider configured")
    req = GenerateRequest(
        prompt=body.prompt,
        messages=body.messages,
        system=body.system,
        model=body.model,
        max_tokens=body.max_tokens,
        temperature=body.temperature,
    )
    if body.stream:
        return await generate_response(provider, req)
    done = await provider.generate(req)
    usage = None
    if done.usage is not None:
        usage = {"input_tokens": done.usage.input_tokens, "output_tokens": done.usage.output_tokens}
    return json_response({"text": done.text, "usage": usage, "finish_reason": done.finish_reason})


def _sse(event: str, data: Any) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


async def generate_response(provider: Provider, req: GenerateRequest) -> Response:
    """SSE of a streamed generation; the first chunk is awaited before the
    response starts, so errors up to then are ordinary problem responses."""
    chunks = provider.stream(req)
    try:
        first: CompletionChunk | None = await anext(chunks)
    except StopAsyncIteration:
        first = None

    async def events() -> AsyncIterator[bytes]:
        finish: str | None = None
        usage: dict[str, int | None] | None = None
        try:
            pending = [first] if first is not None else []
            while True:
                if pending:
                    chunk = pending.pop()
                else:
                    try:
                        chunk = await anext(chunks)
                    except StopAsyncIteration:
                        break
                if chunk.text:
                    yield _sse("delta", {"text": chunk.text})
                finish = chunk.finish_reason or finish
                if chunk.usage is not None:
                    usage = {
                        "input_tokens": chunk.usage.input_tokens,
                        "output_tokens": chunk.usage.output_tokens,
                    }
        except IogateError as exc:
            yield _sse("error", problem_for(exc)[1])
            return
        finally:
            await chunks.aclose()
        yield _sse("done", {"finish_reason": finish, "usage": usage})

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
