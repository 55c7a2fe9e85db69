import pytest
from yarl import URL

from iogate.errors import InvalidInputError
from iogate.http._urls import MAX_PATH_LENGTH, resolve_under

BASE = URL("http://127.0.0.1:9000/api")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v1/items?limit=5", "http://127.0.0.1:9000/api/v1/items?limit=5"),
        ("v1/items", "http://127.0.0.1:9000/api/v1/items"),
        ("", "http://127.0.0.1:9000/api"),
        ("/", "http://127.0.0.1:9000/api/"),
        ("/a%20b c", "http://127.0.0.1:9000/api/a%20b%20c"),
        ("/models/gpt:generate", "http://127.0.0.1:9000/api/models/gpt:generate"),
        ("/a..b/c.d", "http://127.0.0.1:9000/api/a..b/c.d"),
    ],
)
def test_paths_resolve_under_the_base(path: str, expected: str) -> None:
    assert str(resolve_under(BASE, path)) == expected


@pytest.mark.parametrize(
    "path",
    [
        "http://evil.example/x",
        "https://127.0.0.1:9000/api/x",
        "//evil.example/x",
        "mailto:someone",
        "/../outside",
        "..",
        "/a/../../outside",
        "/a/%2e%2e/%2e%2e/outside",
        "/a/%2E%2E/outside",
        "/a/%252e%252e/outside",
        "/a/..%2foutside",
        "/a/.%2e/outside",
        "/./x",
        "/a\\..\\b",
        "/a\x00b",
        "/a\r\nHost: evil",
        "/x#fragment",
        "/" + "a" * MAX_PATH_LENGTH,
    ],
)
def test_paths_that_would_leave_the_base_are_refused(path: str) -> None:
    with pytest.raises(InvalidInputError):
        resolve_under(BASE, path)


def test_base_with_trailing_slash() -> None:
    assert str(resolve_under(URL("http://h/api/"), "/x")) == "http://h/api/x"
    assert str(resolve_under(URL("http://h"), "x")) == "http://h/x"
