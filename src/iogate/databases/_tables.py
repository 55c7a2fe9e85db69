"""Which tables a SQL statement reads and writes — for the query cache's tags.

A cached query result is tagged with the tables it read; a write made
through iogate invalidates the tags of the tables it wrote (see
:mod:`iogate.cache.tags`). Getting this wrong in the unsafe direction would
let a cached query hide a write, so each engine is asked in the way it can
answer exactly, and anything uncertain falls back to the coarse answer:

- **SQLite: the engine's authorizer** (``sqlite3_set_authorizer``,
  sqlite.org/c3ref/set_authorizer.html). The statement is compiled with
  ``EXPLAIN`` (compiled, never run) on the database's own connection while an
  authorizer records every ``SQLITE_READ`` / ``INSERT`` / ``UPDATE`` /
  ``DELETE`` it is asked about. SQLite reports the tables behind views and
  the tables written by triggers, so the answer is what the engine will
  touch. DDL, ``ATTACH``, ``PRAGMA`` or a statement that fails to compile
  makes the answer uncertain.
- **PostgreSQL: a conservative extraction.** Names after ``FROM``, ``JOIN``,
  ``INTO``, ``UPDATE`` and ``TABLE`` tag the results of reads (useful for
  invalidating by table by hand), but a write is always *uncertain*: a view,
  a rule, a trigger or a function may touch tables the text does not name,
  and only the catalog could tell. So every write to a PostgreSQL database
  invalidates all of that database's cached queries — coarse, never stale.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["StatementTables", "extract_tables", "sqlite_tables"]


@dataclass(frozen=True, slots=True)
class StatementTables:
    """Tables a statement reads and writes (lower-cased names).

    ``certain`` is ``False`` when the statement may touch tables not listed:
    its results are then tagged "unknown" and its writes invalidate the
    whole database.
    """

    reads: frozenset[str]
    writes: frozenset[str]
    certain: bool


UNCERTAIN = StatementTables(frozenset(), frozenset(), certain=False)

# sqlite3 authorizer action codes (sqlite.org/c3ref/c_alter_table.html).
_READ, _INSERT, _UPDATE, _DELETE = 20, 18, 23, 9
_HARMLESS = frozenset({21, 31, 22, 33})  # SELECT, FUNCTION, TRANSACTION, RECURSIVE


def sqlite_tables(
    conn: sqlite3.Connection, sql: str, params: Sequence[Any] | Mapping[str, Any]
) -> StatementTables:
    """Ask SQLite's authorizer which tables ``sql`` touches (run on the
    connection's own thread; the authorizer is removed before returning)."""
    reads: set[str] = set()
    writes: set[str] = set()
    uncertain = False

    def record(action: int, arg1: str | None, arg2: str | None, db: str | None, _: Any) -> int:
        nonlocal uncertain
        if action in (_READ, _INSERT, _UPDATE, _DELETE):
            if arg1 is None or arg1.lower().startswith("sqlite_"):
                return sqlite3.SQLITE_OK
            name = arg1.lower() if db in (None, "main", "temp") else f"{db}.{arg1}".lower()
            (reads if action == _READ else writes).add(name)
        elif action not in _HARMLESS:
            uncertain = True  # DDL, ATTACH, PRAGMA, ...: anything may change
        return sqlite3.SQLITE_OK

    conn.set_authorizer(record)
    try:
        conn.execute("EXPLAIN " + sql, params).close()
    except sqlite3.Error:
        uncertain = True  # it will fail when run, too; nothing to trust here
    finally:
        conn.set_authorizer(None)
    return StatementTables(frozenset(reads), frozenset(writes), certain=not uncertain)


_NAME = r'(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'
_AFTER = re.compile(
    rf"\b(?:FROM|JOIN|INTO|UPDATE|TABLE)\s+(?:ONLY\s+)?({_NAME}(?:\s*\.\s*{_NAME})?)",
    re.IGNORECASE,
)
_COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.S)
_STRINGS = re.compile(r"'(?:[^']|'')*'")


def extract_tables(sql: str) -> StatementTables:
    """The relation names ``sql`` mentions after ``FROM``/``JOIN``/``INTO``/
    ``UPDATE``/``TABLE`` (schema-qualified names keep their schema); never
    ``certain`` — see the module docstring."""
    text = _STRINGS.sub("''", _COMMENTS.sub(" ", sql))
    names = set()
    for match in _AFTER.finditer(text):
        parts = [p.strip() for p in re.split(r"\s*\.\s*(?=(?:[^\"]*\"[^\"]*\")*[^\"]*$)", match[1])]
        name = ".".join(p[1:-1].replace('""', '"') if p.startswith('"') else p for p in parts)
        names.add(name.lower())
    return StatementTables(frozenset(names), frozenset(), certain=False)
