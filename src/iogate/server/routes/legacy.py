"""The original design's short paths, served by the same code as ``/v1``.

``POST /database/execute`` takes the original request shapes:

- ``{"db_name", "query" | "sql", "params"}`` answers exactly like
  ``/v1/databases/{name}/query``; ``params`` may also be the original
  positional object ``{"1": v, "2": w}`` (the list ``[v, w]``);
- ``cache_ttl`` (seconds) reads through the gateway cache as ``/v1`` does;
  with ``cache_key`` the result is kept as the caller's own entry of that name
  (:func:`iogate.wire.cache_keys.caller_key`: scoped to the calling key and its
  rights, never shared with another key, invalidated by writes through iogate
  to the tables it read like any cached query);
- ``query`` as ``{"operation": "get" | "set" | "delete" | "incr" | "expire",
  "key", "value", "ttl"}`` on a Redis database runs that operation
  (:func:`iogate.wire.redis_commands.operation_command`): ``get`` needs
  ``db:<name>:read``, the others ``db:<name>:write``.

``POST /api/execute`` takes ``{"api_name", "method", "endpoint", "data" |
"json_data", "params", "headers"}`` like ``/v1/upstreams/{name}/request``, and:

- ``url``: an absolute URL instead of ``endpoint``, accepted only when it
  lies under a configured upstream's base URL (:func:`upstream_for_url`), which
  then names the upstream unless ``api_name`` does: no new egress;
- ``api_type`` ``openai`` | ``anthropic`` | ``huggingface``: ``json_data`` is
  that provider's own request body (chat ``messages``, ``system``,
  ``max_tokens``; Hugging Face ``inputs`` and ``parameters``, whose
  ``max_length`` becomes ``max_new_tokens``), run as one generation through the
  upstream's provider adapter (token budget, usage, retries) and answered
  ``{"text", "usage", "finish_reason", "raw"}``.

``GET /stats`` and ``GET /health`` live in :mod:`iogate.server.routes.system`.
"""

from __future__ import annotations

import dataclasses
import re
import time
from typing import Any
from urllib.parse import urlsplit

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from iogate.batch._access import sql_access
from iogate.databases._sql import is_read_statement
from iogate.databases.guard import UNRESTRICTED, fit_body, result_body
from iogate.errors import InvalidInputError
from iogate.gateway import Gateway
from iogate.http.providers import GenerateRequest
from iogate.server.auth import authorize, principal_of
from iogate.server.deps import JsonBodyRoute, gateway_of, json_response
from iogate.server.limits import check_sql
from iogate.server.routes.databases import query_as_caller, run_query
from iogate.server.routes.upstreams import run_upstream
from iogate.server.schemas import (
    ApiExecuteRequest,
    DatabaseExecuteRequest,
    QueryResponse,
    RedisCommandResponse,
    RedisOperationIn,
    UpstreamResponse,
)
from iogate.wire.cache_keys import caller_key
from iogate.wire.redis_commands import operation_command, redis_scope, reply_json

__all__ = ["router", "upstream_for_url"]

router = APIRouter(tags=["original paths"], route_class=JsonBodyRoute)

_URL_CHARS = re.compile(r"[\x00-\x20\x7f\\]")  # controls, space, backslash
_DEFAULT_PORTS = {"http": 80, "https": 443}


@router.post(
    "/database/execute",
    response_model=QueryResponse | RedisCommandResponse,
    summary="Run SQL or a Redis operation (original path)",
)
async def database_execute(body: DatabaseExecuteRequest, request: Request) -> Response:
    """SQL: as ``POST /v1/databases/{db_name}/query`` (``query`` or ``sql``;
    ``params`` an object, a list or ``{"1": v, "2": w}``; ``cache_ttl``), and
    ``cache_key``: the result kept as the caller's own entry of that name for
    ``cache_ttl`` seconds (default: the cache's TTL). Redis: ``query`` as
    ``{"operation", "key", "value", "ttl"}`` → ``{"result", "duration_ms"}``."""
    if isinstance(body.query, RedisOperationIn):
        return await _redis_operation(request, body.db_name, body.query)
    sql = body.statement
    assert sql is not None  # the model holds one of query and sql
    if body.cache_key is not None:
        return await _caller_cached(request, body.db_name, sql, body.params, body)
    if body.cache_ttl is not None:
        check_sql(request, sql, body.params)
        return await run_query(
            gateway_of(request),
            body.db_name,
            sql,
            body.params,
            principal_of(request),
            cache_ttl_s=body.cache_ttl,
        )
    return await query_as_caller(request, body.db_name, sql, body.params)


async def _redis_operation(request: Request, name: str, op: RedisOperationIn) -> Response:
    database = gateway_of(request).redis(name)
    command = operation_command(op.operation, op.key, op.value, op.ttl)
    command[0] = database.check_command(command[0])  # the resource's allowlist
    authorize(request, f"db:{name}:{redis_scope(command[0])}")
    started = time.perf_counter()
    reply = await database.command(*command)
    duration_ms = round((time.perf_counter() - started) * 1000, 3)
    return json_response({"result": reply_json(reply), "duration_ms": duration_ms})


async def _caller_cached(
    request: Request, name: str, sql: str, params: Any, body: DatabaseExecuteRequest
) -> Response:
    """A read kept under the caller's ``cache_key``: checked (scope, limits) on
    every call, loaded with the caller's own guard and caps, tagged with the
    tables it reads."""
    gateway = gateway_of(request)
    principal = principal_of(request)
    access = sql_access(principal, name, gateway.config.databases.get(name))
    check_sql(request, sql, params)
    database = gateway.database(name)
    if not is_read_statement(sql):
        raise InvalidInputError("cache_key applies to reads (SELECT, VALUES, SHOW, TABLE) only")
    assert body.cache_key is not None
    guard, limits = access.guard, access.limits
    rights = [
        guard.read_only,
        None if guard.tables is None else sorted(guard.tables),
        guard.role,
        limits.max_rows,
        limits.max_bytes,
    ]
    key = caller_key(principal.name, name, body.cache_key, rights)
    started = time.perf_counter()

    async def load() -> dict[str, Any]:
        if guard is UNRESTRICTED:
            result = await database.query(sql, params, limits=limits)
        else:
            result = await database.query_guarded(sql, params, guard=guard, limits=limits)
        return result_body(result, limits, fit_bytes=False)

    tags = await database.cache_tags(sql, params)
    cached = await gateway.cache.get_or_load(key, load, ttl_s=body.cache_ttl, tags=tags)
    out = dict(cached)
    out["duration_ms"] = round((time.perf_counter() - started) * 1000, 3)
    payload = orjson.dumps(out)
    if len(payload) > limits.max_bytes:
        payload = orjson.dumps(fit_body(out, limits.max_bytes))
    return Response(payload, media_type="application/json")


@router.post(
    "/api/execute",
    response_model=UpstreamResponse,
    responses={
        400: {
            "description": "A url outside every configured upstream's base URL, a path"
            " leaving the base URL, a bad header, no provider for api_type (problem+json)"
        }
    },
    summary="Call an API (original path)",
)
async def api_execute(body: ApiExecuteRequest, request: Request) -> Response:
    """As ``POST /v1/upstreams/{api_name}/request``; ``data`` (or ``json_data``)
    is sent as a JSON body when given. ``url`` instead of ``endpoint`` must lie
    under a configured upstream's base URL (else 400), and names the upstream
    when ``api_name`` is absent. ``api_type`` openai | anthropic | huggingface
    runs ``json_data`` (that provider's request body) as a generation through
    the upstream's provider: ``{"text", "usage", "finish_reason", "raw"}``.
    Scope ``upstream:<name>``."""
    gateway = gateway_of(request)
    name, path = body.api_name, body.endpoint
    if name is not None:
        authorize(request, f"upstream:{name}")
    if body.url is not None:
        name, path = upstream_for_url(gateway, body.url, body.api_name)
        authorize(request, f"upstream:{name}")
    assert name is not None  # the model holds api_name or url
    if body.api_type != "http":
        return await _generate(gateway, name, body.api_type, body.body)
    extra = {"json": body.body} if body.has_body else {}
    return await run_upstream(
        gateway,
        name,
        method=body.method,
        path=path,
        params=body.params,
        headers=body.headers,
        **extra,
    )


def upstream_for_url(gateway: Gateway, url: str, api_name: str | None) -> tuple[str, str]:
    """The upstream ``url`` lies under, and the path (with query) relative to
    its base URL.

    ``url`` must be absolute ``http``/``https`` without user information,
    fragment, backslash, control character or space; its scheme, host and port
    (the scheme's default when absent) must equal a configured upstream's base
    URL's, and its path be the base path or lie below it (whole segments,
    compared as sent: ``%2e``-style escapes are not decoded into a match). The
    relative path is then resolved by the upstream's own egress guard
    (:func:`iogate.http._urls.resolve_under`: ``.``/``..`` segments, also
    percent-encoded, are refused before any I/O). With ``api_name`` only that
    upstream is considered; otherwise the one with the longest matching base
    path.

    Raises:
        InvalidInputError: the url is malformed or under no (such) upstream.
        UnknownResourceError: ``api_name`` is not configured.
    """
    if _URL_CHARS.search(url):
        raise InvalidInputError("url may not contain spaces, control characters or backslashes")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidInputError("url is malformed") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise InvalidInputError("url must be an absolute http:// or https:// URL")
    if "@" in parts.netloc:
        raise InvalidInputError("url may not carry user information (user@host)")
    if "#" in url:
        raise InvalidInputError("url may not contain a fragment (#)")
    host = parts.hostname.lower()
    port = port if port is not None else _DEFAULT_PORTS[scheme]
    path = parts.path or "/"
    candidates = (
        {api_name: gateway.upstream(api_name)} if api_name is not None else gateway.upstreams
    )
    best: tuple[str, str] | None = None
    best_length = -1
    for name, upstream in candidates.items():
        base = upstream.base_url
        base_port = base.port if base.port is not None else _DEFAULT_PORTS.get(base.scheme)
        if (base.scheme, (base.host or "").lower(), base_port) != (scheme, host, port):
            continue
        base_path = base.raw_path.rstrip("/")
        if not (path == base_path or path.startswith(base_path + "/")):
            continue
        if len(base_path) > best_length:
            relative = path[len(base_path) :]
            best = (name, relative + (f"?{parts.query}" if parts.query else ""))
            best_length = len(base_path)
    if best is None:
        where = f"upstream {api_name!r}'s" if api_name is not None else "any configured upstream's"
        raise InvalidInputError(f"url is not under {where} base URL")
    return best


# -- api_type: a provider's own request body as one generation ---------------


async def _generate(gateway: Gateway, name: str, api_type: str, data: Any) -> Response:
    upstream = gateway.upstream(name)
    provider = upstream.provider
    if provider is None:
        raise InvalidInputError(
            f"upstream {name!r} has no provider configured (api_type {api_type!r})"
        )
    if not isinstance(data, dict):
        raise InvalidInputError(f"api_type {api_type!r} takes json_data as an object")
    done = await provider.generate(_generate_request(api_type, data))
    usage = None
    if done.usage is not None:
        usage = {"input_tokens": done.usage.input_tokens, "output_tokens": done.usage.output_tokens}
    answer = {
        "text": done.text,
        "usage": usage,
        "finish_reason": done.finish_reason,
        "raw": done.raw,
    }
    return json_response(upstream.redactor.json(answer))


def _generate_request(api_type: str, data: dict[str, Any]) -> GenerateRequest:
    """A provider-neutral request from ``data`` in ``api_type``'s request shape.

    Raises:
        InvalidInputError: the body lacks its prompt or holds a bad value.
    """
    try:
        if api_type == "huggingface":
            return _from_huggingface(data)
        return _from_chat(data, anthropic=api_type == "anthropic")
    except (TypeError, ValueError, KeyError) as exc:
        if isinstance(exc, InvalidInputError):
            raise
        raise InvalidInputError(f"json_data is not a valid {api_type} request body") from None


def _number(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInputError(f"{what} must be a number")
    return float(value)


def _with_tokens(request: GenerateRequest, value: Any, what: str) -> GenerateRequest:
    """``request`` with ``max_tokens`` ``value``; as it is (its default) for ``None``."""
    if value is None:
        return request
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"{what} must be a positive integer")
    return dataclasses.replace(request, max_tokens=value)


def _text(content: Any) -> str:
    """A message's content: a string, or Anthropic / OpenAI content parts
    (``[{"type": "text", "text": ...}]``; other parts are refused)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not (isinstance(part, dict) and part.get("type") == "text"):
                raise InvalidInputError("only text content parts are accepted")
            texts.append(str(part["text"]))
        return "".join(texts)
    raise InvalidInputError("a message's content must be a string or text parts")


def _from_chat(data: dict[str, Any], *, anthropic: bool) -> GenerateRequest:
    """OpenAI chat completions (``messages``, ``model``, ``max_tokens`` or
    ``max_completion_tokens``, ``temperature``; system messages become the
    system prompt) or Anthropic Messages (``system`` as a field)."""
    raw_messages = data.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise InvalidInputError("json_data needs messages (a non-empty list)")
    system: list[str] = []
    if anthropic and data.get("system") is not None:
        system.append(_text(data["system"]))
    messages: list[dict[str, str]] = []
    for message in raw_messages:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidInputError("each message is an object with a role and content")
        content = _text(message.get("content"))
        if message["role"] in ("system", "developer"):
            system.append(content)
        else:
            messages.append({"role": message["role"], "content": content})
    if not messages:
        raise InvalidInputError("json_data needs a user message")
    limit = data.get("max_tokens", data.get("max_completion_tokens"))
    model = data.get("model")
    request = GenerateRequest(
        messages=messages,
        system="\n".join(system) or None,
        model=model if isinstance(model, str) else None,
        temperature=_number(data.get("temperature"), "temperature"),
    )
    return _with_tokens(request, limit, "max_tokens")


def _from_huggingface(data: dict[str, Any]) -> GenerateRequest:
    """A Hugging Face text-generation body: ``inputs`` and ``parameters``
    (``max_new_tokens``, or the transformers pipeline's ``max_length``,
    mapped to ``max_new_tokens``; ``temperature``), optional ``model``."""
    inputs = data.get("inputs")
    if not isinstance(inputs, str) or not inputs:
        raise InvalidInputError("json_data needs inputs (the prompt, a string)")
    parameters = data.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidInputError("parameters must be an object")
    # max_length bounds prompt + output in transformers; TGI and the Inference
    # API take max_new_tokens (output only), so it is an upper bound here.
    limit = parameters.get("max_new_tokens", parameters.get("max_length"))
    model = data.get("model")
    request = GenerateRequest(
        prompt=inputs,
        model=model if isinstance(model, str) else None,
        temperature=_number(parameters.get("temperature"), "temperature"),
    )
    return _with_tokens(request, limit, "max_new_tokens / max_length")
