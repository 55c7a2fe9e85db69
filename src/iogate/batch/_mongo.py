"""One MongoDB request as a caller: what the gateway's MongoDB routes and a
batch's ``mongodb`` steps both run (:func:`run_mongo`).

Order (nothing reaches the server before the checks pass):

1. :func:`iogate.wire.mongo.check_request` — JavaScript and server-wide
   stages refused; the collections read and written listed;
2. scopes — ``db:<name>:read`` for a read, ``db:<name>:write`` for a write
   (an insert, update or delete, or a pipeline with ``$out``/``$merge``);
3. the key's ``collections`` allowlist, over every collection listed;
4. the Extended JSON values decoded, the call made under the database's
   ``max_rows`` / ``max_response_bytes`` (or the key's tighter caps): a
   capped read asks the server for at most ``max_rows + 1`` documents and
   stops reading past the byte cap (:meth:`MongoDatabase.find_documents`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from iogate.batch._access import sql_access
from iogate.errors import CollectionNotAllowed, InvalidInputError
from iogate.wire.mongo import (
    MongoAggregate,
    MongoCount,
    MongoFind,
    MongoInsert,
    MongoOperation,
    MongoUpdate,
    check_request,
)
from iogate.wire.principal import Principal

if TYPE_CHECKING:
    from iogate.databases.mongodb import Documents, MongoDatabase
    from iogate.gateway import Gateway

__all__ = ["run_mongo"]


def _authorize(
    principal: Principal, name: str, op: MongoOperation, reads: set[str], writes: set[str]
) -> None:
    if writes:
        if not principal.allows(f"db:{name}:write"):
            raise PermissionError(f"this key lacks the scope 'db:{name}:write'")
    elif not (principal.allows(f"db:{name}:read") or principal.allows(f"db:{name}:write")):
        raise PermissionError(f"this key lacks the scope 'db:{name}:read'")
    allowed = principal.collections
    if allowed is not None:
        outside = sorted((reads | writes) - allowed)
        if outside:
            raise CollectionNotAllowed(
                f"collection {outside[0]!r} is not in this key's allowlist",
                resource=name,
                operation=type(op).__name__.removeprefix("Mongo").lower(),
            )


async def run_mongo(
    gateway: Gateway, name: str, op: MongoOperation, principal: Principal
) -> dict[str, Any]:
    """Run ``op`` on MongoDB database ``name`` as ``principal``; the JSON body
    of the answer (documents in Extended JSON v2, relaxed unless the request
    asks for ``canonical``), without ``duration_ms``.

    Raises:
        RefusedOperatorError: an operator no caller may send (400).
        PermissionError: a missing scope (403).
        CollectionNotAllowed: a collection outside the key's allowlist (403).
        UnknownResourceError: no MongoDB database ``name`` (404).
        InvalidInputError: malformed Extended JSON (400).
        DatabaseError: what the server or the pipeline raised.
    """
    database = gateway.mongo(name)
    reads, writes = check_request(op)
    _authorize(principal, name, op, reads, writes)
    decode = database.from_json
    if isinstance(op, MongoFind | MongoAggregate):
        limits = sql_access(principal, name, gateway.config.databases.get(name)).limits
        if isinstance(op, MongoFind):
            found = await database.find_documents(
                op.collection,
                decode(op.filter),
                projection=decode(op.projection),
                sort=op.sort,
                skip=op.skip,
                limit=op.limit,
                max_rows=limits.max_rows,
                max_bytes=limits.max_bytes,
                cache_ttl_s=op.cache_ttl,
            )
        else:
            found = await database.aggregate_documents(
                op.collection,
                decode(op.pipeline),
                max_rows=limits.max_rows,
                max_bytes=limits.max_bytes,
                cache_ttl_s=op.cache_ttl,
                collections=sorted(reads - {op.collection}),
                writes=sorted(writes),
            )
        return _documents_body(database, found, limits.max_bytes, canonical=op.canonical)
    if isinstance(op, MongoCount):
        count = await database.count_documents(
            op.collection, decode(op.filter), skip=op.skip, limit=op.limit, cache_ttl_s=op.cache_ttl
        )
        return {"count": count}
    if isinstance(op, MongoInsert):
        inserted = await database.insert_many(
            op.collection, decode(op.documents), ordered=op.ordered
        )
        ids = database.to_json(list(inserted.inserted_ids))
        return {"inserted_count": len(ids), "inserted_ids": ids}
    if isinstance(op, MongoUpdate):
        if (op.update is None) == (op.replacement is None):
            raise InvalidInputError("an update has either 'update' or 'replacement'")
        filter_ = decode(op.filter)
        if op.replacement is not None:
            if op.many:
                raise InvalidInputError(
                    "'replacement' replaces one document: 'many' is not allowed"
                )
            result = await database.replace_one(
                op.collection, filter_, decode(op.replacement), upsert=op.upsert
            )
        elif op.many:
            result = await database.update_many(
                op.collection, filter_, decode(op.update), upsert=op.upsert
            )
        else:
            result = await database.update_one(
                op.collection, filter_, decode(op.update), upsert=op.upsert
            )
        return {
            "matched_count": result.matched_count,
            "modified_count": result.modified_count,
            "upserted_ids": database.to_json(list(result.upserted_ids)),
        }
    if op.many:
        deleted = await database.delete_many(op.collection, decode(op.filter))
    else:
        deleted = await database.delete_one(op.collection, decode(op.filter))
    return {"deleted_count": deleted.deleted_count}


def _documents_body(
    database: MongoDatabase, found: Documents, max_bytes: int, *, canonical: bool
) -> dict[str, Any]:
    """``{"documents", "count", "truncated"}``, the documents cut where their
    JSON passes ``max_bytes`` bytes."""
    documents: list[Any] = []
    size = 0
    truncated = found.truncated
    for doc in found.documents:
        value = database.to_json(doc, canonical=canonical)
        size += len(orjson.dumps(value)) + 1
        if size > max_bytes:
            truncated = True
            break
        documents.append(value)
    return {"documents": documents, "count": len(documents), "truncated": truncated}
