"""The JSON log formatter: fields, extras, the request id, exceptions by class only."""

from __future__ import annotations

import logging
import sys

import orjson

from iogate.observability._logging import REQUEST_ID, JsonFormatter, RequestIdFilter


def _record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("iogate.test", logging.WARNING, __file__, 1, msg, args, None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_one_json_object_with_extras_and_the_request_id() -> None:
    token = REQUEST_ID.set("req-123")
    try:
        record = _record("slow %s", "operation", resource="main", duration_ms=12.5)
        assert RequestIdFilter().filter(record)
    finally:
        REQUEST_ID.reset(token)
    line = JsonFormatter().format(record)
    assert "\n" not in line
    out = orjson.loads(line)
    assert out["message"] == "slow operation"
    assert (out["level"], out["logger"], out["request_id"]) == ("WARNING", "iogate.test", "req-123")
    assert (out["resource"], out["duration_ms"]) == ("main", 12.5)
    assert out["ts"].endswith("+00:00")


def test_an_exception_is_logged_by_class_only() -> None:
    try:
        raise ValueError("password=hunter2")
    except ValueError:
        record = _record("failed")
        record.exc_info = sys.exc_info()
    out = orjson.loads(JsonFormatter().format(record))
    assert out["exception"] == "ValueError"
    assert "hunter2" not in orjson.dumps(out).decode()
    assert out["request_id"] is None
