"""Names shared by the cache and what it caches: tags of query results, and key digests.

Tag names iogate itself uses for database query results
(:meth:`~iogate.databases.base.SQLDatabase.fetch` with ``cache_ttl_s``):

- :func:`database_tag` ``db:<name>`` — every cached query of one database;
- :func:`table_tag` ``table:<name>:<table>`` — queries that read ``table``;
- :func:`unknown_tables_tag` ``db:<name>:?`` — queries whose tables could not be
  determined: every write to the database invalidates them.

A write invalidates the tags of the tables it writes plus the "unknown" tag,
or, when the tables it writes cannot be determined, the whole database tag.
How tables are found is described in :mod:`iogate.databases._tables`.

:func:`digest` is the one hash of a cache key's variable part (SQL parameters,
a decorated function's arguments, an upstream request).

Private, and below both resources: :mod:`iogate.databases` and :mod:`iogate.cache`
import it (the public spelling is :mod:`iogate.cache.tags`); it imports neither.
"""

from __future__ import annotations

import hashlib
from typing import Any

from iogate._codec import encode_value

__all__ = ["database_tag", "digest", "table_tag", "unknown_tables_tag"]


def database_tag(database: str) -> str:
    """The tag of every cached query of ``database``."""
    return f"db:{database}"


def unknown_tables_tag(database: str) -> str:
    """The tag of cached queries of ``database`` whose tables are unknown."""
    return f"db:{database}:?"


def table_tag(database: str, table: str) -> str:
    """The tag of cached queries of ``database`` reading ``table`` (case-folded)."""
    return f"table:{database}:{table.lower()}"


def digest(value: Any, *, prefix: bytes = b"") -> str:
    """The SHA-256 (hex) of ``prefix`` and ``value`` in the cache's canonical
    encoding (:mod:`iogate._codec`, sorted keys): stable across processes.

    Raises:
        TypeError: ``value`` holds a type the codec does not write.
    """
    return hashlib.sha256(prefix + encode_value(value, sort_keys=True)).hexdigest()
