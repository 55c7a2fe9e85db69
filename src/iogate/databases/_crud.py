"""CRUD helpers: INSERT / UPDATE / DELETE / upsert built from a table name and
a mapping, with ``RETURNING``; :class:`CrudMethods` gives them to
:class:`~iogate.databases.base.SQLDatabase` (``db.insert(...)`` and so on).

Identifiers are never trusted: the table and every column are checked
against the live schema (SQLite's ``pragma_table_info``, PostgreSQL's
``information_schema.columns``) and then double-quoted (``"a""b"``, the SQL
standard's quoting, which both engines follow). Values are always bound
(``?`` placeholders), never written into the SQL.

The column lists are cached per table; a name not found in the cache is
looked up once more before it is refused, so columns added at run time are
picked up.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from iogate.errors import QueryError

if TYPE_CHECKING:
    from iogate.databases.results import QueryResult

__all__ = [
    "CrudMethods",
    "Returning",
    "SchemaCache",
    "build_delete",
    "build_insert",
    "build_update",
    "build_upsert",
    "quote_ident",
]

Returning = Sequence[str] | Literal["*"] | None
"""Columns a CRUD helper returns: names, ``"*"`` for all, or ``None`` for none."""

Introspect = Callable[[str], Awaitable[tuple[str, ...]]]


def quote_ident(name: str) -> str:
    """``name`` as a quoted SQL identifier; ``schema.table`` is quoted part by part.

    Raises:
        QueryError: an empty name or part, or a NUL character.
    """
    parts = name.split(".")
    if any(not p or "\x00" in p for p in parts):
        raise QueryError(f"invalid identifier {name!r}")
    return ".".join('"' + p.replace('"', '""') + '"' for p in parts)


class SchemaCache:
    """Column names per table, read from the live schema by ``introspect(table)``
    (which returns ``()`` for a table that does not exist)."""

    __slots__ = ("_columns", "_introspect", "_resource")

    def __init__(self, introspect: Introspect, *, resource: str) -> None:
        self._introspect = introspect
        self._resource = resource
        self._columns: dict[str, frozenset[str]] = {}

    async def check(self, table: str, names: Sequence[str]) -> None:
        """Raise :class:`QueryError` unless ``table`` exists with every column of ``names``."""
        known = self._columns.get(table)
        if known is None or not known.issuperset(names):
            known = frozenset(await self._introspect(table))
            if known:
                self._columns[table] = known
            else:
                self._columns.pop(table, None)
        if not known:
            raise QueryError(f"no table {table!r}", resource=self._resource, operation="crud")
        unknown = [n for n in names if n not in known]
        if unknown:
            raise QueryError(
                f"table {table!r} has no column {unknown[0]!r}",
                resource=self._resource,
                operation="crud",
            )

    def forget(self, table: str | None = None) -> None:
        """Drop the cached columns of ``table`` (every table when ``None``)."""
        if table is None:
            self._columns.clear()
        else:
            self._columns.pop(table, None)


def returning_names(returning: Returning) -> list[str]:
    """The column names ``returning`` asks for (empty for ``"*"`` and ``None``)."""
    if returning is None or returning == "*":
        return []
    if isinstance(returning, str):
        raise QueryError("returning must be a list of column names or '*'")
    return list(returning)


def _returning(returning: Returning) -> str:
    if returning is None:
        return ""
    if returning == "*":
        return " RETURNING *"
    return " RETURNING " + ", ".join(quote_ident(c) for c in returning_names(returning))


def _where(where: Mapping[str, Any], args: list[Any]) -> str:
    if not where:
        raise QueryError("where must name at least one column (refusing a whole-table change)")
    terms = []
    for column, value in where.items():
        if value is None:
            terms.append(f"{quote_ident(column)} IS NULL")
        else:
            terms.append(f"{quote_ident(column)} = ?")
            args.append(value)
    return " WHERE " + " AND ".join(terms)


def build_insert(
    table: str, data: Mapping[str, Any], returning: Returning
) -> tuple[str, list[Any]]:
    """``INSERT INTO "t" ("a", "b") VALUES (?, ?) [RETURNING ...]`` and its arguments."""
    if not data:
        return f"INSERT INTO {quote_ident(table)} DEFAULT VALUES{_returning(returning)}", []
    columns = ", ".join(quote_ident(c) for c in data)
    marks = ", ".join("?" for _ in data)
    sql = f"INSERT INTO {quote_ident(table)} ({columns}) VALUES ({marks}){_returning(returning)}"  # noqa: S608
    return sql, list(data.values())


def build_update(
    table: str, data: Mapping[str, Any], where: Mapping[str, Any], returning: Returning
) -> tuple[str, list[Any]]:
    """``UPDATE "t" SET "a" = ? WHERE "id" = ? [RETURNING ...]`` and its arguments."""
    if not data:
        raise QueryError("update needs at least one column to set")
    args = list(data.values())
    sets = ", ".join(f"{quote_ident(c)} = ?" for c in data)
    sql = f"UPDATE {quote_ident(table)} SET {sets}{_where(where, args)}{_returning(returning)}"  # noqa: S608
    return sql, args


def build_delete(
    table: str, where: Mapping[str, Any], returning: Returning
) -> tuple[str, list[Any]]:
    """``DELETE FROM "t" WHERE "id" = ? [RETURNING ...]`` and its arguments."""
    args: list[Any] = []
    sql = f"DELETE FROM {quote_ident(table)}{_where(where, args)}{_returning(returning)}"  # noqa: S608
    return sql, args


def build_upsert(
    table: str, data: Mapping[str, Any], key: Sequence[str], returning: Returning
) -> tuple[str, list[Any]]:
    """``INSERT ... ON CONFLICT ("key") DO UPDATE SET "a" = excluded."a"`` (DO NOTHING when
    every column is in the key). ``key`` names the columns of a unique
    constraint or primary key (postgresql.org/docs/current/sql-insert.html,
    sqlite.org/lang_upsert.html)."""
    if not key or isinstance(key, str):
        raise QueryError("upsert needs key: the list of columns of a unique constraint")
    missing = [k for k in key if k not in data]
    if missing:
        raise QueryError(f"upsert key column {missing[0]!r} is not in data")
    sql, args = build_insert(table, data, None)
    updates = [c for c in data if c not in key]
    target = ", ".join(quote_ident(k) for k in key)
    if updates:
        sets = ", ".join(f"{quote_ident(c)} = excluded.{quote_ident(c)}" for c in updates)
        action = f"DO UPDATE SET {sets}"
    else:
        action = "DO NOTHING"
    return f"{sql} ON CONFLICT ({target}) {action}{_returning(returning)}", args


class CrudMethods:
    """``insert``/``update``/``delete``/``upsert`` of a SQL database (a base of
    :class:`~iogate.databases.base.SQLDatabase`, which sets ``_schema`` and
    provides ``query``)."""

    _schema: SchemaCache

    query: Callable[..., Awaitable[QueryResult]]  # SQLDatabase.query

    async def insert(
        self, table: str, data: Mapping[str, Any], *, returning: Returning = None
    ) -> QueryResult:
        """``INSERT`` one row; ``returning`` columns come back in ``rows``.

        The table and columns are checked against the live schema and quoted;
        values are bound. Raises QueryError for an unknown table or column.
        """
        await self._schema.check(table, [*data, *returning_names(returning)])
        sql, args = build_insert(table, data, returning)
        return await self.query(sql, args, idempotent=False)

    async def update(
        self,
        table: str,
        data: Mapping[str, Any],
        *,
        where: Mapping[str, Any],
        returning: Returning = None,
    ) -> QueryResult:
        """``UPDATE`` the rows whose columns equal ``where`` (ANDed; ``None`` is
        ``IS NULL``; must not be empty). ``row_count`` is rows updated."""
        await self._schema.check(table, [*data, *where, *returning_names(returning)])
        sql, args = build_update(table, data, where, returning)
        return await self.query(sql, args, idempotent=False)

    async def delete(
        self, table: str, *, where: Mapping[str, Any], returning: Returning = None
    ) -> QueryResult:
        """``DELETE`` the rows whose columns equal ``where`` (must not be empty)."""
        await self._schema.check(table, [*where, *returning_names(returning)])
        sql, args = build_delete(table, where, returning)
        return await self.query(sql, args, idempotent=False)

    async def upsert(
        self,
        table: str,
        data: Mapping[str, Any],
        *,
        key: Sequence[str],
        returning: Returning = None,
    ) -> QueryResult:
        """Insert a row, or update the row with the same ``key`` columns
        (``ON CONFLICT (key) DO UPDATE``; ``key`` must name a unique constraint)."""
        await self._schema.check(table, [*data, *returning_names(returning)])
        sql, args = build_upsert(table, data, key, returning)
        return await self.query(sql, args, idempotent=False)
