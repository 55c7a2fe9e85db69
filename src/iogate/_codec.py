"""The value codec of the cache and of cache keys, with orjson: typed, lossless, no pickle.

A value is stored as JSON. The types a database returns (the table of
:mod:`iogate.databases._values`) that JSON has no type for are written as a
tagged object ``{"$t": <type>, "v": <JSON value>}`` and come back as the same
Python type:

==========================  =====================================
Python value                stored as
==========================  =====================================
None, bool, int, float, str JSON itself (non-finite floats tagged)
int beyond 64 bits          ``{"$t": "int"}`` (orjson takes 64 bits only)
list                        array
tuple                       ``{"$t": "tuple"}``
dict with ``str`` keys      object (a dict holding ``"$t"`` is tagged)
Decimal                     ``{"$t": "decimal", "v": "1.10"}``
bytes / bytearray / memview ``{"$t": "bytes", "v": <base64>}``
datetime / date / time      ``{"$t": "datetime"|"date"|"time", "v": ISO 8601}``
timedelta                   ``{"$t": "timedelta", "v": seconds}``
UUID                        ``{"$t": "uuid", "v": "..."}``
a row (sqlite3.Row,         ``{"$t": "row", "k": [names], "v": [values]}``,
asyncpg.Record, CachedRow)  read back as a :class:`CachedRow`
==========================  =====================================

Anything else raises :class:`TypeError` naming the type: a value that cannot
be stored faithfully is refused rather than silently changed. Pickle is never
used (unpickling data read from a shared Redis would run code).

Private, and below both resources: the cache (:mod:`iogate.cache.serialization`,
which frames entries with it) and the databases (whose cache keys hash
parameters with it, :mod:`iogate._cache_keys`) import it; it imports neither.
"""

from __future__ import annotations

import base64
import datetime as dt
import math
import sqlite3
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import orjson

__all__ = ["TAG_MARK", "CachedRow", "decode_value", "encode_value", "from_tagged", "to_tagged"]

TAG_MARK = b'"$t"'
"""Every tagged object has this key; JSON without it needs no walk when decoded."""


class CachedRow(tuple[Any, ...]):
    """A result row read back from the cache: a tuple that is also indexable by
    column name, with ``keys()`` — it satisfies :class:`~iogate.databases.base.Row`."""

    _names: tuple[str, ...]  # (a tuple subclass cannot have non-empty __slots__)

    def __new__(cls, names: tuple[str, ...], values: tuple[Any, ...]) -> CachedRow:
        row = super().__new__(cls, values)
        row._names = names
        return row

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            try:
                return tuple.__getitem__(self, self._names.index(key))
            except ValueError:
                raise KeyError(key) from None
        return tuple.__getitem__(self, key)

    def keys(self) -> tuple[str, ...]:
        return self._names

    def __reduce__(self) -> Any:
        return (CachedRow, (self._names, tuple(self)))


def _row_types() -> tuple[type, ...]:
    types: list[type] = [sqlite3.Row, CachedRow]
    try:
        import asyncpg

        types.append(asyncpg.Record)
    except ImportError:  # pragma: no cover - asyncpg is a dependency
        pass
    return tuple(types)


_ROWS = _row_types()


_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1  # orjson serializes these integers only


def to_tagged(value: Any) -> Any:
    """``value`` with every type JSON lacks written as a tagged object (the table above).

    Raises:
        TypeError: a value (or a nested one) of a type in no row of the table.
    """
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, int):
        return value if _INT64_MIN <= value <= _UINT64_MAX else {"$t": "int", "v": str(value)}
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$t": "float", "v": repr(value)}
    if isinstance(value, list):
        return [to_tagged(v) for v in value]
    if isinstance(value, _ROWS):
        row: Any = value
        return {"$t": "row", "k": list(row.keys()), "v": [to_tagged(v) for v in row]}
    if isinstance(value, dict):
        if all(type(k) is str for k in value) and "$t" not in value:
            return {k: to_tagged(v) for k, v in value.items()}
        return {"$t": "dict", "v": [[to_tagged(k), to_tagged(v)] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {"$t": "tuple", "v": [to_tagged(v) for v in value]}
    if isinstance(value, Decimal):
        return {"$t": "decimal", "v": str(value)}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$t": "bytes", "v": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, dt.datetime):
        return {"$t": "datetime", "v": value.isoformat()}
    if isinstance(value, dt.date):
        return {"$t": "date", "v": value.isoformat()}
    if isinstance(value, dt.time):
        return {"$t": "time", "v": value.isoformat()}
    if isinstance(value, dt.timedelta):
        return {"$t": "timedelta", "v": value.total_seconds()}
    if isinstance(value, uuid.UUID):
        return {"$t": "uuid", "v": str(value)}
    raise TypeError(f"cannot cache a value of type {type(value).__name__} (see iogate.cache)")


_DECODERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "float": lambda o: float(o["v"]),
    "int": lambda o: int(o["v"]),
    "tuple": lambda o: tuple(from_tagged(v) for v in o["v"]),
    "dict": lambda o: {_hashable(from_tagged(k)): from_tagged(v) for k, v in o["v"]},
    "decimal": lambda o: Decimal(o["v"]),
    "bytes": lambda o: base64.b64decode(o["v"]),
    "datetime": lambda o: dt.datetime.fromisoformat(o["v"]),
    "date": lambda o: dt.date.fromisoformat(o["v"]),
    "time": lambda o: dt.time.fromisoformat(o["v"]),
    "timedelta": lambda o: dt.timedelta(seconds=o["v"]),
    "uuid": lambda o: uuid.UUID(o["v"]),
    "row": lambda o: CachedRow(tuple(o["k"]), tuple(from_tagged(v) for v in o["v"])),
}


def _hashable(key: Any) -> Any:
    return tuple(key) if isinstance(key, list) else key


def from_tagged(value: Any) -> Any:
    """The value :func:`to_tagged` wrote, from its decoded JSON.

    Raises:
        KeyError: an unknown ``$t`` tag.
    """
    if isinstance(value, list):
        return [from_tagged(v) for v in value]
    if isinstance(value, dict):
        tag = value.get("$t")
        if tag is None:
            return {k: from_tagged(v) for k, v in value.items()}
        return _DECODERS[tag](value)
    return value


def encode_value(value: Any, *, sort_keys: bool = False) -> bytes:
    """``value`` as tagged JSON bytes (``sort_keys``: canonical, for cache keys).

    Raises:
        TypeError: a value (or a nested one) of a type in no row of the table above.
    """
    return orjson.dumps(to_tagged(value), option=orjson.OPT_SORT_KEYS if sort_keys else 0)


def decode_value(data: bytes) -> Any:
    """The value :func:`encode_value` wrote.

    Raises:
        ValueError: not JSON, or an unknown ``$t`` tag.
    """
    try:
        value = orjson.loads(data)
        return from_tagged(value) if TAG_MARK in data else value
    except KeyError as exc:
        raise ValueError(f"unknown cached type tag {exc}") from None
