"""The header validator (iogate.http.headers) and the redactor (iogate.http.redact)."""

from __future__ import annotations

import orjson
import pytest
from multidict import CIMultiDict

from iogate.config import parse_config
from iogate.errors import InvalidHeaderError, InvalidInputError, UpstreamHTTPError
from iogate.http import ApiKeyQuery, BearerAuth, Upstream
from iogate.http.headers import caller_headers, check_header
from iogate.http.redact import REDACTED, Redactor

SECRET = "sk-unit-SECRET-42"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("X-Api-Key", "v"),
        ("!#$%&'*+-.^_`|~09azAZ", ""),
        ("Accept", "text/html, */*;q=0.8"),
        ("X-Tab", "a\tb"),
        ("X-Latin", "café \xff"),  # obs-text
    ],
)
def test_valid_headers_pass(name: str, value: str) -> None:
    check_header(name, value)


@pytest.mark.parametrize(
    "name", ["", "X Y", " X", "X:Y", "X\rY", "X\nY", "X\x00", "X\tY", "Xé", "X-\ud800", "(x)"]
)
def test_a_name_that_is_not_a_token_is_refused(name: str) -> None:
    with pytest.raises(InvalidHeaderError) as info:
        check_header(name, "v")
    assert isinstance(info.value, InvalidInputError)  # the gateway's 400 invalid-input
    assert isinstance(info.value, ValueError)
    assert info.value.header is None


@pytest.mark.parametrize(
    "value",
    ["a\r\nInjected: 1", "a\rb", "a\nb", "a\x00b", "\x01", "a\x1fb", "a\x7fb", "€", "\ud800"],
)
def test_a_value_with_control_or_non_latin1_characters_is_refused(value: str) -> None:
    with pytest.raises(InvalidHeaderError) as info:
        check_header("X-Ok", value)
    assert info.value.header == "X-Ok"
    assert "Injected" not in str(info.value)  # a value is never quoted


def test_caller_headers_drop_hop_by_hop_listed_and_configured_ones() -> None:
    configured = CIMultiDict({"x-api-key": "k", "Authorization": "Bearer t"})
    got = caller_headers(
        {
            "Connection": "X-Listed, close",
            "X-Listed": "1",
            "Keep-Alive": "5",
            "TE": "trailers",
            "Host": "evil",
            "Content-Length": "9",
            "Transfer-Encoding": "chunked",
            "Proxy-Authorization": "Basic x",
            "X-API-KEY": "evil",
            "authorization": "evil",
            "X-Kept": "first",
            "x-kept": "last",
            "Accept": "*/*",
        },
        configured,
    )
    assert got == [("x-kept", "last"), ("Accept", "*/*")]


def test_caller_headers_check_every_header_before_returning() -> None:
    with pytest.raises(InvalidHeaderError):
        caller_headers({"Host": "x", "X-Bad": "a\nb"}, CIMultiDict())  # dropped or not


def test_an_upstream_refuses_bad_configured_headers() -> None:
    with pytest.raises(ValueError, match="X-Bad"):
        Upstream("u", base_url="http://127.0.0.1:1", headers={"X-Bad": "a\r\nb"})


def test_an_upstream_redacts_auth_and_credential_named_headers_only() -> None:
    api = Upstream(
        "u",
        base_url="http://127.0.0.1:1",
        headers={
            "X-Api-Key": "literal-key-123",
            "Authorization-Extra": "Token abcdefghij",
            "Accept": "application/json",  # not a credential: never redacted
            "anthropic-version": "2023-06-01",
        },
        auth=BearerAuth("bearer-token-xyz"),
        secrets=["from-env-value", "short"],
    )
    text = api.redactor.text(
        "literal-key-123 abcdefghij bearer-token-xyz from-env-value short application/json"
        " 2023-06-01"
    )
    assert text == f"{REDACTED} {REDACTED} {REDACTED} {REDACTED} short application/json 2023-06-01"
    assert "literal" not in repr(api)
    assert not Upstream("v", base_url="http://127.0.0.1:1").redactor  # no secrets: falsy
    query = Upstream("q", base_url="http://127.0.0.1:1", auth=ApiKeyQuery("query-key-1234"))
    assert query.redactor.text("?api_key=query-key-1234") == f"?api_key={REDACTED}"


def test_config_records_which_header_values_came_from_the_environment() -> None:
    config = parse_config(
        {
            "upstreams": {
                "e": {
                    "base_url": "http://127.0.0.1:1",
                    "headers": {
                        "X-Custom": "Token ${TOKEN}",
                        "X-Version": "${VERSION:-2023-06-01}",  # a default: not a secret
                        "X-Plain": "plain-value-1",
                    },
                }
            }
        },
        environ={"TOKEN": "tok-from-env-1"},
    )
    cfg = config.upstreams["e"]
    assert cfg.env_header_values == ("tok-from-env-1",)
    assert cfg.model_copy(update={"timeout": 1.0}).env_header_values == ("tok-from-env-1",)


def test_short_values_are_never_secrets_and_longest_match_wins() -> None:
    redactor = Redactor(["1234567", "", "abcdefgh", "abcdefghij"])
    assert redactor.secrets == ("abcdefghij", "abcdefgh")
    assert redactor.text("1234567 abcdefghij abcdefgh!") == f"1234567 {REDACTED} {REDACTED}!"
    assert "abcdefgh" not in repr(redactor)
    assert not Redactor(["short"])


def test_text_and_bytes_are_returned_unchanged_without_a_match() -> None:
    redactor = Redactor([SECRET])
    text = "nothing to see " * 10
    assert redactor.text(text) is text
    data = text.encode()
    assert redactor.data(data) is data
    assert redactor.data(b"\xff" + SECRET.encode() + b"\x00") == b"\xff[REDACTED]\x00"


def test_json_strings_are_redacted_keys_included_and_the_json_stays_valid() -> None:
    secret = 'sk-"quoted\\/slash'
    redactor = Redactor([secret, SECRET])
    value = {"a": [SECRET, {f"k{SECRET}": 1}], "n": 2, "t": True, "z": None, secret: secret}
    raw = orjson.dumps(value)
    redacted = redactor.json_body(raw, orjson.loads(raw))
    assert redacted == {
        "a": [REDACTED, {f"k{REDACTED}": 1}],
        "n": 2,
        "t": True,
        "z": None,
        REDACTED: REDACTED,
    }
    out = orjson.dumps(redacted)
    assert SECRET.encode() not in out
    assert orjson.loads(out) == redacted


def test_a_secret_spelled_with_json_escapes_is_found_once_parsed() -> None:
    redactor = Redactor([SECRET])
    raw = ('{"k": "' + "".join(f"\\u{ord(c):04x}" for c in SECRET) + '"}').encode()
    assert SECRET.encode() not in raw
    assert redactor.json_body(raw, orjson.loads(raw)) == {"k": REDACTED}
    escaped_slash = Redactor(["sk-with/slash-1"])
    raw = b'{"k": "sk-with\\/slash-1"}'
    assert escaped_slash.json_body(raw, orjson.loads(raw)) == {"k": REDACTED}


def test_a_plainly_spelled_secret_is_replaced_in_the_bytes_and_reparsed() -> None:
    redactor = Redactor([SECRET])
    value = {"a": f"x{SECRET}y", SECRET: [SECRET], "n": 1.5}
    raw = orjson.dumps(value)
    assert redactor.json_body(raw, orjson.loads(raw)) == redactor.json(value)
    assert redactor.json(value) == {"a": f"x{REDACTED}y", REDACTED: [REDACTED], "n": 1.5}
    digits = Redactor(["1234567890"])  # inside a number: not JSON once replaced, so walked
    raw = b'{"n": 1234567890, "s": "id 1234567890"}'
    assert digits.json_body(raw, orjson.loads(raw)) == {"n": 1234567890, "s": f"id {REDACTED}"}
    # a match that begins inside an escape sequence (\n + "nabcdefgh"...) is walked too
    escape = Redactor(["nabcdefgh"])
    raw = b'{"s": "\\nabcdefgh", "t": "nabcdefgh"}'
    assert escape.json_body(raw, orjson.loads(raw)) == {"s": "\nabcdefgh", "t": REDACTED}


def test_json_body_without_a_hint_is_returned_as_parsed() -> None:
    redactor = Redactor([SECRET])
    raw = orjson.dumps({"text": "x" * 1000, "items": list(range(20))})
    parsed = orjson.loads(raw)
    assert redactor.json_body(raw, parsed) is parsed  # not walked


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 64])
def test_a_stream_redacts_a_secret_split_at_any_point(size: int) -> None:
    text = f"a {SECRET} b {SECRET[:6]} c {SECRET}{SECRET} s"
    redactor = Redactor([SECRET])
    stream = redactor.stream()
    pieces = [stream.feed(text[i : i + size]) for i in range(0, len(text), size)]
    pieces.append(stream.flush())
    joined = "".join(pieces)
    assert joined == f"a {REDACTED} b {SECRET[:6]} c {REDACTED}{REDACTED} s"
    assert not any(SECRET[:4] in p and SECRET[4:8] in p for p in pieces)


def test_a_stream_holds_back_only_a_possible_start_of_a_secret() -> None:
    stream = Redactor([SECRET]).stream()
    assert stream.feed("hello world ") == "hello world "  # nothing held
    assert stream.feed("and sk-un") == "and "  # could begin the secret
    assert stream.feed("known") == "sk-unknown"  # it did not
    assert stream.flush() == ""
    assert Redactor().stream().feed(SECRET) == SECRET  # no secrets: a pass-through


def test_an_upstream_error_is_redacted_in_place() -> None:
    error = UpstreamHTTPError(f"upstream answered 401 Bad {SECRET}", body_excerpt=f"x{SECRET}y")
    assert Redactor([SECRET]).error(error) is error
    assert str(error) == f"upstream answered 401 Bad {REDACTED}"
    assert error.args == (f"upstream answered 401 Bad {REDACTED}",)
    assert error.body_excerpt == f"x{REDACTED}y"
