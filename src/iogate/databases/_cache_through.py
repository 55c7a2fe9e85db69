"""Read-through caching of a SQL database's query results, and invalidation after its writes.

:class:`CacheThrough` is the part of :class:`~iogate.databases.base.SQLDatabase`
that talks to the cache: the key of a query (:meth:`~CacheThrough.cache_key`), the
tags of its result (the tables it reads, :mod:`iogate.databases._tables`), the
read-through of ``fetch(..., cache_ttl_s=)``, and the invalidation of the tags of
the tables a write changed (:meth:`~CacheThrough._written`; a transaction's
writes are noted by :class:`Recording` and invalidated when it commits).

The cache is anything with the two methods of :class:`ResultCache` (the
Gateway's :class:`~iogate.cache.tiered.TieredCache` has them); tag names and the
key digest come from :mod:`iogate._cache_keys`, below both the cache and the
databases, so nothing here imports :mod:`iogate.cache`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from iogate._cache_keys import database_tag, digest, table_tag, unknown_tables_tag
from iogate.databases._sql import is_read_statement
from iogate.databases._tables import StatementTables, extract_tables
from iogate.databases.results import ExecuteResult, Params, QueryResult, Row
from iogate.errors import IntegrityError, QueryError, ReadOnlyViolation

if TYPE_CHECKING:
    from iogate.databases.guard import ResultLimits
    from iogate.databases.transactions import TxConnection

__all__ = ["CacheThrough", "Recording", "ResultCache"]

_TABLES_CACHED = 1024  # statements whose tables are remembered, per database

T = TypeVar("T")


class ResultCache(Protocol):
    """What a SQL database needs from a cache: a single-flight read-through and
    invalidation by tag (:class:`~iogate.cache.tiered.TieredCache` satisfies it)."""

    async def get_or_load(
        self,
        key: str,
        loader: Callable[[], Awaitable[T]],
        *,
        ttl_s: float,
        tags: Iterable[str],
    ) -> T:
        """The value under ``key``; on a miss ``await loader()``, kept ``ttl_s``
        seconds under ``tags``."""
        ...

    async def invalidate_tags(self, tags: Iterable[str]) -> object:
        """Drop every entry carrying one of ``tags``."""
        ...


class CacheThrough:
    """The cache side of a SQL database (a base of
    :class:`~iogate.databases.base.SQLDatabase`, which sets the fields below)."""

    name: str
    _cache: ResultCache | None
    _tables: dict[str, StatementTables]

    async def _read_through(
        self,
        sql: str,
        params: Params,
        load: Callable[[], Awaitable[list[Row]]],
        *,
        ttl_s: float,
        key: str | None,
    ) -> list[Row]:
        """``fetch(sql, params, cache_ttl_s=ttl_s, cache_key=key)``: ``load`` through
        the cache, tagged with the tables ``sql`` reads.

        Raises:
            ValueError: no cache, ``ttl_s`` not positive, or ``sql`` not a plain read.
        """
        cache = self._cache
        if cache is None or ttl_s <= 0:
            raise ValueError("cache_ttl_s needs a cache (Gateway) and a positive number of seconds")
        if not is_read_statement(sql):
            raise ValueError("cache_ttl_s applies to reads (SELECT, VALUES, SHOW, TABLE) only")
        if key is None:
            key = self.cache_key(sql, params)
        tags = await self.cache_tags(sql, params)
        return await cache.get_or_load(key, load, ttl_s=ttl_s, tags=tags)

    def cache_key(self, sql: str, params: Params = None) -> str:
        """The default cache key of a query: ``sql:<database>:<sha256>`` of the
        SQL and its parameters (stable across processes)."""
        prefix = self.name.encode() + b"\0" + sql.encode() + b"\0"
        try:
            hashed = digest(params, prefix=prefix)
        except TypeError:
            hashed = hashlib.sha256(prefix + repr(_freeze(params)).encode()).hexdigest()
        return f"sql:{self.name}:{hashed}"

    async def cache_tags(self, sql: str, params: Params = None) -> tuple[str, ...]:
        """The tags of a cached result of ``sql``: the database's tag, and each
        table it reads (or, when those are uncertain, the database's
        "unknown tables" tag, which every write invalidates)."""

        tables = await self.statement_tables(sql, params)
        tags = [database_tag(self.name), *(table_tag(self.name, t) for t in tables.reads)]
        if not tables.certain:
            tags.append(unknown_tables_tag(self.name))
        return tuple(tags)

    async def statement_tables(self, sql: str, params: Params = None) -> StatementTables:
        """The tables ``sql`` reads and writes (:mod:`iogate.databases._tables`),
        remembered per SQL text; forgotten whenever an uncertain statement (DDL)
        is seen."""
        known = self._tables.get(sql)
        if known is not None:
            return known
        tables = await self._statement_tables(sql, params)
        if not tables.certain:
            self._tables.clear()  # DDL may have changed what views and triggers touch
        elif len(self._tables) >= _TABLES_CACHED:
            self._tables.clear()
        self._tables[sql] = tables
        return tables

    async def _statement_tables(self, sql: str, params: Params) -> StatementTables:
        """The engine's answer; by default a conservative text extraction."""
        return extract_tables(sql)

    async def _invalidate_writes(self, statements: Iterable[tuple[str, Params]]) -> None:
        """Invalidate the cached queries the statements' writes may have changed."""
        cache = self._cache
        if cache is None:
            return

        tags: set[str] = set()
        for sql, params in statements:
            tables = await self.statement_tables(sql, params)
            if not tables.certain:
                tags = {database_tag(self.name)}
                break
            tags.update(table_tag(self.name, t) for t in tables.writes)
        if tags and database_tag(self.name) not in tags:
            tags.add(unknown_tables_tag(self.name))
        if tags:
            await cache.invalidate_tags(tags)

    async def _written(self, call: Awaitable[T], statements: Sequence[tuple[str, Params]]) -> T:
        """Await a write, then invalidate what it changed — also when it failed in a
        way that leaves its effect unknown (timeout, lost connection)."""
        if self._cache is None:
            return await call
        try:
            result = await call
        except (QueryError, IntegrityError, ReadOnlyViolation):
            raise  # refused by the engine: nothing was written
        except BaseException:
            await self._invalidate_writes(statements)
            raise
        await self._invalidate_writes(statements)
        return result


class Recording:
    """A transaction's connection that notes the statements that may write
    (the query cache is invalidated for them once the transaction commits)."""

    __slots__ = ("_conn", "written")

    def __init__(self, conn: TxConnection) -> None:
        self._conn = conn
        self.written: list[tuple[str, Params]] = []

    def _note(self, sql: str, params: Params) -> None:
        if not is_read_statement(sql):
            self.written.append((sql, params))

    async def fetch(self, sql: str, params: Params) -> list[Row]:
        self._note(sql, params)
        return await self._conn.fetch(sql, params)

    async def fetch_one(self, sql: str, params: Params) -> Row | None:
        self._note(sql, params)
        return await self._conn.fetch_one(sql, params)

    async def execute(self, sql: str, params: Params) -> ExecuteResult:
        self._note(sql, params)
        return await self._conn.execute(sql, params)

    async def execute_many(self, sql: str, params: Sequence[Params]) -> ExecuteResult:
        rows = list(params)
        self._note(sql, rows[0] if rows else None)
        return await self._conn.execute_many(sql, rows)

    async def query(
        self, sql: str, params: Params, limits: ResultLimits | None = None
    ) -> QueryResult:
        self._note(sql, params)
        return await self._conn.query(sql, params, limits)

    async def command(self, sql: str) -> None:
        await self._conn.command(sql)


def _freeze(value: Any) -> Hashable:
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, Hashable):
        return value
    return repr(value)
