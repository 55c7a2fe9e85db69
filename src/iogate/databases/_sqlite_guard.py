"""SQLite's side of :mod:`iogate.databases.guard`: an authorizer, and describe.

:class:`Authorizer` is a ``sqlite3`` authorizer callback
(sqlite.org/c3ref/set_authorizer.html): SQLite asks it about every action of a
statement while compiling it (each table and column read, each insert,
update, delete, PRAGMA, ATTACH...). ``read_only`` allows reads only (plus
PRAGMA queries without an assignment, and transaction control, which the
caller checks afterwards); ``tables`` allows access to the listed tables and
views only (a table read through a listed view is allowed), and no DDL,
PRAGMA (but ``table_info``-style ones on listed tables) or ATTACH.

SQLite only consults the authorizer when it compiles a statement, and a
connection's statement cache keeps compiled statements. Setting an authorizer
expires every compiled statement of the connection (``sqlite3_set_authorizer``
calls ``sqlite3ExpirePreparedStatements``), so a statement cached under
another authorizer is recompiled, and checked, before it runs again.

A refusal raises ``sqlite3.DatabaseError`` with ``SQLITE_AUTH``; the reason is
kept per thread (each connection has its own thread) in :func:`take_denial`
so that the backend raises ReadOnlyViolation or TableNotAllowed.

:func:`describe` compiles a statement with ``sqlite3_prepare_v2`` and reads
its columns and parameters through the C API (ctypes), without stepping it:
the ``sqlite3`` module has no prepare-only call (``execute`` always steps).
"""

from __future__ import annotations

import ctypes
import sqlite3
import sys
import threading
from typing import Final

from iogate.databases.guard import SQLGuard, table_allowed

__all__ = ["READER_AUTHORIZER", "Authorizer", "describe", "take_denial"]

_OK: Final = sqlite3.SQLITE_OK
_DENY: Final = sqlite3.SQLITE_DENY
_READS: Final = frozenset(
    {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
)
_TX_CONTROL: Final = frozenset({sqlite3.SQLITE_TRANSACTION, sqlite3.SQLITE_SAVEPOINT})
_ROW_WRITES: Final = frozenset(
    {sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE}
)
# PRAGMAs whose argument names a table or an index: reads of the schema.
_TABLE_PRAGMAS: Final = frozenset(
    {"table_info", "table_xinfo", "index_list", "index_info", "index_xinfo", "foreign_key_list"}
)
_SCHEMA_TABLES: Final = frozenset({"sqlite_master", "sqlite_schema", "sqlite_temp_master"})
_ACTION_NAMES: Final = {
    getattr(sqlite3, n): n.removeprefix("SQLITE_").replace("_", " ")
    for n in dir(sqlite3)
    if n.startswith(("SQLITE_CREATE", "SQLITE_DROP", "SQLITE_ALTER"))
    or n
    in (
        "SQLITE_INSERT",
        "SQLITE_UPDATE",
        "SQLITE_DELETE",
        "SQLITE_PRAGMA",
        "SQLITE_ATTACH",
        "SQLITE_DETACH",
        "SQLITE_REINDEX",
        "SQLITE_ANALYZE",
    )
}

_DENIAL = threading.local()


def take_denial() -> tuple[str, str] | None:
    """The reason of the last refusal on this thread, ``(kind, detail)`` with
    kind ``"read-only"`` or ``"table"``, and forget it."""
    denial: tuple[str, str] | None = getattr(_DENIAL, "reason", None)
    _DENIAL.reason = None
    return denial


def _deny(kind: str, detail: str) -> int:
    _DENIAL.reason = (kind, detail)
    return _DENY


class Authorizer:
    """An authorizer callback enforcing a :class:`~iogate.databases.guard.SQLGuard`."""

    __slots__ = ("read_only", "tables")

    def __init__(self, *, read_only: bool, tables: frozenset[str] | None) -> None:
        self.read_only = read_only
        self.tables = tables

    @classmethod
    def of(cls, guard: SQLGuard) -> Authorizer:
        """The authorizer of ``guard``."""
        return cls(read_only=guard.read_only, tables=guard.tables)

    def __call__(
        self, action: int, arg1: str | None, arg2: str | None, db: str | None, source: str | None
    ) -> int:
        if action in _READS or action in _TX_CONTROL:
            if action == sqlite3.SQLITE_READ and self.tables is not None:
                return self._table(arg1, db, source)
            return _OK
        if action == sqlite3.SQLITE_PRAGMA:
            return self._pragma(arg1 or "", arg2, db)
        if self.read_only:
            # Compiling a table-valued PRAGMA function updates the schema table's
            # cursor; no statement can write sqlite_master (writable_schema is a
            # PRAGMA assignment, refused above).
            if action == sqlite3.SQLITE_UPDATE and arg1 in _SCHEMA_TABLES and self.tables is None:
                return _OK
            what = _ACTION_NAMES.get(action, "this statement")
            target = f" {arg1}" if arg1 and action in _ROW_WRITES else ""
            return _deny("read-only", f"{what}{target} refused: this key is read-only")
        if self.tables is not None:
            if action in _ROW_WRITES:
                return self._table(arg1, db, source)
            what = _ACTION_NAMES.get(action, "this statement")
            return _deny("table", f"{what} refused: this key is limited to some tables")
        return _OK

    def _table(self, table: str | None, db: str | None, source: str | None) -> int:
        assert self.tables is not None
        if table and table_allowed(self.tables, table, db):
            return _OK
        if source and table_allowed(self.tables, source, db):
            return _OK  # through an allowed view (or trigger)
        return _deny("table", f"table {table!r} is not in this key's allowlist")

    def _pragma(self, name: str, arg: str | None, db: str | None) -> int:
        lowered = name.lower()
        if self.tables is not None:
            if lowered in _TABLE_PRAGMAS and arg and table_allowed(self.tables, arg, db):
                return _OK
            return _deny("table", f"PRAGMA {lowered} refused: this key is limited to some tables")
        if self.read_only and arg is not None and lowered not in _TABLE_PRAGMAS:
            return _deny("read-only", f"PRAGMA {lowered} assignment refused: this key is read-only")
        return _OK

    def __repr__(self) -> str:
        return f"Authorizer(read_only={self.read_only}, tables={self.tables})"


READER_AUTHORIZER: Final = Authorizer(read_only=True, tables=None)
"""The authorizer every reader connection keeps: reads only (it holds no state)."""


# -- describe (C API through ctypes) -------------------------------------------------


class _CApi:
    """The few ``sqlite3_*`` functions describe needs, from the library the
    ``sqlite3`` module is linked with."""

    def __init__(self) -> None:
        import _sqlite3

        lib = ctypes.CDLL(_sqlite3.__file__)
        vp, cp, i = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
        self.prepare = lib.sqlite3_prepare_v2
        self.prepare.argtypes = [vp, cp, i, ctypes.POINTER(vp), ctypes.POINTER(vp)]
        self.prepare.restype = i
        self.finalize = lib.sqlite3_finalize
        self.finalize.argtypes = [vp]
        self.errmsg = lib.sqlite3_errmsg
        self.errmsg.argtypes = [vp]
        self.errmsg.restype = cp
        self.filename = lib.sqlite3_db_filename
        self.filename.argtypes = [vp, cp]
        self.filename.restype = cp
        self.column_count = lib.sqlite3_column_count
        self.column_count.argtypes = [vp]
        self.column_name = lib.sqlite3_column_name
        self.column_name.argtypes = [vp, i]
        self.column_name.restype = cp
        self.column_decltype = lib.sqlite3_column_decltype
        self.column_decltype.argtypes = [vp, i]
        self.column_decltype.restype = cp
        self.param_count = lib.sqlite3_bind_parameter_count
        self.param_count.argtypes = [vp]
        self.param_name = lib.sqlite3_bind_parameter_name
        self.param_name.argtypes = [vp, i]
        self.param_name.restype = cp


_API: list[_CApi] = []


def _handle(conn: sqlite3.Connection, path: str) -> tuple[_CApi, int]:
    # CPython's connection object starts with its ``sqlite3 *db`` right after
    # the object header (Modules/_sqlite/connection.h, 3.11 to 3.13). The
    # pointer is checked against the file the connection has open before use.
    if sys.implementation.name != "cpython" or not (3, 11) <= sys.version_info[:2] <= (3, 13):
        raise sqlite3.NotSupportedError("describe needs CPython 3.11 to 3.13 for SQLite")
    if not _API:
        _API.append(_CApi())
    api = _API[0]
    handle = ctypes.c_void_p.from_address(id(conn) + object.__basicsize__).value
    if not handle:
        raise sqlite3.ProgrammingError("the connection is closed")
    expected = b"" if path == ":memory:" or path.startswith("file::memory:") else None
    name = api.filename(handle, b"main") or b""
    if (expected is not None and name != expected) or (
        expected is None and not name.endswith(path.encode().rsplit(b"/", 1)[-1])
    ):
        raise sqlite3.NotSupportedError("describe cannot reach this SQLite connection")
    return api, handle


def describe(
    conn: sqlite3.Connection, path: str, sql: str
) -> tuple[list[tuple[str, str | None]], list[str | None]]:
    """Compile ``sql`` on ``conn`` without running it: its result columns
    ``(name, declared type)`` and its parameters (``:name`` → ``"name"``,
    ``?`` → ``None``). Runs on the connection's thread.

    Raises:
        sqlite3.Error: it does not compile (the authorizer's refusals
            included), holds several statements, or is empty.
    """
    api, handle = _handle(conn, path)
    try:
        encoded = sql.encode()
    except UnicodeEncodeError:
        raise sqlite3.ProgrammingError("the statement is not valid UTF-8") from None
    if b"\x00" in encoded:
        raise sqlite3.ProgrammingError("the statement contains a null character")
    buffer = ctypes.create_string_buffer(encoded)
    stmt, tail = ctypes.c_void_p(), ctypes.c_void_p()
    rc = api.prepare(handle, buffer, len(encoded) + 1, ctypes.byref(stmt), ctypes.byref(tail))
    if rc != sqlite3.SQLITE_OK:
        message = (api.errmsg(handle) or b"cannot compile").decode(errors="replace")
        error = (
            sqlite3.DatabaseError(message) if rc & 0xFF == 23 else sqlite3.OperationalError(message)
        )
        error.sqlite_errorcode = rc
        raise error
    if not stmt.value:
        raise sqlite3.ProgrammingError("the statement is empty")
    try:
        rest = encoded[(tail.value or 0) - ctypes.addressof(buffer) :]
        if rest.strip():
            _ensure_no_statement(api, handle, rest)
        columns = []
        for index in range(api.column_count(stmt)):
            name = (api.column_name(stmt, index) or b"").decode()
            decl = api.column_decltype(stmt, index)
            columns.append((name, decl.decode() if decl else None))
        params: list[str | None] = []
        for index in range(1, api.param_count(stmt) + 1):
            raw = api.param_name(stmt, index)
            text = raw.decode() if raw else None
            params.append(text[1:] if text and text[0] in ":@$" else None)
        return columns, params
    finally:
        api.finalize(stmt)


def _ensure_no_statement(api: _CApi, handle: int, rest: bytes) -> None:
    stmt, tail = ctypes.c_void_p(), ctypes.c_void_p()
    rc = api.prepare(handle, rest, len(rest), ctypes.byref(stmt), ctypes.byref(tail))
    if stmt.value:
        api.finalize(stmt)
    if rc != sqlite3.SQLITE_OK or stmt.value:
        raise sqlite3.ProgrammingError("You can only execute one statement at a time.")
