"""The result types of the database interface, and the shapes of its arguments.

:class:`QueryResult` (any statement), :class:`ExecuteResult` (a statement run for
its effect), :class:`Column`, :class:`Parameter` and :class:`Description` (what
``describe`` learns), the :class:`Row` protocol rows satisfy, and the
:data:`Params` / :data:`Statement` aliases.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "Column",
    "Description",
    "ExecuteResult",
    "Parameter",
    "Params",
    "QueryResult",
    "Row",
    "Statement",
]

Params = Sequence[Any] | Mapping[str, Any] | None
"""Statement parameters: a sequence for positional placeholders (``?``, or ``$1``
on PostgreSQL), a mapping for named ones (``:name``), or ``None``. Values are
always bound by the driver, never formatted into the SQL text."""


Statement = str | tuple[str, Params]
"""One statement of a batch: the SQL alone, or ``(sql, params)``."""


class Row(Protocol):
    """A result row: indexable by position and by column name.

    ``sqlite3.Row`` and ``asyncpg.Record`` both satisfy it.
    """

    def __getitem__(self, key: Any, /) -> Any: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[Any]: ...
    def keys(self) -> Any: ...


@dataclass(frozen=True, slots=True)
class Column:
    """A result column: its name and the type the engine declares, if any
    (SQLite: the declared column type, or ``None`` for expressions; PostgreSQL:
    the type name, e.g. ``int4``)."""

    name: str
    type: str | None = None


@dataclass(frozen=True, slots=True)
class ExecuteResult:
    """What a statement that returns no rows did.

    Attributes:
        rows_affected: rows inserted, updated or deleted (0 for DDL).
        last_insert_id: SQLite's rowid of the last insert; ``None`` on
            PostgreSQL (use ``RETURNING``).
    """

    rows_affected: int
    last_insert_id: int | None = None


@dataclass(frozen=True, slots=True)
class QueryResult:
    """The whole outcome of one statement of any kind.

    Attributes:
        columns: the result columns; empty for a statement that returns no rows.
        rows: the rows, as tuples in column order.
        rows_affected: rows changed by an INSERT/UPDATE/DELETE, else 0.
        last_insert_id: as :attr:`ExecuteResult.last_insert_id`.
        truncated: the statement was read under
            :class:`~iogate.databases.guard.ResultLimits` and produced more
            rows than ``max_rows`` (only ``max_rows`` are here) or more JSON
            than ``max_bytes`` (the reading stopped past the cap; the rows past
            it are cut when the result is rendered).
        encoded: the JSON encoding (``to_json_rows``) of the first
            ``len(encoded)`` rows, when reading them already made it (a
            bounded read measures every chunk after the first);
            :func:`~iogate.databases.guard.result_body` reuses it, so no row
            is converted twice. Not compared, not shown.
    """

    columns: tuple[Column, ...]
    rows: list[tuple[Any, ...]]
    rows_affected: int = 0
    last_insert_id: int | None = None
    truncated: bool = False
    encoded: list[list[Any]] = field(default_factory=list, compare=False, repr=False)

    @property
    def row_count(self) -> int:
        """Rows returned for a query, rows affected for any other statement."""
        return len(self.rows) if self.columns else self.rows_affected


@dataclass(frozen=True, slots=True)
class Parameter:
    """A statement parameter: ``name`` for ``:name`` placeholders (else
    ``None``), and the type the engine infers (PostgreSQL), if any."""

    name: str | None
    type: str | None = None


@dataclass(frozen=True, slots=True)
class Description:
    """What a statement takes and returns, learnt without running it."""

    columns: tuple[Column, ...]
    parameters: tuple[Parameter, ...]
