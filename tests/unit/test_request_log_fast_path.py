"""The request log's fast path (issue 21): the line written without a
``LogRecord`` when configure_logging's handler is the only one it reaches,
byte-for-byte the shape of the standard line, and the standard record
whenever anything else is configured."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Iterator
from typing import Any, cast

import orjson
import pytest

from iogate.observability._logging import (
    REQUEST_ID,
    JsonFormatter,
    JsonLineHandler,
    RequestIdFilter,
    configure_logging,
    write_json_line,
)
from iogate.server.request_id import RequestIdMiddleware

ROUTE = "/v1/databases/{name}/query"
CONFLICT = "urn:iogate:problem:integrity-violation"
FIELDS = {"method": "POST", "path": ROUTE, "status": 409, "problem_type": CONFLICT}
FIELDS |= {"duration_ms": 1.234, "key": "ops"}
PROBLEM = b'{"type":"urn:iogate:problem:integrity-violation","status":409}'


class _Route:
    path = "/v1/databases/{name}/query"


async def _conflict(scope: Any, receive: Any, send: Any) -> None:
    scope["route"] = _Route()
    headers = [(b"content-type", b"application/problem+json")]
    await send({"type": "http.response.start", "status": 409, "headers": headers})
    await send({"type": "http.response.body", "body": PROBLEM})


def _request(app: Any, **scope: Any) -> None:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(_: Any) -> None:
        return None

    headers = [(b"x-request-id", b"req-42")]
    asgi = {"type": "http", "method": "POST", "path": "/v1/x", "headers": headers, **scope}
    asyncio.run(RequestIdMiddleware(app)(asgi, receive, send))


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    """``iogate.request`` alone: no propagation to the root logger (where
    pytest keeps its own capture handlers), restored afterwards. pytest also
    attaches them to non-propagating loggers before each test, so each test
    sets the handlers itself."""
    log = logging.getLogger("iogate.request")
    saved = (log.handlers, log.propagate, log.level, log.filters)
    log.handlers, log.propagate, log.filters = [], False, []
    log.setLevel(logging.INFO)
    try:
        yield log
    finally:
        log.handlers, log.propagate, log.filters = saved[0], saved[1], saved[3]
        log.setLevel(saved[2])


def _docs(stream: io.StringIO) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def _standard(log: logging.Logger) -> None:
    """The same record the standard way: makeRecord + handle."""
    args = ("POST", FIELDS["path"], 409)
    record = log.makeRecord(log.name, logging.INFO, "f.py", 0, "%s %s %d", args, None, extra=FIELDS)
    log.handle(record)


def test_the_fast_line_is_the_standard_line(logger: logging.Logger) -> None:
    stream = io.StringIO()
    logger.handlers = [JsonLineHandler(stream)]
    token = REQUEST_ID.set("req-7")
    try:
        message = f"POST {FIELDS['path']} 409"
        assert write_json_line(logger, logging.INFO, message, FIELDS)
        _standard(logger)
    finally:
        REQUEST_ID.reset(token)
    fast, standard = stream.getvalue().splitlines()
    fast_doc, standard_doc = orjson.loads(fast), orjson.loads(standard)
    assert list(fast_doc) == list(standard_doc)  # same keys in the same order
    assert {**fast_doc, "ts": None} == {**standard_doc, "ts": None}
    assert fast_doc["request_id"] == "req-7"
    assert len(fast_doc["ts"]) == len(standard_doc["ts"]) == len("2026-12-02T22:16:50.123+00:00")
    assert fast_doc["ts"][:16] == standard_doc["ts"][:16]


def test_the_middleware_writes_the_same_line_either_way(logger: logging.Logger) -> None:
    fast = io.StringIO()
    logger.handlers = [JsonLineHandler(fast)]
    _request(_conflict)
    standard = io.StringIO()
    own = logging.StreamHandler(standard)
    own.addFilter(RequestIdFilter())
    own.setFormatter(JsonFormatter())
    logger.handlers = [own]
    _request(_conflict)
    (fast_doc,), (standard_doc,) = _docs(fast), _docs(standard)
    assert list(fast_doc) == list(standard_doc)
    ignore = {"ts": None, "duration_ms": None}
    assert {**fast_doc, **ignore} == {**standard_doc, **ignore}
    assert fast_doc["message"] == "POST /v1/databases/{name}/query 409"
    assert fast_doc["problem_type"] == "urn:iogate:problem:integrity-violation"
    assert (fast_doc["request_id"], fast_doc["level"]) == ("req-42", "INFO")
    assert isinstance(fast_doc["duration_ms"], float)


def test_a_handler_of_the_users_own_still_gets_the_record(logger: logging.Logger) -> None:
    records: list[logging.LogRecord] = []

    class Mine(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    line = io.StringIO()
    logger.handlers = [JsonLineHandler(line), Mine()]  # two handlers: the standard path
    _request(_conflict)
    assert [r.getMessage() for r in records] == ["POST /v1/databases/{name}/query 409"]
    assert cast(Any, records[0]).problem_type == "urn:iogate:problem:integrity-violation"
    assert _docs(line)[0]["status"] == 409  # iogate's handler wrote it too, once


def test_a_level_above_the_line_writes_nothing(logger: logging.Logger) -> None:
    stream = io.StringIO()
    handler = JsonLineHandler(stream)
    logger.handlers = [handler]
    logger.setLevel(logging.WARNING)  # Logger.isEnabledFor
    _request(_conflict)
    logger.setLevel(logging.INFO)
    handler.setLevel(logging.WARNING)  # the handler's own level
    assert write_json_line(logger, logging.INFO, "m", FIELDS)  # handled: dropped
    _request(_conflict)
    assert stream.getvalue() == ""


def test_anything_else_configured_takes_the_standard_path(logger: logging.Logger) -> None:
    stream = io.StringIO()
    handler = JsonLineHandler(stream)
    logger.handlers = [handler]
    assert write_json_line(logger, logging.INFO, "m", FIELDS)
    declined: list[str] = []

    def check(what: str) -> None:
        if not write_json_line(logger, logging.INFO, "m", FIELDS):
            declined.append(what)

    logger.addFilter(RequestIdFilter())
    check("a filter on the logger")
    logger.filters = []
    handler.addFilter(RequestIdFilter())
    check("another filter on the handler")
    handler.filters = handler.filters[:1]
    handler.setFormatter(JsonFormatter())
    check("another formatter")
    handler.setFormatter(cast(Any, handler)._json)
    factory = logging.getLogRecordFactory()
    logging.setLogRecordFactory(lambda *a, **k: factory(*a, **k))
    try:
        check("a record factory")
    finally:
        logging.setLogRecordFactory(factory)
    logger.propagate = True
    check("the root logger's handlers (pytest's)")
    logger.propagate = False
    assert write_json_line(logger, logging.INFO, "m", FIELDS)
    assert declined == [
        "a filter on the logger",
        "another filter on the handler",
        "another formatter",
        "a record factory",
        "the root logger's handlers (pytest's)",
    ]
    assert len(stream.getvalue().splitlines()) == 2


def test_configure_logging_installs_the_json_line_handler() -> None:
    root = logging.getLogger()
    saved = (root.handlers, root.level)
    try:
        json_handler = configure_logging(log_format="json", level="INFO")
        text_handler = configure_logging(log_format="text", level="INFO")
    finally:
        root.handlers, root.level = saved
    assert type(json_handler) is JsonLineHandler
    assert type(text_handler) is logging.StreamHandler


def test_a_failing_stream_is_reported_as_logging_does(
    logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    class Broken(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError("disk full")

    logger.handlers = [JsonLineHandler(Broken())]
    assert write_json_line(logger, logging.INFO, "m", FIELDS)  # the request goes on
    assert "--- Logging error ---" in capsys.readouterr().err  # Handler.handleError
