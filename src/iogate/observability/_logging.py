"""Structured logs: one JSON object per line, with the request id of the current request.

- :data:`REQUEST_ID` holds the id of the HTTP request being served (set by
  :class:`~iogate.server.request_id.RequestIdMiddleware`); every record
  formatted by :class:`JsonFormatter` carries it as ``request_id``.
- :class:`JsonFormatter` renders ``ts`` (ISO 8601, UTC), ``level``,
  ``logger``, ``message``, ``request_id`` and the record's ``extra=`` fields
  (orjson; values it cannot encode become their ``str``). An exception is
  logged by class name only — never a traceback, whose frames could hold
  parameters or credentials.
- :func:`configure_logging` installs it on the root logger (in a
  :class:`JsonLineHandler`), so iogate's, uvicorn's and every library's
  records come out alike (what ``iogate serve`` calls); a library user keeps
  their own setup.
- :func:`write_json_line` is the request log's fast path: when that handler
  is the only one a record of the logger would reach, it writes the very
  line ``logging`` would, without building a ``LogRecord`` (~4 µs a line
  instead of ~9.5, ``python -m benchmarks --only metrics``); otherwise it
  declines and the caller logs the standard way, so a user's own handlers,
  filters, formatter or record factory see the record as before.

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
from typing import Any, Final, Literal, TextIO

import orjson

__all__ = [
    "PARAMETER_LOGGERS",
    "REQUEST_ID",
    "JsonFormatter",
    "JsonLineHandler",
    "RequestIdFilter",
    "configure_logging",
    "silence_parameter_loggers",
    "write_json_line",
]

REQUEST_ID: ContextVar[str | None] = ContextVar("iogate_request_id", default=None)
"""The id of the request being served in this context (``None`` outside one)."""

PARAMETER_LOGGERS: Final = ("aiosqlite",)
"""Dependencies whose DEBUG records print call arguments, SQL parameters included
(aiosqlite logs every ``executing functools.partial(..., sql, params)``)."""

_time = time.time
_level_name = logging.getLevelName
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

    def _ts(self, created: float, msecs: float) -> str:
        """``ts`` of a record created at ``created`` (seconds since the epoch)."""
        second = int(created)
        if second != self._second:  # strftime once per second, not per record
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._stamp}.{int(msecs):03d}+00:00"

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        fields = record.__dict__
        out: dict[str, Any] = {
            "ts": self._ts(record.created, record.msecs),
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

    def format_fields(
        self, levelno: int, name: str, message: str, fields: dict[str, Any], /
    ) -> str:
        """The line :meth:`format` gives for a record of logger ``name`` at
        ``levelno``, created now, whose ``getMessage()`` is ``message`` and
        whose ``extra=`` is ``fields``, with the request id a
        :class:`RequestIdFilter` puts on it — without the record.

        ``fields`` must hold none of ``LogRecord``'s own attribute names and
        no name starting with ``_`` (:meth:`format` would leave those out).
        """
        created = _time()  # what LogRecord.__init__ reads, and its msecs
        second = int(created)
        if second != self._second:
            self._ts(created, 0)
        out: dict[str, Any] = {
            "ts": f"{self._stamp}.{int((created - second) * 1000):03d}+00:00",
            "level": _level_name(levelno),
            "logger": name,
            "message": message,
            "request_id": REQUEST_ID.get(),
            **fields,
        }
        return orjson.dumps(out, default=str).decode()


class JsonLineHandler(logging.StreamHandler[TextIO]):
    """The handler :func:`configure_logging` installs for JSON: a
    ``StreamHandler`` with a :class:`RequestIdFilter` and a
    :class:`JsonFormatter` of its own, which can also write a line from its
    fields (:meth:`write_fields`, the fast path of :func:`write_json_line`).

    Args:
        stream: a text stream (default ``sys.stderr``, as ``StreamHandler``).
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream)
        self._ids = RequestIdFilter()
        self._json = JsonFormatter()
        self.addFilter(self._ids)
        self.setFormatter(self._json)

    def write_fields(
        self, levelno: int, name: str, message: str, fields: dict[str, Any], /
    ) -> bool:
        """Write the line :meth:`~logging.Handler.handle` would write for that
        record (see :meth:`JsonFormatter.format_fields`) when this handler
        still has only its own filter and formatter; ``True`` when it is
        written — or dropped by this handler's level, as ``callHandlers``
        does — ``False`` when the caller must build the record.

        Like ``StreamHandler.emit``: one ``write`` of the line and the
        terminator, then the stream's ``flush``, under the handler's lock; a
        failure goes to :meth:`~logging.Handler.handleError`.
        """
        if levelno < self.level:
            return True
        filters = self.filters
        if len(filters) != 1 or filters[0] is not self._ids or self.formatter is not self._json:
            return False
        line = self._json.format_fields(levelno, name, message, fields) + self.terminator
        self.acquire()  # what Handler.handle holds around emit
        try:
            stream = self.stream
            stream.write(line)
            stream.flush()
        except RecursionError:  # as StreamHandler.emit
            raise
        except Exception:  # noqa: BLE001 - as emit: reported by handleError
            record = logging.makeLogRecord({"name": name, "levelno": levelno, "msg": message})
            self.handleError(record)
        finally:
            self.release()
        return True


def write_json_line(
    logger: logging.Logger, levelno: int, message: str, fields: dict[str, Any], /
) -> bool:
    """Write one record of ``logger`` at ``levelno`` (message ``message``,
    ``extra=`` ``fields``) without building a ``LogRecord``, when the only
    handler it would reach is a :class:`JsonLineHandler` (what
    :func:`configure_logging` installs) — ``True`` then, ``False`` otherwise.

    It declines (the caller builds the record and calls ``logger.handle``)
    when ``logger`` has filters, is a custom ``Logger`` class, when a record
    factory is set (``logging.setLogRecordFactory``), or when any other handler
    sits on ``logger`` or on the ancestors its records propagate to
    (``Logger.callHandlers``' walk). The caller checks ``isEnabledFor`` first,
    as ``Logger.log`` does.
    """
    if logger.filters or type(logger) is not logging.Logger:
        return False
    if logging.getLogRecordFactory() is not logging.LogRecord:
        return False
    only: JsonLineHandler | None = None
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if only is not None or type(handler) is not JsonLineHandler:
                return False
            only = handler
        if not current.propagate:
            break
        current = current.parent
    if only is None:
        return False  # logging's lastResort, or its one-off warning
    return only.write_fields(levelno, logger.name, message, fields)


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
    handler: logging.Handler
    if log_format == "json":
        handler = JsonLineHandler(sys.stderr)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.addFilter(RequestIdFilter())
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
