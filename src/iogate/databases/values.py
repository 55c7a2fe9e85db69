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
import uuid
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

__all__ = ["MAX_SAFE_INTEGER", "to_json_row", "to_json_value"]

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
