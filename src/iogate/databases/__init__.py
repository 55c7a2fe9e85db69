"""iogate.databases: one interface, four backends.

:class:`Database` (any kind) and :class:`SQLDatabase` (``fetch``, ``fetch_one``,
``fetch_val``, ``execute``, ``execute_many``, ``stream``, ``transaction()``,
``stats()``, ``ping()``) with :class:`SQLiteDatabase` and
:class:`PostgresDatabase`; :class:`RedisDatabase` for Redis; :class:`MongoDatabase`
(``iogate.databases.mongodb``, loaded with pymongo on first use) for MongoDB. Results are
:class:`QueryResult` / :class:`ExecuteResult` of :class:`Column`; pools report
:class:`PoolStats`; large results stream as a :class:`RowStream`;
``transaction()`` gives a :class:`Transaction`. A restricted caller's calls take
a :class:`SQLGuard` and :class:`ResultLimits`; ``describe`` answers a
:class:`Description` of :class:`Parameter`; ``statement_tables`` a
:class:`StatementTables`. The cache a database reads through is any
:class:`ResultCache`.

Modules: ``base`` (the interface), ``results``, ``sqlite``, ``postgres``,
``redis``, ``guard``, ``stats``, ``streaming``, ``transactions``; modules named
``_name`` are the implementation.
"""

from typing import TYPE_CHECKING, Any

from iogate.databases._tables import StatementTables
from iogate.databases.base import Database, ResultCache, SQLDatabase
from iogate.databases.guard import ResultLimits, SQLGuard
from iogate.databases.postgres import PostgresDatabase
from iogate.databases.redis import RedisDatabase
from iogate.databases.results import Column, Description, ExecuteResult, Parameter, QueryResult
from iogate.databases.sqlite import SQLiteDatabase
from iogate.databases.stats import PoolStats
from iogate.databases.streaming import RowStream
from iogate.databases.transactions import Transaction

if TYPE_CHECKING:
    from iogate.databases.mongodb import MongoDatabase

__all__ = [
    "Database",
    "SQLDatabase",
    "SQLiteDatabase",
    "PostgresDatabase",
    "RedisDatabase",
    "MongoDatabase",
    "Column",
    "QueryResult",
    "ExecuteResult",
    "PoolStats",
    "RowStream",
    "Transaction",
    "Description",
    "Parameter",
    "ResultCache",
    "ResultLimits",
    "SQLGuard",
    "StatementTables",
]


def __getattr__(name: str) -> Any:
    """``MongoDatabase`` on first use: importing it loads pymongo."""
    if name == "MongoDatabase":
        from iogate.databases.mongodb import MongoDatabase

        return MongoDatabase
    raise AttributeError(f"module 'iogate.databases' has no attribute {name!r}")
