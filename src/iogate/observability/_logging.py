"""Structured logs: one JSON object per line, with the request id of the current request.

- :data:`REQUEST_ID` holds the id of the HTTP request being served (set by
  :class:`~iogate.server.request_id.RequestIdMiddleware`); every record
  formatted by :class:`JsonFormatter` carries it as ``request_id``.
- :class:`JsonFormatter` renders ``ts`` (ISO 8601, UTC), ``level``,
  ``logger``, ``message``, ``request_id`` and the record's ``extra=`` fields
  (orjson; values it cannot encode become their ``str``). An exception is
  logged by class name only — never a traceback, whose frames could hold
  parameters or credentials.
- :func:`configure_logging` installs it on the root logger, so iogate's,
  uvicorn's and every library's records come out alike (what ``iogate serve``
  calls); a library user keeps their own setup.

What iogate logs never holds a secret or a SQL parameter: errors are logged
by class and problem type, slow calls by statement fingerprint
(:mod:`iogate.observability._statements`).
"""

from __future__ import annotations

import logging
import sys
import time
from contextvars import ContextVar
from itertools import islice
from typing import Any, Final, Literal

import orjson

__all__ = [
    "PARAMETER_LOGGERS",
    "REQUEST_ID",
    "JsonFormatter",
    "RequestIdFilter",
    "configure_logging",
    "silence_parameter_loggers",
]

REQUEST_ID: ContextVar[str | None] = ContextVar("iogate_request_id", default=None)
"""The id of the request being served in this context (``None`` outside one)."""

PARAMETER_LOGGERS: Final = ("aiosqlite",)
"""Dependencies whose DEBUG records print call arguments, SQL parameters included
(aiosqlite logs every ``executing functools.partial(..., sql, params)``)."""

# Attributes every LogRecord has: the rest came from ``extra=``. LogRecord's
# __init__ sets the first _INIT of them, so a record's own fields come after.
_INIT: Final = len(vars(logging.LogRecord("", 0, "", 0, "", None, None)))
_STANDARD: Final = frozenset(
    {
        *vars(logging.LogRecord("", 0, "", 0, "", None, None)),
        "message",
        "asctime",
        "request_id",
        "color_message",
    }
)


class RequestIdFilter(logging.Filter):
    """Puts the current :data:`REQUEST_ID` on every record as ``record.request_id``."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Always keeps the record."""
        record.request_id = REQUEST_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring for the fields).

    The timestamp's seconds are formatted once per second, the fields are one
    dict (the record's own fields found past the ones ``LogRecord`` sets) and
    one ``orjson.dumps`` (``python -m benchmarks --only metrics`` measures it).
    """

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        second = int(record.created)
        if second != self._second:  # strftime once per second, not per record
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        fields = record.__dict__
        out: dict[str, Any] = {
            "ts": f"{self._stamp}.{int(record.msecs):03d}+00:00",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": fields.get("request_id") or REQUEST_ID.get(),
        }
        for key, value in islice(fields.items(), _INIT, None):
            if key not in _STANDARD and key[0] != "_":
                out[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            out["exception"] = record.exc_info[0].__name__
        return orjson.dumps(out, default=str).decode()


def silence_parameter_loggers() -> None:
    """Raise :data:`PARAMETER_LOGGERS` to INFO so their DEBUG records, which hold
    SQL parameters, are never created (each Gateway calls this)."""
    for name in PARAMETER_LOGGERS:
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.INFO:
            logger.setLevel(logging.INFO)


def configure_logging(
    *, log_format: Literal["json", "text"] = "json", level: str = "INFO"
) -> logging.Handler:
    """Log every record (root logger) to stderr in ``log_format`` at ``level``.

    uvicorn's loggers lose their own handlers and propagate to the root, so
    their lines are formatted alike. Returns the installed handler.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
        )
    silence_parameter_loggers()
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    for name in ("iogate", "uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True
    return handler
