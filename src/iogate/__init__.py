"""iogate: non-blocking, pooled and resilient database and API calls.

The library face: build a :class:`Gateway` from a config and use its named
resources inside your asyncio service. The gateway face: ``iogate serve``.
"""

from iogate.cache.memory import CacheStats, MemoryCache
from iogate.config import DatabaseConfig, IogateConfig, UpstreamConfig, default_config, load_config
from iogate.databases.base import Column, ExecuteResult, QueryResult, SQLDatabase
from iogate.databases.postgres import PostgresDatabase
from iogate.databases.redis import RedisDatabase
from iogate.databases.sqlite import SQLiteDatabase
from iogate.errors import (
    BulkheadFullError,
    CircuitOpenError,
    ConfigError,
    DatabaseError,
    IntegrityError,
    InvalidInputError,
    IogateError,
    OperationError,
    OperationTimeout,
    QueryError,
    RateLimitedError,
    ReadOnlyViolation,
    TransientDatabaseError,
    UnknownResourceError,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamHTTPError,
)
from iogate.gateway import Gateway
from iogate.http.upstream import Response, Upstream
from iogate.observability.metrics import Metrics, MetricsSnapshot

__version__ = "0.1.0"

__all__ = [
    "__version__",
    # gateway and config
    "Gateway",
    "IogateConfig",
    "DatabaseConfig",
    "UpstreamConfig",
    "load_config",
    "default_config",
    # databases
    "SQLDatabase",
    "SQLiteDatabase",
    "PostgresDatabase",
    "RedisDatabase",
    "Column",
    "QueryResult",
    "ExecuteResult",
    # upstreams
    "Upstream",
    "Response",
    # cache
    "MemoryCache",
    "CacheStats",
    # observability
    "Metrics",
    "MetricsSnapshot",
    # errors
    "IogateError",
    "ConfigError",
    "UnknownResourceError",
    "InvalidInputError",
    "OperationError",
    "OperationTimeout",
    "CircuitOpenError",
    "RateLimitedError",
    "BulkheadFullError",
    "DatabaseError",
    "TransientDatabaseError",
    "IntegrityError",
    "QueryError",
    "ReadOnlyViolation",
    "UpstreamError",
    "UpstreamConnectionError",
    "UpstreamHTTPError",
]
