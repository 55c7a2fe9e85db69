"""The interface every database backend speaks.

:class:`Database` (any database: lifecycle, ``ping``, ``stats``) and
:class:`SQLDatabase` (the public SQL methods, and the private hooks a backend
implements). The result types live in :mod:`iogate.databases.results` (and are
re-exported here); the read-through cache and the invalidation after writes in
:mod:`iogate.databases._cache_through`; ``insert``/``update``/``delete``/``upsert``
in :mod:`iogate.databases._crud`.

A backend implements the private ``_fetch``/``_execute``/``_query`` hooks; the
public methods here run each call through the resource's :class:`CallRunner`
(the resilience pipeline, which also records metrics), so no backend holds a
retry loop or a timer of its own.

Lifecycle (:class:`~iogate.lifecycle.AsyncResource`): unopened → open → closed.
Use ``async with backend:`` or ``await backend.open()`` / ``await backend.close()``.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

from iogate.databases._cache_through import CacheThrough, Recording, ResultCache
from iogate.databases._crud import CrudMethods, SchemaCache
from iogate.databases._sql import is_read_statement
from iogate.databases.results import (
    Column,
    Description,
    ExecuteResult,
    Parameter,
    Params,
    QueryResult,
    Row,
    Statement,
)
from iogate.databases.stats import PoolStats
from iogate.databases.streaming import MAX_CHUNK_ROWS, RowStream, StreamSource
from iogate.databases.transactions import (
    ISOLATION_LEVELS,
    Transaction,
    TransactionScope,
    TxConnection,
)
from iogate.errors import OperationError, TransientDatabaseError
from iogate.lifecycle import AsyncResource, ResourceState
from iogate.policies.runner import CallRunner

if TYPE_CHECKING:
    from iogate.databases.guard import ResultLimits, SQLGuard

_OPEN = ResourceState.OPEN

__all__ = [
    "CallRunner",
    "Column",
    "Database",
    "Description",
    "ExecuteResult",
    "Parameter",
    "Params",
    "QueryResult",
    "ResultCache",
    "Row",
    "SQLDatabase",
    "Statement",
]

T = TypeVar("T")


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

    @abstractmethod
    def stats(self) -> PoolStats:
        """The connection pool's statistics now (a frozen snapshot; no I/O)."""

    async def probe(self) -> None:
        """One round trip to the database, outside the resilience pipeline (no
        retry, no breaker, not recorded): what a readiness check calls.

        Raises:
            RuntimeError: the database is not open.
            DatabaseError: it does not answer.
        """
        self._require_open()
        await self._ping()

    def _call(
        self, fn: Callable[[], Awaitable[T]], operation: str, *, idempotent: bool
    ) -> Coroutine[Any, Any, T]:
        """The awaitable of one call through the runner (the caller awaits it).

        Not a coroutine itself: every suspension of a call resumes each frame
        of its chain, so one frame less here is one less on every resume.
        """
        if self.state is not _OPEN:
            self._require_open()
        runner = self._runner
        if runner is None:
            return cast("Coroutine[Any, Any, T]", fn())  # every backend's fn is a coroutine
        return runner.run(fn, operation=operation, idempotent=idempotent)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self.state.value}>"

    @abstractmethod
    async def _ping(self) -> None: ...


class SQLDatabase(CrudMethods, CacheThrough, Database):
    """A SQL database (SQLite or PostgreSQL).

    Every method takes the statement and its :data:`Params`. ``idempotent``
    says whether the call may be retried on a transient error; by default a
    statement is idempotent when it is a plain read (``SELECT``, ``VALUES``,
    ``SHOW``, ``TABLE``): writes, and ``WITH`` queries (which may hold a data-
    modifying CTE), are never retried unless the caller says so.

    Errors raised (all :class:`~iogate.errors.DatabaseError`):
    ``QueryError`` (bad SQL or parameters, with ``position``), ``IntegrityError``
    (constraint, with ``constraint``), ``TransientDatabaseError`` (connection
    lost, busy, serialization failure, deadlock), ``ReadOnlyViolation``, and
    ``OperationTimeout`` past the deadline.

    Args:
        name: resource name.
        runner: the resilience pipeline each call runs through.
        cache: where ``fetch(..., cache_ttl_s=)`` keeps results: any
            :class:`ResultCache` (the Gateway passes its
            :class:`~iogate.cache.tiered.TieredCache`); without one, ``cache_ttl_s``
            is refused. With one, cached results are tagged with the tables they
            read, and every write made through this object (``execute``,
            ``execute_many``, a writing ``query``/``fetch``, the CRUD helpers,
            ``batch``, a committed ``transaction``) invalidates the tags of the
            tables it wrote before it returns (:mod:`iogate.databases._tables`).
    """

    def __init__(
        self, name: str, *, runner: CallRunner | None = None, cache: ResultCache | None = None
    ) -> None:
        super().__init__(name, runner=runner)
        self._cache = cache
        self._schema = SchemaCache(self._introspect, resource=name)
        self._tables = {}

    async def fetch(
        self,
        sql: str,
        params: Params = None,
        *,
        idempotent: bool | None = None,
        cache_ttl_s: float | None = None,
        cache_key: str | None = None,
    ) -> list[Row]:
        """Run a query and return all its rows.

        With ``cache_ttl_s`` (seconds, > 0) the rows are read through the cache
        (:meth:`ResultCache.get_or_load`; the TieredCache's is single-flight,
        with tiers and stale windows): a hit returns the cached list (shared:
        do not mutate it; rows read back from Redis are
        :class:`~iogate.cache.serialization.CachedRow`), a miss runs the query
        and keeps the rows for ``cache_ttl_s`` seconds under ``cache_key``
        (default: a hash of database name, SQL and parameters), tagged with the
        tables the query reads (:meth:`cache_tags`).

        Raises:
            ValueError: ``cache_ttl_s`` without a cache, not positive, or on a
                statement that is not a plain read.
        """
        if cache_ttl_s is None:
            fn = partial(self._fetch, sql, params)
            read = is_read_statement(sql)
            call = self._call(fn, "fetch", idempotent=read if idempotent is None else idempotent)
            return await (call if read else self._written(call, [(sql, params)]))
        load = partial(self.fetch, sql, params, idempotent=idempotent)
        return await self._read_through(sql, params, load, ttl_s=cache_ttl_s, key=cache_key)

    def fetch_one(
        self, sql: str, params: Params = None, *, idempotent: bool | None = None
    ) -> Coroutine[Any, Any, Row | None]:
        """Run a query and return its first row, or ``None`` when it returns none.

        Returns the call's coroutine (to await): one frame less on the hot path.
        """
        fn = partial(self._fetch_one, sql, params)
        read = is_read_statement(sql)
        call = self._call(fn, "fetch_one", idempotent=read if idempotent is None else idempotent)
        return call if read else self._written(call, [(sql, params)])

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
        call = self._call(fn, "execute", idempotent=_idem(sql, idempotent))
        return await self._written(call, [(sql, params)])

    async def execute_many(
        self, sql: str, params: Sequence[Params], *, idempotent: bool = False
    ) -> ExecuteResult:
        """Run one statement once per parameter set, atomically (all sets or none).

        ``rows_affected`` is the total on SQLite; on PostgreSQL asyncpg's
        ``executemany`` reports no command tags, so it is the number of
        parameter sets run. Never retried unless ``idempotent=True``.
        """
        rows = list(params)
        fn = partial(self._execute_many, sql, rows)
        call = self._call(fn, "execute_many", idempotent=idempotent)
        return await self._written(call, [(sql, rows[0] if rows else None)])

    async def query(
        self,
        sql: str,
        params: Params = None,
        *,
        idempotent: bool | None = None,
        limits: ResultLimits | None = None,
    ) -> QueryResult:
        """Run one statement of any kind: columns and rows if it returns rows,
        else rows affected. This is what the gateway's query endpoint calls.

        ``limits``: read at most ``limits.max_rows + 1`` rows, and stop once the
        rows read take more than ``limits.max_bytes`` bytes of JSON (SQLite
        ``fetchmany``; PostgreSQL an Execute message with a row limit, see
        :mod:`iogate.databases.postgres`); the result then holds at most
        ``max_rows`` rows and says :attr:`QueryResult.truncated`. ``None``:
        every row is read."""
        fn = partial(self._query, sql, params, limits)
        call = self._call(fn, "query", idempotent=_idem(sql, idempotent))
        return await (call if is_read_statement(sql) else self._written(call, [(sql, params)]))

    async def query_guarded(
        self,
        sql: str,
        params: Params = None,
        *,
        guard: SQLGuard,
        idempotent: bool | None = None,
        limits: ResultLimits | None = None,
    ) -> QueryResult:
        """:meth:`query` for a restricted caller: the engine enforces ``guard``
        (read-only mode, table allowlist; see :mod:`iogate.databases.guard`).

        A read-only call is idempotent (the engine guarantees it writes
        nothing), so it may be retried on a transient error.

        Raises:
            ReadOnlyViolation: a write in read-only mode.
            TableNotAllowed: a table outside ``guard.tables``.
            QueryError: as :meth:`query`, and for transaction control
                statements (BEGIN, COMMIT...) in read-only mode.

        ``limits``: as in :meth:`query`.
        """
        if guard.unrestricted:
            return await self.query(sql, params, idempotent=idempotent, limits=limits)
        fn = partial(self._query_guarded, sql, params, guard, limits)
        idem = True if guard.read_only else _idem(sql, idempotent)
        return await self._call(fn, "query", idempotent=idem)

    async def describe(self, sql: str, *, guard: SQLGuard | None = None) -> Description:
        """A statement's result columns and parameters, without running it
        (PostgreSQL: a prepared statement's attributes and parameter types;
        SQLite: ``sqlite3_prepare_v2`` and the column/parameter API).

        Raises:
            QueryError: the statement does not compile (or is several).
            TableNotAllowed: it names a table outside ``guard.tables``.
        """
        fn = partial(self._describe, sql, guard)
        return await self._call(fn, "describe", idempotent=True)

    def stream(
        self,
        sql: str,
        params: Params = None,
        *,
        chunk_rows: int = 1000,
        guard: SQLGuard | None = None,
    ) -> RowStream:
        """Stream a query's rows with bounded memory (see :mod:`iogate.databases.streaming`)::

            async with db.stream("SELECT * FROM events") as rows:
                async for row in rows: ...

        Args:
            chunk_rows: rows per round trip (1..100000); at most one chunk is held.
            guard: a restricted caller's :class:`~iogate.databases.guard.SQLGuard`,
                enforced by the engine as in :meth:`query_guarded`.

        Raises (on entering the block): the errors of :meth:`query`.
        """
        if not 1 <= chunk_rows <= MAX_CHUNK_ROWS:
            raise ValueError(f"chunk_rows must be within 1..{MAX_CHUNK_ROWS}, got {chunk_rows}")
        self._require_open()
        if guard is not None and guard.unrestricted:
            guard = None
        return RowStream(self._stream(sql, params, chunk_rows, guard))

    def transaction(
        self,
        *,
        isolation: str | None = None,
        read_only: bool = False,
        guard: SQLGuard | None = None,
    ) -> TransactionScope:
        """A transaction on one connection, as ``async with db.transaction() as tx:``.

        Commits when the block ends, rolls back if it raises (see
        :mod:`iogate.databases.transactions`). Statements inside are never
        retried; nest savepoints with ``tx.transaction()``.

        Args:
            isolation: ``"read committed"``, ``"repeatable read"``,
                ``"serializable"`` or ``"read uncommitted"`` (PostgreSQL's
                ``BEGIN ISOLATION LEVEL``); ``None`` for the server default.
                SQLite transactions are always serializable, whatever is asked.
            read_only: the engine refuses writes (PostgreSQL ``READ ONLY``;
                SQLite runs the transaction on a ``query_only`` reader)
                with :class:`~iogate.errors.ReadOnlyViolation`.
            guard: a restricted caller's :class:`~iogate.databases.guard.SQLGuard`
                (its ``read_only`` is or-ed with ``read_only``); every statement
                of the transaction is checked, and a statement that ends the
                transaction (COMMIT, ROLLBACK) fails with QueryError.

        Raises:
            ValueError: an unknown isolation level.
        """
        if isolation is not None and isolation.lower() not in ISOLATION_LEVELS:
            raise ValueError(
                f"isolation must be one of {sorted(ISOLATION_LEVELS)}, got {isolation!r}"
            )
        self._require_open()
        level = None if isolation is None else isolation.lower()
        if guard is not None and guard.unrestricted:
            guard = None
        read_only = read_only or (guard is not None and guard.read_only)
        holder: list[Callable[[bool], Awaitable[None]]] = []

        recorder: list[Recording] = []

        async def begin() -> Transaction:
            conn, finish = await self._begin(level, read_only, guard)
            holder.append(finish)
            if self._cache is not None and not read_only:
                recorder.append(Recording(conn))
                conn = recorder[0]
            return Transaction(conn, read_only=read_only)

        async def end(commit: bool) -> None:
            try:
                await holder[0](commit)
            finally:
                # a failed COMMIT may still have committed (connection lost)
                if commit and recorder and recorder[0].written:
                    await self._invalidate_writes(recorder[0].written)

        return TransactionScope(begin, end)

    async def run_in_transaction(
        self,
        fn: Callable[[Transaction], Awaitable[T]],
        *,
        retries: int = 3,
        isolation: str | None = None,
        read_only: bool = False,
    ) -> T:
        """Run ``await fn(tx)`` in a transaction, re-running the whole transaction
        (with backoff) up to ``retries`` times on a TransientDatabaseError
        (serialization failure 40001, deadlock 40P01, lost connection, SQLITE_BUSY).

        ``fn`` must be safe to re-run: everything it does in the database is
        rolled back before a retry, but side effects outside are not.
        Each attempt runs through the resource's pipeline as one
        non-idempotent call (``operation="transaction"``).

        Raises:
            ValueError: ``retries`` < 0. Otherwise what ``fn`` or COMMIT raises.
        """
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        from iogate.policies import Backoff, Pipeline, Retry

        async def once() -> T:
            async with self.transaction(isolation=isolation, read_only=read_only) as tx:
                return await fn(tx)

        async def attempt() -> T:
            return await self._call(once, "transaction", idempotent=False)

        retry = Retry(
            retry_on=(TransientDatabaseError,),
            max_attempts=retries + 1,
            backoff=Backoff.exponential(initial_s=0.01, max_delay_s=0.5),
        )
        return await Pipeline(resource=self.name, retry=retry).run(attempt, operation="transaction")

    async def batch(
        self,
        statements: Sequence[Statement],
        *,
        transaction: bool = True,
        guard: SQLGuard | None = None,
        limits: ResultLimits | None = None,
    ) -> list[QueryResult | OperationError]:
        """Run statements in order and return one result per statement.

        ``transaction=True``: all-or-nothing in one transaction; the first
        failing statement rolls everything back and its error is raised, its
        message prefixed with the statement's index (``statement 2: ...``).
        The list then holds only :class:`QueryResult`.

        ``transaction=False``: each statement runs on its own (autocommit,
        through the pipeline, reads retried); a failure does not stop the
        others and takes its place in the list as the error.

        ``guard``: a restricted caller's :class:`~iogate.databases.guard.SQLGuard`,
        enforced on every statement (see :meth:`query_guarded`).

        ``limits``: each statement's rows are read under them (see :meth:`query`).
        """
        parsed = [_statement(s) for s in statements]
        if guard is not None and guard.unrestricted:
            guard = None
        if not transaction:
            results: list[QueryResult | OperationError] = []
            for sql, params in parsed:
                try:
                    if guard is None:
                        results.append(await self.query(sql, params, limits=limits))
                    else:
                        results.append(
                            await self.query_guarded(sql, params, guard=guard, limits=limits)
                        )
                except OperationError as exc:
                    results.append(exc)
            return results

        async def run_all() -> list[QueryResult | OperationError]:
            done: list[QueryResult | OperationError] = []
            async with self.transaction(guard=guard) as tx:
                for index, (sql, params) in enumerate(parsed):
                    try:
                        done.append(await tx.query(sql, params, limits=limits))
                    except OperationError as exc:
                        exc.message = f"statement {index}: {exc.message}"
                        raise
            return done

        return await self._call(run_all, "batch", idempotent=False)

    # The three hot-path hooks may be plain functions returning an awaitable
    # (PostgreSQL's are: one coroutine frame less per call) or coroutines.

    @abstractmethod
    def _fetch(self, sql: str, params: Params) -> Awaitable[list[Row]]: ...

    @abstractmethod
    def _fetch_one(self, sql: str, params: Params) -> Awaitable[Row | None]: ...

    @abstractmethod
    def _execute(self, sql: str, params: Params) -> Awaitable[ExecuteResult]: ...

    @abstractmethod
    async def _execute_many(self, sql: str, params: list[Params]) -> ExecuteResult: ...

    @abstractmethod
    async def _query(
        self, sql: str, params: Params, limits: ResultLimits | None = None
    ) -> QueryResult: ...

    @abstractmethod
    def _stream(
        self, sql: str, params: Params, chunk_rows: int, guard: SQLGuard | None
    ) -> StreamSource: ...

    @abstractmethod
    async def _query_guarded(
        self, sql: str, params: Params, guard: SQLGuard, limits: ResultLimits | None = None
    ) -> QueryResult: ...

    @abstractmethod
    async def _describe(self, sql: str, guard: SQLGuard | None) -> Description: ...

    @abstractmethod
    async def _begin(
        self, isolation: str | None, read_only: bool, guard: SQLGuard | None
    ) -> tuple[TxConnection, Callable[[bool], Awaitable[None]]]:
        """Lend a connection, BEGIN, and return it with ``finish(commit)``
        (COMMIT or ROLLBACK, then give the connection back). With ``guard``,
        every statement of the transaction is checked against it."""

    @abstractmethod
    async def _introspect(self, table: str) -> tuple[str, ...]:
        """The column names of ``table``; ``()`` when there is no such table."""


def _statement(statement: Statement) -> tuple[str, Params]:
    if isinstance(statement, str):
        return statement, None
    sql, params = statement
    return sql, params


def _idem(sql: str, idempotent: bool | None) -> bool:
    return is_read_statement(sql) if idempotent is None else idempotent
