"""SQLite backend on aiosqlite: one writer connection plus a pool of readers.

- The database runs in WAL mode (``PRAGMA journal_mode=WAL``), so readers
  never block the writer nor the writer the readers (sqlite.org/wal.html).
- Each aiosqlite connection owns one thread; every statement makes one trip to
  that thread (execute, fetch and cursor close happen there together).
- Reads (:func:`~iogate.databases.sql.is_read_statement`) go to a reader
  connection in ``PRAGMA query_only`` mode; everything else to the writer, in
  autocommit mode (each statement is its own transaction). If the engine
  refuses a routed read because it writes (``SQLITE_READONLY``), the statement
  is re-run on the writer: routing is an optimisation, the engine decides.
- ``busy_timeout`` makes SQLite wait on a lock instead of failing at once
  with SQLITE_BUSY; ``foreign_keys`` is on.
- ``sqlite:///:memory:`` has no readers (an in-memory database is private to
  its connection).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, cast

import aiosqlite

from iogate.databases.base import (
    CallRunner,
    Column,
    ExecuteResult,
    Params,
    QueryResult,
    Row,
    SQLDatabase,
)
from iogate.databases.sql import is_read_statement
from iogate.errors import (
    DatabaseError,
    IntegrityError,
    OperationContext,
    OperationError,
    OperationTimeout,
    QueryError,
    ReadOnlyViolation,
    TransientDatabaseError,
)

__all__ = ["SQLiteDatabase", "translate_sqlite_error"]

# Primary result codes (sqlite.org/rescode.html).
_SQLITE_ERROR, _SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY = 1, 5, 6, 8
_SQLITE_INTERRUPT, _SQLITE_CONSTRAINT, _SQLITE_RANGE = 9, 19, 25

_Mode = int
_ALL, _ONE, _QUERY, _EXEC = 0, 1, 2, 3


class SQLiteDatabase(SQLDatabase):
    """A SQLite database file.

    Args:
        name: resource name.
        path: file path (parent folders are created), or ``":memory:"``.
        readers: reader connections beside the writer, 0..1024 (0: all on the writer).
        busy_timeout_s: seconds to wait on a lock before ``SQLITE_BUSY``.
        runner: the resilience pipeline each call runs through.

    Raises (on :meth:`open`): DatabaseError when the file cannot be opened.
    """

    kind: ClassVar[str] = "sqlite"

    def __init__(
        self,
        name: str,
        *,
        path: str,
        readers: int = 2,
        busy_timeout_s: float = 5.0,
        runner: CallRunner | None = None,
    ) -> None:
        super().__init__(name, runner=runner)
        if not 0 <= readers <= 1024:
            raise ValueError(f"readers must be within 0..1024, got {readers}")
        if busy_timeout_s < 0:
            raise ValueError(f"busy_timeout_s must be >= 0, got {busy_timeout_s}")
        self.path = path
        self._memory = path == ":memory:" or path.startswith("file::memory:")
        self._n_readers = 0 if self._memory else readers
        self._busy_ms = int(busy_timeout_s * 1000)
        self._writer: aiosqlite.Connection | None = None
        self._readers: list[aiosqlite.Connection] = []
        self._idle: asyncio.LifoQueue[aiosqlite.Connection] = asyncio.LifoQueue()

    async def _open(self) -> None:
        if not self._memory:
            await asyncio.to_thread(Path(self.path).parent.mkdir, parents=True, exist_ok=True)
        try:
            self._writer = await self._connect(writer=True)
            for _ in range(self._n_readers):
                reader = await self._connect(writer=False)
                self._readers.append(reader)
                self._idle.put_nowait(reader)
        except sqlite3.Error as exc:
            await self._close()
            raise translate_sqlite_error(exc, resource=self.name, operation="open") from exc

    async def _connect(self, *, writer: bool) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self.path, isolation_level=None, cached_statements=256)
        try:
            conn.row_factory = sqlite3.Row
            await conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
            await conn.execute("PRAGMA foreign_keys = ON")
            if writer:
                if not self._memory:
                    await conn.execute("PRAGMA journal_mode = WAL")
                await conn.execute("PRAGMA synchronous = NORMAL")
            else:
                await conn.execute("PRAGMA query_only = ON")
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _close(self) -> None:
        conns = [*self._readers, *([self._writer] if self._writer else [])]
        self._readers.clear()
        self._writer = None
        for conn in conns:
            await conn.close()

    async def _ping(self) -> None:
        await self._run(self._need_writer(), "SELECT 1", None, _ONE, "ping")

    async def _fetch(self, sql: str, params: Params) -> list[Row]:
        return cast(list[Row], await self._route(sql, params, _ALL, "fetch"))

    async def _fetch_one(self, sql: str, params: Params) -> Row | None:
        return cast(Row | None, await self._route(sql, params, _ONE, "fetch_one"))

    async def _execute(self, sql: str, params: Params) -> ExecuteResult:
        result = await self._run(self._need_writer(), sql, params, _EXEC, "execute")
        return cast(ExecuteResult, result)

    async def _query(self, sql: str, params: Params) -> QueryResult:
        return cast(QueryResult, await self._route(sql, params, _QUERY, "query"))

    async def _route(self, sql: str, params: Params, mode: _Mode, operation: str) -> object:
        if not self._readers or not is_read_statement(sql):
            return await self._run(self._need_writer(), sql, params, mode, operation)
        reader = await self._idle.get()
        try:
            return await self._run(reader, sql, params, mode, operation)
        except ReadOnlyViolation:
            pass  # a "read" that writes: the writer runs it
        finally:
            self._idle.put_nowait(reader)
        return await self._run(self._need_writer(), sql, params, mode, operation)

    async def _run(
        self, conn: aiosqlite.Connection, sql: str, params: Params, mode: _Mode, operation: str
    ) -> object:
        # aiosqlite's Connection._execute runs a function on the connection's own
        # thread: one trip for execute + fetch + close instead of three.
        in_thread = cast(Callable[..., Awaitable[object]], conn._execute)
        try:
            return await in_thread(_statement, conn._conn, sql, _bind(params), mode)
        except sqlite3.Error as exc:
            raise translate_sqlite_error(exc, resource=self.name, operation=operation) from exc

    def _need_writer(self) -> aiosqlite.Connection:
        if self._writer is None:
            raise RuntimeError(f"database {self.name!r} is not open")
        return self._writer


def _bind(params: Params) -> Sequence[Any] | Mapping[str, Any]:
    if params is None:
        return ()
    if isinstance(params, Mapping):
        return params
    if isinstance(params, str | bytes):
        raise QueryError("parameters must be a list or an object, not a string")
    return tuple(params)


def _statement(
    conn: sqlite3.Connection, sql: str, params: Sequence[Any] | Mapping[str, Any], mode: _Mode
) -> object:
    """Runs on the connection's thread."""
    cur = conn.cursor()
    try:
        if mode == _QUERY:
            cur.row_factory = None
        cur.execute(sql, params)
        if mode == _ALL:
            return cur.fetchall()
        if mode == _ONE:
            return cur.fetchone()
        if mode == _EXEC:
            return ExecuteResult(rows_affected=max(cur.rowcount, 0), last_insert_id=cur.lastrowid)
        if cur.description is None:
            last_id = cur.lastrowid if cur.rowcount > 0 else None
            return QueryResult((), [], rows_affected=max(cur.rowcount, 0), last_insert_id=last_id)
        columns = tuple(Column(d[0]) for d in cur.description)
        rows = cur.fetchall()
        return QueryResult(columns, rows, rows_affected=max(cur.rowcount, 0))
    finally:
        cur.close()


def translate_sqlite_error(
    exc: sqlite3.Error, *, resource: str | None, operation: str | None
) -> OperationError:
    """Map a sqlite3 error to iogate's hierarchy by its result code.

    ``SQLITE_BUSY``/``SQLITE_LOCKED`` → TransientDatabaseError,
    ``SQLITE_CONSTRAINT`` → IntegrityError, ``SQLITE_READONLY`` →
    ReadOnlyViolation, ``SQLITE_INTERRUPT`` → OperationTimeout (iogate only
    interrupts a statement past its deadline), bad SQL or parameters →
    QueryError. The ``sqlstate`` attribute carries SQLite's error name.
    """
    code = getattr(exc, "sqlite_errorcode", None)
    name = getattr(exc, "sqlite_errorname", None)
    primary = code & 0xFF if isinstance(code, int) else None
    message = str(exc)
    ctx: OperationContext = {"resource": resource, "operation": operation}
    if isinstance(exc, sqlite3.IntegrityError) or primary == _SQLITE_CONSTRAINT:
        _, _, constraint = message.partition("constraint failed: ")
        return IntegrityError(message, constraint=constraint or None, sqlstate=name, **ctx)
    if primary in (_SQLITE_BUSY, _SQLITE_LOCKED):
        return TransientDatabaseError(message, sqlstate=name, **ctx)
    if primary == _SQLITE_READONLY:
        return ReadOnlyViolation(message, sqlstate=name, **ctx)
    if primary == _SQLITE_INTERRUPT:
        return OperationTimeout("statement interrupted past its deadline", **ctx)
    if (
        isinstance(exc, sqlite3.ProgrammingError | sqlite3.InterfaceError)
        or primary in (_SQLITE_ERROR, _SQLITE_RANGE)
        or (isinstance(exc, sqlite3.OperationalError) and primary is None)
    ):
        return QueryError(message, sqlstate=name, **ctx)
    return DatabaseError(message, sqlstate=name, **ctx)
