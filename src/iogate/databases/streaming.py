"""Streaming a large result with bounded memory.

``async with db.stream(sql, params, chunk_rows=1000) as rows:`` opens the
statement (a connection is held until the block ends), learns its columns,
and ``async for row in rows`` then reads ``chunk_rows`` rows at a time:

- PostgreSQL: a server-side cursor (``DECLARE ... CURSOR`` inside a read
  transaction, asyncpg's ``Connection.cursor(prefetch=chunk_rows)``), so the
  server sends one chunk per round trip;
- SQLite: ``cursor.fetchmany(chunk_rows)`` on a reader connection, one trip
  to the connection's thread per chunk.

At most one chunk is in memory at a time, whatever the result's size.
Errors in the statement itself are raised when the block is entered, before
any row is read. A stream is never retried (part of it may have been
consumed); leaving the block early closes the cursor and returns the
connection.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from iogate.databases.results import Column, Row

__all__ = ["MAX_CHUNK_ROWS", "RowStream", "StreamSource"]

MAX_CHUNK_ROWS = 100_000

StreamSource = AsyncGenerator["tuple[Column, ...] | Sequence[Row]", None]
"""What a backend's ``_stream`` yields: first the columns, then chunks of rows
(never empty), until the result is exhausted."""


class RowStream:
    """The rows of one statement, read chunk by chunk (``async with`` + ``async for``).

    Attributes:
        columns: the result's columns (known once the block is entered).
        rows_read: rows handed out so far.
    """

    __slots__ = ("_chunk", "_pos", "_source", "_started", "columns", "rows_read")

    def __init__(self, source: StreamSource) -> None:
        self._source = source
        self._chunk: Sequence[Row] = ()
        self._pos = 0
        self._started = False
        self.columns: tuple[Column, ...] = ()
        self.rows_read = 0

    async def __aenter__(self) -> RowStream:
        if self._started:
            raise RuntimeError("a row stream can be entered once")
        self._started = True
        first: Any = await anext(self._source)
        self.columns = tuple(first)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._source.aclose()

    async def chunks(self) -> AsyncIterator[Sequence[Row]]:
        """The remaining rows, one chunk (a sequence of rows) at a time."""
        if self._pos < len(self._chunk):
            rest = self._chunk[self._pos :]
            self._chunk, self._pos = (), 0
            self.rows_read += len(rest)
            yield rest
        async for chunk in self._source:
            rows: Any = chunk
            self.rows_read += len(rows)
            yield rows

    def __aiter__(self) -> RowStream:
        return self

    async def __anext__(self) -> Row:
        if self._pos >= len(self._chunk):
            if not self._started:
                raise RuntimeError("use the stream inside `async with db.stream(...) as rows`")
            chunk: Any = await anext(self._source, None)
            if chunk is None:
                raise StopAsyncIteration
            self._chunk, self._pos = chunk, 0
        row = self._chunk[self._pos]
        self._pos += 1
        self.rows_read += 1
        return row

    def __repr__(self) -> str:
        return f"<RowStream columns={len(self.columns)} rows_read={self.rows_read}>"
