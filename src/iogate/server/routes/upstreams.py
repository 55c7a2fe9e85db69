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

A caller's headers are validated and filtered by the upstream
(:mod:`iogate.http.headers`: a bad name or value is a 400 ``invalid-input``
before any I/O; the batch route checks every request's headers before sending
any). Whatever is relayed of an answer — headers, JSON strings (keys too),
text, binary before base64, generated text (streamed: across chunks), problem
details — goes through the upstream's :attr:`~iogate.http.upstream.Upstream.redactor`,
so a configured secret the upstream echoes comes back as ``[REDACTED]``; with
``cache_ttl_s`` the gateway cache stores the redacted rendering.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

from iogate.cache._through import cached_upstream_body
from iogate.errors import InvalidInputError, IogateError
from iogate.gateway import Gateway
from iogate.http.batch import UpstreamBatchItem
from iogate.http.headers import check_header
from iogate.http.providers import CompletionChunk, GenerateRequest, Provider
from iogate.server.auth import authorize
from iogate.server.deps import JsonBodyRoute, gateway_of, json_response, read_body, serve_directly
from iogate.server.problems import problem_for
from iogate.server.schemas import (
    GenerateBody,
    GenerateResponse,
    UpstreamBatchRequest,
    UpstreamBatchResponse,
    UpstreamRequest,
    UpstreamResponse,
)
from iogate.wire.upstream_answers import render_answer

__all__ = ["router", "run_upstream"]

router = APIRouter(tags=["upstreams"], route_class=JsonBodyRoute)

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
    cache_ttl_s: float | None = None,
) -> Response:
    """Send one request and render the answer as an :class:`UpstreamResponse` body
    (with ``cache_ttl_s``, a 2xx answer is kept in the gateway cache, see routes.cache)."""
    upstream = gateway.upstream(name)
    query = {k: _query_value(v) for k, v in params.items()} if params else None
    started = time.perf_counter()

    async def send() -> dict[str, Any]:
        if json is _UNSET:
            answer = await upstream.request(method, path, params=query, headers=headers, data=body)
        else:
            answer = await upstream.request(method, path, params=query, headers=headers, json=json)
        return render_answer(answer, (time.perf_counter() - started) * 1000, upstream.redactor)

    if cache_ttl_s is None:
        return json_response(await send())
    request_key = [method.upper(), path, query, headers, None if json is _UNSET else json, body]
    rendered = await cached_upstream_body(
        gateway.cache, name, request_key=request_key, ttl_s=cache_ttl_s, load=send
    )
    rendered["duration_ms"] = round((time.perf_counter() - started) * 1000, 3)
    return json_response(rendered)


def _query_value(value: str | int | float | bool) -> str | int | float:
    return ("true" if value else "false") if isinstance(value, bool) else value


@router.post(
    "/v1/upstreams/{name}/request",
    response_model=UpstreamResponse,
    responses={
        400: {
            "description": "Invalid method, a path leaving the base URL, or a header name"
            " or value that is not valid HTTP (problem+json)"
        },
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
        cache_ttl_s=body.cache_ttl,
    )


async def _request_directly(http: Request) -> Response:
    """What :func:`request` does, as a plain endpoint (see :func:`serve_directly`)."""
    body = await read_body(http, UpstreamRequest)
    return await request(http.path_params["name"], body, http)


serve_directly(router, "/v1/upstreams/{name}/request", "POST", _request_directly)


@router.post(
    "/v1/upstreams/{name}/batch",
    response_model=UpstreamBatchResponse,
    responses={
        400: {"description": "A request's header is not valid HTTP; none sent (problem+json)"},
        404: {"description": "No upstream of that name (problem+json)"},
    },
    summary="Send many requests to an upstream with a concurrency cap",
)
async def batch(name: str, body: UpstreamBatchRequest, request: Request) -> Response:
    """Each request runs through the upstream's pipeline; one failure never
    fails the others. Results are in input order. Scope ``upstream:<name>``."""
    authorize(request, f"upstream:{name}")
    upstream = gateway_of(request).upstream(name)
    for r in body.requests:  # one bad header refuses the batch before any request is sent
        for key, value in (r.headers or {}).items():
            check_header(key, value)
    items = [
        UpstreamBatchItem(
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
    redactor = upstream.redactor
    out: list[dict[str, Any]] = []
    for result in results:
        if isinstance(result, IogateError):
            out.append({"error": redactor.json(problem_for(result)[1])})
        elif isinstance(result, Exception):
            out.append({"error": {"title": "Request failed", "detail": type(result).__name__}})
        else:
            out.append(render_answer(result, result.elapsed_s * 1000, redactor))
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
    answer = {"text": done.text, "usage": usage, "finish_reason": done.finish_reason}
    redactor = upstream.redactor
    return json_response(redactor.json(answer) if redactor else answer)


def _sse(event: str, data: Any) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


async def generate_response(provider: Provider, req: GenerateRequest) -> Response:
    """SSE of a streamed generation; the first chunk is awaited before the
    response starts, so errors up to then are ordinary problem responses.
    With secrets, delta texts go through a :class:`~iogate.http.redact.StreamRedactor`
    (a tail that could begin a secret waits for the next chunk)."""
    redactor = provider.upstream.redactor
    scrub = redactor.stream() if redactor else None
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
                text = chunk.text if scrub is None else scrub.feed(chunk.text)
                if text:
                    yield _sse("delta", {"text": text})
                finish = chunk.finish_reason or finish
                if chunk.usage is not None:
                    usage = {
                        "input_tokens": chunk.usage.input_tokens,
                        "output_tokens": chunk.usage.output_tokens,
                    }
        except IogateError as exc:
            tail = scrub.flush() if scrub is not None else ""
            if tail:  # never a whole secret
                yield _sse("delta", {"text": tail})
            yield _sse("error", redactor.json(problem_for(exc)[1]))
            return
        finally:
            await chunks.aclose()
        if scrub is not None:
            tail = scrub.flush()
            if tail:
                yield _sse("delta", {"text": tail})
            finish = redactor.text(finish) if finish is not None else None
        yield _sse("done", {"finish_reason": finish, "usage": usage})

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
