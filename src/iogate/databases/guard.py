"""What the engine enforces on one caller's SQL, and how big its results may be.

A :class:`SQLGuard` travels with a statement to the backend, which enforces
it with the database's own machinery, never by reading the SQL text:

- ``read_only``: PostgreSQL runs the statement in a ``READ ONLY`` transaction
  that is rolled back (postgresql.org/docs/current/sql-set-transaction.html:
  INSERT, UPDATE, DELETE, MERGE, DDL, ``nextval()``, data-modifying CTEs and
  functions that write all fail with SQLSTATE 25006); SQLite runs it on a
  reader connection in ``PRAGMA query_only`` mode whose authorizer
  (sqlite.org/c3ref/set_authorizer.html) also refuses PRAGMA assignments,
  ATTACH/DETACH and anything but reads.
- ``tables``: the tables (or views) the statement may touch. SQLite checks
  every table access at prepare time with the authorizer; PostgreSQL checks
  the relations of the statement's plan (``EXPLAIN (VERBOSE, FORMAT JSON)``
  on the same connection, arguments bound) before running it, so only
  plannable statements (SELECT, INSERT, UPDATE, DELETE, MERGE, VALUES) pass.
  Tables reached only inside a function body are not in the plan: for hard
  isolation on PostgreSQL, give the caller's database role only the grants
  it needs.
- ``role``: PostgreSQL only (other backends ignore it): the database role the
  statement runs as, on a connection that *logged in* as that role (a pool of
  its own, see :mod:`iogate.databases.postgres`). What it may do is that
  role's GRANTs; ``SET ROLE``/``RESET ROLE``/``SET SESSION AUTHORIZATION``
  cannot reach a role it is not a member of.

A violation raises :class:`~iogate.errors.ReadOnlyViolation`,
:class:`~iogate.errors.TableNotAllowed` or (a privilege the role lacks)
:class:`~iogate.errors.PermissionDenied` (each 403 at the gateway).

:class:`ResultLimits` bounds what a caller gets back: at most ``max_rows``
rows (the rest are dropped and the result says ``truncated``) and at most
``max_bytes`` bytes of JSON for the rows. The backends enforce it while the
rows are read (:class:`BoundedRead`): they stop at ``max_rows + 1`` rows (the
extra row says ``truncated``) or once the rows read take more than
``max_bytes`` bytes of JSON, so a statement producing millions of rows costs
a few chunks of memory, never the whole result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import orjson

from iogate.databases._values import to_json_rows
from iogate.databases.results import QueryResult

__all__ = [
    "READ_CHUNK_ROWS",
    "UNRESTRICTED",
    "BoundedRead",
    "ResultLimits",
    "SQLGuard",
    "fit_body",
    "result_body",
    "table_allowed",
]

READ_CHUNK_ROWS: Final = 1000
"""Rows a bounded read asks the driver for at a time (the byte cap is checked
after each chunk)."""


@dataclass(frozen=True, slots=True)
class SQLGuard:
    """What the engine enforces on a caller's statements.

    Attributes:
        read_only: run in the engine's read-only mode.
        tables: the tables and views the statement may read or write, as
            ``name`` or ``schema.name`` (case-insensitive); ``None`` for any.
        role: PostgreSQL: the database role to run as (the database must have
            a login configured for it); ``None``: the database's own login.
    """

    read_only: bool = False
    tables: frozenset[str] | None = None
    role: str | None = None

    @property
    def unrestricted(self) -> bool:
        """Neither read-only, nor limited to some tables, nor run as a role."""
        return not self.read_only and self.tables is None and self.role is None


UNRESTRICTED = SQLGuard()


def table_allowed(tables: frozenset[str], name: str, schema: str | None = None) -> bool:
    """Whether ``schema.name`` (or ``name``) is in the allowlist ``tables``."""
    lowered = name.lower()
    if lowered in tables:
        return True
    return schema is not None and f"{schema.lower()}.{lowered}" in tables


@dataclass(frozen=True, slots=True)
class ResultLimits:
    """How much of a result a caller gets.

    Attributes:
        max_rows: rows kept (the rest are dropped, ``truncated`` is set), ≥ 1.
        max_bytes: bytes of JSON the rows may take (rows past it are dropped,
            ``truncated`` is set), ≥ 1.
    """

    max_rows: int
    max_bytes: int

    def __post_init__(self) -> None:
        if self.max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, got {self.max_rows}")
        if self.max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {self.max_bytes}")

    def tightened(self, max_rows: int | None, max_bytes: int | None) -> ResultLimits:
        """These limits, lowered to a caller's own caps where those are tighter."""
        rows = self.max_rows if max_rows is None else min(self.max_rows, max_rows)
        size = self.max_bytes if max_bytes is None else min(self.max_bytes, max_bytes)
        if rows == self.max_rows and size == self.max_bytes:
            return self
        return ResultLimits(max_rows=rows, max_bytes=size)


class BoundedRead:
    """The bookkeeping of one result read under :class:`ResultLimits`, chunk by chunk.

    The reader asks the driver for :meth:`next_size` rows (SQLite
    ``cursor.fetchmany``, PostgreSQL an Execute message with that row limit)
    and hands each chunk to :meth:`add`, which says whether to read on. A
    chunk shorter than asked means the result ended; a first chunk that ends
    the result is never measured (a point select pays one comparison). The
    read stops at ``max_rows + 1`` rows, or once the JSON of the rows read
    (:func:`~iogate.databases._values.to_json_rows`, measured exactly as
    :func:`result_body` measures it) passes ``max_bytes``; :meth:`finish`
    then drops the extra row. Rows past the byte cap are cut by
    :func:`result_body` / :func:`fit_body`, which find the same total. The
    measured chunks' encoding is kept in :attr:`encoded` (a prefix of
    :attr:`rows`) for :func:`result_body`: a row is converted once.

    Args:
        limits: the caller's caps.
    """

    __slots__ = ("_max_bytes", "_size", "_want", "encoded", "rows", "stopped")

    def __init__(self, limits: ResultLimits) -> None:
        self._want = limits.max_rows + 1
        self._max_bytes = limits.max_bytes
        self._size = 2  # the JSON array's brackets
        self.rows: list[Any] = []
        self.encoded: list[list[Any]] = []  # to_json_rows of rows[: len(encoded)]
        self.stopped = False  # a cap ended the read before the result did

    def next_size(self, chunk_rows: int = READ_CHUNK_ROWS) -> int:
        """Rows to ask for next (≥ 1), at most ``chunk_rows``."""
        return min(self._want - len(self.rows), chunk_rows)

    def add(self, chunk: list[Any], asked: int) -> bool:
        """Take ``chunk`` (the driver's answer to ``asked`` rows); ``True`` to read on."""
        rows = self.rows
        if not rows and len(chunk) < asked:
            self.rows = chunk  # the whole result in one chunk: nothing to measure
            return False
        rows.extend(chunk)
        if len(chunk) < asked:
            return False
        if len(rows) >= self._want:
            self.stopped = True
            return False
        # one dumps per chunk: its length is the sum of (row + comma) plus 1
        encoded = to_json_rows(chunk)
        self.encoded += encoded
        self._size += len(orjson.dumps(encoded)) - 1
        if self._size > self._max_bytes:
            self.stopped = True
            return False
        return True

    def finish(self) -> tuple[list[Any], bool]:
        """The rows kept (at most ``max_rows``) and whether a cap dropped any."""
        rows = self.rows
        if len(rows) >= self._want:
            del rows[self._want - 1 :]  # (encoded never reaches it: the last chunk is not)
            return rows, True
        return rows, self.stopped


def result_body(
    result: QueryResult, limits: ResultLimits | None, *, fit_bytes: bool = True
) -> dict[str, Any]:
    """A statement's result as JSON-safe data: ``columns``, ``column_types``,
    ``rows`` (arrays in iogate's value encoding), ``row_count`` (rows returned,
    or affected by a write), ``last_insert_id``, and ``truncated: true`` when
    ``limits`` dropped rows (``row_count`` then counts the rows kept).

    ``fit_bytes=False`` leaves the byte cap to the caller (who measures the
    encoded response anyway, see :func:`fit_body`)."""
    rows = result.rows
    truncated = result.truncated
    if limits is not None and len(rows) > limits.max_rows:
        rows = rows[: limits.max_rows]
        truncated = True
    done = result.encoded  # rows the read already encoded (a prefix)
    if done:
        json_rows = done[: len(rows)]
        json_rows += to_json_rows(rows[len(json_rows) :])
    else:
        json_rows = to_json_rows(rows)
    if fit_bytes and limits is not None and json_rows:
        json_rows, cut = _fit(json_rows, limits.max_bytes)
        truncated = truncated or cut
    body: dict[str, Any] = {
        "columns": [c.name for c in result.columns],
        "column_types": [c.type for c in result.columns],
        "rows": json_rows,
        "row_count": len(json_rows) if result.columns else result.rows_affected,
        "last_insert_id": result.last_insert_id,
    }
    if truncated:
        body["truncated"] = True
    return body


def fit_body(body: dict[str, Any], max_bytes: int) -> dict[str, Any]:
    """``body`` (a :func:`result_body`) with trailing rows dropped so that its
    rows take at most ``max_bytes`` bytes of JSON (``truncated`` set if any were)."""
    rows, cut = _fit(body["rows"], max_bytes)
    if not cut:
        return body
    fitted = dict(body)
    fitted["rows"] = rows
    if body["columns"]:
        fitted["row_count"] = len(rows)
    fitted["truncated"] = True
    return fitted


def _fit(rows: list[list[Any]], max_bytes: int) -> tuple[list[list[Any]], bool]:
    # Cheap bound first: most results are far below the cap.
    if len(rows) * 16 < max_bytes and len(orjson.dumps(rows)) <= max_bytes:
        return rows, False
    total = 2  # the brackets
    for index, row in enumerate(rows):
        total += len(orjson.dumps(row)) + 1
        if total > max_bytes:
            return rows[:index], True
    return rows, False
