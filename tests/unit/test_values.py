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


def _rows_of(column: list[object]) -> list[tuple[object, ...]]:
    # ``column`` between a column of strings and one of small integers
    return [("s", value, index) for index, value in enumerate(column)]


def test_rows_are_encoded_as_row_by_row_whatever_each_column_holds() -> None:
    from iogate.databases._values import to_json_rows

    big = MAX_SAFE_INTEGER + 1
    columns: list[list[object]] = [
        ["a", None, "b"] * 4,  # strings and nulls: as they are
        [1, 2, None, -MAX_SAFE_INTEGER, MAX_SAFE_INTEGER] * 2,  # safe integers
        [1, 2, big, 3] * 3,  # one integer past 2**53: that column is encoded
        [-big, 1] * 5,
        [1.5, None, 2.5] * 4,
        [1.5, float("nan"), 2.5, float("inf")] * 3,
        [True, 1, False, 0] * 3,  # bools mixed with integers
        [b"\x00", None] * 5,
        [Decimal("1.1"), Decimal("2")] * 5,
        [dt.date(2026, 1, 2), "x"] * 5,
        [[1, big], [2]] * 5,
        [None] * 10,
        [True, False, None] * 4,
    ]
    for column in columns:
        rows = _rows_of(column)
        assert len(rows) >= 8
        assert to_json_rows(rows) == [to_json_row(r) for r in rows], column
    short = [(big, float("nan"), b"\x01")] * 3  # fewer rows than the column-wise pass
    assert to_json_rows(short) == [to_json_row(r) for r in short]
    assert to_json_rows([]) == []


def test_encoding_rows_leaves_the_driver_rows_unchanged() -> None:
    from iogate.databases._values import to_json_rows

    rows = [[MAX_SAFE_INTEGER + 1, "x"] for _ in range(10)]
    encoded = to_json_rows(rows)
    assert encoded[0] == [str(MAX_SAFE_INTEGER + 1), "x"]
    assert rows[0] == [MAX_SAFE_INTEGER + 1, "x"]  # copied, not rewritten in place
