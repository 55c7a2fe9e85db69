"""The interface every database backend speaks, and its result types.

A backend implements the private ``_fetch``/``_execute``/``_query`` hooks; the
public methods here run each call through the resource's :class:`CallRunner`
(the resilience pipeline, which also records metrics), so no backend holds a
retry loop or a timer of its own.

Lifecycle (:class:`~iogate.lifecycle.AsyncResource`): unopened → open → closed.
Use ``async with backend:`` or ``await backend.open()`` / ``await backend.close()``.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, Protocol, TypeVar

from iogate.databases.sql import is_read_statement
from iogate.lifecycle import AsyncResource

__all__ = [
    "CallRunner",
    "Column",
    "Database",
    "ExecuteResult",
    "Params",
    "QueryResult",
    "Row",
    "SQLDatabase",
]

T = TypeVar("T")

Params = Sequence[Any] | Mapping[str, Any] | None
"""Statement parameters: a sequence for positional placeholders (``?``, or ``$1``
on PostgreSQL), a mapping for named ones (``:name``), or ``None``. Values are
always bound by the driver, never formatted into the SQL text."""


class Row(Protocol):
    """A result row: indexable by position and by column name.

    ``sqlite3.Row`` and ``asyncpg.Record`` both satisfy it.
    """

    def __getitem__(self, key: Any, /) -> Any: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[Any]: ...
    def keys(self) -> Any: ...


class CallRunner(Protocol):
    """What runs each call of a resource: the resilience pipeline.

    ``idempotent=False`` forbids retries and hedges of that call.
    """

    async def run(
        self, fn: Callable[[], Awaitable[T]], /, *, operation: str, idempotent: bool = True
    ) -> T: ...


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
    """

    columns: tuple[Column, ...]
    rows: list[tuple[Any, ...]]
    rows_affected: int = 0
    last_insert_id: int | None = None

    @property
    def row_count(self) -> int:
        """Rows returned for a query, rows affected for any other statement."""
        return len(self.rows) if self.columns else self.rows_affected


class Database(AsyncResource):
    """A named database of any kind (SQL or Redis).

    Attributes:
        name: the resource name from the config (``"main"``).
        kind: ``"sqlite"``, ``"postgresql"`` or ``"redis"``.
    """

    kind: ClassVar[str]

    def __init__(self, name: str, *, runner: CallRunner | None = None) -> None:
        super().__init__(name)
        self._runner = runner

    @property
    def _what(self) -> str:
        return "database"

    async def ping(self) -> None:
        """Check the database answers (one round trip).

        Raises:
            DatabaseError: it does not.
        """
        await self._call(self._ping, "ping", idempotent=True)

    async def _call(self, fn: Callable[[], Awaitable[T]], operation: str, *, idempotent: bool) -> T:
        self._require_open()
        if self._runner is None:
            return await fn()
        return await self._runner.run(fn, operation=operation, idempotent=idempotent)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self.state.value}>"

    @abstractmethod
    async def _ping(self) -> None: ...


class SQLDatabase(Database):
    """A SQL database (SQLite or PostgreSQL).

    Every method takes the statement and its :data:`Params`. ``idempotent``
    says whether the call may be retried on a transient error; by default a
    statement is idempotent when it is a plain read (``SELECT``, ``VALUES``,
    ``EXPLAIN``, ``SHOW``): writes, and ``WITH`` queries (which may hold a data-
    modifying CTE), are never retried unless the caller says so.

    Errors raised (all :class:`~iogate.errors.DatabaseError`):
    ``QueryError`` (bad SQL or parameters), ``IntegrityError`` (constraint),
    ``TransientDatabaseError`` (connection lost, busy, serialization failure),
    ``ReadOnlyViolation``, and ``OperationTimeout`` past the deadline.
    """

    async def fetch(
        self, sql: str, params: Params = None, *, idempotent: bool | None = None
    ) -> list[Row]:
        """Run a query and return all its rows."""
        fn = partial(self._fetch, sql, params)
        return await self._call(fn, "fetch", idempotent=_idem(sql, idempotent))

    async def fetch_one(
        self, sql: str, params: Params = None, *, idempotent: bool | None = None
    ) -> Row | None:
        """Run a query and return its first row, or ``None`` when it returns none."""
        fn = partial(self._fetch_one, sql, params)
        return await self._call(fn, "fetch_one", idempotent=_idem(sql, idempotent))

    async def fetch_val(
        self, sql: str, params: Params = None, *, column: int = 0, idempotent: bool | None = None
    ) -> Any:
        """Run a query and return one value of its first row (``None`` if no row)."""
        row = await self.fetch_one(sql, params, idempotent=idempotent)
        return None if row is None else row[column]

    async def execute(
        self, sql: str, params: Params = None, *, idempotent: bool | None = None
    ) -> ExecuteResult:
        """Run a statement for its effect: rows affected and last insert id."""
        fn = partial(self._execute, sql, params)
        return await self._call(fn, "execute", idempotent=_idem(sql, idempotent))

    async def query(
        self, sql: str, params: Params = None, *, idempotent: bool | None = None
    ) -> QueryResult:
        """Run one statement of any kind: columns and rows if it returns rows,
        else rows affected. This is what the gateway's query endpoint calls."""
        fn = partial(self._query, sql, params)
        return await self._call(fn, "query", idempotent=_idem(sql, idempotent))

    @abstractmethod
    async def _fetch(self, sql: str, params: Params) -> list[Row]: ...

    @abstractmethod
    async def _fetch_one(self, sql: str, params: Params) -> Row | None: ...

    @abstractmethod
    async def _execute(self, sql: str, params: Params) -> ExecuteResult: ...

    @abstractmethod
    async def _query(self, sql: str, params: Params) -> QueryResult: ...


def _idem(sql: str, idempotent: bool | None) -> bool:
    return is_read_statement(sql) if idempotent is None else idempotent
