"""Redis commands on the wire: which scope each needs, the original design's
operation form, and the JSON shape of a reply.

Shared by ``POST /v1/databases/{name}/command``, ``POST /database/execute``
(the original ``{"operation": ...}`` form) and batch steps of kind ``redis``:

- :func:`redis_scope`: ``"read"`` for the commands of :data:`READ_COMMANDS`
  (a key with ``db:<name>:read`` may send them), ``"write"`` for every other;
- :func:`operation_command`: ``{"operation": "set", "key", "value", "ttl"}``
  (and ``get``, ``delete``, ``incr``, ``expire``) as one command;
- :func:`reply_json`: strings as UTF-8 text, or ``{"base64": ...}`` when not
  valid UTF-8; a pipelined error as ``{"error": <problem>}``.
"""

from __future__ import annotations

import base64
from typing import Any, Literal

import orjson

from iogate.errors import InvalidInputError, IogateError
from iogate.wire.problems import problem_for

__all__ = ["READ_COMMANDS", "RedisOperation", "operation_command", "redis_scope", "reply_json"]

READ_COMMANDS = frozenset(
    {
        "GET", "MGET", "EXISTS", "TTL", "PTTL", "TYPE", "STRLEN", "GETRANGE",
        "HGET", "HMGET", "HGETALL", "HKEYS", "HVALS", "HLEN", "HEXISTS",
        "LRANGE", "LLEN", "LINDEX", "SMEMBERS", "SISMEMBER", "SCARD",
        "ZRANGE", "ZRANGEBYSCORE", "ZSCORE", "ZCARD", "ZRANK", "PING",
    }
)  # fmt: skip
"""Commands that only read: a key with ``db:<name>:read`` may send these."""

RedisOperation = Literal["get", "set", "delete", "incr", "expire"]
"""The operations of the original design's dict form."""


def redis_scope(command: str) -> Literal["read", "write"]:
    """The scope (``db:<name>:<scope>``) an upper-cased ``command`` needs."""
    return "read" if command in READ_COMMANDS else "write"


def _stored(value: Any) -> str | int | float:
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return value
    return orjson.dumps(value).decode()  # objects, arrays, true/false/null as JSON text


def _milliseconds(ttl_s: float) -> int:
    return max(1, round(ttl_s * 1000))


def operation_command(
    operation: RedisOperation, key: str, value: Any = None, ttl_s: float | None = None
) -> list[Any]:
    """One Redis command for an operation of the original dict form.

    - ``get`` → ``GET key``;
    - ``set`` → ``SET key value`` (``PX`` milliseconds with ``ttl_s``); a string
      or number is stored as is, any other JSON value as its JSON text;
    - ``delete`` → ``DEL key``;
    - ``incr`` → ``INCRBY key value`` (``value``: an integer, default 1);
    - ``expire`` → ``PEXPIRE key`` milliseconds of ``ttl_s``.

    Raises:
        InvalidInputError: a ``set`` without ``value``, an ``expire`` without
            ``ttl``, an ``incr`` whose value is not an integer.
    """
    if operation == "get":
        return ["GET", key]
    if operation == "delete":
        return ["DEL", key]
    if operation == "set":
        if value is None:
            raise InvalidInputError("operation 'set' needs a value")
        command = ["SET", key, _stored(value)]
        if ttl_s is not None:
            command += ["PX", _milliseconds(ttl_s)]
        return command
    if operation == "incr":
        by = 1 if value is None else value
        if not isinstance(by, int) or isinstance(by, bool):
            raise InvalidInputError("operation 'incr' takes an integer value (the increment)")
        return ["INCRBY", key, by]
    if ttl_s is None:
        raise InvalidInputError("operation 'expire' needs a ttl (seconds)")
    return ["PEXPIRE", key, _milliseconds(ttl_s)]


def reply_json(value: Any) -> Any:
    """A Redis reply (as redis-py gives it) as a JSON value (module docstring)."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, list | tuple | set):
        return [reply_json(v) for v in value]
    if isinstance(value, dict):
        return {str(reply_json(k)): reply_json(v) for k, v in value.items()}
    if isinstance(value, IogateError):
        return {"error": problem_for(value)[1]}
    if isinstance(value, float) and value != value:
        return str(value)
    return value
