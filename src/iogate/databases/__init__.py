"""iogate.databases: one interface, four backends.

:class:`SQLDatabase` (``fetch``, ``fetch_one``, ``fetch_val``, ``execute``,
``execute_many``, ``stream``, ``transaction()``, ``stats()``, ``ping()``) with
:class:`SQLiteDatabase` and :class:`PostgresDatabase`; :class:`RedisDatabase`
for Redis; :class:`MongoDatabase` (``iogate.databases.mongodb``, loaded with
pymongo on first use) for MongoDB. Results are :class:`QueryResult` / :class:`ExecuteResult` of
:class:`Column`; pools report :class:`PoolStats`; large results stream as a
:class:`RowStream`; ``transaction()`` gives a :class:`Transaction`.
"""

from typing import TYPE_CHECKING, Any

from iogate.databases.base import Column, ExecuteResult, QueryResult, SQLDatabase
from iogate.databases.postgres import PostgresDatabase
from iogate.databases.redis import RedisDatabase
from iogate.databases.sqlite import SQLiteDatabase
from iogate.databases.stats import PoolStats
from iogate.databases.streaming import RowStream
from iogate.databases.transactions import Transaction

if TYPE_CHECKING:
    from iogate.databases.mongodb import MongoDatabase

__all__ = [
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
]


def __getattr__(name: str) -> Any:
    """``MongoDatabase`` on first use: importing it loads pymongo."""
    if name == "MongoDatabase":
        from iogate.databases.mongodb import MongoDatabase

        return MongoDatabase
    raise AttributeError(f"module 'iogate.databases' has no attribute {name!r}")
