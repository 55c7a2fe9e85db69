"""Read-through caching of rendered results: ``cache_ttl`` on a query or an upstream call.

The gateway's query and upstream routes (and any library user rendering the
same JSON shapes) keep a rendered result in the :class:`~iogate.cache.tiered.TieredCache`
for ``ttl_s`` seconds:

- a read's result is keyed by its database, SQL text and parameters and tagged
  with the tables it reads, so every write made through iogate invalidates it;
- an upstream answer is keyed by a SHA-256 of the request and tagged
  ``upstream:<name>``; only 2xx answers are stored.

Concurrent misses of one key make one load (the cache's single-flight).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from iogate._cache_keys import digest
from iogate.databases._sql import is_read_statement
from iogate.errors import InvalidInputError

if TYPE_CHECKING:
    from iogate.cache.tiered import TieredCache
    from iogate.databases.base import Params, SQLDatabase

__all__ = ["cached_query_body", "cached_upstream_body"]


class _NotCacheable(Exception):
    """A rendered upstream answer that must be returned but not cached (not 2xx)."""

    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__("not cacheable")
        self.body = body


async def cached_query_body(
    cache: TieredCache,
    database: SQLDatabase,
    sql: str,
    params: Params,
    ttl_s: float,
    load: Callable[[], Awaitable[dict[str, Any]]],
) -> dict[str, Any]:
    """The rendered result of a read (``load``), through ``cache`` for ``ttl_s`` seconds,
    tagged with the tables it reads (so writes through iogate invalidate it).

    Raises:
        InvalidInputError: ``sql`` is not a plain read.
    """
    if not is_read_statement(sql):
        raise InvalidInputError("cache_ttl applies to reads (SELECT, VALUES, SHOW, TABLE) only")
    key = "query:" + database.cache_key(sql, params)
    tags = await database.cache_tags(sql, params)
    body = await cache.get_or_load(key, load, ttl_s=ttl_s, tags=tags)
    return dict(body)  # a copy: the caller adds its own duration_ms


async def cached_upstream_body(
    cache: TieredCache,
    name: str,
    *,
    request_key: Any,
    ttl_s: float,
    load: Callable[[], Awaitable[dict[str, Any]]],
) -> dict[str, Any]:
    """A rendered upstream answer (``load``) through ``cache`` for ``ttl_s`` seconds,
    under a SHA-256 of the request (``request_key``: method, path, query, headers
    and body); only 2xx answers are stored. Tag: ``upstream:<name>``."""

    async def load_2xx() -> dict[str, Any]:
        body = await load()
        if not 200 <= int(body["status"]) < 300:
            raise _NotCacheable(body)
        return body

    key = f"http:{name}:{digest(request_key)}"
    try:
        body = await cache.get_or_load(key, load_2xx, ttl_s=ttl_s, tags=[f"upstream:{name}"])
    except _NotCacheable as answer:
        return answer.body
    return dict(body)
