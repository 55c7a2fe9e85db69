"""MongoDB Extended JSON v2 (specifications/source/extended-json/extended-json.md
of the MongoDB specifications): how BSON values travel in iogate's JSON.

:func:`to_ejson` turns what the driver returns into JSON-ready values, in the
*relaxed* form by default (numbers stay numbers, dates between 1970 and 9999
are ISO-8601 strings) or the *canonical* one (every number typed, lossless);
:func:`from_ejson` turns parsed JSON back into BSON values. Both directions
understand only the v2 type wrappers, each a document with exactly its own
keys:

==========================  ===============================================
BSON value (Python)         Extended JSON v2
==========================  ===============================================
ObjectId                    ``{"$oid": "<24 hex>"}``
datetime (UTC)              ``{"$date": "2024-01-02T03:04:05.678Z"}`` (relaxed),
                            ``{"$date": {"$numberLong": "<ms>"}}`` (canonical)
Int64 / int                 a number (relaxed); ``{"$numberLong": "<n>"}`` /
                            ``{"$numberInt": "<n>"}`` (canonical)
float                       a number; ``{"$numberDouble": "Infinity"|"-Infinity"|"NaN"}``
Decimal128                  ``{"$numberDecimal": "1.10"}``
bytes / Binary / UUID       ``{"$binary": {"base64": "...", "subType": "00"}}``
Regex                       ``{"$regularExpression": {"pattern": "^a", "options": "i"}}``
Timestamp                   ``{"$timestamp": {"t": <s>, "i": <n>}}``
Code                        ``{"$code": "..."}`` (with ``"$scope"``)
MinKey / MaxKey             ``{"$minKey": 1}`` / ``{"$maxKey": 1}``
==========================  ===============================================

The legacy forms (``{"$regex": ..., "$options": ...}``, ``{"$uuid": ...}``,
``{"$date": <number>}``) are not decoded: ``$regex`` is also a query
operator, and it stays one. A document with ``$ref`` stays a plain document
(the DBRef convention is not a BSON type).

This module imports ``bson`` (part of pymongo): only the MongoDB backend
imports it, when a MongoDB database is built.
"""

from __future__ import annotations

import base64
import datetime as dt
import math
import re
import uuid
from collections.abc import Mapping
from typing import Any, Final

from bson import Binary, Code, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp
from bson.errors import InvalidId

from iogate.errors import InvalidInputError

__all__ = ["from_ejson", "to_ejson"]

_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_FLAGS: Final = {"i": re.IGNORECASE, "l": re.LOCALE, "m": re.MULTILINE, "s": re.DOTALL}
_FLAGS.update({"u": re.UNICODE, "x": re.VERBOSE})


def _ms(value: dt.datetime) -> int:
    aware = value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
    delta = aware - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _double(value: float) -> dict[str, str]:
    if math.isnan(value):
        return {"$numberDouble": "NaN"}
    if math.isinf(value):
        return {"$numberDouble": "Infinity" if value > 0 else "-Infinity"}
    return {"$numberDouble": repr(value)}


def _binary(data: bytes, subtype: int) -> dict[str, Any]:
    return {
        "$binary": {"base64": base64.b64encode(data).decode("ascii"), "subType": f"{subtype:02x}"}
    }


def to_ejson(value: Any, *, canonical: bool = False) -> Any:
    """``value`` (a document, a list or a scalar the driver returned) as
    JSON-ready Python values in Extended JSON v2, relaxed unless ``canonical``.

    Raises:
        TypeError: a value of a type with no Extended JSON form here.
    """
    if value is None or value is True or value is False or isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return {str(k): to_ejson(v, canonical=canonical) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_ejson(v, canonical=canonical) for v in value]
    if isinstance(value, int):  # Int64 is an int subclass
        if not canonical:
            return int(value)
        if _INT32_MIN <= value <= _INT32_MAX and not isinstance(value, Int64):
            return {"$numberInt": str(int(value))}
        return {"$numberLong": str(int(value))}
    if isinstance(value, float):
        if canonical or not math.isfinite(value):
            return _double(value)
        return value
    if isinstance(value, ObjectId):
        return {"$oid": str(value)}
    if isinstance(value, dt.datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
        if not canonical and 1970 <= aware.year <= 9999:
            utc = aware.astimezone(dt.UTC)
            return {"$date": utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"}
        return {"$date": {"$numberLong": str(_ms(aware))}}
    if isinstance(value, Decimal128):
        return {"$numberDecimal": str(value)}
    if isinstance(value, Binary):
        return _binary(bytes(value), value.subtype)
    if isinstance(value, bytes | bytearray | memoryview):
        return _binary(bytes(value), 0)
    if isinstance(value, uuid.UUID):
        return _binary(value.bytes, 4)
    if isinstance(value, Regex | re.Pattern):
        regex = value if isinstance(value, Regex) else Regex.from_native(value)
        flags = int(regex.flags)
        options = "".join(sorted(k for k, f in _FLAGS.items() if flags & f and k != "u"))
        pattern = regex.pattern if isinstance(regex.pattern, str) else regex.pattern.decode()
        return {"$regularExpression": {"pattern": pattern, "options": options}}
    if isinstance(value, Timestamp):
        return {"$timestamp": {"t": value.time, "i": value.inc}}
    if isinstance(value, Code):
        code: dict[str, Any] = {"$code": str(value)}
        if value.scope is not None:
            code["$scope"] = to_ejson(value.scope, canonical=canonical)
        return code
    if isinstance(value, MinKey):
        return {"$minKey": 1}
    if isinstance(value, MaxKey):
        return {"$maxKey": 1}
    raise TypeError(f"no Extended JSON form for a value of type {type(value).__name__}")


def from_ejson(value: Any) -> Any:
    """Parsed JSON (``dict``/``list``/scalars) with every Extended JSON v2
    wrapper replaced by its BSON value (see the module's table).

    Raises:
        InvalidInputError: a wrapper with a malformed value (``{"$oid": "xyz"}``).
    """
    if isinstance(value, dict):
        if len(value) <= 2 and value:
            first = "$code" if "$code" in value else next(iter(value))
            if first.startswith("$"):
                parser = _PARSERS.get(first)
                if parser is not None:
                    found = parser(value)
                    if found is not _NOT_A_WRAPPER:
                        return found
        return {k: from_ejson(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_ejson(v) for v in value]
    return value


_NOT_A_WRAPPER: Final[Any] = object()


def _bad(what: str) -> InvalidInputError:
    return InvalidInputError(f"invalid Extended JSON {what}")


def _only(doc: dict[str, Any], *keys: str) -> bool:
    return len(doc) == len(keys) and all(k in doc for k in keys)


def _oid(doc: dict[str, Any]) -> Any:
    if not _only(doc, "$oid"):
        return _NOT_A_WRAPPER
    try:
        return ObjectId(doc["$oid"])
    except (InvalidId, TypeError):
        raise _bad("$oid (24 hexadecimal digits)") from None


def _date(doc: dict[str, Any]) -> Any:
    if not _only(doc, "$date"):
        return _NOT_A_WRAPPER
    raw = doc["$date"]
    if isinstance(raw, str):
        try:
            parsed = dt.datetime.fromisoformat(raw)
        except ValueError:
            raise _bad("$date (an ISO-8601 date-time)") from None
        if parsed.tzinfo is None:
            raise _bad("$date: the date-time needs a UTC offset (Z or +hh:mm)")
        return parsed.astimezone(dt.UTC)
    if isinstance(raw, dict) and _only(raw, "$numberLong") and isinstance(raw["$numberLong"], str):
        try:
            ms = int(raw["$numberLong"])
            return _EPOCH + dt.timedelta(milliseconds=ms)
        except (ValueError, OverflowError):
            raise _bad("$date.$numberLong") from None
    raise _bad("$date (an ISO-8601 string or {'$numberLong': '<ms>'})")


def _int_string(doc: dict[str, Any], key: str, low: int, high: int) -> int:
    raw = doc[key]
    if not isinstance(raw, str):
        raise _bad(f"{key} (a string of digits)")
    try:
        number = int(raw)
    except ValueError:
        raise _bad(f"{key} (a string of digits)") from None
    if not low <= number <= high:
        raise _bad(f"{key} (out of range)")
    return number


def _int32(doc: dict[str, Any]) -> Any:
    if not _only(doc, "$numberInt"):
        return _NOT_A_WRAPPER
    return _int_string(doc, "$numberInt", _INT32_MIN, _INT32_MAX)


def _int64(doc: dict[str, Any]) -> Any:
    if not _only(doc, "$numberLong"):
        return _NOT_A_WRAPPER
    return Int64(_int_string(doc, "$numberLong", _INT64_MIN, _INT64_MAX))


def _float(doc: dict[str, Any]) -> Any:
    if not _only(doc, "$numberDouble"):
        return _NOT_A_WRAPPER
    raw = doc["$numberDouble"]
    try:
        return float(raw if isinstance(raw, str) else "invalid")
    except ValueError:
        raise _bad("$numberDouble (a decimal string, Infinity, -Infinity or NaN)") from None


def _decimal(doc: dict[str, Any]) -> Any:
    if not _only(doc, "$numberDecimal"):
        return _NOT_A_WRAPPER
    raw = doc["$numberDecimal"]
    try:
        return Decimal128(raw if isinstance(raw, str) else "invalid")
    except Exception:  # noqa: BLE001 - bson raises decimal.InvalidOperation and others
        raise _bad("$numberDecimal (a decimal string)") from None


def _binary_of(doc: dict[str, Any]) -> Any:
    if not _only(doc, "$binary"):
        return _NOT_A_WRAPPER
    raw = doc["$binary"]
    if not (isinstance(raw, dict) and _only(raw, "base64", "subType")):
        raise _bad("$binary ({'base64': ..., 'subType': '<hex>'})")
    try:
        data = base64.b64decode(raw["base64"], validate=True)
        subtype = int(raw["subType"], 16)
    except (ValueError, TypeError):
        raise _bad("$binary ({'base64': ..., 'subType': '<hex>'})") from None
    if not 0 <= subtype <= 255:
        raise _bad("$binary.subType (00..ff)")
    return data if subtype == 0 else Binary(data, subtype)


def _regex(doc: dict[str, Any]) -> Any:
    if not _only(doc, "$regularExpression"):
        return _NOT_A_WRAPPER
    raw = doc["$regularExpression"]
    if not (
        isinstance(raw, dict)
        and _only(raw, "pattern", "options")
        and isinstance(raw["pattern"], str)
        and isinstance(raw["options"], str)
    ):
        raise _bad("$regularExpression ({'pattern': ..., 'options': ...})")
    return Regex(raw["pattern"], raw["options"])


def _timestamp(doc: dict[str, Any]) -> Any:
    if not _only(doc, "$timestamp"):
        return _NOT_A_WRAPPER
    raw = doc["$timestamp"]
    if not (
        isinstance(raw, dict)
        and _only(raw, "t", "i")
        and all(isinstance(raw[k], int) and 0 <= raw[k] <= 2**32 - 1 for k in ("t", "i"))
    ):
        raise _bad("$timestamp ({'t': <seconds>, 'i': <increment>})")
    return Timestamp(raw["t"], raw["i"])


def _code(doc: dict[str, Any]) -> Any:
    if not (_only(doc, "$code") or _only(doc, "$code", "$scope")):
        return _NOT_A_WRAPPER
    if not isinstance(doc["$code"], str):
        raise _bad("$code (a string)")
    scope = doc.get("$scope")
    return Code(doc["$code"], from_ejson(scope) if scope is not None else None)


def _key(kind: type[MinKey] | type[MaxKey], name: str) -> Any:
    def parse(doc: dict[str, Any]) -> Any:
        if not _only(doc, name):
            return _NOT_A_WRAPPER
        if doc[name] != 1:
            raise _bad(f"{name} (the number 1)")
        return kind()

    return parse


_PARSERS: Final = {
    "$oid": _oid,
    "$date": _date,
    "$numberInt": _int32,
    "$numberLong": _int64,
    "$numberDouble": _float,
    "$numberDecimal": _decimal,
    "$binary": _binary_of,
    "$regularExpression": _regex,
    "$timestamp": _timestamp,
    "$code": _code,
    "$minKey": _key(MinKey, "$minKey"),
    "$maxKey": _key(MaxKey, "$maxKey"),
}
