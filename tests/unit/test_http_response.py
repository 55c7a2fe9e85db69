"""The hot path's Response constructor builds the same frozen Response."""

from __future__ import annotations

import dataclasses

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from iogate.http.response import Response, new_response


def test_new_response_equals_the_dataclass_constructor_and_stays_frozen() -> None:
    headers = CIMultiDictProxy(CIMultiDict({"Content-Type": "application/json"}))
    fast = new_response(201, headers, b'{"a": 1}', 0.25, 2, "Created")
    slow = Response(201, headers, b'{"a": 1}', 0.25, 2, "Created")
    assert fast == slow
    assert (fast.reason, fast.from_cache, fast.json()) == ("Created", False, {"a": 1})
    assert dataclasses.replace(fast, attempts=3).attempts == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.status = 500  # type: ignore[misc]
