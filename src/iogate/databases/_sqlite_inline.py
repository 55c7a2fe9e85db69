"""Tiny SQLite reads on the event loop's own thread, bounded.

A read sent to a reader connection's thread
(:class:`~iogate.databases._sqlite_worker.ConnectionWorker`) costs the event
loop a queue hand-off, a wake-up and a GIL hand-over each way: far more than
SQLite's own work for a point select by key (~30 virtual-machine steps,
~2.5 µs). :class:`InlineReads` runs such a read on a read-only connection of
its own, on the loop's thread, when — and only when — all of these hold:

- **Proven cheap.** The same SQL text (at most :data:`MAX_SQL_CHARS`
  characters: compiling is not bounded by the VM's steps) ran on a reader
  thread within its allowance of that thread's CPU time
  (``time.thread_time``: compile, steps and fetch): ``budget_s`` per
  :data:`SLICE_ROWS` rows it returned, at least ``budget_s``. Every
  statement's first run is on a thread. (The table of verdicts holds at
  most :data:`MAX_STATEMENTS` statements; it is emptied when full.)
- **Bounded while it runs.** SQLite's progress handler
  (sqlite.org/c3ref/progress_handler.html) is called every
  :data:`CHECK_STEPS` VM steps and interrupts a slice (below) past
  ``max_steps`` steps; the connection refuses a string or blob longer than
  :data:`MAX_VALUE_BYTES` and a LIKE/GLOB pattern longer than
  :data:`MAX_PATTERN_BYTES` (``sqlite3_limit``, sqlite.org/c3ref/limit.html),
  which bounds the work of one VM step. ``busy_timeout`` is 0: a lock is never
  waited on here. (No wall-clock bound: the ``sqlite3`` module releases the
  GIL inside each step, so a reader thread's Python work can stretch an
  inline read's wall time without the read doing more; steps are the read's
  own cost.)
- **In slices.** A statement's rows are fetched :data:`SLICE_ROWS` at a
  time; between two slices the read awaits (``asyncio.sleep(0)``), so other
  tasks run, and the step bound and the CPU check below hold per slice: a
  long result costs the loop many short turns, never one long one, and no
  GIL hand-off per row (a reader thread's ``fetchmany`` takes the GIL back
  after every row's step, each time waiting for the loop to let go of it: a
  200-row result cost ~640 µs of the gateway's CPU per request on a thread,
  ~450 µs here). A suspended read holds a connection of its own (opened on
  first need, at most :data:`CONNECTIONS`: another read never shares its
  snapshot, which a connection with an open statement keeps); with all of
  them held, a read goes to a thread.
- **Never starving the loop.** A read answered in one slice does not await:
  a task calling ``fetch_one`` in a loop would then never let another task
  run. Once reads answered back to back have taken :data:`TURN_S` of CPU
  without the loop turning in between (a callback it runs resets the
  count), the next one awaits a loop turn (``asyncio.sleep(0)``) before it
  answers.
- **Rerun, never answered differently.** A read cut short by those bounds, or
  failing here for any reason, is run again on a reader thread, whose outcome
  — rows or error — is the answer. Reads have no effects (the connection is
  ``PRAGMA query_only`` under the readers' authorizer, as every reader is),
  so running one twice changes nothing.

Once eligible, a statement is judged by its inline runs alone. One cut
short here is *heavy* until threads have run it within its allowance
:data:`COOLDOWN` times (a statement whose cost depends on its parameters is
tried here again, now and then); so is one with a slice that took more than
:data:`HEAVY_FACTOR` times ``budget_s`` of CPU all the same (one VM step that
does much, such as ``count(*)`` of a large table, cannot be cut; such a
statement is never cheap on a thread either). A slower slice is forgiven: the
loop's CPU clock, like a thread's, counts the spinning of its waits for the
GIL while reader threads are busy (a 32-row slice measured 95-345 µs then,
~25 µs without them), and a garbage collection that happened to run. For
the same reason a statement over its allowance on a thread, but within
:data:`HEAVY_FACTOR` times it, gets an inline trial after :data:`COOLDOWN`
such runs (under load, a 200-row read measured 215-860 µs of a thread's CPU
and ~25 µs per slice inline). So a read blocks the loop for at most about
``max_steps`` steps at a time, or once for the one step it cannot cut.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, Final

from iogate.databases._sqlite_guard import take_denial

__all__ = [
    "CHECK_STEPS",
    "CONNECTIONS",
    "COOLDOWN",
    "MAX_SQL_CHARS",
    "MAX_STATEMENTS",
    "MAX_STEPS",
    "HEAVY_FACTOR",
    "InlineReads",
    "InlineStats",
    "NotInline",
    "SLICE_ROWS",
    "Steps",
    "TURN_S",
]

#: VM steps between two calls of the progress handler
CHECK_STEPS: Final = 100
#: longest SQL text run inline (compiling is not bounded by the VM's steps)
MAX_SQL_CHARS: Final = 2000
#: most statements whose verdict is kept
MAX_STATEMENTS: Final = 4096
#: the default VM-step bound of an inline run
MAX_STEPS: Final = 1000
#: cheap thread runs a statement cut short inline needs before it is tried inline again
COOLDOWN: Final = 16
#: an inline run over this many times ``budget_s`` of CPU makes its statement heavy
HEAVY_FACTOR: Final = 10
#: rows fetched in one slice of an inline read
SLICE_ROWS: Final = 32
#: CPU seconds of inline reads answered back to back without the loop turning,
#: after which a read awaits one loop turn before it answers
TURN_S: Final = 0.002
#: inline connections (reads suspended between slices at once, at most)
CONNECTIONS: Final = 32
#: ``SQLITE_LIMIT_LENGTH`` of the inline connection, bytes
MAX_VALUE_BYTES: Final = 65536
#: ``SQLITE_LIMIT_LIKE_PATTERN_LENGTH`` of the inline connection, bytes
MAX_PATTERN_BYTES: Final = 100

# A statement's verdict: eligible while > _HEAVY (_STRUCK: on an inline trial);
# cut short (or far over) inline, it waits for COOLDOWN cheap thread runs
# before it is tried here again.
_CLEAN, _STRUCK, _HEAVY = 2, 1, 0
_SQLITE_TOOBIG: Final = 18  # sqlite.org/rescode.html#toobig
_thread_time = time.thread_time

Steps = Callable[..., Generator[None, Any, Any]]
"""A statement run in slices: ``steps(conn, *args)`` is a generator that
yields between two slices of rows (resumed with ``None``: one slice more)
and returns the answer."""


@dataclass(frozen=True, slots=True, kw_only=True)
class InlineStats:
    """Counters of an :class:`InlineReads` (reads, statements)."""

    inline: int
    """reads answered on the loop's thread"""
    rerun: int
    """reads cut short or failed here, run again on a reader thread"""
    sliced: int
    """of the reads answered inline, those that took more than one slice"""
    cheap: int
    """statements run inline"""
    heavy: int
    """statements kept on the reader threads"""


class NotInline(Exception):
    """:meth:`InlineReads.run` did not answer: run the read on a reader thread."""


class InlineReads:
    """The loop thread's read-only connections and the verdicts on statements
    (see the module docstring).

    Args:
        connect: opens one connection as a reader is (``query_only``, the
            readers' authorizer) with ``busy_timeout = 0`` and
            ``check_same_thread=False``; called on the loop's thread when a
            read finds every connection held, up to ``max_connections``
            (each one is used from the loop's thread only; its limits and
            progress handler are set here; :meth:`close` closes them).
        budget_s: the most CPU time a cheap statement takes per slice, seconds (> 0).
        max_steps: the most VM steps one slice may take (≥ 1; a point
            select by key takes ~30, a 20-row range ~150, a 200-row one
            ~1,400 in all).
        max_connections: connections at most (≥ 1): reads suspended between
            slices at once.

    Raises:
        ValueError: ``budget_s`` ≤ 0, ``max_steps`` < 1 or ``max_connections`` < 1.
    """

    __slots__ = (
        "_checks_left",
        "_connect",
        "_conns",
        "_free",
        "_inline",
        "_max_checks",
        "_rerun",
        "_sliced",
        "_turn_armed",
        "_unturned_s",
        "_verdicts",
        "budget_s",
        "max_connections",
        "max_steps",
    )

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        *,
        budget_s: float,
        max_steps: int = MAX_STEPS,
        max_connections: int = CONNECTIONS,
    ) -> None:
        if budget_s <= 0:
            raise ValueError(f"budget_s must be > 0, got {budget_s!r}")
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps!r}")
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections!r}")
        self._connect = connect
        self._conns: list[sqlite3.Connection] = []
        self._free: list[sqlite3.Connection] = []  # not held by a suspended read
        self.budget_s = budget_s
        self.max_steps = max_steps
        self.max_connections = max_connections
        # The handler's first call may come after fewer than CHECK_STEPS steps
        # (SQLite counts a cached statement's steps across its runs), so one
        # call more than max_steps / CHECK_STEPS are allowed.
        self._max_checks = max_steps // CHECK_STEPS + 1
        self._checks_left = 0
        self._verdicts: dict[str, int] = {}
        self._inline = 0
        self._rerun = 0
        self._sliced = 0
        self._unturned_s = 0.0  # CPU of the reads answered since the loop last turned
        self._turn_armed = False  # a loop callback will reset that

    def close(self) -> None:
        """Close every connection opened (a read still suspended fails on its next slice)."""
        conns, self._conns, self._free = self._conns, [], []
        for conn in conns:
            conn.close()

    def eligible(self, sql: str) -> bool:
        """Whether ``sql`` is proven cheap (its verdict is kept)."""
        return self._verdicts.get(sql, _HEAVY) > _HEAVY

    def learn(self, sql: str, cpu_s: float, rows: int = 1) -> None:
        """Record a reader thread's successful run of ``sql`` that took
        ``cpu_s`` of its CPU time and returned ``rows`` rows.

        Its allowance is ``budget_s`` per slice of rows (``budget_s`` per
        :data:`SLICE_ROWS` rows, at least ``budget_s``). Within it, the
        statement is cheap (after a cut, one cheap run of :data:`COOLDOWN`);
        over it but within :data:`HEAVY_FACTOR` times it, one run nearer an
        inline trial (:data:`COOLDOWN` such runs make one: a thread's CPU
        clock counts its waits for the GIL after every row, so a long result
        costs a thread more than the loop); far over, the count starts again.
        A statement that is eligible keeps its verdict: its inline runs judge it."""
        if len(sql) > MAX_SQL_CHARS:
            return
        verdicts = self._verdicts
        verdict = verdicts.get(sql)
        if verdict is not None and verdict > _HEAVY:
            return
        allowance = max(self.budget_s, self.budget_s * rows / SLICE_ROWS)
        if verdict is None and len(verdicts) >= MAX_STATEMENTS:
            verdicts.clear()
        if cpu_s <= allowance:
            verdicts[sql] = _CLEAN if verdict is None or verdict >= _HEAVY - 1 else verdict + 1
        elif cpu_s <= HEAVY_FACTOR * allowance:
            # one step nearer a trial: _STRUCK, so one more slow slice ends it
            verdicts[sql] = 1 - COOLDOWN if verdict is None else min(verdict + 1, _STRUCK)
        else:
            verdicts[sql] = -COOLDOWN

    async def run(self, sql: str, steps: Steps, *args: Any) -> Any:
        """``steps(conn, *args)`` for the eligible statement ``sql``, driven
        slice by slice (each bounded; the loop runs other tasks in between),
        which judges it: a slice over :data:`HEAVY_FACTOR` times ``budget_s``
        of CPU, or one cut short by a bound, makes it not eligible until
        :data:`COOLDOWN` thread runs; otherwise it is cheap.

        Raises:
            NotInline: every connection is held by a suspended read, or the
                run was cut short, or failed (for any reason): run it on a
                reader thread, whose answer is the answer.
            asyncio.CancelledError: the caller was cancelled between two
                slices (the statement is reset, its connection freed).
        """
        free = self._free
        if free:
            conn = free.pop()
        elif len(self._conns) < self.max_connections:
            conn = self._open()
        else:
            raise NotInline
        run = steps(conn, *args)
        slices, worst, spent = 0, 0.0, 0.0
        try:
            while True:
                self._checks_left = self._max_checks
                cpu = _thread_time()
                try:
                    next(run)
                except StopIteration as done:
                    result = done.value
                    break
                except Exception as exc:  # noqa: BLE001 - any failure: rerun on a thread
                    self._cut(sql, conn, exc)
                    raise NotInline from None
                finally:
                    cpu = _thread_time() - cpu
                    worst = max(worst, cpu)
                    spent += cpu
                slices += 1
                await asyncio.sleep(0)  # other tasks run; this read holds its connection
        finally:
            run.close()  # a read cut or cancelled between slices: its cursor is closed
            free.append(conn)  # (after close(), to a list no longer used)
        self._judge(sql, worst)
        self._inline += 1
        if slices:
            self._sliced += 1
        if self._starving(spent):
            await asyncio.sleep(0)  # (the reset callback runs first: it was queued before)
        return result

    def _starving(self, spent_s: float) -> bool:
        """Whether the reads answered since the loop last turned (this one took
        ``spent_s`` of CPU) have taken more than :data:`TURN_S`; the first one
        after a turn queues the callback that resets the count."""
        self._unturned_s += spent_s
        if not self._turn_armed:
            self._turn_armed = True
            asyncio.get_running_loop().call_soon(self._turned)
            return False
        return self._unturned_s > TURN_S

    def _turned(self) -> None:
        self._unturned_s = 0.0
        self._turn_armed = False

    def _open(self) -> sqlite3.Connection:
        conn = self._connect()
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
        conn.setlimit(sqlite3.SQLITE_LIMIT_LIKE_PATTERN_LENGTH, MAX_PATTERN_BYTES)
        conn.set_progress_handler(self._check, CHECK_STEPS)
        self._conns.append(conn)
        return conn

    def _judge(self, sql: str, worst_s: float) -> None:
        # An inline run answered; its slowest slice took worst_s of CPU. Only
        # a slice far over the budget counts: the loop thread's CPU clock also
        # counts its waits for the GIL after every row (with reader threads
        # busy, a 32-row slice measured 95-345 us instead of ~15), and the
        # step bound already held each slice.
        if worst_s > HEAVY_FACTOR * self.budget_s:
            self._verdicts[sql] = -COOLDOWN  # a step the handler could not cut
        else:
            self._verdicts[sql] = _CLEAN

    def _cut(self, sql: str, conn: sqlite3.Connection, exc: Exception) -> None:
        # An inline run failed: count it, judge the statement, leave the
        # connection as a reader's (no transaction, no refusal remembered).
        self._rerun += 1
        take_denial()  # the thread's run reports a refusal itself
        too_big = getattr(exc, "sqlite_errorcode", None) == _SQLITE_TOOBIG
        if too_big or self._checks_left <= 0:
            self._verdicts[sql] = -COOLDOWN  # cut short by a bound
        elif conn.in_transaction:
            conn.rollback()  # (a read opens none; never leave one open)

    def stats(self) -> InlineStats:
        """Frozen counters."""
        cheap = sum(1 for v in self._verdicts.values() if v > _HEAVY)
        return InlineStats(
            inline=self._inline,
            rerun=self._rerun,
            sliced=self._sliced,
            cheap=cheap,
            heavy=len(self._verdicts) - cheap,
        )

    def _check(self) -> int:
        # SQLite's progress handler: non-zero interrupts the statement.
        self._checks_left -= 1
        return self._checks_left <= 0
