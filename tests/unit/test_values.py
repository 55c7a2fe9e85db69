import datetime as dt
import uuid
from decimal import Decimal

import orjson

from iogate.databases._values import MAX_SAFE_INTEGER, to_json_row, to_json_value


def test_encoding_table() -> None:
    u = uuid.UUID("12345678-1234-5678-1234-567812345678")
    row = (
        None,
        True,
        "t",
        42,
        MAX_SAFE_INTEGER + 1,
        -(MAX_SAFE_INTEGER + 1),
        1.5,
        float("nan"),
        Decimal("1.10"),
        b"\x00\xff",
        dt.date(2026, 1, 2),
        dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        dt.time(3, 4, 5),
        dt.timedelta(seconds=90),
        u,
        [1, Decimal("2")],
        {"a": b"x"},
    )
    assert to_json_row(row) == [
        None,
        True,
        "t",
        42,
        str(MAX_SAFE_INTEGER + 1),
        str(-(MAX_SAFE_INTEGER + 1)),
        1.5,
        "nan",
        "1.10",
        "AP8=",
        "2026-01-02",
        "2026-01-02T03:04:05+00:00",
        "03:04:05",
        90.0,
        str(u),
        [1, "2"],
        {"a": "eA=="},
    ]
    assert orjson.loads(orjson.dumps(to_json_row(row)))[4] == "9007199254740992"


def test_safe_integer_boundary_stays_a_number() -> None:
    assert to_json_value(MAX_SAFE_INTEGER) == MAX_SAFE_INTEGER
    assert to_json_value(-MAX_SAFE_INTEGER) == -MAX_SAFE_INTEGER


def test_json_parameters_are_decoded_by_postgres_type() -> None:
    from iogate.databases._values import from_json_value

    assert from_json_value("2026-01-02T03:04:05Z", "timestamptz") == dt.datetime(
        2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC
    )
    assert from_json_value("2026-01-02", "date") == dt.date(2026, 1, 2)
    assert from_json_value("1.10", "numeric") == Decimal("1.10")
    assert from_json_value("AP8=", "bytea") == b"\x00\xff"
    assert from_json_value(90, "interval") == dt.timedelta(seconds=90)
    assert from_json_value("9007199254740993", "int8") == 9007199254740993
    assert from_json_value({"a": [1]}, "jsonb") == {"a": [1]}  # the codec writes it
    assert from_json_value(["1", "2"], "_numeric") == [Decimal(1), Decimal(2)]
    assert from_json_value(["1", "2"], "numeric[]") == [Decimal(1), Decimal(2)]  # asyncpg's name
    assert from_json_value([1, 2], "jsonb") == [1, 2]
    assert from_json_value("x", "text") == "x"
    assert from_json_value(None, "uuid") is None


def test_undecodable_parameter_names_the_type_not_the_value() -> None:
    import pytest

    from iogate.databases._values import from_json_value

    with pytest.raises(ValueError, match="timestamptz") as info:
        from_json_value("secret-not-a-date", "timestamptz")
    assert "secret" not in str(info.value)
