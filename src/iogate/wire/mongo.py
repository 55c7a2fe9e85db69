"""The JSON shapes of MongoDB requests, and what the gateway refuses in them.

One model per operation — the body of ``POST /v1/databases/{name}/<op>``
and of a batch step ``{"kind": "mongodb", "op": "<op>", "body": {...}}``:
:class:`MongoFind`, :class:`MongoAggregate`, :class:`MongoCount`,
:class:`MongoInsert`, :class:`MongoUpdate`, :class:`MongoDelete`. Values are
MongoDB Extended JSON v2 (``{"$oid": ...}``, ``{"$date": ...}``...), decoded
by the MongoDB backend.

:func:`check_request` walks a request before any I/O (a structural walk of
the parsed document, not a text match):

- server-side JavaScript is never run: ``$where``, ``$function``,
  ``$accumulator`` anywhere (filter, projection, pipeline, update) →
  :class:`~iogate.errors.RefusedOperatorError`; so are stages that report on
  the whole server (``$currentOp``, ``$listSessions``, ``$listLocalSessions``,
  ``$planCacheStats``, ``$queryStats``) and change streams (``$changeStream``,
  a cursor that never ends);
- ``$out`` and ``$merge`` write: they need ``db:<name>:write``
  (:func:`pipeline_writes`), and may not leave the database;
- every collection a request reaches — its own, and the ``from`` /
  ``coll`` / ``into`` of ``$lookup``, ``$graphLookup``, ``$unionWith``,
  ``$out``, ``$merge``, also inside ``$facet`` and sub-pipelines — is listed
  by :func:`pipeline_collections` for the key's ``collections`` allowlist.
  A stage naming another database (``{"db": ...}``) is refused.

There is no generic ``command`` endpoint, so ``mapReduce``, ``eval`` and
administration commands cannot be sent at all.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from iogate.errors import RefusedOperatorError

__all__ = [
    "JAVASCRIPT_OPERATORS",
    "SERVER_STAGES",
    "WRITING_STAGES",
    "MongoAggregate",
    "MongoCount",
    "MongoDelete",
    "MongoFind",
    "MongoInsert",
    "MongoOperation",
    "MongoUpdate",
    "OPERATIONS",
    "check_request",
    "pipeline_collections",
    "pipeline_writes",
]

JAVASCRIPT_OPERATORS: Final = frozenset({"$where", "$function", "$accumulator"})
"""Operators that run JavaScript on the server: refused for every caller."""
SERVER_STAGES: Final = frozenset(
    {
        "$currentOp",
        "$listSessions",
        "$listLocalSessions",
        "$planCacheStats",
        "$queryStats",
        "$changeStream",
        "$changeStreamSplitLargeEvent",
    }
)
"""Stages that report on the whole server or never end: refused for every caller."""
WRITING_STAGES: Final = frozenset({"$out", "$merge"})
"""Stages that write a collection: they need the write scope."""
_MAX_DEPTH = 100

_COLLECTION = Field(min_length=1, max_length=255, examples=["users"])
_CACHE_TTL = Field(
    default=None, gt=0, description="Seconds the result may be served from the gateway cache."
)
_CANONICAL = Field(
    default=False,
    description="Answer in canonical Extended JSON (every number typed) instead of relaxed.",
)


class _Op(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    collection: str = _COLLECTION


class MongoFind(_Op):
    """``POST /v1/databases/{name}/find``: the documents matching ``filter``."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "examples": [
                {"collection": "users", "filter": {"id": "user_123"}, "limit": 1},
                {
                    "collection": "events",
                    "filter": {"at": {"$gte": {"$date": "2024-01-01T00:00:00Z"}}},
                    "sort": {"at": -1},
                    "limit": 50,
                },
            ]
        },
    )

    filter: dict[str, Any] = Field(default_factory=dict)
    projection: dict[str, Any] | None = None
    sort: dict[str, Literal[1, -1]] | None = Field(
        default=None, description="Field → 1 (ascending) or -1, in order."
    )
    skip: int = Field(default=0, ge=0)
    limit: int = Field(default=0, ge=0, description="0: no limit (the caps still apply).")
    cache_ttl: float | None = _CACHE_TTL
    canonical: bool = _CANONICAL


class MongoAggregate(_Op):
    """``POST /v1/databases/{name}/aggregate``: an aggregation pipeline."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "collection": "orders",
                    "pipeline": [
                        {"$match": {"status": "paid"}},
                        {"$group": {"_id": "$user", "total": {"$sum": "$amount"}}},
                    ],
                }
            ]
        },
    )

    pipeline: list[dict[str, Any]] = Field(max_length=1000)
    cache_ttl: float | None = _CACHE_TTL
    canonical: bool = _CANONICAL


class MongoCount(_Op):
    """``POST /v1/databases/{name}/count``: how many documents match."""

    filter: dict[str, Any] = Field(default_factory=dict)
    skip: int = Field(default=0, ge=0)
    limit: int = Field(default=0, ge=0)
    cache_ttl: float | None = _CACHE_TTL


class MongoInsert(_Op):
    """``POST /v1/databases/{name}/insert``: insert documents (one round trip)."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "collection": "users",
                    "documents": [{"_id": "user_123", "joined": {"$date": "2024-01-02T03:04:05Z"}}],
                }
            ]
        },
    )

    documents: list[dict[str, Any]] = Field(min_length=1, max_length=100_000)
    ordered: bool = Field(default=True, description="Stop at the first failure.")


class MongoUpdate(_Op):
    """``POST /v1/databases/{name}/update``: ``update`` (operators, or a pipeline)
    or ``replacement`` (a whole document) on the first match, or every match
    with ``many``."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "collection": "users",
                    "filter": {"_id": "user_123"},
                    "update": {"$set": {"plan": "pro"}},
                }
            ]
        },
    )

    filter: dict[str, Any]
    update: dict[str, Any] | list[dict[str, Any]] | None = None
    replacement: dict[str, Any] | None = None
    many: bool = False
    upsert: bool = False


class MongoDelete(_Op):
    """``POST /v1/databases/{name}/delete``: delete the first match, or every
    match with ``many`` (``filter: {}`` with ``many`` empties the collection)."""

    filter: dict[str, Any]
    many: bool = False


MongoOperation = MongoFind | MongoAggregate | MongoCount | MongoInsert | MongoUpdate | MongoDelete
"""Any MongoDB request."""

OPERATIONS: Final[dict[str, type[_Op]]] = {
    "find": MongoFind,
    "aggregate": MongoAggregate,
    "count": MongoCount,
    "insert": MongoInsert,
    "update": MongoUpdate,
    "delete": MongoDelete,
}
"""Operation name (the route's last segment, a batch step's ``op``) → its model."""


def _keys(value: Any, depth: int = 0) -> Iterator[str]:
    """Every key of every document nested in ``value``.

    Raises:
        RefusedOperatorError: nested deeper than 100 levels.
    """
    if depth > _MAX_DEPTH:
        raise RefusedOperatorError("the request is nested too deeply", operator="(depth)")
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield str(key)
            yield from _keys(item, depth + 1)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _keys(item, depth + 1)


def _refuse_javascript(value: Any) -> None:
    for key in _keys(value):
        if key in JAVASCRIPT_OPERATORS:
            raise RefusedOperatorError(
                f"{key} runs JavaScript on the server and is never run", operator=key
            )
        if key in SERVER_STAGES:
            raise RefusedOperatorError(f"the stage {key} is not available", operator=key)


def _target(spec: Any, stage: str) -> str | None:
    """The collection a stage's argument names, refusing another database."""
    if isinstance(spec, str):
        return spec
    if isinstance(spec, Mapping):
        if "db" in spec:
            raise RefusedOperatorError(f"{stage} may not reach another database", operator=stage)
        coll = spec.get("coll")
        return coll if isinstance(coll, str) else None
    return None


def _stages(pipeline: Any) -> Iterator[tuple[str, Any]]:
    """Every ``(stage name, argument)`` of a pipeline, sub-pipelines included."""
    if not isinstance(pipeline, list):
        return
    for stage in pipeline:
        if not isinstance(stage, Mapping):
            continue
        for name, arg in stage.items():
            yield str(name), arg
            if name == "$facet" and isinstance(arg, Mapping):
                for sub in arg.values():
                    yield from _stages(sub)
            elif name in ("$lookup", "$unionWith") and isinstance(arg, Mapping):
                yield from _stages(arg.get("pipeline"))


def pipeline_collections(pipeline: Any) -> tuple[set[str], set[str]]:
    """The collections a pipeline reads (``$lookup``/``$graphLookup`` ``from``,
    ``$unionWith``) and writes (``$out``, ``$merge`` ``into``), beyond its own.

    Raises:
        RefusedOperatorError: a stage names another database.
    """
    reads: set[str] = set()
    writes: set[str] = set()
    for name, arg in _stages(pipeline):
        found: str | None = None
        if name in ("$lookup", "$graphLookup") and isinstance(arg, Mapping):
            found = _target(arg.get("from"), name)
            if found is not None:
                reads.add(found)
        elif name == "$unionWith":
            found = _target(arg, name)
            if found is not None:
                reads.add(found)
        elif name == "$out":
            found = _target(arg, name)
            if found is not None:
                writes.add(found)
        elif name == "$merge":
            into = arg.get("into") if isinstance(arg, Mapping) else arg
            found = _target(into, name)
            if found is not None:
                writes.add(found)
    return reads, writes


def pipeline_writes(pipeline: Any) -> bool:
    """Whether a pipeline has a ``$out`` or ``$merge`` stage (anywhere)."""
    return any(name in WRITING_STAGES for name, _ in _stages(pipeline))


def check_request(op: MongoOperation) -> tuple[set[str], set[str]]:
    """Refuse what no caller may send (see the module docstring) and return the
    collections the request reads and writes (its own included).

    Raises:
        RefusedOperatorError: JavaScript, a server-wide stage, or a stage
            reaching another database.
    """
    if isinstance(op, MongoFind):
        _refuse_javascript((op.filter, op.projection))
        return {op.collection}, set()
    if isinstance(op, MongoCount):
        _refuse_javascript(op.filter)
        return {op.collection}, set()
    if isinstance(op, MongoAggregate):
        _refuse_javascript(op.pipeline)
        reads, writes = pipeline_collections(op.pipeline)
        return {op.collection, *reads}, writes
    if isinstance(op, MongoInsert):
        _refuse_javascript(op.documents)
        return set(), {op.collection}
    if isinstance(op, MongoUpdate):
        _refuse_javascript((op.filter, op.update, op.replacement))
        return set(), {op.collection}
    _refuse_javascript(op.filter)
    return set(), {op.collection}
