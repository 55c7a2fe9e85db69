"""MongoDB as a database resource, on pymongo's native asyncio API
(``pymongo.AsyncMongoClient``, the official driver; Motor is deprecated in
its favour). Imported only when a MongoDB database is built: ``import iogate``
never loads pymongo.

- Pool: the driver's own (``maxPoolSize``, ``minPoolSize``, ``maxIdleTimeMS``,
  ``waitQueueTimeoutMS``), no thread hops; :meth:`MongoDatabase.stats` reads
  its counters.
- Every call runs through the resource's runner (deadline → retry → breaker →
  limit → attempt timeout). Reads are retried by that pipeline on transient
  errors; the driver's own ``retryReads`` is off so there is one retry loop.
  Writes are never retried by iogate: the driver's ``retryWrites`` (on by
  default) re-sends a single-document write once, exactly once by server-side
  transaction numbers, on replica sets and sharded clusters (not on a
  standalone server).
- Errors are translated in :func:`translate_mongo_error`: duplicate key →
  :class:`~iogate.errors.IntegrityError`, network and server-selection
  trouble → :class:`~iogate.errors.TransientDatabaseError`, an operator or
  argument the server refuses → :class:`~iogate.errors.QueryError`.
- Metrics and spans name the operation ``<collection>.<operation>``
  (``users.find_one``), for the first :data:`MAX_NAMED_COLLECTIONS`
  collections seen; later ones are ``*.find_one`` (bounded cardinality).
- Cache: ``cache_ttl_s`` on a read keeps its result (as canonical Extended
  JSON, so either tier can hold it) tagged :func:`collection_tag`; every write
  through this object invalidates the tags of the collections it wrote before
  it returns (read-your-writes), also when its outcome is unknown.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar, Final, TypeVar

import orjson
from bson import CodecOptions
from bson.errors import BSONError
from bson.raw_bson import RawBSONDocument
from pymongo import AsyncMongoClient
from pymongo import errors as mongo_errors
from pymongo.operations import DeleteMany, DeleteOne, InsertOne, ReplaceOne, UpdateMany, UpdateOne
from pymongo.uri_parser import parse_uri

from iogate._cache_keys import database_tag
from iogate.databases._mongo_json import from_ejson, to_ejson
from iogate.databases.base import Database
from iogate.databases.stats import PoolStats
from iogate.errors import (
    ConfigError,
    DatabaseError,
    DatabaseLoginError,
    IntegrityError,
    InvalidInputError,
    OperationContext,
    OperationError,
    OperationTimeout,
    PermissionDenied,
    QueryError,
    TransientDatabaseError,
)
from iogate.policies.runner import CallRunner

if TYPE_CHECKING:
    from pymongo.asynchronous.client_session import AsyncClientSession
    from pymongo.asynchronous.collection import AsyncCollection
    from pymongo.asynchronous.database import AsyncDatabase

    from iogate.databases.base import ResultCache

__all__ = [
    "MAX_NAMED_COLLECTIONS",
    "Documents",
    "MongoCollection",
    "MongoDatabase",
    "MongoTransaction",
    "WriteModel",
    "WriteResult",
    "collection_tag",
    "translate_mongo_error",
]

T = TypeVar("T")
Document = Mapping[str, Any]
WriteModel = InsertOne[Any] | UpdateOne | UpdateMany | ReplaceOne[Any] | DeleteOne | DeleteMany
"""One request of :meth:`MongoDatabase.bulk_write` (pymongo's operation classes)."""

MAX_NAMED_COLLECTIONS: Final = 256
"""Collections named in metrics and spans; the rest share ``*``."""
_BATCH_CAP: Final = 1000  # documents per round trip when a result is capped
_RAW: Final = CodecOptions(document_class=RawBSONDocument, tz_aware=True)

# Server error codes (github.com/mongodb/mongo src/mongo/base/error_codes.yml).
_DUPLICATE_KEY = frozenset({11000, 11001, 12582})
_VALIDATION = frozenset({121})  # DocumentValidationFailure
_TRANSIENT = frozenset(
    {6, 7, 89, 91, 112, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436, 43, 251}
)  # HostUnreachable, HostNotFound, NetworkTimeout, ShutdownInProgress, WriteConflict,
# PrimarySteppedDown, ExceededTimeLimit, SocketException, NotWritablePrimary,
# InterruptedAtShutdown, InterruptedDueToReplStateChange, NotPrimaryNoSecondaryOk,
# NotPrimaryOrSecondary, CursorNotFound, NoSuchTransaction
_UNAUTHORIZED = frozenset({13})
_LOGIN = frozenset({18})
_TIME_LIMIT = frozenset({50})  # MaxTimeMSExpired


def collection_tag(database: str, collection: str) -> str:
    """The cache tag of cached reads of ``collection`` in MongoDB database
    resource ``database`` (case kept: collection names are case-sensitive)."""
    return f"collection:{database}:{collection}"


@dataclass(frozen=True, slots=True)
class Documents:
    """A read under caps: the documents and whether more were left unread.

    Attributes:
        documents: the documents, in the server's order.
        truncated: the read stopped at ``max_rows`` or past ``max_bytes``.
    """

    documents: list[Document]
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What a write did (fields that do not apply to the operation are 0 / empty).

    Attributes:
        inserted_ids: the ``_id`` of each inserted document, in order.
        matched_count: documents the filter matched (update, replace).
        modified_count: documents changed (update, replace).
        deleted_count: documents deleted.
        upserted_ids: the ``_id`` of each document an upsert created.
    """

    inserted_ids: tuple[Any, ...] = ()
    matched_count: int = 0
    modified_count: int = 0
    deleted_count: int = 0
    upserted_ids: tuple[Any, ...] = ()


class MongoDatabase(Database):
    """One MongoDB database of a server (or replica set, or cluster).

    Args:
        name: resource name.
        url: a ``mongodb://`` or ``mongodb+srv://`` connection string (never
            logged); its path names the database unless ``database`` does.
        database: the database's name (default: the URL's path).
        max_pool_size: connections at most (``maxPoolSize``), ≥ 1.
        min_pool_size: connections kept open (``minPoolSize``), 0..max_pool_size.
        max_idle_time_s: seconds an idle connection is kept (``maxIdleTimeMS``; 0: forever).
        wait_queue_timeout_s: longest wait for a pool connection, seconds
            (``waitQueueTimeoutMS``; ``None``: the call's deadline bounds it).
        connect_timeout_s: seconds to open a connection and to select a server
            (``connectTimeoutMS``, ``serverSelectionTimeoutMS``).
        retry_writes: the driver's retryable writes (``retryWrites``).
        runner: the resilience pipeline each call runs through.
        cache: where ``cache_ttl_s`` reads are kept (the Gateway's cache).

    Raises:
        ValueError: a bound out of range. ConfigError: no database name.
    """

    kind: ClassVar[str] = "mongodb"

    def __init__(
        self,
        name: str,
        *,
        url: str,
        database: str | None = None,
        max_pool_size: int = 10,
        min_pool_size: int = 0,
        max_idle_time_s: float = 300.0,
        wait_queue_timeout_s: float | None = None,
        connect_timeout_s: float = 10.0,
        retry_writes: bool = True,
        runner: CallRunner | None = None,
        cache: ResultCache | None = None,
    ) -> None:
        super().__init__(name, runner=runner)
        if max_pool_size < 1:
            raise ValueError(f"max_pool_size must be >= 1, got {max_pool_size}")
        if not 0 <= min_pool_size <= max_pool_size:
            raise ValueError(
                f"min_pool_size must be within 0..{max_pool_size}, got {min_pool_size}"
            )
        if max_idle_time_s < 0:
            raise ValueError(f"max_idle_time_s must be >= 0, got {max_idle_time_s}")
        if connect_timeout_s <= 0:
            raise ValueError(f"connect_timeout_s must be > 0, got {connect_timeout_s}")
        if wait_queue_timeout_s is not None and wait_queue_timeout_s <= 0:
            raise ValueError(f"wait_queue_timeout_s must be > 0, got {wait_queue_timeout_s}")
        try:
            parsed = parse_uri(url)
        except (mongo_errors.ConfigurationError, ValueError) as exc:
            raise ConfigError("not a valid MongoDB connection string", key=name) from exc
        found = database or parsed.get("database")
        if not isinstance(found, str) or not found:
            raise ConfigError("no database: put it in the URL's path or set database", key=name)
        self.database_name: str = found
        """The MongoDB database's name."""
        self._url = url
        self._max_pool_size = max_pool_size
        self._options: dict[str, Any] = {
            "maxPoolSize": max_pool_size,
            "minPoolSize": min_pool_size,
            "maxIdleTimeMS": round(max_idle_time_s * 1000) or None,
            "connectTimeoutMS": round(connect_timeout_s * 1000),
            "serverSelectionTimeoutMS": round(connect_timeout_s * 1000),
            "retryWrites": retry_writes,
            "retryReads": False,  # iogate's pipeline is the one retry loop of reads
            "tz_aware": True,
            "appname": "iogate",
        }
        if wait_queue_timeout_s is not None:
            self._options["waitQueueTimeoutMS"] = round(wait_queue_timeout_s * 1000)
        self._cache = cache
        self._calls = 0  # driver calls made (PoolStats.acquired_total)
        self._client: AsyncMongoClient[dict[str, Any]] | None = None
        self._db: AsyncDatabase[dict[str, Any]] | None = None
        self._collections: dict[str, AsyncCollection[dict[str, Any]]] = {}
        self._raw: dict[str, AsyncCollection[RawBSONDocument]] = {}
        self._ops: dict[tuple[str, str], str] = {}
        self._named: set[str] = set()

    # -- lifecycle -----------------------------------------------------------------

    async def _open(self) -> None:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(self._url, **self._options)
        self._client = client
        self._db = client[self.database_name]
        try:
            await client.admin.command("ping")
        except (mongo_errors.PyMongoError, BSONError) as exc:
            await self._close()
            raise translate_mongo_error(exc, resource=self.name, operation="open") from exc

    async def _close(self) -> None:
        client, self._client, self._db = self._client, None, None
        self._collections.clear()
        self._raw.clear()
        if client is not None:
            await client.close()

    async def _ping(self) -> None:
        try:
            await self._need_db().command("ping")
        except (mongo_errors.PyMongoError, BSONError) as exc:
            raise translate_mongo_error(exc, resource=self.name, operation="ping") from exc

    def stats(self) -> PoolStats:
        """Pool statistics read from the driver's pool of the selected server
        (no I/O): ``size`` its open connections (monitoring connections not
        counted), ``in_use`` those checked out, ``waiting`` operations waiting
        for one, ``acquired_total`` the driver calls made. pymongo has no
        public pool statistics and its pool events (CMAP listeners) cost
        ~10 % of a ``find_one`` (measured), so these read the pool's own
        counters; ``acquire_wait_p99_s`` is not known (0.0)."""
        size = in_use = waiting = 0
        client = self._client
        topology = getattr(client, "_topology", None) if client is not None else None
        for server in (getattr(topology, "_servers", None) or {}).values():
            pool = getattr(server, "pool", None)
            active = int(getattr(pool, "active_sockets", 0))
            size += len(getattr(pool, "conns", ())) + active
            in_use += active
            waiting += max(0, int(getattr(pool, "operation_count", 0)) - active)
        return PoolStats(
            size=size,
            max_size=self._max_pool_size,
            in_use=in_use,
            idle=max(0, size - in_use),
            waiting=waiting,
            acquired_total=self._calls,
            acquire_wait_p99_s=0.0,
        )

    # -- handles -------------------------------------------------------------------

    def collection(self, name: str) -> MongoCollection:
        """A handle on collection ``name``: the CRUD methods without the collection argument."""
        return MongoCollection(self, name)

    def __getitem__(self, name: str) -> MongoCollection:
        """``db["users"]``: :meth:`collection`."""
        return MongoCollection(self, name)

    def _need_db(self) -> AsyncDatabase[dict[str, Any]]:
        db = self._db
        if db is None:
            raise RuntimeError(f"database {self.name!r} is not open")
        return db

    def _coll(self, name: str) -> AsyncCollection[dict[str, Any]]:
        found = self._collections.get(name)
        if found is None:
            if not isinstance(name, str) or not name:
                raise InvalidInputError("a collection name is a non-empty string")
            found = self._need_db()[name]
            if len(self._collections) < 4 * MAX_NAMED_COLLECTIONS:
                self._collections[name] = found
        return found

    def _raw_coll(self, name: str) -> AsyncCollection[RawBSONDocument]:
        found = self._raw.get(name)
        if found is None:
            found = self._coll(name).with_options(codec_options=_RAW)
            if len(self._raw) < 4 * MAX_NAMED_COLLECTIONS:
                self._raw[name] = found
        return found

    def _op(self, collection: str, operation: str) -> str:
        """``<collection>.<operation>``, or ``*.<operation>`` past the cardinality cap."""
        key = (collection, operation)
        name = self._ops.get(key)
        if name is None:
            if collection not in self._named and len(self._named) >= MAX_NAMED_COLLECTIONS:
                return f"*.{operation}"
            self._named.add(collection)
            name = self._ops[key] = f"{collection}.{operation}"
        return name

    def _fail(self, exc: BaseException, operation: str) -> OperationError:
        return translate_mongo_error(exc, resource=self.name, operation=operation)

    # -- Extended JSON -------------------------------------------------------------

    @staticmethod
    def to_json(value: Any, *, canonical: bool = False) -> Any:
        """``value`` in MongoDB Extended JSON v2 (relaxed unless ``canonical``),
        ready for ``json.dumps`` (see :mod:`iogate.databases._mongo_json`)."""
        return to_ejson(value, canonical=canonical)

    @staticmethod
    def from_json(value: Any) -> Any:
        """Parsed Extended JSON v2 with its type wrappers made BSON values.

        Raises:
            InvalidInputError: a malformed wrapper.
        """
        return from_ejson(value)

    # -- reads ---------------------------------------------------------------------

    def find_one(
        self,
        collection: str,
        filter: Document | None = None,
        *,
        projection: Document | Sequence[str] | None = None,
        cache_ttl_s: float | None = None,
        session: AsyncClientSession | None = None,
    ) -> Coroutine[Any, Any, dict[str, Any] | None]:
        """The first document matching ``filter``, or ``None`` (the call's
        coroutine: one frame less on the hot path). Retried on transient errors.

        Raises:
            QueryError: the server refused the filter; TransientDatabaseError;
            OperationTimeout; ValueError: ``cache_ttl_s`` without a cache.
        """
        if cache_ttl_s is None:
            fn = partial(self._find_one, collection, filter, projection, session)
            return self._call(fn, self._op(collection, "find_one"), idempotent=True)
        return self._cached_one(collection, filter, projection, cache_ttl_s)

    async def _cached_one(
        self, collection: str, filter: Document | None, projection: Any, ttl_s: float
    ) -> dict[str, Any] | None:
        async def load() -> Any:
            found = await self.find_one(collection, filter, projection=projection)
            return to_ejson(found, canonical=True)

        key = self._cache_key("find_one", collection, filter, projection)
        return from_ejson(await self._cached(key, load, ttl_s, (collection,)))  # type: ignore[no-any-return]

    async def _find_one(
        self,
        collection: str,
        filter: Document | None,
        projection: Any,
        session: AsyncClientSession | None,
    ) -> dict[str, Any] | None:
        self._calls += 1
        try:
            return await self._coll(collection).find_one(filter, projection, session=session)
        except (mongo_errors.PyMongoError, BSONError) as exc:
            raise self._fail(exc, "find_one") from exc

    async def find(
        self,
        collection: str,
        filter: Document | None = None,
        *,
        projection: Document | Sequence[str] | None = None,
        sort: Sequence[tuple[str, int]] | Document | None = None,
        skip: int = 0,
        limit: int = 0,
        cache_ttl_s: float | None = None,
        session: AsyncClientSession | None = None,
    ) -> list[dict[str, Any]]:
        """Every document matching ``filter`` (``limit`` 0: no limit), in ``sort``
        order (``[("field", 1 | -1), ...]``) after ``skip``. For large results
        use :meth:`stream`. Retried on transient errors.

        Raises:
            as :meth:`find_one`.
        """
        found = await self.find_documents(
            collection,
            filter,
            projection=projection,
            sort=sort,
            skip=skip,
            limit=limit,
            cache_ttl_s=cache_ttl_s,
            session=session,
        )
        return found.documents  # type: ignore[return-value]

    async def find_documents(
        self,
        collection: str,
        filter: Document | None = None,
        *,
        projection: Document | Sequence[str] | None = None,
        sort: Sequence[tuple[str, int]] | Document | None = None,
        skip: int = 0,
        limit: int = 0,
        max_rows: int | None = None,
        max_bytes: int | None = None,
        cache_ttl_s: float | None = None,
        session: AsyncClientSession | None = None,
    ) -> Documents:
        """:meth:`find` under caps: the cursor asks for at most ``max_rows + 1``
        documents (``limit``, and batches of at most 1,000) and reading stops
        once the documents read take more than ``max_bytes`` bytes of BSON, so
        no more is read than the caps let through. The result holds at most
        ``max_rows`` documents and says whether more were left
        (:attr:`Documents.truncated`). Capped documents are read-only mappings
        (``RawBSONDocument``: their size is known without encoding them again).

        Raises:
            ValueError: ``skip``/``limit`` < 0, or a cap < 1.
        """
        if skip < 0 or limit < 0:
            raise InvalidInputError("skip and limit must be >= 0")
        args = (collection, filter, projection, _sort(sort), skip, limit, max_rows, max_bytes)
        if cache_ttl_s is not None:
            load = partial(
                self.find_documents,
                collection,
                filter,
                projection=projection,
                sort=sort,
                skip=skip,
                limit=limit,
                max_rows=max_rows,
                max_bytes=max_bytes,
            )
            key = self._cache_key("find", *args)
            return await self._cached_documents(key, load, cache_ttl_s, (collection,))
        fn = partial(self._find, *args, session)
        return await self._call(fn, self._op(collection, "find"), idempotent=True)

    async def _find(
        self,
        collection: str,
        filter: Document | None,
        projection: Any,
        sort: list[tuple[str, int]] | None,
        skip: int,
        limit: int,
        max_rows: int | None,
        max_bytes: int | None,
        session: AsyncClientSession | None,
    ) -> Documents:
        self._calls += 1
        capped = max_rows is not None or max_bytes is not None
        want = limit
        if max_rows is not None:
            want = max_rows + 1 if limit == 0 else min(limit, max_rows + 1)
        try:
            source = self._raw_coll(collection) if max_bytes is not None else self._coll(collection)
            cursor = source.find(
                filter, projection, skip=skip, limit=want, sort=sort, session=session
            )
            if capped and want:
                cursor = cursor.batch_size(min(want, _BATCH_CAP))
            return await _drain(cursor, max_rows, max_bytes)
        except (mongo_errors.PyMongoError, BSONError) as exc:
            raise self._fail(exc, "find") from exc

    def stream(
        self,
        collection: str,
        filter: Document | None = None,
        *,
        projection: Document | Sequence[str] | None = None,
        sort: Sequence[tuple[str, int]] | Document | None = None,
        skip: int = 0,
        limit: int = 0,
        batch_size: int = 1000,
        session: AsyncClientSession | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """The matching documents as an async iterator, ``batch_size`` per round
        trip (one batch held at a time)::

            async for doc in db.stream("events", {"kind": "click"}): ...

        The query runs when iteration starts; the first batch goes through the
        runner (so retries and the breaker apply before any document is seen),
        later batches are the cursor's ``getMore`` round trips. Leaving the
        loop early closes the server's cursor.
        """
        if not 1 <= batch_size <= 100_000:
            raise ValueError(f"batch_size must be within 1..100000, got {batch_size}")
        self._require_open()
        args = (collection, filter, projection, _sort(sort), skip, limit, batch_size, session)
        return self._stream(*args)

    async def _stream(
        self,
        collection: str,
        filter: Document | None,
        projection: Any,
        sort: list[tuple[str, int]] | None,
        skip: int,
        limit: int,
        batch_size: int,
        session: AsyncClientSession | None,
    ) -> AsyncIterator[dict[str, Any]]:
        cursor = (
            self._coll(collection)
            .find(filter, projection, skip=skip, limit=limit, sort=sort, session=session)
            .batch_size(batch_size)
        )

        async def first() -> list[dict[str, Any]]:
            try:
                return await cursor.to_list(batch_size)
            except (mongo_errors.PyMongoError, BSONError) as exc:
                raise self._fail(exc, "stream") from exc

        try:
            batch = await self._call(first, self._op(collection, "stream"), idempotent=True)
            for doc in batch:
                yield doc
            while cursor.alive:
                try:
                    batch = await cursor.to_list(batch_size)
                except (mongo_errors.PyMongoError, BSONError) as exc:
                    raise self._fail(exc, "stream") from exc
                for doc in batch:
                    yield doc
        finally:
            await cursor.close()

    async def count_documents(
        self,
        collection: str,
        filter: Document | None = None,
        *,
        skip: int = 0,
        limit: int = 0,
        cache_ttl_s: float | None = None,
        session: AsyncClientSession | None = None,
    ) -> int:
        """How many documents match ``filter`` (an aggregation on the server).
        Retried on transient errors."""
        if cache_ttl_s is not None:
            key = self._cache_key("count", collection, filter, skip, limit)

            async def load() -> int:
                return await self.count_documents(collection, filter, skip=skip, limit=limit)

            return int(await self._cached(key, load, cache_ttl_s, (collection,)))
        fn = partial(self._count, collection, filter or {}, skip, limit, session)
        return await self._call(fn, self._op(collection, "count_documents"), idempotent=True)

    async def _count(
        self,
        collection: str,
        filter: Document,
        skip: int,
        limit: int,
        session: AsyncClientSession | None,
    ) -> int:
        self._calls += 1
        options: dict[str, int] = {}
        if skip:
            options["skip"] = skip
        if limit:
            options["limit"] = limit
        try:
            return await self._coll(collection).count_documents(filter, session=session, **options)
        except (mongo_errors.PyMongoError, BSONError) as exc:
            raise self._fail(exc, "count_documents") from exc

    async def aggregate(
        self,
        collection: str,
        pipeline: Sequence[Document],
        *,
        cache_ttl_s: float | None = None,
        collections: Iterable[str] = (),
        session: AsyncClientSession | None = None,
    ) -> list[dict[str, Any]]:
        """The documents an aggregation pipeline produces. A pipeline that
        writes (``$out``, ``$merge``) is never retried and invalidates the cache
        of the collection it writes; any other is a read, retried on transient
        errors.

        ``collections``: the other collections the pipeline reads (``$lookup``,
        ``$unionWith``...), for the tags of a cached result (the gateway finds
        them itself, :func:`iogate.wire.mongo.pipeline_collections`).
        """
        found = await self.aggregate_documents(
            collection,
            pipeline,
            cache_ttl_s=cache_ttl_s,
            collections=collections,
            session=session,
        )
        return found.documents  # type: ignore[return-value]

    async def aggregate_documents(
        self,
        collection: str,
        pipeline: Sequence[Document],
        *,
        max_rows: int | None = None,
        max_bytes: int | None = None,
        cache_ttl_s: float | None = None,
        collections: Iterable[str] = (),
        writes: Iterable[str] = (),
        session: AsyncClientSession | None = None,
    ) -> Documents:
        """:meth:`aggregate` under caps (as :meth:`find_documents`): a read
        pipeline gets a final ``{"$limit": max_rows + 1}`` stage and batches of
        at most 1,000 documents. ``writes``: the collections a ``$out`` /
        ``$merge`` stage writes (invalidated after the call)."""
        stages = list(pipeline)
        written = list(writes)
        writing = bool(written) or any(
            isinstance(s, Mapping) and ("$out" in s or "$merge" in s) for s in stages[-1:]
        )
        if cache_ttl_s is not None:
            if writing:
                raise ValueError("cache_ttl_s applies to pipelines that do not write")
            reads = (collection, *collections)
            key = self._cache_key("aggregate", collection, stages, max_rows, max_bytes)
            load = partial(
                self.aggregate_documents, collection, stages, max_rows=max_rows, max_bytes=max_bytes
            )
            return await self._cached_documents(key, load, cache_ttl_s, reads)
        batch = None
        if max_rows is not None and not writing:
            stages.append({"$limit": max_rows + 1})
            batch = min(max_rows + 1, _BATCH_CAP)
        fn = partial(self._aggregate, collection, stages, batch, max_rows, max_bytes, session)
        call = self._call(fn, self._op(collection, "aggregate"), idempotent=not writing)
        if not writing:
            return await call
        return await self._written(call, written or [collection])

    async def _aggregate(
        self,
        collection: str,
        stages: list[Document],
        batch: int | None,
        max_rows: int | None,
        max_bytes: int | None,
        session: AsyncClientSession | None,
    ) -> Documents:
        self._calls += 1
        options: dict[str, Any] = {} if batch is None else {"batchSize": batch}
        try:
            source = self._raw_coll(collection) if max_bytes is not None else self._coll(collection)
            cursor = await source.aggregate(stages, session=session, **options)
            return await _drain(cursor, max_rows, max_bytes)
        except (mongo_errors.PyMongoError, BSONError) as exc:
            raise self._fail(exc, "aggregate") from exc

    # -- writes (never retried by iogate) -----------------------------------------

    async def insert_one(
        self, collection: str, document: Document, *, session: AsyncClientSession | None = None
    ) -> WriteResult:
        """Insert one document (the driver adds an ObjectId ``_id`` if it has none).

        Raises:
            IntegrityError: a unique index refused it (duplicate key, 409 over HTTP).
        """
        return await self._w(collection, "insert_one", session, document)

    async def insert_many(
        self,
        collection: str,
        documents: Sequence[Document],
        *,
        ordered: bool = True,
        session: AsyncClientSession | None = None,
    ) -> WriteResult:
        """Insert documents in one round trip per 100,000 (``ordered``: stop at
        the first failure, else insert every other one)."""
        if not documents:
            return WriteResult()
        return await self._w(collection, "insert_many", session, list(documents), ordered)

    async def update_one(
        self,
        collection: str,
        filter: Document,
        update: Document | Sequence[Document],
        *,
        upsert: bool = False,
        session: AsyncClientSession | None = None,
    ) -> WriteResult:
        """Apply ``update`` (operators such as ``$set``, or an aggregation
        pipeline) to the first matching document."""
        return await self._w(collection, "update_one", session, filter, update, upsert)

    async def update_many(
        self,
        collection: str,
        filter: Document,
        update: Document | Sequence[Document],
        *,
        upsert: bool = False,
        session: AsyncClientSession | None = None,
    ) -> WriteResult:
        """Apply ``update`` to every matching document."""
        return await self._w(collection, "update_many", session, filter, update, upsert)

    async def replace_one(
        self,
        collection: str,
        filter: Document,
        replacement: Document,
        *,
        upsert: bool = False,
        session: AsyncClientSession | None = None,
    ) -> WriteResult:
        """Replace the first matching document with ``replacement`` (no operators)."""
        return await self._w(collection, "replace_one", session, filter, replacement, upsert)

    async def delete_one(
        self,
        collection: str,
        filter: Document,
        *,
        session: AsyncClientSession | None = None,
    ) -> WriteResult:
        """Delete the first matching document."""
        return await self._w(collection, "delete_one", session, filter)

    async def delete_many(
        self,
        collection: str,
        filter: Document,
        *,
        session: AsyncClientSession | None = None,
    ) -> WriteResult:
        """Delete every matching document (``{}``: all of them)."""
        return await self._w(collection, "delete_many", session, filter)

    async def bulk_write(
        self,
        collection: str,
        requests: Sequence[WriteModel],
        *,
        ordered: bool = True,
        session: AsyncClientSession | None = None,
    ) -> WriteResult:
        """Send many writes (pymongo's ``InsertOne``, ``UpdateOne``, ``UpdateMany``,
        ``ReplaceOne``, ``DeleteOne``, ``DeleteMany``) in one round trip per batch.

        Raises:
            IntegrityError: one of them hit a unique index.
        """
        if not requests:
            return WriteResult()
        return await self._w(collection, "bulk_write", session, list(requests), ordered)

    def _w(
        self, collection: str, operation: str, session: AsyncClientSession | None, *args: Any
    ) -> Coroutine[Any, Any, WriteResult]:
        fn = partial(self._write, collection, operation, session, *args)
        call = self._call(fn, self._op(collection, operation), idempotent=False)
        return self._written(call, (collection,))

    async def _write(
        self, collection: str, operation: str, session: AsyncClientSession | None, *args: Any
    ) -> WriteResult:
        self._calls += 1
        coll = self._coll(collection)
        try:
            if operation == "insert_one":
                one = await coll.insert_one(args[0], session=session)
                return WriteResult(inserted_ids=(one.inserted_id,))
            if operation == "insert_many":
                many = await coll.insert_many(args[0], ordered=args[1], session=session)
                return WriteResult(inserted_ids=tuple(many.inserted_ids))
            if operation in ("update_one", "update_many", "replace_one"):
                run = getattr(coll, operation)
                updated = await run(args[0], args[1], upsert=args[2], session=session)
                upserted = () if updated.upserted_id is None else (updated.upserted_id,)
                return WriteResult(
                    matched_count=updated.matched_count,
                    modified_count=updated.modified_count or 0,
                    upserted_ids=upserted,
                )
            if operation in ("delete_one", "delete_many"):
                deleted = await getattr(coll, operation)(args[0], session=session)
                return WriteResult(deleted_count=deleted.deleted_count)
            bulk = await coll.bulk_write(args[0], ordered=args[1], session=session)
            return WriteResult(
                matched_count=bulk.matched_count,
                modified_count=bulk.modified_count,
                deleted_count=bulk.deleted_count,
                upserted_ids=tuple((bulk.upserted_ids or {}).values()),
            )
        except (mongo_errors.PyMongoError, BSONError) as exc:
            raise self._fail(exc, operation) from exc

    # -- transactions --------------------------------------------------------------

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[MongoTransaction]:
        """A multi-document transaction on one session (servers that support
        sessions: a replica set, a sharded cluster, nx-27017)::

            async with db.transaction() as tx:
                await tx.insert_one("orders", {...})
                await tx.update_one("stock", {"_id": sku}, {"$inc": {"n": -1}})

        Commits when the block ends, aborts if it raises. Calls inside are
        never retried (a transaction is re-run as a whole by its caller); the
        collections written are invalidated in the cache once it ends.

        Raises:
            TransientDatabaseError: the commit failed in a way a new attempt
                of the whole transaction may fix (``TransientTransactionError``).
        """
        client = self._client
        if client is None:
            self._require_open()
            raise RuntimeError(f"database {self.name!r} is not open")
        try:
            session = client.start_session()
            await session.start_transaction()
        except (mongo_errors.PyMongoError, BSONError) as exc:
            raise self._fail(exc, "transaction") from exc
        tx = MongoTransaction(self, session)
        try:
            try:
                yield tx
            except BaseException:
                if session.in_transaction:
                    try:
                        await session.abort_transaction()
                    except (mongo_errors.PyMongoError, BSONError) as exc:
                        raise self._fail(exc, "abort") from exc
                raise

            async def commit() -> None:
                try:
                    await session.commit_transaction()
                except (mongo_errors.PyMongoError, BSONError) as exc:
                    raise self._fail(exc, "commit") from exc

            await self._call(commit, "commit", idempotent=False)
        finally:
            try:
                await session.end_session()
            finally:
                if tx.written:
                    await self._invalidate(tx.written)

    # -- cache ---------------------------------------------------------------------

    def _cache_key(self, operation: str, *args: Any) -> str:
        payload = orjson.dumps(
            to_ejson([operation, *args], canonical=True), option=orjson.OPT_SORT_KEYS
        )
        digest = hashlib.sha256(self.name.encode() + b"\0" + payload).hexdigest()
        return f"mongo:{self.name}:{digest}"

    def cache_tags(self, collections: Iterable[str]) -> tuple[str, ...]:
        """The tags of a cached read of ``collections``: the database's tag and
        :func:`collection_tag` of each."""
        return (database_tag(self.name), *(collection_tag(self.name, c) for c in collections))

    async def _cached(
        self, key: str, load: Callable[[], Coroutine[Any, Any, Any]], ttl_s: float,
        collections: Iterable[str],
    ) -> Any:  # fmt: skip
        cache = self._cache
        if cache is None or ttl_s <= 0:
            raise ValueError("cache_ttl_s needs a cache (Gateway) and a positive number of seconds")
        return await cache.get_or_load(key, load, ttl_s=ttl_s, tags=self.cache_tags(collections))

    async def _cached_documents(
        self, key: str, load: Callable[[], Coroutine[Any, Any, Documents]], ttl_s: float,
        collections: Iterable[str],
    ) -> Documents:  # fmt: skip
        async def stored() -> dict[str, Any]:
            found = await load()
            return {"d": to_ejson(found.documents, canonical=True), "t": found.truncated}

        entry = await self._cached(key, stored, ttl_s, collections)
        return Documents(from_ejson(entry["d"]), bool(entry["t"]))

    async def _invalidate(self, collections: Iterable[str]) -> None:
        cache = self._cache
        if cache is not None:
            await cache.invalidate_tags({collection_tag(self.name, c) for c in collections})

    async def _written(self, call: Coroutine[Any, Any, T], collections: Iterable[str]) -> T:
        """Await a write, then invalidate the cache of what it wrote — also when
        its outcome is unknown (timeout, lost connection)."""
        if self._cache is None:
            return await call
        try:
            result = await call
        except (QueryError, IntegrityError, PermissionDenied):
            raise  # refused by the server: nothing was written
        except BaseException:
            await self._invalidate(collections)
            raise
        await self._invalidate(collections)
        return result


class MongoCollection:
    """One collection of a :class:`MongoDatabase` (``db["users"]``): each method
    is the database's, with the collection filled in — the seeds'
    ``db.users.find_one({"id": "user_123"})`` is
    ``await db["users"].find_one({"id": "user_123"})``."""

    __slots__ = ("database", "name")

    def __init__(self, database: MongoDatabase, name: str) -> None:
        self.database = database
        self.name = name

    def find_one(self, filter: Document | None = None, **options: Any) -> Coroutine[Any, Any, Any]:
        """:meth:`MongoDatabase.find_one` on this collection."""
        return self.database.find_one(self.name, filter, **options)

    async def find(self, filter: Document | None = None, **options: Any) -> list[dict[str, Any]]:
        """:meth:`MongoDatabase.find` on this collection."""
        return await self.database.find(self.name, filter, **options)

    def stream(
        self, filter: Document | None = None, **options: Any
    ) -> AsyncIterator[dict[str, Any]]:
        """:meth:`MongoDatabase.stream` on this collection."""
        return self.database.stream(self.name, filter, **options)

    async def count_documents(self, filter: Document | None = None, **options: Any) -> int:
        """:meth:`MongoDatabase.count_documents` on this collection."""
        return await self.database.count_documents(self.name, filter, **options)

    async def aggregate(self, pipeline: Sequence[Document], **options: Any) -> list[dict[str, Any]]:
        """:meth:`MongoDatabase.aggregate` on this collection."""
        return await self.database.aggregate(self.name, pipeline, **options)

    async def insert_one(self, document: Document, **options: Any) -> WriteResult:
        """:meth:`MongoDatabase.insert_one` on this collection."""
        return await self.database.insert_one(self.name, document, **options)

    async def insert_many(self, documents: Sequence[Document], **options: Any) -> WriteResult:
        """:meth:`MongoDatabase.insert_many` on this collection."""
        return await self.database.insert_many(self.name, documents, **options)

    async def update_one(self, filter: Document, update: Any, **options: Any) -> WriteResult:
        """:meth:`MongoDatabase.update_one` on this collection."""
        return await self.database.update_one(self.name, filter, update, **options)

    async def update_many(self, filter: Document, update: Any, **options: Any) -> WriteResult:
        """:meth:`MongoDatabase.update_many` on this collection."""
        return await self.database.update_many(self.name, filter, update, **options)

    async def replace_one(
        self, filter: Document, replacement: Document, **options: Any
    ) -> WriteResult:
        """:meth:`MongoDatabase.replace_one` on this collection."""
        return await self.database.replace_one(self.name, filter, replacement, **options)

    async def delete_one(self, filter: Document, **options: Any) -> WriteResult:
        """:meth:`MongoDatabase.delete_one` on this collection."""
        return await self.database.delete_one(self.name, filter, **options)

    async def delete_many(self, filter: Document, **options: Any) -> WriteResult:
        """:meth:`MongoDatabase.delete_many` on this collection."""
        return await self.database.delete_many(self.name, filter, **options)

    async def bulk_write(self, requests: Sequence[WriteModel], **options: Any) -> WriteResult:
        """:meth:`MongoDatabase.bulk_write` on this collection."""
        return await self.database.bulk_write(self.name, requests, **options)

    def __repr__(self) -> str:
        return f"<MongoCollection {self.database.name}.{self.name}>"


class MongoTransaction:
    """The calls of one :meth:`MongoDatabase.transaction` block: the database's
    CRUD methods, run on the transaction's session and never retried."""

    __slots__ = ("_db", "session", "written")

    def __init__(self, database: MongoDatabase, session: AsyncClientSession) -> None:
        self._db = database
        self.session = session
        self.written: set[str] = set()

    async def find_one(
        self, collection: str, filter: Document | None = None, **options: Any
    ) -> Any:
        """:meth:`MongoDatabase.find_one` inside the transaction."""
        return await self._db.find_one(collection, filter, session=self.session, **options)

    async def find(
        self, collection: str, filter: Document | None = None, **options: Any
    ) -> list[dict[str, Any]]:
        """:meth:`MongoDatabase.find` inside the transaction."""
        return await self._db.find(collection, filter, session=self.session, **options)

    async def count_documents(
        self, collection: str, filter: Document | None = None, **options: Any
    ) -> int:
        """:meth:`MongoDatabase.count_documents` inside the transaction."""
        return await self._db.count_documents(collection, filter, session=self.session, **options)

    async def insert_one(self, collection: str, document: Document) -> WriteResult:
        """:meth:`MongoDatabase.insert_one` inside the transaction."""
        self.written.add(collection)
        return await self._db.insert_one(collection, document, session=self.session)

    async def insert_many(self, collection: str, documents: Sequence[Document]) -> WriteResult:
        """:meth:`MongoDatabase.insert_many` inside the transaction."""
        self.written.add(collection)
        return await self._db.insert_many(collection, documents, session=self.session)

    async def update_one(
        self, collection: str, filter: Document, update: Any, **options: Any
    ) -> WriteResult:
        """:meth:`MongoDatabase.update_one` inside the transaction."""
        self.written.add(collection)
        return await self._db.update_one(
            collection, filter, update, session=self.session, **options
        )

    async def update_many(
        self, collection: str, filter: Document, update: Any, **options: Any
    ) -> WriteResult:
        """:meth:`MongoDatabase.update_many` inside the transaction."""
        self.written.add(collection)
        return await self._db.update_many(
            collection, filter, update, session=self.session, **options
        )

    async def replace_one(
        self, collection: str, filter: Document, replacement: Document, **options: Any
    ) -> WriteResult:
        """:meth:`MongoDatabase.replace_one` inside the transaction."""
        self.written.add(collection)
        return await self._db.replace_one(
            collection, filter, replacement, session=self.session, **options
        )

    async def delete_one(self, collection: str, filter: Document) -> WriteResult:
        """:meth:`MongoDatabase.delete_one` inside the transaction."""
        self.written.add(collection)
        return await self._db.delete_one(collection, filter, session=self.session)

    async def delete_many(self, collection: str, filter: Document) -> WriteResult:
        """:meth:`MongoDatabase.delete_many` inside the transaction."""
        self.written.add(collection)
        return await self._db.delete_many(collection, filter, session=self.session)


async def _drain(cursor: Any, max_rows: int | None, max_bytes: int | None) -> Documents:
    """Read a cursor to its end, or to ``max_rows`` (one more is asked for to
    know there are more), or until the raw documents pass ``max_bytes``."""
    docs: list[Any] = []
    size = 0
    truncated = False
    try:
        async for doc in cursor:
            if max_rows is not None and len(docs) >= max_rows:
                truncated = True
                break
            docs.append(doc)
            if max_bytes is not None:
                size += len(doc.raw)
                if size > max_bytes:
                    truncated = True
                    break
    finally:
        await cursor.close()
    return Documents(docs, truncated)


def _sort(sort: Sequence[tuple[str, int]] | Document | None) -> list[tuple[str, int]] | None:
    if sort is None:
        return None
    if isinstance(sort, Mapping):
        return [(str(k), int(v)) for k, v in sort.items()]
    return [(str(k), int(v)) for k, v in sort]


def translate_mongo_error(
    exc: BaseException, *, resource: str | None, operation: str | None
) -> OperationError:
    """Map a pymongo error to iogate's tree (documented codes:
    github.com/mongodb/mongo ``error_codes.yml``; classes: pymongo.errors):

    - ``DuplicateKeyError`` (11000), a bulk write whose errors are duplicate
      keys, document validation (121) → :class:`IntegrityError`;
    - ``AutoReconnect`` (``NetworkTimeout``, ``NotPrimaryError``,
      ``ServerSelectionTimeoutError``), ``WaitQueueTimeoutError``, other
      ``ConnectionFailure``, an error labelled ``TransientTransactionError`` /
      ``RetryableWriteError`` or of a transient code → :class:`TransientDatabaseError`;
    - ``ExecutionTimeout`` (50) → :class:`OperationTimeout`;
    - code 18 → :class:`DatabaseLoginError`; 13 → :class:`PermissionDenied`;
    - any other ``OperationFailure``, ``InvalidOperation``, ``InvalidName``,
      a BSON encoding error (a ``$`` key in a document, a value BSON has no
      type for) → :class:`QueryError`; the rest → :class:`DatabaseError`.

    ``sqlstate`` carries the server's error code as text when there is one.
    Messages are the server's (they name no credential).
    """
    ctx: OperationContext = {"resource": resource, "operation": operation}
    code = getattr(exc, "code", None)
    state = str(code) if isinstance(code, int) else None
    message = _message(exc)
    if isinstance(exc, mongo_errors.BulkWriteError):
        errors = exc.details.get("writeErrors") or []
        codes = {e.get("code") for e in errors}
        if codes and codes <= _DUPLICATE_KEY | _VALIDATION:
            first = errors[0]
            return IntegrityError(
                str(first.get("errmsg", message)), sqlstate=str(first.get("code")), **ctx
            )
    if isinstance(exc, mongo_errors.DuplicateKeyError) or code in _DUPLICATE_KEY | _VALIDATION:
        return IntegrityError(message, sqlstate=state, **ctx)
    if isinstance(exc, mongo_errors.ExecutionTimeout) or code in _TIME_LIMIT:
        return OperationTimeout("the server's time limit for the operation passed", **ctx)
    if isinstance(exc, mongo_errors.ConnectionFailure):
        return TransientDatabaseError(message, sqlstate=state, **ctx)
    if isinstance(exc, mongo_errors.PyMongoError) and (
        exc.has_error_label("TransientTransactionError")
        or exc.has_error_label("RetryableWriteError")
    ):
        return TransientDatabaseError(message, sqlstate=state, **ctx)
    if code in _TRANSIENT:
        return TransientDatabaseError(message, sqlstate=state, **ctx)
    if code in _LOGIN:
        return DatabaseLoginError(
            "the MongoDB server refused iogate's login", sqlstate=state, **ctx
        )
    if code in _UNAUTHORIZED:
        return PermissionDenied(message, sqlstate=state, **ctx)
    if isinstance(exc, mongo_errors.OperationFailure | mongo_errors.InvalidOperation |
                  mongo_errors.InvalidName | BSONError):  # fmt: skip
        return QueryError(message, sqlstate=state, **ctx)
    return DatabaseError(message, sqlstate=state, **ctx)


def _message(exc: BaseException) -> str:
    """The server's message without pymongo's ``full error: {...}`` dump (it
    may quote the document)."""
    details = getattr(exc, "details", None)
    if isinstance(details, Mapping) and isinstance(details.get("errmsg"), str):
        return str(details["errmsg"])[:500]
    return str(exc).split(", full error:", 1)[0][:500]
