"""Routes of the gateway's cache (:class:`~iogate.cache.tiered.TieredCache`).

- ``GET /v1/cache/{key}`` (``cache:read``): ``{key, value, stale, source}``, 404 if absent;
- ``PUT /v1/cache/{key}`` (``cache:write``): body ``{value, ttl?, tags?}``;
- ``DELETE /v1/cache/{key}`` (``cache:write``): ``{key, deleted}``;
- ``POST /v1/cache/invalidate`` (``cache:write``): ``{tags: [...]}`` or
  ``{prefix: "..."}`` → ``{removed}``.

Keys written over HTTP live in their own ``api:`` namespace of the cache, so
a client can never read or overwrite the gateway's own entries (cached
query results, upstream answers); ``prefix`` applies within that namespace.
Tags are global: ``{"tags": ["table:main:users"]}`` drops the cached queries
of database ``main`` that read ``users`` (tag names: :mod:`iogate.cache.tags`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.responses import Response

from iogate.databases._values import to_json_value
from iogate.errors import InvalidInputError, UnknownResourceError
from iogate.server.auth import authorize
from iogate.server.deps import JsonBodyRoute, gateway_of, json_response
from iogate.wire.cache_keys import API_PREFIX

__all__ = ["API_PREFIX", "router"]

router = APIRouter(tags=["cache"], route_class=JsonBodyRoute)

"""Where keys written over HTTP live inside the cache."""

_KEY = {"min_length": 1, "max_length": 512}
_ERRORS: dict[int | str, dict[str, Any]] = {
    403: {"description": "The key lacks the cache scope (problem+json)"},
    404: {"description": "No entry under that key (problem+json)"},
}


class CachePut(BaseModel):
    """The body of ``PUT /v1/cache/{key}``."""

    model_config = ConfigDict(extra="forbid")

    value: Any = Field(description="Any JSON value.")
    ttl: float | None = Field(default=None, gt=0, description="Seconds; default: the cache's.")
    tags: list[str] = Field(default_factory=list, max_length=64)


class CacheInvalidate(BaseModel):
    """The body of ``POST /v1/cache/invalidate``: ``tags`` or ``prefix``, not both."""

    model_config = ConfigDict(extra="forbid")

    tags: list[str] | None = Field(default=None, min_length=1, max_length=256)
    prefix: str | None = Field(default=None, max_length=512)

    @model_validator(mode="after")
    def _one_of(self) -> CacheInvalidate:
        if (self.tags is None) == (self.prefix is None):
            raise ValueError("give either tags or prefix")
        return self


def _check_key(key: str) -> str:
    if not _KEY["min_length"] <= len(key) <= _KEY["max_length"]:
        raise UnknownResourceError("cache key", key[:64])
    return API_PREFIX + key


def _json(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    return to_json_value(value)


@router.get("/v1/cache/{key:path}", responses=_ERRORS, summary="Read a cache entry")
async def get_entry(key: str, request: Request) -> Response:
    """The value under ``key`` (fresh, or stale within the cache's stale windows)."""
    authorize(request, "cache:read")
    found = await gateway_of(request).cache.lookup(_check_key(key))
    if found is None:
        raise UnknownResourceError("cache key", key[:64])
    return json_response(
        {"key": key, "value": _json(found.value), "stale": found.stale, "source": found.source}
    )


@router.put("/v1/cache/{key:path}", responses=_ERRORS, summary="Write a cache entry")
async def put_entry(key: str, body: CachePut, request: Request) -> Response:
    """Store ``value`` for ``ttl`` seconds (both tiers; other gateways drop their copy)."""
    authorize(request, "cache:write")
    cache = gateway_of(request).cache
    try:
        await cache.set(_check_key(key), body.value, ttl_s=body.ttl, tags=body.tags)
    except ValueError as exc:  # a bad tag
        raise InvalidInputError(str(exc)) from None
    ttl = body.ttl if body.ttl is not None else cache.default_ttl_s
    return json_response({"key": key, "stored": True, "ttl": ttl})


@router.delete("/v1/cache/{key:path}", responses=_ERRORS, summary="Delete a cache entry")
async def delete_entry(key: str, request: Request) -> Response:
    """Delete ``key`` from both tiers and every gateway process's memory."""
    authorize(request, "cache:write")
    deleted = await gateway_of(request).cache.delete(_check_key(key))
    return json_response({"key": key, "deleted": deleted})


@router.post("/v1/cache/invalidate", responses=_ERRORS, summary="Invalidate by tags or prefix")
async def invalidate(body: CacheInvalidate, request: Request) -> Response:
    """Drop every entry carrying one of ``tags`` (any entry, e.g. cached queries),
    or every HTTP-written entry whose key starts with ``prefix``."""
    authorize(request, "cache:write")
    cache = gateway_of(request).cache
    if body.tags is not None:
        try:
            removed = await cache.invalidate_tags(body.tags)
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from None
    else:
        removed = await cache.invalidate_prefix(API_PREFIX + (body.prefix or ""))
    return json_response({"removed": removed})
