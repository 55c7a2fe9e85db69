"""SQLite backend: one writer connection plus a pool of readers.

- The database runs in WAL mode (``PRAGMA journal_mode=WAL``), so readers
  never block the writer nor the writer the readers (sqlite.org/wal.html).
- Each connection owns one thread (:class:`~iogate.databases._sqlite_worker.
  ConnectionWorker`); every statement makes one trip to that thread (execute,
  fetch and cursor close happen there together). Readers hand their results
  back to the event loop in batches, which is what makes the reader pool
  faster than a raw aiosqlite connection (see that module).
- Reads (:func:`~iogate.databases._sql.is_read_statement`) go to a reader
  connection in ``PRAGMA query_only`` mode; everything else to the writer, in
  autocommit mode (each statement is its own transaction). If the engine
  refuses a routed read because it writes (``SQLITE_READONLY``), the statement
  is re-run on the writer: routing is an optimisation, the engine decides.
- ``busy_timeout`` makes SQLite wait on a lock instead of failing at once
  with SQLITE_BUSY; ``foreign_keys`` is on.
- ``sqlite:///:memory:`` has no readers (an in-memory database is private to
  its connection).
- A one-trip statement is queued to its connection's thread without
  holding the connection: reads to the next reader in rotation, writes to
  the writer (its thread runs them in order, back to back). A write
  transaction (``BEGIN IMMEDIATE``), ``execute_many`` or a stream on the
  writer holds the writer (an ``asyncio.Lock``) until it ends, and other
  writes wait for it, so concurrent writers of one :class:`SQLiteDatabase`
  queue in Python instead of meeting ``database is locked``. A read-only
  transaction or a stream holds a reader (``BEGIN`` in WAL: a snapshot).
- ``query(..., limits=)`` reads the rows with ``cursor.fetchmany`` in chunks
  (:class:`~iogate.databases.guard.BoundedRead`) on the connection's thread
  (or inline, in slices, :mod:`~iogate.databases._sqlite_inline`) and closes
  the cursor at ``max_rows + 1`` rows or past the byte cap, which resets the
  statement: SQLite steps it no further.
- A statement whose call is cancelled (its deadline passed) is stopped with
  ``sqlite3_interrupt`` (sqlite.org/c3ref/interrupt.html), so the
  connection is free again at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, cast

from iogate.databases._sql import is_read_statement
from iogate.databases._sqlite_guard import READER_AUTHORIZER, Authorizer, describe, take_denial
from iogate.databases._sqlite_inline import (
    SLICE_ROWS,
    InlineReads,
    InlineStats,
    NotInline,
    Steps,
)
from iogate.databases._sqlite_worker import ConnectionWorker
from iogate.databases._tables import StatementTables, sqlite_tables
from iogate.databases.base import CallRunner, ResultCache, SQLDatabase
from iogate.databases.guard import BoundedRead, ResultLimits, SQLGuard
from iogate.databases.results import (
    Column,
    Description,
    ExecuteResult,
    Parameter,
    Params,
    QueryResult,
    Row,
)
from iogate.databases.stats import PoolMeter, PoolStats
from iogate.databases.streaming import StreamSource
from iogate.databases.transactions import TxConnection
from iogate.errors import (
    DatabaseError,
    IntegrityError,
    OperationContext,
    OperationError,
    OperationTimeout,
    QueryError,
    ReadOnlyViolation,
    TableNotAllowed,
    TransientDatabaseError,
)

__all__ = ["SQLiteDatabase", "translate_sqlite_error"]

# Primary result codes (sqlite.org/rescode.html).
_SQLITE_ERROR, _SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY = 1, 5, 6, 8
_SQLITE_INTERRUPT, _SQLITE_CONSTRAINT, _SQLITE_AUTH, _SQLITE_RANGE = 9, 19, 23, 25

_ALL, _ONE, _QUERY, _EXEC = 0, 1, 2, 3
_thread_time = time.thread_time
_Mode = int | ResultLimits
"""What a statement returns: all rows, one row, a QueryResult, an
ExecuteResult, or (a ResultLimits) a QueryResult read under those limits."""


class SQLiteDatabase(SQLDatabase):
    """A SQLite database file.

    Args:
        name: resource name.
        path: file path (parent folders are created), or ``":memory:"``.
        readers: reader connections beside the writer, 0..1024 (0: all on the writer).
        busy_timeout_s: seconds to wait on a lock before ``SQLITE_BUSY``.
        inline_read_budget_s: a one-trip read whose run on a reader thread
            took at most this much of its CPU time per 32 rows runs on the
            event loop's thread instead, in slices, bounded
            (:mod:`~iogate.databases._sqlite_inline`); 0: never (seconds, ≥ 0;
            needs readers).
        runner: the resilience pipeline each call runs through.
        cache: the cache of ``fetch(..., cache_ttl_s=)``.

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
        inline_read_budget_s: float = 50e-6,
        runner: CallRunner | None = None,
        cache: ResultCache | None = None,
    ) -> None:
        super().__init__(name, runner=runner, cache=cache)
        if not 0 <= readers <= 1024:
            raise ValueError(f"readers must be within 0..1024, got {readers}")
        if busy_timeout_s < 0:
            raise ValueError(f"busy_timeout_s must be >= 0, got {busy_timeout_s}")
        if not inline_read_budget_s >= 0:
            raise ValueError(f"inline_read_budget_s must be >= 0, got {inline_read_budget_s}")
        self.path = path
        self._memory = path == ":memory:" or path.startswith("file::memory:")
        self._n_readers = 0 if self._memory else readers
        self._busy_ms = int(busy_timeout_s * 1000)
        self._inline_budget_s = inline_read_budget_s
        self._inline: InlineReads | None = None
        self._writer: ConnectionWorker | None = None
        self._readers: list[ConnectionWorker] = []
        self._idle: asyncio.LifoQueue[ConnectionWorker] = asyncio.LifoQueue()
        self._shared: list[ConnectionWorker] = []  # readers not lent out
        self._turn = 0
        self._write_lock = asyncio.Lock()
        self._tx_task: asyncio.Task[Any] | None = None
        self._meter = PoolMeter()

    async def _open(self) -> None:
        if not self._memory:
            await asyncio.to_thread(Path(self.path).parent.mkdir, parents=True, exist_ok=True)
        try:
            self._writer = await self._connect(writer=True)
            for index in range(self._n_readers):
                reader = await self._connect(writer=False, index=index)
                self._readers.append(reader)
                self._shared.append(reader)
                self._idle.put_nowait(reader)
            if self._readers and self._inline_budget_s > 0:
                self._inline = InlineReads(
                    partial(_open_connection, self.path, 0, False, False),
                    budget_s=self._inline_budget_s,
                )
        except sqlite3.Error as exc:
            await self._close()
            raise translate_sqlite_error(exc, resource=self.name, operation="open") from exc

    async def _connect(self, *, writer: bool, index: int = 0) -> ConnectionWorker:
        role = "w" if writer else f"r{index}"
        worker = ConnectionWorker(
            name=f"iogate-sqlite-{self.name}-{role}", batch_results=True, waits_on_locks=writer
        )
        await worker.start(
            partial(_open_connection, self.path, self._busy_ms, writer, self._memory)
        )
        return worker

    async def _close(self) -> None:
        inline, self._inline = self._inline, None
        if inline is not None:
            inline.close()
        conns = [*self._readers, *([self._writer] if self._writer else [])]
        self._readers.clear()
        self._shared.clear()
        self._writer = None
        for conn in conns:
            await conn.close()

    async def _ping(self) -> None:
        await self._on_writer("SELECT 1", None, _ONE, "ping")

    async def _fetch(self, sql: str, params: Params) -> list[Row]:
        return cast(list[Row], await self._route(sql, params, _ALL, "fetch"))

    async def _fetch_one(self, sql: str, params: Params) -> Row | None:
        return cast(Row | None, await self._route(sql, params, _ONE, "fetch_one"))

    async def _execute(self, sql: str, params: Params) -> ExecuteResult:
        return cast(ExecuteResult, await self._on_writer(sql, params, _EXEC, "execute"))

    async def _execute_many(self, sql: str, params: list[Params]) -> ExecuteResult:
        writer = await self._take_writer()
        try:
            result = await self._run_fn(writer, "execute_many", _many, sql, params, True)
            return cast(ExecuteResult, result)
        finally:
            self._give_writer()

    async def _query(
        self, sql: str, params: Params, limits: ResultLimits | None = None
    ) -> QueryResult:
        mode = _QUERY if limits is None else limits
        return cast(QueryResult, await self._route(sql, params, mode, "query"))

    def inline_reads(self) -> InlineStats | None:
        """Counters of the reads run on the event loop's thread (``None``
        when there are none: no readers, or ``inline_read_budget_s = 0``)."""
        return None if self._inline is None else self._inline.stats()

    async def _route(self, sql: str, params: Params, mode: _Mode, operation: str) -> object:
        shared = self._shared
        if not shared or not is_read_statement(sql):
            return await self._on_writer(sql, params, mode, operation)
        try:
            return await self._read(sql, operation, _statement_steps, sql, _bind(params), mode)
        except ReadOnlyViolation:
            pass  # a "read" that writes: the writer runs it
        return await self._on_writer(sql, params, mode, operation)

    async def _read(
        self, sql: str, operation: str, steps: Steps, *args: Any, inline: bool = True
    ) -> Any:
        # A one-trip read: on the loop's thread when proven cheap (bounded,
        # in slices, see _sqlite_inline), else to the next reader in rotation
        # without holding it (statements queue on its thread, which runs them
        # back to back), whose CPU time renews the statement's verdict.
        reads = self._inline if inline else None
        meter = self._meter
        meter.took()
        try:
            if reads is not None and reads.eligible(sql):
                with contextlib.suppress(NotInline):
                    return await reads.run(sql, steps, *args)
            shared = self._shared
            self._turn = turn = (self._turn + 1) % len(shared)
            conn = shared[turn]
            submitted = self._submit(conn, _drained, steps, *args, timed=reads is not None)
            result = await self._wait(conn, submitted, operation)
            if reads is not None:
                reads.learn(sql, submitted[1].cpu_s, _rows_of(result))
            return result
        finally:
            meter.released()

    async def _on_writer(self, sql: str, params: Params, mode: _Mode, operation: str) -> object:
        return await self._writer_call(operation, _statement, sql, _bind(params), mode)

    async def _writer_call(self, operation: str, fn: Callable[..., Any], *args: Any) -> object:
        # A one-trip statement needs the writer only while it is queued: the
        # writer's thread runs statements in order, so one queued before a
        # transaction's BEGIN completes before it. While a transaction (or
        # execute_many, or a stream on the writer) holds the writer, wait.
        # Each such job is one statement (or a compile), which the writer's
        # thread may run again after SQLITE_BUSY outside a transaction
        # (ConnectionWorker.submit(retryable=True): how it batches results).
        writer = self._need_writer()
        lock, meter = self._write_lock, self._meter
        if lock.locked():
            writer = await self._take_writer()  # metered, with the time waited
            try:
                future = self._submit(writer, fn, *args, retryable=True)
            except BaseException:
                meter.released()
                raise
            finally:
                lock.release()  # the meter's hold ends with the statement, below
        else:
            future = self._submit(writer, fn, *args, retryable=True)
            meter.took()
        try:
            return await self._wait(writer, future, operation)
        finally:
            meter.released()

    async def _query_guarded(
        self, sql: str, params: Params, guard: SQLGuard, limits: ResultLimits | None = None
    ) -> QueryResult:
        # Read-only: a reader in rotation (query_only, and its authorizer allows
        # reads only). A table allowlist: the guard's authorizer is set around
        # the statement (which recompiles it under that authorizer) and the
        # connection's own one is restored after. Without readers (":memory:")
        # or for a writing key, the writer runs it.
        shared = self._shared
        authorizer: Authorizer | None = None if guard.tables is None else Authorizer.of(guard)
        bound = _bind(params)
        mode = _QUERY if limits is None else limits
        if guard.read_only and shared:
            # (inline only without a table allowlist: its authorizer, set per
            # statement, recompiles the statement, which no step bound covers)
            result = await self._read(
                sql, "query", _checked_steps, sql, bound, authorizer, READER_AUTHORIZER, mode,
                inline=authorizer is None,
            )  # fmt: skip
        else:
            if authorizer is None:
                authorizer = Authorizer.of(guard)
            result = await self._writer_call(
                "query", _drained, _checked_steps, sql, bound, authorizer, None, mode
            )
        return cast(QueryResult, result)

    async def _describe(self, sql: str, guard: SQLGuard | None) -> Description:
        # A read-only caller's statement compiles on a reader (whose authorizer
        # refuses writes); any other on the writer. Compiling runs nothing.
        authorizer = Authorizer.of(guard) if guard is not None and not guard.unrestricted else None
        if guard is not None and guard.read_only and self._shared:
            if authorizer is not None and authorizer.tables is None:
                authorizer = None  # the reader's own authorizer is the same
            found = await self._run_fn(
                self._shared[0], "describe", _describe_on, self.path, sql, authorizer,
                READER_AUTHORIZER,
            )  # fmt: skip
        else:
            found = await self._writer_call(
                "describe", _describe_on, self.path, sql, authorizer, None
            )
        columns, params = cast(tuple[list[tuple[str, str | None]], list[str | None]], found)
        return Description(
            tuple(Column(name, decl) for name, decl in columns),
            tuple(Parameter(name) for name in params),
        )

    async def _take_reader(self) -> ConnectionWorker:
        """Lend a reader for a whole transaction or stream (out of the rotation)."""
        meter = self._meter
        meter.acquiring()
        started = time.perf_counter()
        try:
            reader = await self._idle.get()
        except BaseException:
            meter.abandoned()
            raise
        meter.acquired(time.perf_counter() - started)
        self._shared.remove(reader)
        return reader

    def _give_reader(self, reader: ConnectionWorker) -> None:
        self._shared.append(reader)
        self._idle.put_nowait(reader)
        self._meter.released()

    async def _take_writer(self) -> ConnectionWorker:
        writer = self._need_writer()
        lock, meter = self._write_lock, self._meter
        if lock.locked() and self._tx_task is not None and self._tx_task is asyncio.current_task():
            raise RuntimeError(
                f"database {self.name!r}: this task holds a write transaction;"
                " run the statement on the transaction (tx.execute), not on the database"
            )
        meter.acquiring()
        started = time.perf_counter()
        try:
            await lock.acquire()
        except BaseException:
            meter.abandoned()
            raise
        meter.acquired(time.perf_counter() - started)
        return writer

    def _give_writer(self) -> None:
        self._write_lock.release()
        self._meter.released()

    async def _run(
        self, conn: ConnectionWorker, sql: str, params: Params, mode: _Mode, operation: str
    ) -> object:
        return await self._run_fn(conn, operation, _statement, sql, _bind(params), mode)

    async def _run_fn(
        self, conn: ConnectionWorker, operation: str, fn: Callable[..., Any], *args: Any
    ) -> Any:
        return await self._wait(conn, self._submit(conn, fn, *args), operation)

    def _submit(
        self,
        conn: ConnectionWorker,
        fn: Callable[..., Any],
        *args: Any,
        retryable: bool = False,
        timed: bool = False,
    ) -> _Submitted:
        # The function is queued to the connection's thread now (the order of
        # statements is fixed here), and awaited later. One trip per
        # statement: execute, fetch and cursor close run there together.
        if not conn.running:
            raise RuntimeError(f"database {self.name!r} is closed")
        slot = _Slot()
        run = _guarded_timed if timed else _guarded
        return conn.submit(run, slot, fn, *args, retryable=retryable), slot

    async def _wait(self, conn: ConnectionWorker, submitted: _Submitted, operation: str) -> Any:
        future, slot = submitted
        try:
            return await future
        except sqlite3.Error as exc:
            raise translate_sqlite_error(exc, resource=self.name, operation=operation) from exc
        except asyncio.CancelledError:
            # Deadline passed (or caller gone): skip the statement if it has not
            # started, else stop it on its thread with sqlite3_interrupt.
            slot.cancel(conn.connection)
            raise

    async def _stream(
        self, sql: str, params: Params, chunk_rows: int, guard: SQLGuard | None
    ) -> StreamSource:
        # A restricted caller: read-only on a lent reader (its authorizer), a
        # table allowlist under the guard's authorizer, restored at the end.
        read_only = guard is not None and guard.read_only
        if guard is None:
            on_reader = bool(self._readers) and is_read_statement(sql)
        else:
            on_reader = bool(self._readers) and read_only
        authorizer = None
        if guard is not None and (guard.tables is not None or not on_reader):
            authorizer = Authorizer.of(guard)
        restore = READER_AUTHORIZER if on_reader else None
        conn = await (self._take_reader() if on_reader else self._take_writer())
        cursor: sqlite3.Cursor | None = None
        try:
            if authorizer is not None:
                await self._run_fn(conn, "stream", _set_authorizer, authorizer)
            cursor = await self._run_fn(conn, "stream", _open_cursor, sql, _bind(params))
            description = cursor.description or ()
            yield tuple(Column(d[0]) for d in description)
            while rows := await self._run_fn(conn, "stream", _fetch_many, cursor, chunk_rows):
                yield rows
        finally:
            try:
                if cursor is not None:
                    closing = _close_checked if guard is not None else _close_cursor
                    await self._run_fn(conn, "stream", closing, cursor)
            finally:
                await self._end_stream(conn, on_reader, restore if authorizer else _KEEP)

    async def _end_stream(self, conn: ConnectionWorker, on_reader: bool, restore: object) -> None:
        if restore is not _KEEP:
            try:
                await self._run_fn(conn, "stream", _set_authorizer, restore)
            except BaseException:
                await self._drop(conn, on_reader)
                raise
        if on_reader:
            self._give_reader(conn)
        else:
            self._give_writer()

    async def _begin(
        self, isolation: str | None, read_only: bool, guard: SQLGuard | None
    ) -> tuple[TxConnection, Callable[[bool], Awaitable[None]]]:
        # SQLite transactions are serializable whatever `isolation` asks
        # (sqlite.org/isolation.html).
        on_reader = read_only and bool(self._readers)
        conn = await (self._take_reader() if on_reader else self._take_writer())
        begin = "BEGIN" if read_only else "BEGIN IMMEDIATE"
        tx = _SQLiteTx(self, conn, checked=guard is not None)
        authorizer = None if guard is None else Authorizer.of(guard)
        restore = READER_AUTHORIZER if on_reader else None
        try:
            if read_only and not on_reader:
                await tx.command("PRAGMA query_only = ON")
            await tx.command(begin)
            if authorizer is not None:
                await self._run_fn(conn, "transaction", _set_authorizer, authorizer)
        except BaseException:
            await self._end_tx(conn, on_reader, read_only, restore if authorizer else _KEEP)
            raise
        if not on_reader:
            self._tx_task = asyncio.current_task()

        async def finish(commit: bool) -> None:
            try:
                if commit:
                    try:
                        await tx.command("COMMIT")
                    except BaseException:
                        await _rollback_quietly(tx)
                        raise
                else:
                    await _rollback_quietly(tx)
            finally:
                await self._end_tx(conn, on_reader, read_only, restore if authorizer else _KEEP)

        return tx, finish

    async def _end_tx(
        self, conn: ConnectionWorker, on_reader: bool, read_only: bool, restore: object
    ) -> None:
        if restore is not _KEEP:
            try:
                await self._run_fn(conn, "transaction", _set_authorizer, restore)
            except BaseException:
                await self._drop(conn, on_reader)
                raise
        if on_reader:
            self._give_reader(conn)
            return
        self._tx_task = None
        try:
            if read_only:
                await self._run(conn, "PRAGMA query_only = OFF", None, _EXEC, "transaction")
        finally:
            self._give_writer()

    async def _statement_tables(self, sql: str, params: Params) -> StatementTables:
        # SQLite's authorizer, on the writer (it sees temp tables and :memory:);
        # the job runs alone on the connection's thread, between statements.
        writer = self._need_writer()
        submitted = self._submit(writer, sqlite_tables, sql, _bind(params))
        tables: StatementTables = await self._wait(writer, submitted, "tables")
        return tables

    async def _introspect(self, table: str) -> tuple[str, ...]:
        schema, _, name = table.rpartition(".")
        sql = "SELECT name FROM pragma_table_info(?, ?)" if schema else None
        rows = await self._route(
            sql or "SELECT name FROM pragma_table_info(?)",
            [name, schema] if schema else [name],
            _ALL,
            "introspect",
        )
        return tuple(r[0] for r in cast(list[Row], rows))

    def stats(self) -> PoolStats:
        """Pool statistics: ``size`` counts the readers and the writer; ``in_use``
        the statements in flight and connections lent (at most ``size``)."""
        size = len(self._readers) + (1 if self._writer is not None else 0)
        return self._meter.snapshot(size=size, max_size=self._n_readers + 1)

    async def _drop(self, conn: ConnectionWorker, on_reader: bool) -> None:
        # A connection whose authorizer could not be restored is never lent again.
        if on_reader:
            self._readers.remove(conn)
            self._meter.released()
            await conn.close()
        else:
            self._give_writer()

    def _need_writer(self) -> ConnectionWorker:
        if self._writer is None:
            raise RuntimeError(f"database {self.name!r} is not open")
        return self._writer


class _SQLiteTx:
    """A transaction's connection (see :class:`~iogate.databases.transactions.TxConnection`).

    ``checked``: a restricted caller's transaction: a statement that ends the
    transaction (COMMIT, ROLLBACK, END) fails with QueryError.
    """

    __slots__ = ("_checked", "_conn", "_db")

    def __init__(self, db: SQLiteDatabase, conn: ConnectionWorker, *, checked: bool) -> None:
        self._db = db
        self._conn = conn
        self._checked = checked

    async def fetch(self, sql: str, params: Params) -> list[Row]:
        return cast(list[Row], await self._db._run(self._conn, sql, params, _ALL, "tx.fetch"))

    async def fetch_one(self, sql: str, params: Params) -> Row | None:
        row = await self._db._run(self._conn, sql, params, _ONE, "tx.fetch_one")
        return cast(Row | None, row)

    async def execute(self, sql: str, params: Params) -> ExecuteResult:
        result = await self._db._run(self._conn, sql, params, _EXEC, "tx.execute")
        return cast(ExecuteResult, result)

    async def execute_many(self, sql: str, params: Sequence[Params]) -> ExecuteResult:
        result = await self._db._run_fn(self._conn, "tx.execute_many", _many, sql, params, False)
        return cast(ExecuteResult, result)

    async def query(
        self, sql: str, params: Params, limits: ResultLimits | None = None
    ) -> QueryResult:
        mode = _QUERY if limits is None else limits
        if self._checked:
            result = await self._db._run_fn(
                self._conn, "tx.query", _in_transaction, sql, _bind(params), mode
            )
            return cast(QueryResult, result)
        return cast(QueryResult, await self._db._run(self._conn, sql, params, mode, "tx.query"))

    async def command(self, sql: str) -> None:
        await self._db._run(self._conn, sql, None, _EXEC, "transaction")


async def _rollback_quietly(tx: _SQLiteTx) -> None:
    # ROLLBACK after an error that already ended the transaction reports
    # "no transaction is active": nothing is left to undo then.
    with contextlib.suppress(QueryError):
        await tx.command("ROLLBACK")


_KEEP: Any = object()
_TX_CONTROL = "transaction control (BEGIN, COMMIT, ROLLBACK...) is not allowed here"


def _set_authorizer(conn: sqlite3.Connection, authorizer: Authorizer | None) -> None:
    conn.set_authorizer(authorizer)


def _checked_steps(
    conn: sqlite3.Connection,
    sql: str,
    params: Sequence[Any] | Mapping[str, Any],
    authorizer: Authorizer | None,
    restore: Authorizer | None,
    mode: _Mode = _QUERY,
) -> Generator[None, bool | None, object]:
    """One statement of a restricted caller (:func:`_statement_steps`), under
    ``authorizer`` (then ``restore`` is put back), which must not leave a
    transaction open."""
    if authorizer is not None:
        conn.set_authorizer(authorizer)  # expires the cached statements: recompiled under it
    try:
        result = yield from _statement_steps(conn, sql, params, mode)
    finally:
        if authorizer is not None:
            conn.set_authorizer(restore)
        if conn.in_transaction:
            conn.execute("ROLLBACK")
            raise QueryError(_TX_CONTROL)
    return result


def _in_transaction(
    conn: sqlite3.Connection,
    sql: str,
    params: Sequence[Any] | Mapping[str, Any],
    mode: _Mode = _QUERY,
) -> object:
    """Runs on the connection's thread: a restricted caller's statement inside
    a transaction, which must still be open afterwards."""
    result = _statement(conn, sql, params, mode)
    if not conn.in_transaction:
        raise QueryError(_TX_CONTROL)
    return result


def _describe_on(
    conn: sqlite3.Connection,
    path: str,
    sql: str,
    authorizer: Authorizer | None,
    restore: Authorizer | None,
) -> object:
    if authorizer is None:
        return describe(conn, path, sql)
    conn.set_authorizer(authorizer)
    try:
        return describe(conn, path, sql)
    finally:
        conn.set_authorizer(restore)


def _open_cursor(
    conn: sqlite3.Connection, sql: str, params: Sequence[Any] | Mapping[str, Any]
) -> sqlite3.Cursor:
    return conn.execute(sql, params)


def _fetch_many(conn: sqlite3.Connection, cursor: sqlite3.Cursor, size: int) -> list[Any]:
    return cursor.fetchmany(size)


def _close_cursor(conn: sqlite3.Connection, cursor: sqlite3.Cursor) -> None:
    cursor.close()


def _close_checked(conn: sqlite3.Connection, cursor: sqlite3.Cursor) -> None:
    """A restricted caller's stream ends: a transaction it opened is rolled back."""
    cursor.close()
    if conn.in_transaction:
        conn.execute("ROLLBACK")
        raise QueryError(_TX_CONTROL)


def _many(conn: sqlite3.Connection, sql: str, params: Sequence[Params], atomic: bool) -> object:
    """Runs on the connection's thread: executemany, in its own transaction if ``atomic``."""
    seq = [_bind(p) for p in params]
    if atomic:
        conn.execute("BEGIN IMMEDIATE")
    try:
        cur = conn.executemany(sql, seq)
        count = max(cur.rowcount, 0)
        cur.close()
        if atomic:
            conn.execute("COMMIT")
    except BaseException:
        if atomic and conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return ExecuteResult(rows_affected=count)


class _Slot:
    """One queued statement's state, shared by the event loop and the connection's thread.

    The thread sets ``running`` before it checks ``cancelled``; the loop sets
    ``cancelled`` before it checks ``running``: so a cancelled statement is
    either skipped by the thread or interrupted while it runs, and the
    interrupt (under ``lock``) never reaches the next caller's statement.
    """

    __slots__ = ("cancelled", "cpu_s", "lock", "running")

    def __init__(self) -> None:
        self.cancelled = False
        self.running = False
        self.cpu_s = 0.0  # its CPU time on its thread, when timed (_guarded_timed)
        self.lock = threading.Lock()

    def cancel(self, conn: sqlite3.Connection) -> None:
        self.cancelled = True
        with self.lock:
            if self.running:
                conn.interrupt()  # safe from any thread (sqlite.org/c3ref/interrupt.html)


_Submitted = tuple["asyncio.Future[Any]", _Slot]


def _guarded(conn: sqlite3.Connection, slot: _Slot, fn: Callable[..., Any], *args: Any) -> Any:
    """Runs on the connection's thread (or, inline, on the loop's)."""
    slot.running = True
    try:
        if slot.cancelled:  # its caller is gone: skip it
            raise sqlite3.OperationalError("interrupted")
        return fn(conn, *args)
    except sqlite3.DatabaseError as exc:
        # The authorizer's refusal surfaces as SQLITE_AUTH, or as SQLITE_ERROR
        # "not authorized" for some statements: its reason says which.
        denial = take_denial()
        if denial is not None:
            exc.iogate_denial = denial  # type: ignore[attr-defined]
        raise
    except UnicodeEncodeError:  # a lone surrogate in the SQL or a parameter
        raise sqlite3.ProgrammingError("the statement or a parameter is not valid UTF-8") from None
    except OverflowError:  # a JSON integer beyond SQLite's 64-bit INTEGER
        raise sqlite3.ProgrammingError("an integer parameter does not fit in 64 bits") from None
    finally:
        with slot.lock:
            slot.running = False


def _guarded_timed(
    conn: sqlite3.Connection, slot: _Slot, fn: Callable[..., Any], *args: Any
) -> Any:
    """:func:`_guarded`, its CPU time on the connection's thread kept in
    ``slot.cpu_s`` (what :class:`InlineReads` learns from)."""
    cpu = _thread_time()
    try:
        return _guarded(conn, slot, fn, *args)
    finally:
        slot.cpu_s = _thread_time() - cpu


def _open_connection(path: str, busy_ms: int, writer: bool, memory: bool) -> sqlite3.Connection:
    """Runs on the connection's thread: open and configure one connection."""
    conn = sqlite3.connect(
        path, isolation_level=None, cached_statements=256, check_same_thread=False
    )
    try:
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {busy_ms}")
        conn.execute("PRAGMA foreign_keys = ON")
        if writer:
            if not memory:
                _enter_wal(conn, busy_ms)
            conn.execute("PRAGMA synchronous = NORMAL")
        else:
            conn.execute("PRAGMA query_only = ON")
            conn.set_authorizer(READER_AUTHORIZER)
    except BaseException:
        conn.close()
        raise
    return conn


def _rows_of(result: object) -> int:
    """Rows a read returned (what :meth:`InlineReads.learn` weighs its CPU by)."""
    if isinstance(result, QueryResult):
        return len(result.rows)
    return len(result) if isinstance(result, list) else 1


def _enter_wal(conn: sqlite3.Connection, busy_ms: int) -> None:
    """``PRAGMA journal_mode = WAL``, waiting up to ``busy_ms`` for a lock.

    Switching a new file to WAL needs an exclusive lock, and SQLite answers
    SQLITE_BUSY at once, without calling the busy handler, while another
    connection is switching the same file (two databases of one config naming
    one file, opened concurrently). Runs on the connection's thread: the
    pauses never touch the event loop."""
    deadline = time.monotonic() + busy_ms / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)
        else:
            return


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
    """Runs on the connection's thread: :func:`_statement_steps` whole."""
    return _drained(conn, _statement_steps, sql, params, mode)


def _drained(conn: sqlite3.Connection, steps: Steps, *args: Any) -> object:
    """``steps(conn, *args)`` run to its end without a pause (on a thread): a
    result longer than one slice is fetched whole after its first slice."""
    run = steps(conn, *args)
    try:
        next(run)
        while True:
            run.send(True)
    except StopIteration as done:
        return done.value


def _statement_steps(
    conn: sqlite3.Connection, sql: str, params: Sequence[Any] | Mapping[str, Any], mode: _Mode
) -> Generator[None, bool | None, object]:
    """One statement, its rows fetched :data:`SLICE_ROWS` at a time with a
    ``yield`` between two slices (where an inline read lets the loop run,
    see :class:`InlineReads`); returns the mode's answer."""
    cur = conn.cursor()
    try:
        cur.execute(sql, params)
        if mode == _ONE:
            return cur.fetchone()
        if mode == _EXEC:
            return ExecuteResult(rows_affected=max(cur.rowcount, 0), last_insert_id=cur.lastrowid)
        if mode == _ALL:
            return (yield from _fetch(cur, -1))
        if cur.description is None:
            last_id = cur.lastrowid if cur.rowcount > 0 else None
            return QueryResult((), [], rows_affected=max(cur.rowcount, 0), last_insert_id=last_id)
        cur.row_factory = None  # tuples (the factory applies when rows are fetched)
        columns = tuple(Column(d[0]) for d in cur.description)
        if mode == _QUERY:
            rows = yield from _fetch(cur, -1)
            return QueryResult(columns, rows, rows_affected=max(cur.rowcount, 0))
        read = BoundedRead(cast(ResultLimits, mode))
        while read.add((yield from _fetch(cur, asked := read.next_size())), asked):
            pass
        rows, truncated = read.finish()
        rowcount = max(cur.rowcount, 0)
        return QueryResult(columns, rows, rowcount, truncated=truncated, encoded=read.encoded)
    finally:
        cur.close()  # resets the statement: SQLite steps it no further


def _fetch(cur: sqlite3.Cursor, size: int) -> Generator[None, bool | None, list[Any]]:
    """Up to ``size`` rows of ``cur`` (``size < 0``: all): one slice of
    :data:`SLICE_ROWS`, then a ``yield`` before each next one; sent ``True``
    there (:func:`_drained`, on a thread), the rest in one fetch."""
    want = SLICE_ROWS if size < 0 or size > SLICE_ROWS else size
    rows = cur.fetchmany(want)
    if len(rows) < want:
        return rows  # the result ended (a point select: here)
    while size < 0 or len(rows) < size:
        if (yield):
            rows += cur.fetchall() if size < 0 else cur.fetchmany(size - len(rows))
            break
        want = SLICE_ROWS if size < 0 else min(SLICE_ROWS, size - len(rows))
        more = cur.fetchmany(want)
        rows += more
        if len(more) < want:
            break
    return rows


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
    denial: tuple[str, str] | None = getattr(exc, "iogate_denial", None)
    if denial is not None or primary == _SQLITE_AUTH:
        if denial is not None and denial[0] == "read-only":
            return ReadOnlyViolation(denial[1], sqlstate="SQLITE_AUTH", **ctx)
        detail = denial[1] if denial is not None else message
        return TableNotAllowed(detail, sqlstate="SQLITE_AUTH", **ctx)
    if primary == _SQLITE_INTERRUPT:
        return OperationTimeout("statement interrupted past its deadline", **ctx)
    if (
        isinstance(exc, sqlite3.ProgrammingError | sqlite3.InterfaceError)
        or primary in (_SQLITE_ERROR, _SQLITE_RANGE)
        or (isinstance(exc, sqlite3.OperationalError) and primary is None)
    ):
        return QueryError(message, sqlstate=name, **ctx)
    return DatabaseError(message, sqlstate=name, **ctx)
