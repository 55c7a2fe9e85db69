"""Tags: names that group cache entries for invalidation, and L1's tag index.

Tag names iogate itself uses for database query results
(:meth:`~iogate.databases.base.SQLDatabase.fetch` with ``cache_ttl``):

- :func:`database_tag` ``db:<name>`` — every cached query of one database;
- :func:`table_tag` ``table:<name>:<table>`` — queries that read ``table``;
- :func:`unknown_tables_tag` ``db:<name>:?`` — queries whose tables could not be
  determined: every write to the database invalidates them.

A write invalidates the tags of the tables it writes plus the "unknown" tag,
or, when the tables it writes cannot be determined, the whole database tag.
How tables are found is described in :mod:`iogate.databases.tables`.

:class:`TagIndex` maps each tag to the L1 keys carrying it, so an
invalidation touches only those keys (O(keys tagged)). Redis keeps the same
index as one set per tag (:mod:`iogate.cache.redis`).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable

__all__ = ["TagIndex", "database_tag", "table_tag", "unknown_tables_tag", "validate_tags"]

MAX_TAG_CHARS = 256


def database_tag(database: str) -> str:
    """The tag of every cached query of ``database``."""
    return f"db:{database}"


def unknown_tables_tag(database: str) -> str:
    """The tag of cached queries of ``database`` whose tables are unknown."""
    return f"db:{database}:?"


def table_tag(database: str, table: str) -> str:
    """The tag of cached queries of ``database`` reading ``table`` (case-folded)."""
    return f"table:{database}:{table.lower()}"


def validate_tags(tags: Iterable[str]) -> tuple[str, ...]:
    """``tags`` as a sorted tuple without duplicates.

    Raises:
        ValueError: an empty tag, or one longer than 256 characters.
    """
    out = tuple(sorted(set(tags)))
    for tag in out:
        if not tag or len(tag) > MAX_TAG_CHARS:
            raise ValueError(f"a tag must have 1..{MAX_TAG_CHARS} characters, got {tag!r}")
    return out


class TagIndex:
    """tag → the keys tagged with it (kept in step by the cache's remove hook)."""

    __slots__ = ("_keys",)

    def __init__(self) -> None:
        self._keys: dict[str, set[Hashable]] = {}

    def add(self, key: Hashable, tags: Iterable[str]) -> None:
        """Record that ``key`` carries ``tags``."""
        for tag in tags:
            self._keys.setdefault(tag, set()).add(key)

    def discard(self, key: Hashable, tags: Iterable[str]) -> None:
        """Forget ``key`` under ``tags`` (it left the cache)."""
        for tag in tags:
            keys = self._keys.get(tag)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._keys[tag]

    def keys_of(self, tags: Iterable[str]) -> set[Hashable]:
        """Every key carrying one of ``tags``."""
        out: set[Hashable] = set()
        for tag in tags:
            out |= self._keys.get(tag, set())
        return out

    def __len__(self) -> int:
        return len(self._keys)
