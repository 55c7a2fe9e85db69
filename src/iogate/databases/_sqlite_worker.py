"""One sqlite3 connection owned by one thread, fed by a queue.

The standard library's ``sqlite3`` blocks, so each connection lives on a thread
of its own and the event loop hands it work: ``submit(fn, *args)`` queues
``fn(connection, *args)`` and returns a future. Statements on one connection
run in the order they were submitted. This is what aiosqlite does too; the
difference is how results come back.

aiosqlite wakes the event loop once per statement (``call_soon_threadsafe``
per result). Under concurrency that wake-up is most of the cost: the loop
thread then wants the GIL while the connection's thread is stepping the next
statement, and the two hand it back and forth at every GIL release inside
``sqlite3_step``. A worker here with ``batch_results=True`` instead runs the
statements already queued back to back and returns their results to the loop
in one wake-up, so the loop sleeps while the worker works and then settles a
whole batch at once. Measured on this project's 2-core machine, point selects
at 32 concurrent callers: ~4x the throughput of one aiosqlite connection
(benchmarks/databases.py, issue 4's closing note).

Holding results must not make a fast statement wait for a slow one queued
behind it, so a batch is handed over:

- when the queue is empty, or the batch holds ``max_batch`` results, or its
  first result is older than ``max_hold_s``, before the next statement starts;
- and from SQLite's progress handler (sqlite.org/c3ref/progress_handler.html)
  once a running statement has executed ``progress_ops`` virtual-machine
  instructions: a slow statement releases the results held before it soon
  after it starts. (A statement blocked inside SQLite's busy handler runs no
  instructions.)

Reader connections in WAL mode never wait for locks. The writer can: another
process's writer may hold the database's write lock, and SQLite's busy handler
then sleeps inside ``sqlite3_step`` (up to ``busy_timeout``) running no
instructions, so results held before that statement would wait as long. A
worker made with ``waits_on_locks=True`` (the writer) therefore holds results
only across jobs submitted with ``retryable=True`` — one statement outside any
transaction, which SQLite documents may be retried after ``SQLITE_BUSY``
(sqlite.org/rescode.html#busy: "If the statement is a COMMIT or occurs
outside of an explicit transaction, then you can retry the statement") — and
runs such a job with ``PRAGMA busy_timeout = 0``: a lock it cannot take fails
at once instead of waiting, the held results are handed over, and the job
runs again with the connection's timeout, waiting as long as it must. Any
other job hands the held results over and runs with the timeout. The pragma
is set only when the kind of job changes (a stream of INSERTs sets it once).
Measured on this project's 2-core machine, single-row INSERTs through the
gateway at 32 connections: ~2,800 requests/s with one hand-over per
statement, ~4,000-4,900 batched (issue 22).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable
from queue import Empty, SimpleQueue
from typing import Any, Final, cast

__all__ = ["ConnectionWorker"]

_STOP: Final = object()
_Job = tuple["asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...], bool]
_Done = tuple["asyncio.Future[Any]", bool, Any]


def _settle(done: list[_Done]) -> None:
    """Runs on the event loop: resolve each future of a batch (skipping cancelled ones)."""
    for future, ok, value in done:
        if not future.done():
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    """``SQLITE_BUSY`` or one of its extended codes (the low byte is the primary code)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == sqlite3.SQLITE_BUSY


def _run(
    conn: sqlite3.Connection, future: asyncio.Future[Any], fn: Callable[..., Any], args: Any
) -> _Done:
    try:
        return (future, True, fn(conn, *args))
    except BaseException as exc:  # noqa: BLE001 - re-raised by the caller
        return (future, False, exc)


def _ok(future: asyncio.Future[None]) -> _Done:
    return (future, True, None)


def _failed(future: asyncio.Future[None], exc: BaseException) -> _Done:
    return (future, False, exc)


class ConnectionWorker:
    """A sqlite3 connection on its own (daemon) thread.

    Args:
        name: thread name, for debugging (``"iogate-sqlite-main-r0"``).
        batch_results: hand results back in batches (see the module docstring).
        waits_on_locks: the connection may wait for another connection's lock (a
            writer): results are held only across ``retryable`` jobs, which run
            with the lock wait off (module docstring).
        max_batch: the most results held before they are handed back.
        max_hold_s: the longest a result is held while others are queued (seconds).
        progress_ops: SQLite VM instructions between progress-handler checks.

    Use: ``await worker.start(connect)``, then ``await worker.submit(fn, ...)``,
    then ``await worker.close()``. ``connect`` runs on the worker's thread.
    """

    __slots__ = (
        "_batch",
        "_batch_results",
        "_busy_ms",
        "_conn",
        "_held_since",
        "_loop",
        "_max_batch",
        "_max_hold_s",
        "_name",
        "_progress_ops",
        "_queue",
        "_running",
        "_stopped",
        "_thread",
        "_wait_off",
        "_waits_on_locks",
    )

    def __init__(
        self,
        *,
        name: str,
        batch_results: bool,
        waits_on_locks: bool = False,
        max_batch: int = 32,
        max_hold_s: float = 0.001,
        progress_ops: int = 2000,
    ) -> None:
        self._name = name
        self._batch_results = batch_results
        self._waits_on_locks = waits_on_locks
        self._busy_ms = 0  # the connection's busy_timeout, read when it opens
        self._wait_off = False  # busy_timeout is 0 (a retryable job ran last)
        self._max_batch = max_batch
        self._max_hold_s = max_hold_s
        self._progress_ops = progress_ops
        self._queue: SimpleQueue[_Job | object] = SimpleQueue()
        self._conn: sqlite3.Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._running = False
        self._batch: list[_Done] = []
        self._held_since = 0.0
        self._stopped: asyncio.Future[None] | None = None

    @property
    def connection(self) -> sqlite3.Connection:
        """The connection (only ``interrupt()`` may be called on it from another thread).

        Raises:
            RuntimeError: the worker has not started.
        """
        if self._conn is None:
            raise RuntimeError(f"sqlite worker {self._name} is not started")
        return self._conn

    @property
    def running(self) -> bool:
        """Whether the worker accepts work."""
        return self._running

    async def start(self, connect: Callable[[], sqlite3.Connection]) -> None:
        """Start the thread and open the connection on it with ``connect()``.

        Raises: what ``connect`` raises (the thread has then ended).
        """
        loop = asyncio.get_running_loop()
        self._loop = loop
        ready: asyncio.Future[None] = loop.create_future()
        self._stopped = loop.create_future()
        self._thread = threading.Thread(
            target=self._serve, args=(connect, ready), name=self._name, daemon=True
        )
        self._thread.start()
        await ready
        self._running = True

    def submit(
        self, fn: Callable[..., Any], *args: Any, retryable: bool = False
    ) -> asyncio.Future[Any]:
        """Queue ``fn(connection, *args)``; the future gets its result or exception.

        ``retryable``: the job may run twice — one statement that, when it fails
        with ``SQLITE_BUSY`` outside a transaction, had no effect (SQLite's
        documented retry rule). On a ``waits_on_locks`` worker only such jobs
        keep results held (see the module docstring).

        Raises:
            RuntimeError: the worker is not running.
        """
        if not self._running:
            raise RuntimeError(f"sqlite worker {self._name} is closed")
        assert self._loop is not None
        future: asyncio.Future[Any] = self._loop.create_future()
        self._queue.put((future, fn, args, retryable))
        return future

    async def close(self) -> None:
        """Run what is queued, close the connection, and end the thread."""
        if not self._running:
            return
        self._running = False
        self._queue.put(_STOP)
        assert self._stopped is not None
        await asyncio.shield(self._stopped)

    # -- on the worker's thread ---------------------------------------------

    def _serve(
        self, connect: Callable[[], sqlite3.Connection], ready: asyncio.Future[None]
    ) -> None:
        loop, stopped = self._loop, self._stopped
        assert loop is not None
        assert stopped is not None
        try:
            conn = connect()
        except BaseException as exc:  # noqa: BLE001 - re-raised by start() on the loop
            # One hand-over: once `ready` fails the loop may finish and close
            # before a second call_soon_threadsafe from this thread.
            loop.call_soon_threadsafe(_settle, [_failed(ready, exc), _ok(stopped)])
            return
        self._conn = conn
        if self._waits_on_locks:
            self._busy_ms = int(conn.execute("PRAGMA busy_timeout").fetchone()[0])
        if self._batch_results:
            conn.set_progress_handler(self._flush_from_progress, self._progress_ops)
        loop.call_soon_threadsafe(_settle, [_ok(ready)])
        try:
            self._work(conn)
        finally:
            conn.close()
            loop.call_soon_threadsafe(_settle, [_ok(stopped)])

    def _work(self, conn: sqlite3.Connection) -> None:
        queue, perf = self._queue, time.perf_counter
        batching, max_batch, max_hold = self._batch_results, self._max_batch, self._max_hold_s
        while True:
            job = queue.get()
            while True:
                if job is _STOP:
                    self._flush()
                    return
                future, fn, args, retryable = cast(_Job, job)
                if self._waits_on_locks:
                    done = self._run_waiting(conn, future, fn, args, retryable)
                else:
                    done = _run(conn, future, fn, args)
                batch = self._batch  # _flush() swaps in a new list
                if not batch:
                    self._held_since = perf()
                batch.append(done)
                if not batching:
                    break
                try:
                    job = queue.get_nowait()
                except Empty:
                    break
                if len(batch) >= max_batch or perf() - self._held_since >= max_hold:
                    self._flush()
            self._flush()

    def _run_waiting(
        self,
        conn: sqlite3.Connection,
        future: asyncio.Future[Any],
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        retryable: bool,
    ) -> _Done:
        # A connection that may wait for a lock: a job that may be re-run runs
        # with the wait off, so results stay held across it (module docstring).
        if retryable and not conn.in_transaction:
            self._set_wait(conn, off=True)
            try:
                return (future, True, fn(conn, *args))
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or conn.in_transaction:
                    return (future, False, exc)
            except BaseException as exc:  # noqa: BLE001 - re-raised by the caller
                return (future, False, exc)
            # SQLITE_BUSY with the wait off: nothing was done. Run it again below.
        self._flush()
        self._set_wait(conn, off=False)
        return _run(conn, future, fn, args)

    def _set_wait(self, conn: sqlite3.Connection, *, off: bool) -> None:
        if self._wait_off is not off:
            conn.execute(f"PRAGMA busy_timeout = {0 if off else self._busy_ms}")
            self._wait_off = off

    def _flush(self) -> None:
        if self._batch:
            done, self._batch = self._batch, []
            assert self._loop is not None
            self._loop.call_soon_threadsafe(_settle, done)

    def _flush_from_progress(self) -> int:
        # Called by SQLite every `progress_ops` instructions of a running
        # statement: results held before it go back now. 0 = keep running.
        if self._batch:
            self._flush()
        return 0

    def __repr__(self) -> str:
        return f"<ConnectionWorker {self._name} running={self._running}>"
