"""Transactions: statements on one connection between BEGIN and COMMIT.

``async with db.transaction() as tx:`` lends one connection for the block,
sends the backend's BEGIN, and on exit commits, or rolls back if the block
raised (the error propagates). Inside, ``tx.fetch`` / ``tx.execute`` / ... run
on that connection directly: never through the retry pipeline, so a
statement inside a transaction is never retried on its own. To retry on a
transient error (serialization failure, deadlock, lost connection), re-run
the whole transaction with :meth:`~iogate.databases.base.SQLDatabase.run_in_transaction`.

Nesting: ``async with tx.transaction():`` is a savepoint (``SAVEPOINT`` /
``RELEASE`` / ``ROLLBACK TO``, the same SQL on PostgreSQL and SQLite —
postgresql.org/docs/current/sql-savepoint.html, sqlite.org/lang_savepoint.html):
an error inside it undoes the savepoint's statements only, and the outer
transaction can go on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from iogate.databases.guard import ResultLimits
    from iogate.databases.results import ExecuteResult, Params, QueryResult, Row

__all__ = ["ISOLATION_LEVELS", "Transaction", "TransactionScope", "TxConnection"]

ISOLATION_LEVELS = frozenset(
    {"read uncommitted", "read committed", "repeatable read", "serializable"}
)
"""The SQL standard's levels (PostgreSQL honours each; SQLite is always serializable)."""


class TxConnection(Protocol):
    """What a backend lends a transaction: one connection's statements,
    with driver errors already translated into iogate's."""

    async def fetch(self, sql: str, params: Params) -> list[Row]: ...
    async def fetch_one(self, sql: str, params: Params) -> Row | None: ...
    async def execute(self, sql: str, params: Params) -> ExecuteResult: ...
    async def execute_many(self, sql: str, params: Sequence[Params]) -> ExecuteResult: ...
    async def query(
        self, sql: str, params: Params, limits: ResultLimits | None = None
    ) -> QueryResult: ...
    async def command(self, sql: str) -> None:
        """Run a control statement (BEGIN, COMMIT, SAVEPOINT...)."""


class Transaction:
    """An open transaction (or savepoint): run statements on its connection.

    Obtained from ``async with db.transaction() as tx``; valid only inside
    the block. Every method raises the same errors as the database's.
    """

    __slots__ = ("_conn", "_depth", "_savepoints", "read_only")

    def __init__(self, conn: TxConnection, *, read_only: bool, depth: int = 0) -> None:
        self._conn = conn
        self._depth = depth
        self._savepoints = 0
        self.read_only = read_only

    async def fetch(self, sql: str, params: Params = None) -> list[Row]:
        """All rows of a query."""
        return await self._conn.fetch(sql, params)

    async def fetch_one(self, sql: str, params: Params = None) -> Row | None:
        """The first row of a query, or ``None``."""
        return await self._conn.fetch_one(sql, params)

    async def fetch_val(self, sql: str, params: Params = None, *, column: int = 0) -> Any:
        """One value of the first row, or ``None`` when there is no row."""
        row = await self._conn.fetch_one(sql, params)
        return None if row is None else row[column]

    async def execute(self, sql: str, params: Params = None) -> ExecuteResult:
        """A statement run for its effect."""
        return await self._conn.execute(sql, params)

    async def execute_many(self, sql: str, params: Sequence[Params]) -> ExecuteResult:
        """One statement run once per parameter set."""
        return await self._conn.execute_many(sql, params)

    async def query(
        self, sql: str, params: Params = None, *, limits: ResultLimits | None = None
    ) -> QueryResult:
        """A statement of any kind: columns and rows, or rows affected
        (``limits``: read under them, as
        :meth:`~iogate.databases.base.SQLDatabase.query`)."""
        return await self._conn.query(sql, params, limits)

    def transaction(self) -> TransactionScope:
        """A nested transaction: a savepoint inside this one."""
        self._savepoints += 1
        name = f"iogate_sp_{self._depth + 1}_{self._savepoints}"

        async def begin() -> Transaction:
            await self._conn.command(f"SAVEPOINT {name}")
            return Transaction(self._conn, read_only=self.read_only, depth=self._depth + 1)

        async def end(commit: bool) -> None:
            if not commit:
                await self._conn.command(f"ROLLBACK TO SAVEPOINT {name}")
            await self._conn.command(f"RELEASE SAVEPOINT {name}")

        return TransactionScope(begin, end)

    def __repr__(self) -> str:
        kind = "savepoint" if self._depth else "transaction"
        return f"<Transaction {kind} depth={self._depth} read_only={self.read_only}>"


class TransactionScope:
    """``async with`` scope of a transaction or savepoint.

    ``begin()`` opens it and returns the :class:`Transaction`; ``end(commit)``
    commits (``True``) or rolls back (``False``) and gives the connection back.
    If ending itself fails after a successful block (a COMMIT refused with a
    serialization failure), that error is raised.
    """

    __slots__ = ("_begin", "_end", "_tx")

    def __init__(
        self,
        begin: Callable[[], Awaitable[Transaction]],
        end: Callable[[bool], Awaitable[None]],
    ) -> None:
        self._begin = begin
        self._end = end
        self._tx: Transaction | None = None

    async def __aenter__(self) -> Transaction:
        if self._tx is not None:
            raise RuntimeError("a transaction scope can be entered once")
        self._tx = await self._begin()
        return self._tx

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._end(exc_type is None)
