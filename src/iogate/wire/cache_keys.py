"""The namespaces of the HTTP API's own cache entries.

``GET/PUT/DELETE /v1/cache/{key}`` and batch cache steps read and write the
gateway cache under :data:`API_PREFIX` + the caller's key, so a client can never
name (or invalidate by prefix) an entry the library put there itself, such as a
cached query (``q:...``) or upstream answer.

A ``cache_key`` on ``POST /database/execute`` (the original design's
caller-named entry) lives under :data:`CALLER_PREFIX`, scoped to the caller
(:func:`caller_key`): two keys naming the same entry never read each other's,
and ``/v1/cache/{key}`` (which always adds :data:`API_PREFIX`) cannot reach it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from iogate._cache_keys import digest

__all__ = ["API_PREFIX", "CALLER_PREFIX", "caller_key"]

API_PREFIX: Final = "api:"
"""The prefix of every cache key the HTTP API (and a batch cache step) names."""

CALLER_PREFIX: Final = "caller:"
"""The prefix of caller-named query results (``cache_key`` on ``/database/execute``)."""


def caller_key(caller: str, database: str, name: str, rights: Sequence[Any]) -> str:
    """The cache key of the entry ``name`` that ``caller`` (the key's name) keeps
    for database ``database``: :data:`CALLER_PREFIX` and a SHA-256 of the three
    and of ``rights`` (JSON-like values saying what the caller may read there:
    read-only, tables, role, row and byte caps), so an entry read under other
    rights is another entry. Stable across processes (a shared Redis tier).

    Raises:
        TypeError: ``rights`` holds a value the cache codec does not write.
    """
    return CALLER_PREFIX + digest([caller, database, name, list(rights)])
