"""Tags: names that group cache entries for invalidation, and L1's tag index.

Tag names iogate itself uses for database query results (``db:<name>``,
``table:<name>:<table>``, ``db:<name>:?``) are made by :func:`database_tag`,
:func:`table_tag` and :func:`unknown_tables_tag`, which live below both the
cache and the databases (:mod:`iogate._cache_keys`) and are re-exported here.

:class:`TagIndex` maps each tag to the L1 keys carrying it, so an
invalidation touches only those keys (O(keys tagged)). Redis keeps the same
index as one set per tag (:mod:`iogate.cache.redis`).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable

from iogate._cache_keys import database_tag, table_tag, unknown_tables_tag

__all__ = ["TagIndex", "database_tag", "table_tag", "unknown_tables_tag", "validate_tags"]

MAX_TAG_CHARS = 256


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
