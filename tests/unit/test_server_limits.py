"""SQL size limits read from the request's [server.limits] (no I/O)."""

import pytest
from starlette.requests import Request

from iogate.config import LimitsConfig
from iogate.errors import InvalidInputError
from iogate.server.limits import check_sql, limits_of


def _request(limits: LimitsConfig | None) -> Request:
    state = {"limits": limits} if limits is not None else {}
    return Request({"type": "http", "method": "POST", "path": "/", "headers": [], "state": state})


def test_sql_length_and_parameter_count_are_bounded() -> None:
    request = _request(LimitsConfig(max_sql_chars=10, max_params=2))
    check_sql(request, "SELECT 1", [1, 2])
    check_sql(request, "SELECT 1", {"a": 1})
    with pytest.raises(InvalidInputError, match="longer than 10 characters"):
        check_sql(request, "SELECT 1 + 1", None)
    with pytest.raises(InvalidInputError, match="more than 2 parameters"):
        check_sql(request, "SELECT ?", [1, 2, 3])
    with pytest.raises(InvalidInputError, match="more than 2 parameters"):
        check_sql(request, "SELECT :a", {"a": 1, "b": 2, "c": 3})


def test_defaults_apply_outside_the_middleware() -> None:
    assert limits_of(_request(None)) == LimitsConfig()
