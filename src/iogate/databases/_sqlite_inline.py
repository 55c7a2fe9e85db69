"""Tiny SQLite reads on the event loop's own thread, bounded.

A read sent to a reader connection's thread
(:class:`~iogate.databases._sqlite_worker.ConnectionWorker`) costs the event
loop a queue hand-off, a wake-up and a GIL hand-over each way: far more than
SQLite's own work for a point select by key (~30 virtual-machine steps,
~2.5 µs). :class:`InlineReads` runs such a read on a read-only connection of
its own, on the loop's thread, when — and only when — all of these hold:

- **Proven cheap.** The same SQL text (at most :data:`MAX_SQL_CHARS`
  characters: compiling is not bounded by the VM's steps) last ran on a
  reader thread within ``budget_s`` of that thread's CPU time
  (``time.thread_time``: compile, steps and fetch; waits for the GIL do not
  count). Every statement's first run is on a thread, and every run on a
  thread renews its verdict. (The table of verdicts holds at most
  :data:`MAX_STATEMENTS` statements; it is emptied when full.)
- **Bounded while it runs.** SQLite's progress handler
  (sqlite.org/c3ref/progress_handler.html) is called every
  :data:`CHECK_STEPS` VM steps and interrupts the statement past
  ``max_steps`` steps; the connection refuses a string or blob longer than
  :data:`MAX_VALUE_BYTES` and a LIKE/GLOB pattern longer than
  :data:`MAX_PATTERN_BYTES` (``sqlite3_limit``, sqlite.org/c3ref/limit.html),
  which bounds the work of one VM step. ``busy_timeout`` is 0: a lock is never
  waited on here. (No wall-clock bound: the ``sqlite3`` module releases the
  GIL inside each step, so a reader thread's Python work can stretch an
  inline read's wall time without the read doing more; steps are the read's
  own cost.)
- **Rerun, never answered differently.** A read cut short by those bounds, or
  failing here for any reason, is run again on a reader thread, whose outcome
  — rows or error — is the answer. Reads have no effects (the connection is
  ``PRAGMA query_only`` under the readers' authorizer, as every reader is),
  so running one twice changes nothing.

A statement cut short here is *heavy* until threads have run it within the
budget :data:`COOLDOWN` times (a statement whose cost depends on its
parameters is tried here again, now and then); so is one whose inline run
took more than :data:`HEAVY_FACTOR` times ``budget_s`` of CPU all the same
(one VM step that does much, such as ``count(*)`` of a large table, cannot be
cut; such a statement is never cheap on a thread either). One whose thread
runs took more than ``budget_s`` twice in a row is heavy until a thread runs
it within the budget (once is forgiven: a thread's CPU clock counts a
garbage collection that happened to run, and now and then jumps by ~0.1 ms
under load on this project's machines). So a read blocks the loop for at most about
``max_steps`` steps, or once for the one step it cannot cut.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "CHECK_STEPS",
    "COOLDOWN",
    "MAX_SQL_CHARS",
    "MAX_STATEMENTS",
    "MAX_STEPS",
    "HEAVY_FACTOR",
    "InlineReads",
    "InlineStats",
    "NotInline",
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
#: ``SQLITE_LIMIT_LENGTH`` of the inline connection, bytes
MAX_VALUE_BYTES: Final = 65536
#: ``SQLITE_LIMIT_LIKE_PATTERN_LENGTH`` of the inline connection, bytes
MAX_PATTERN_BYTES: Final = 100

# A statement's verdict: eligible while > _HEAVY; a thread's over-budget run
# takes a strike; cut short (or far over) inline, it waits for COOLDOWN cheap
# thread runs before it is tried here again.
_CLEAN, _STRUCK, _HEAVY = 2, 1, 0
_SQLITE_TOOBIG: Final = 18  # sqlite.org/rescode.html#toobig
_thread_time = time.thread_time


@dataclass(frozen=True, slots=True, kw_only=True)
class InlineStats:
    """Counters of an :class:`InlineReads` (reads, statements)."""

    inline: int
    """reads answered on the loop's thread"""
    rerun: int
    """reads cut short or failed here, run again on a reader thread"""
    cheap: int
    """statements run inline"""
    heavy: int
    """statements kept on the reader threads"""


class NotInline(Exception):
    """:meth:`InlineReads.run` did not answer: run the read on a reader thread."""


class InlineReads:
    """The loop thread's read-only connection and the verdicts on statements
    (see the module docstring).

    Args:
        conn: a connection opened as a reader is (``query_only``, the
            readers' authorizer) with ``busy_timeout = 0`` and
            ``check_same_thread=False``; used from the loop's thread only;
            its limits and progress handler are set here.
        budget_s: the most CPU time a cheap statement takes, seconds (> 0).
        max_steps: the most VM steps an inline run may take (≥ 1; a point
            select by key takes ~30, a 20-row range ~150, a 200-row one
            ~1,400).

    Raises:
        ValueError: ``budget_s`` ≤ 0 or ``max_steps`` < 1.
    """

    __slots__ = (
        "_checks_left",
        "_conn",
        "_inline",
        "_max_checks",
        "_rerun",
        "_verdicts",
        "budget_s",
        "max_steps",
    )

    def __init__(
        self, conn: sqlite3.Connection, *, budget_s: float, max_steps: int = MAX_STEPS
    ) -> None:
        if budget_s <= 0:
            raise ValueError(f"budget_s must be > 0, got {budget_s!r}")
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps!r}")
        self._conn = conn
        self.budget_s = budget_s
        self.max_steps = max_steps
        # The handler's first call may come after fewer than CHECK_STEPS steps
        # (SQLite counts a cached statement's steps across its runs), so one
        # call more than max_steps / CHECK_STEPS are allowed.
        self._max_checks = max_steps // CHECK_STEPS + 1
        self._checks_left = 0
        self._verdicts: dict[str, int] = {}
        self._inline = 0
        self._rerun = 0
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
        conn.setlimit(sqlite3.SQLITE_LIMIT_LIKE_PATTERN_LENGTH, MAX_PATTERN_BYTES)
        conn.set_progress_handler(self._check, CHECK_STEPS)

    @property
    def connection(self) -> sqlite3.Connection:
        """The inline connection (closed by its owner)."""
        return self._conn

    def eligible(self, sql: str) -> bool:
        """Whether ``sql`` is proven cheap (its verdict is kept)."""
        return self._verdicts.get(sql, _HEAVY) > _HEAVY

    def learn(self, sql: str, cpu_s: float) -> None:
        """Record a reader thread's successful run of ``sql`` that took
        ``cpu_s`` of its CPU time: cheap within the budget, else a strike."""
        if len(sql) > MAX_SQL_CHARS:
            return
        verdicts = self._verdicts
        verdict = verdicts.get(sql)
        if cpu_s <= self.budget_s:
            if verdict is None and len(verdicts) >= MAX_STATEMENTS:
                verdicts.clear()
            if verdict is None or verdict >= _HEAVY - 1:
                verdicts[sql] = _CLEAN
            else:  # cooling down after a run cut short here
                verdicts[sql] = verdict + 1
        elif verdict is not None and verdict > _HEAVY:
            verdicts[sql] = verdict - 1

    def run(self, sql: str, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(conn, *args)`` for the eligible statement ``sql``, bounded.

        Raises:
            NotInline: the run was cut short, or failed (``sqlite3.Error``):
                run it on a reader thread, whose answer is the answer.
        """
        self._checks_left = self._max_checks
        cpu = _thread_time()
        try:
            result = fn(self._conn, *args)
        except sqlite3.Error as exc:
            self._rerun += 1
            too_big = getattr(exc, "sqlite_errorcode", None) == _SQLITE_TOOBIG
            if too_big or self._checks_left <= 0:
                self._verdicts[sql] = -COOLDOWN  # cut short by a bound
            elif self._conn.in_transaction:
                self._conn.rollback()  # (a read opens none; never leave one open)
            raise NotInline from None
        if _thread_time() - cpu > HEAVY_FACTOR * self.budget_s:
            self._verdicts[sql] = -COOLDOWN  # a step the handler could not cut
        self._inline += 1
        return result

    def stats(self) -> InlineStats:
        """Frozen counters."""
        cheap = sum(1 for v in self._verdicts.values() if v > _HEAVY)
        return InlineStats(
            inline=self._inline,
            rerun=self._rerun,
            cheap=cheap,
            heavy=len(self._verdicts) - cheap,
        )

    def _check(self) -> int:
        # SQLite's progress handler: non-zero interrupts the statement.
        self._checks_left -= 1
        return self._checks_left <= 0
