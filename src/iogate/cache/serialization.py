"""Serialization of cache entries: the value codec of :mod:`iogate._codec` in a frame.

An entry (:class:`Entry`) is ``[1, expires_at, delta_s, tags, value]``, the value
written by the typed, lossless codec (:func:`encode_value`; no pickle).
"""

from __future__ import annotations

from typing import Any

import orjson

from iogate._codec import TAG_MARK, CachedRow, decode_value, encode_value, from_tagged, to_tagged

__all__ = ["CachedRow", "Entry", "decode_entry", "decode_value", "encode_entry", "encode_value"]

_FORMAT = 1


class Entry:
    """One cached value and its metadata (treat as immutable).

    A plain slotted class rather than a frozen dataclass: one is built per L2
    hit, and a frozen dataclass's ``__init__`` (``object.__setattr__`` per
    field) measured a noticeable share of that path.

    Attributes:
        value: the cached value (shared by every reader: do not mutate it).
        expires_at: when it stops being fresh (the cache's clock, seconds).
        delta_s: how long computing it took (seconds) — XFetch's δ.
        tags: the tags it can be invalidated by.
    """

    __slots__ = ("delta_s", "expires_at", "tags", "value")

    def __init__(
        self, value: Any, expires_at: float, delta_s: float = 0.0, tags: tuple[str, ...] = ()
    ) -> None:
        self.value = value
        self.expires_at = expires_at
        self.delta_s = delta_s
        self.tags = tags

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Entry):
            return NotImplemented
        return (self.value, self.expires_at, self.delta_s, self.tags) == (
            other.value,
            other.expires_at,
            other.delta_s,
            other.tags,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Entry(expires_at={self.expires_at}, delta_s={self.delta_s}, tags={self.tags})"


def encode_entry(entry: Entry) -> bytes:
    """``entry`` as bytes (``[1, expires_at, delta_s, tags, value]``).

    Raises:
        TypeError: as :func:`encode_value`.
    """
    return orjson.dumps(
        [_FORMAT, entry.expires_at, entry.delta_s, list(entry.tags), to_tagged(entry.value)]
    )


def decode_entry(data: bytes) -> Entry:
    """The :class:`Entry` :func:`encode_entry` wrote.

    Raises:
        ValueError: malformed bytes or another format version.
    """
    try:
        fmt, expires_at, delta_s, tags, value = orjson.loads(data)
    except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
        raise ValueError(f"malformed cache entry: {exc}") from None
    if fmt != _FORMAT:
        raise ValueError(f"unknown cache entry format {fmt!r}")
    if TAG_MARK not in data:
        # no tagged object anywhere: the JSON is the value as it was (the L2-hit
        # fast path; the walk below is most of a decode's cost)
        return Entry(value, float(expires_at), float(delta_s), tuple(tags))
    try:
        return Entry(from_tagged(value), float(expires_at), float(delta_s), tuple(tags))
    except KeyError as exc:
        raise ValueError(f"unknown cached type tag {exc}") from None
