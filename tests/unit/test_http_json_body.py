"""``iogate.http.upstream.json_body``: orjson's encoding, the standard
library's for integers orjson refuses, and one error for what is not JSON."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from iogate.errors import InvalidInputError
from iogate.http.upstream import json_body


@pytest.mark.parametrize(
    "value",
    [{"a": 1, "b": [1.5, None, True, "é\U0001f600"]}, [], "x", 2**63 - 1, -(2**63)],
)
def test_what_orjson_encodes_is_orjson_s_encoding(value: Any) -> None:
    assert json_body(value) == orjson.dumps(value)


@pytest.mark.parametrize("value", [2**64, -(2**70), {"n": [10**40, "é"]}])
def test_integers_beyond_64_bits_are_sent_as_they_are(value: Any) -> None:
    body = json_body(value)
    assert json.loads(body) == value
    assert b" " not in body  # compact, as orjson's
    if isinstance(value, dict):
        assert "é".encode() in body  # UTF-8, not \\u escapes


@pytest.mark.parametrize("value", [{1, 2}, object(), "\ud800", [2**70, float("inf")]])
def test_what_is_not_json_is_an_invalid_input(value: Any) -> None:
    with pytest.raises(InvalidInputError, match="the json body is not JSON"):
        json_body(value)
