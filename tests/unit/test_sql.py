import pytest

from iogate.databases._sql import compile_postgres, first_keyword, is_read_statement
from iogate.errors import QueryError


def test_named_parameters_become_dollar_placeholders_in_order_of_appearance() -> None:
    sql, args = compile_postgres(
        "SELECT * FROM t WHERE a = :a AND b = :b OR a2 = :a", {"b": 2, "a": 1, "unused": 3}
    )
    assert sql == "SELECT * FROM t WHERE a = $1 AND b = $2 OR a2 = $1"
    assert args == [1, 2]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT ':x' AS s",
        'SELECT 1 AS ":x"',
        "SELECT 1 -- :x\n",
        "SELECT 1 /* :x /* nested :y */ :z */",
        "SELECT $$ :x $$",
        "SELECT $body$ :x ? $body$",
        "SELECT E'it\\'s :x'",
        "SELECT 'it''s :x'",
        "SELECT now()::date",
        "SELECT ARRAY[1,2,3][1:2]",
    ],
)
def test_placeholders_inside_literals_comments_and_casts_are_left_alone(sql: str) -> None:
    assert compile_postgres(sql, {}) == (sql, [])


def test_named_parameter_after_cast_and_inside_expressions() -> None:
    sql, args = compile_postgres("SELECT :v::int + (:w)", {"v": "1", "w": 2})
    assert sql == "SELECT $1::int + ($2)"
    assert args == ["1", 2]


def test_question_marks_are_positional_with_a_list() -> None:
    sql, args = compile_postgres("SELECT * FROM t WHERE a = ? AND b = ?", [1, "x"])
    assert sql == "SELECT * FROM t WHERE a = $1 AND b = $2"
    assert args == [1, "x"]


def test_native_dollar_placeholders_pass_through_and_keep_jsonb_question_mark() -> None:
    sql = "SELECT data ? 'k' FROM t WHERE id = $1"
    assert compile_postgres(sql, [7]) == (sql, [7])


def test_jsonb_question_mark_operator_with_named_parameters() -> None:
    sql, args = compile_postgres("SELECT :doc::jsonb ? 'k'", {"doc": '{"k": 1}'})
    assert sql == "SELECT $1::jsonb ? 'k'"
    assert args == ['{"k": 1}']


def test_question_mark_with_an_object_of_parameters_is_the_jsonb_operator() -> None:
    assert compile_postgres("SELECT d ? :k FROM t", {"k": "a"}) == ("SELECT d ? $1 FROM t", ["a"])


def test_missing_named_parameter() -> None:
    with pytest.raises(QueryError, match=":b"):
        compile_postgres("SELECT :a, :b", {"a": 1})


def test_wrong_number_of_question_marks() -> None:
    with pytest.raises(QueryError, match="2 \\? placeholders but 1"):
        compile_postgres("SELECT ?, ?", [1])


def test_mixed_styles_are_refused() -> None:
    with pytest.raises(QueryError):
        compile_postgres("SELECT :a", [1])
    with pytest.raises(QueryError):
        compile_postgres("SELECT ?", "ab")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("sql", "keyword", "read"),
    [
        ("SELECT 1", "SELECT", True),
        ("  -- comment\n/* c */ (select 1)", "SELECT", True),
        ("values (1)", "VALUES", True),
        ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", "WITH", False),
        ("EXPLAIN ANALYZE DELETE FROM t", "EXPLAIN", False),
        ("INSERT INTO t VALUES (1)", "INSERT", False),
        ("", "", False),
    ],
)
def test_statement_classification(sql: str, keyword: str, read: bool) -> None:
    assert first_keyword(sql) == keyword
    assert is_read_statement(sql) is read
