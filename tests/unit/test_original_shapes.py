"""The original design's shapes, without I/O: positional objects, Redis
operations as commands, command scopes, caller-scoped cache keys."""

from __future__ import annotations

import pytest

from iogate.errors import InvalidInputError
from iogate.server.schemas import positional_params
from iogate.wire.cache_keys import API_PREFIX, CALLER_PREFIX, caller_key
from iogate.wire.redis_commands import operation_command, redis_scope, reply_json


def test_positional_objects_become_lists() -> None:
    assert positional_params({"2": "b", "1": "a"}) == ["a", "b"]
    assert positional_params({"1": None}) == [None]
    assert positional_params({"id": 1}) == {"id": 1}  # names stay names
    assert positional_params({}) == {}
    assert positional_params([1, 2]) == [1, 2]
    assert positional_params(None) is None
    for bad in ({"1": 1, "3": 3}, {"0": 1}, {"01": 1}, {"1": 1, "a": 2}, {"2": 2}):
        with pytest.raises(ValueError, match="positional parameters"):
            positional_params(bad)


def test_redis_operations_as_commands() -> None:
    assert operation_command("get", "k") == ["GET", "k"]
    assert operation_command("set", "k", "v") == ["SET", "k", "v"]
    assert operation_command("set", "k", 1.5, ttl_s=2.5) == ["SET", "k", 1.5, "PX", 2500]
    assert operation_command("set", "k", {"a": [1]}) == ["SET", "k", '{"a":[1]}']
    assert operation_command("set", "k", True) == ["SET", "k", "true"]
    assert operation_command("delete", "k") == ["DEL", "k"]
    assert operation_command("incr", "k") == ["INCRBY", "k", 1]
    assert operation_command("incr", "k", -3) == ["INCRBY", "k", -3]
    assert operation_command("expire", "k", ttl_s=0.0001) == ["PEXPIRE", "k", 1]
    for args in (("set", "k"), ("expire", "k"), ("incr", "k", "2"), ("incr", "k", True)):
        with pytest.raises(InvalidInputError):
            operation_command(*args)


def test_command_scopes_and_replies() -> None:
    assert [redis_scope(c) for c in ("GET", "HGETALL", "TTL", "SET", "DEL", "INCRBY")] == [
        *("read", "read", "read"),
        *("write", "write", "write"),
    ]
    assert reply_json([b"text", b"\xff", 1, None]) == ["text", {"base64": "/w=="}, 1, None]


def test_caller_keys_are_scoped_and_stable() -> None:
    rights = [True, ["users"], None, 100, 1000]
    key = caller_key("reader", "main", "names", rights)
    assert key.startswith(CALLER_PREFIX)
    assert not key.startswith(API_PREFIX)
    assert key == caller_key("reader", "main", "names", list(rights))
    assert key != caller_key("writer", "main", "names", rights)
    assert key != caller_key("reader", "other", "names", rights)
    assert key != caller_key("reader", "main", "names", [False, None, None, 100, 1000])
