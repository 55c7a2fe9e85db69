"""Server-Sent Events, parsed per the WHATWG HTML Living Standard §9.2.6
("Interpreting an event stream").

- The stream is UTF-8 (a leading BOM is dropped); lines end in CRLF, LF or CR
  (also when a CRLF is split across two chunks).
- ``:`` starts a comment (ignored — servers send them as keep-alives).
- ``field: value`` (one space after the colon removed) or a bare ``field``:
  ``event`` sets the type, ``data`` appends a line, ``id`` sets the last event
  id (ignored if it contains NUL), ``retry`` sets the reconnection time when it
  is all ASCII digits; other fields are ignored.
- A blank line dispatches the event — unless its data buffer is empty — with
  the trailing newline of the data removed and type ``"message"`` by default.
  The last event id persists across events, as the spec says.
- An event not terminated by a blank line at end of stream is discarded.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["SSEDecoder", "ServerSentEvent"]


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One dispatched event.

    Attributes:
        event: the type (``"message"`` unless an ``event:`` field set one).
        data: the data lines joined with ``"\\n"``.
        id: the last event id seen so far in the stream (``""`` if none).
        retry_ms: the reconnection time in milliseconds, if this event set one.
    """

    event: str = "message"
    data: str = ""
    id: str = ""
    retry_ms: int | None = None

    def json(self) -> Any:
        """``data`` parsed as JSON. Raises ``orjson.JSONDecodeError``."""
        return orjson.loads(self.data)


class SSEDecoder:
    """Incremental parser: :meth:`feed` bytes as they arrive, get whole events back."""

    __slots__ = ("_bom_checked", "_buf", "_cr", "_data", "_decoder", "_event", "_id", "_retry")

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buf = ""
        self._cr = False  # the previous chunk ended in CR: a leading LF belongs to it
        self._bom_checked = False
        self._data: list[str] = []
        self._event = ""
        self._id = ""
        self._retry: int | None = None

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Parse ``chunk``; return the events it completed (possibly none)."""
        text = self._decoder.decode(chunk)
        if not self._bom_checked and text:
            self._bom_checked = True
            text = text.removeprefix("\ufeff")
        if self._cr and text.startswith("\n"):
            text = text[1:]
        self._cr = False
        buf = self._buf + text
        events: list[ServerSentEvent] = []
        start = 0
        n = len(buf)
        i = 0
        while i < n:
            ch = buf[i]
            if ch == "\n" or ch == "\r":
                event = self._line(buf[start:i])
                if event is not None:
                    events.append(event)
                if ch == "\r":
                    if i + 1 < n and buf[i + 1] == "\n":
                        i += 1
                    elif i + 1 == n:
                        self._cr = True
                start = i + 1
            i += 1
        self._buf = buf[start:]
        return events

    def _line(self, line: str) -> ServerSentEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self._retry = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        data, event, retry = self._data, self._event, self._retry
        self._data, self._event, self._retry = [], "", None
        if not data:
            return None
        return ServerSentEvent(
            event=event or "message", data="\n".join(data), id=self._id, retry_ms=retry
        )
