"""One JSON encoding of database values for both SQL engines.

=====================  ============================================
Python value           JSON
=====================  ============================================
None, bool, str        null, true/false, string
int                    number; beyond ±2**53 (not exact in a JS
                       double) a decimal string
float                  number; NaN and ±Infinity as strings
Decimal                string (exact)
bytes / memoryview     base64 string (RFC 4648, with padding)
date, time, datetime   ISO 8601 string
timedelta              ISO 8601 duration seconds as a number
UUID                   canonical string
list / tuple           array (elements encoded alike)
dict (json/jsonb)      object (values encoded alike)
=====================  ============================================

Anything else (PostgreSQL ranges, geometric types, network addresses) is
sent as its ``str()``.
"""

from __future__ import annotations

import base64
import datetime as dt
import math
import operator
import uuid
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from functools import partial
from typing import Any, Final

__all__ = ["MAX_SAFE_INTEGER", "from_json_value", "to_json_row", "to_json_rows", "to_json_value"]

MAX_SAFE_INTEGER = 2**53 - 1
"""Largest integer a JSON reader using IEEE doubles (JavaScript) keeps exact."""

_PASSTHROUGH = (str, bool, type(None))


def to_json_value(value: Any) -> Any:
    """Encode one database value as a JSON-compatible Python value (table above)."""
    if isinstance(value, _PASSTHROUGH):
        return value
    if isinstance(value, int):
        return value if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dt.date | dt.time):  # datetime is a date
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, Sequence):
        return [to_json_value(v) for v in value]
    return str(value)


def to_json_row(row: Sequence[Any]) -> list[Any]:
    """Encode every value of one row."""
    return [to_json_value(v) for v in row]


_AS_IS: Final = frozenset({str, bool})  # JSON carries them unchanged (None is discarded first)
_COLUMNWISE_MIN_ROWS: Final = 8
_NONE: Final = type(None)
_not_none = partial(operator.is_not, None)


def to_json_rows(rows: Sequence[Iterable[Any]]) -> list[list[Any]]:
    """Encode every value of every row: ``[to_json_row(r) for r in rows]``, faster.

    A column is checked whole, in C-level passes over its values (their types;
    for integers the column's min and max, for floats ``math.isfinite``); a
    column whose values JSON carries unchanged — strings, booleans, nulls,
    integers within ±(2**53 - 1), finite floats — is copied as it is, and only
    the other columns' values go through :func:`to_json_value`. A 200-row,
    three-column SQLite result of strings and small integers makes no Python
    call per value: 120 → 47 µs (issue 22).

    Args:
        rows: tuples, lists or driver records (asyncpg ``Record``), all of the
            same width.
    """
    if len(rows) < _COLUMNWISE_MIN_ROWS:
        return [[to_json_value(v) for v in row] for row in rows]
    encoded = list(map(list, rows))
    for index, column in enumerate(zip(*encoded, strict=True)):
        if not _as_is(column):
            for row in encoded:
                row[index] = to_json_value(row[index])
    return encoded


def _as_is(column: tuple[Any, ...]) -> bool:
    # Whether every value of a column encodes as itself (the table above).
    kinds = set(map(type, column))
    if _NONE in kinds:
        kinds.discard(_NONE)
        values: Iterable[Any] = list(filter(_not_none, column))
    else:
        values = column
    if kinds <= _AS_IS:
        return True
    if len(kinds) != 1:
        return False
    (kind,) = kinds
    if kind is int:
        return bool(min(values) >= -MAX_SAFE_INTEGER and max(values) <= MAX_SAFE_INTEGER)
    if kind is float:
        return all(map(math.isfinite, values))
    return False


_ISO_Z = "Z"


def from_json_value(value: Any, type_name: str) -> Any:
    """Decode a JSON parameter for a PostgreSQL parameter of type ``type_name``
    (``pg_type.typname``: ``timestamptz``, ``numeric``, ``uuid``; arrays as
    ``_int4`` or, as asyncpg names them, ``int4[]``).

    The inverse of :func:`to_json_value` for values that arrive over HTTP:
    ISO 8601 strings become dates and times, decimal strings ``Decimal``, UUID
    strings ``UUID``, base64 strings ``bytes``, numbers seconds of an interval.
    Values for ``json``/``jsonb`` stay as they are (the connection's codec
    writes them; a string is JSON text). A value already of a
    fitting type, or of an unknown type, is returned unchanged, and the driver
    reports what does not fit.

    Raises:
        ValueError: a string that does not parse as the type (message names
            the type, not the value).
    """
    if value is None:
        return None
    if isinstance(value, list):
        # Arrays: pg_type names them "_int4", asyncpg's Type.name "int4[]".
        if type_name.endswith("[]"):
            return [from_json_value(v, type_name[:-2]) for v in value]
        if type_name.startswith("_"):
            return [from_json_value(v, type_name[1:]) for v in value]
    decode = _DECODERS.get(type_name)
    if decode is None:
        return value
    try:
        return decode(value)
    except (ValueError, TypeError, ArithmeticError):
        raise ValueError(f"not a valid {type_name} value") from None


def _datetime(value: Any) -> Any:
    if isinstance(value, str):
        return dt.datetime.fromisoformat(value.replace(_ISO_Z, "+00:00"))
    return value


def _date(value: Any) -> Any:
    return dt.date.fromisoformat(value) if isinstance(value, str) else value


def _time(value: Any) -> Any:
    return (
        dt.time.fromisoformat(value.replace(_ISO_Z, "+00:00")) if isinstance(value, str) else value
    )


def _decimal(value: Any) -> Any:
    return Decimal(value) if isinstance(value, str | int | float) else value


def _uuid(value: Any) -> Any:
    return uuid.UUID(value) if isinstance(value, str) else value


def _bytes(value: Any) -> Any:
    return base64.b64decode(value, validate=True) if isinstance(value, str) else value


def _interval(value: Any) -> Any:
    return dt.timedelta(seconds=value) if isinstance(value, int | float) else value


def _integer(value: Any) -> Any:
    return int(value) if isinstance(value, str) else value


def _floating(value: Any) -> Any:
    return float(value) if isinstance(value, int | str) and not isinstance(value, bool) else value


_DECODERS = {
    "timestamptz": _datetime,
    "timestamp": _datetime,
    "date": _date,
    "time": _time,
    "timetz": _time,
    "numeric": _decimal,
    "uuid": _uuid,
    "bytea": _bytes,
    "interval": _interval,
    "int2": _integer,
    "int4": _integer,
    "int8": _integer,
    "float4": _floating,
    "float8": _floating,
}
