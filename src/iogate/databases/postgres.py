"""PostgreSQL backend on an asyncpg pool.

- ``:name`` and ``?`` placeholders are rewritten to ``$n``
  (:func:`~iogate.databases.sql.compile_postgres`); values are bound by asyncpg.
- ``fetch``/``fetch_one``/``execute`` use the pool's own methods and asyncpg's
  per-connection prepared-statement cache.
- ``query`` prepares the statement (extended protocol: exactly one statement)
  to learn its columns and types even when it returns no rows, reads the
  command tag for rows affected, and decodes JSON-shaped arguments by the
  declared parameter types (an ISO 8601 string for a ``timestamptz``...):
  it is what the HTTP gateway calls.
- A call's remaining deadline (:func:`iogate.policies.remaining`) is passed as
  asyncpg's ``timeout=``, which cancels the statement on the server too.
- Errors are classified by SQLSTATE (postgresql.org/docs/current/errcodes-appendix.html).
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, cast

import asyncpg

from iogate.databases.base import (
    CallRunner,
    Column,
    ExecuteResult,
    Params,
    QueryResult,
    Row,
    SQLDatabase,
)
from iogate.databases.sql import compile_postgres
from iogate.databases.values import from_json_value
from iogate.errors import (
    DatabaseError,
    IntegrityError,
    OperationContext,
    OperationError,
    OperationTimeout,
    QueryError,
    ReadOnlyViolation,
    TransientDatabaseError,
)
from iogate.policies.timeout import remaining

__all__ = ["PostgresDatabase", "translate_postgres_error"]

_ROWCOUNT_COMMANDS = frozenset({"INSERT", "UPDATE", "DELETE", "MERGE", "COPY", "MOVE", "FETCH"})
# Connection trouble, admin/crash shutdown, too many connections, serialization, deadlock.
_TRANSIENT_STATES = frozenset({"40001", "40P01", "57P01", "57P02", "57P03", "53300", "55P03"})
_QUERY_CLASSES = frozenset({"42", "22", "21", "2F", "0A", "26", "34", "3D", "3F", "P0"})
_BAD_ARGUMENT = re.compile(r"^(invalid input for query argument \$\d+): .*?(?: \((.*)\))?$", re.S)


class PostgresDatabase(SQLDatabase):
    """A PostgreSQL database behind an asyncpg connection pool.

    Args:
        name: resource name.
        dsn: ``postgresql://user:password@host:port/dbname`` (never logged).
        min_size: connections opened up front (0..max_size).
        max_size: pool bound, 1..1024; callers beyond it wait for a connection.
        connect_timeout_s: seconds to open one connection.
        application_name: reported in ``pg_stat_activity``.
        runner: the resilience pipeline each call runs through.
    """

    kind: ClassVar[str] = "postgresql"

    def __init__(
        self,
        name: str,
        *,
        dsn: str,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout_s: float = 10.0,
        application_name: str = "iogate",
        runner: CallRunner | None = None,
    ) -> None:
        super().__init__(name, runner=runner)
        if not 1 <= max_size <= 1024:
            raise ValueError(f"max_size must be within 1..1024, got {max_size}")
        if not 0 <= min_size <= max_size:
            raise ValueError(f"min_size must be within 0..max_size ({max_size}), got {min_size}")
        if connect_timeout_s <= 0:
            raise ValueError(f"connect_timeout_s must be > 0, got {connect_timeout_s}")
        self._dsn = dsn
        self._min_size = min_size
        self._max_size = max_size
        self._connect_timeout_s = connect_timeout_s
        self._application_name = application_name
        self._pool: asyncpg.Pool | None = None

    async def _open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=self._min_size,
                max_size=self._max_size,
                timeout=self._connect_timeout_s,
                server_settings={"application_name": self._application_name},
            )
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            raise translate_postgres_error(exc, resource=self.name, operation="open") from exc

    async def _close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def _ping(self) -> None:
        await self._guard("ping", self._need_pool().fetchval("SELECT 1"))

    async def _fetch(self, sql: str, params: Params) -> list[Row]:
        text, args = compile_postgres(sql, params)
        coro = self._need_pool().fetch(text, *args, timeout=remaining())
        return cast(list[Row], await self._guard("fetch", coro))

    async def _fetch_one(self, sql: str, params: Params) -> Row | None:
        text, args = compile_postgres(sql, params)
        coro = self._need_pool().fetchrow(text, *args, timeout=remaining())
        return cast(Row | None, await self._guard("fetch_one", coro))

    async def _execute(self, sql: str, params: Params) -> ExecuteResult:
        text, args = compile_postgres(sql, params)
        coro = self._need_pool().execute(text, *args, timeout=remaining())
        status = await self._guard("execute", coro)
        return ExecuteResult(rows_affected=_rows_affected(cast(str, status)))

    async def _query(self, sql: str, params: Params) -> QueryResult:
        text, args = compile_postgres(sql, params)
        return cast(QueryResult, await self._guard("query", self._prepared_query(text, args)))

    async def _prepared_query(self, text: str, args: list[Any]) -> QueryResult:
        async with self._need_pool().acquire() as conn:
            stmt = await conn.prepare(text)
            types = [t.name for t in stmt.get_parameters()]
            try:
                args = [from_json_value(a, t) for a, t in zip(args, types, strict=False)]
            except ValueError as exc:
                raise QueryError(str(exc), resource=self.name, operation="query") from None
            records = await stmt.fetch(*args, timeout=remaining())
            status = stmt.get_statusmsg()
            attributes = stmt.get_attributes()
        columns = tuple(Column(a.name, a.type.name) for a in attributes)
        return QueryResult(columns, [tuple(r) for r in records], _rows_affected(status))

    async def _guard(self, operation: str, coro: Any) -> Any:
        try:
            return await coro
        except TimeoutError as exc:  # asyncpg's timeout= (the deadline's remainder)
            raise OperationTimeout(
                "statement ran past the call's deadline", resource=self.name, operation=operation
            ) from exc
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise translate_postgres_error(exc, resource=self.name, operation=operation) from exc

    def _need_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError(f"database {self.name!r} is not open")
        return self._pool


def _rows_affected(status: str | None) -> int:
    # Command tags: "INSERT 0 3", "UPDATE 2", "DELETE 0", "SELECT 5", "CREATE TABLE".
    if not status:
        return 0
    parts = status.split()
    if parts[0] in _ROWCOUNT_COMMANDS and parts[-1].isdigit():
        return int(parts[-1])
    return 0


def translate_postgres_error(
    exc: BaseException, *, resource: str | None, operation: str | None
) -> OperationError:
    """Map an asyncpg (or socket) error to iogate's hierarchy by SQLSTATE.

    class 23 → IntegrityError (with ``constraint``); 40001, 40P01, class 08,
    57P01-3, 53300, 55P03 and lost connections → TransientDatabaseError;
    25006 → ReadOnlyViolation; 57014 (statement timeout / cancel) →
    OperationTimeout; syntax, undefined objects, data exceptions and bad
    arguments → QueryError (with ``position``). Messages are asyncpg's, except
    that a client-side bad argument loses the value it quoted.
    """
    ctx: OperationContext = {"resource": resource, "operation": operation}
    if isinstance(exc, asyncpg.PostgresError):
        state = str(getattr(exc, "sqlstate", "") or "")
        message = _safe_message(str(exc))
        if state.startswith("23"):
            constraint = getattr(exc, "constraint_name", None)
            return IntegrityError(message, constraint=constraint, sqlstate=state, **ctx)
        if state in _TRANSIENT_STATES or state.startswith("08"):
            return TransientDatabaseError(message, sqlstate=state, **ctx)
        if state == "25006":
            return ReadOnlyViolation(message, sqlstate=state, **ctx)
        if state == "57014":
            return OperationTimeout("statement cancelled: it ran past its timeout", **ctx)
        if state[:2] in _QUERY_CLASSES or not state:
            raw_position = str(getattr(exc, "position", "") or "")
            position = int(raw_position) if raw_position.isdigit() else None
            return QueryError(message, position=position, sqlstate=state or None, **ctx)
        return DatabaseError(message, sqlstate=state, **ctx)
    if isinstance(exc, asyncpg.InterfaceError):
        message = _safe_message(str(exc))
        if "closed" in message or "connection was lost" in message:
            return TransientDatabaseError(message, **ctx)
        return QueryError(message, **ctx)
    if isinstance(exc, TimeoutError):
        return TransientDatabaseError("timed out connecting to PostgreSQL", **ctx)
    return TransientDatabaseError(f"cannot reach PostgreSQL: {exc}", **ctx)


def _safe_message(message: str) -> str:
    match = _BAD_ARGUMENT.match(message)
    if match is None:
        return message
    reason = match.group(2)
    return f"{match.group(1)}: {reason}" if reason else match.group(1)
