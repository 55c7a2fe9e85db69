"""SSE parsing per WHATWG HTML §9.2.6, fed whole and byte by byte."""

import itertools

from hypothesis import given
from hypothesis import strategies as st

from iogate.http.sse import ServerSentEvent, SSEDecoder

STREAM = (
    b"\xef\xbb\xbf: a comment\r\n"
    b"event: greet\r\ndata: hello\r\ndata:  two spaces\r\nid: 42\r\n\r\n"
    b"data\n\n"  # a bare field name: empty data line -> data "" (dispatched: buffer not empty)
    b'data: {"n": 1}\rretry: 2500\r\r'
    b"id: bad\x00id\ndata: keeps id\n\n"
    b"event: nodata\n\n"  # no data: not dispatched, type reset
    b"data: x\nunknown: field\nretry: 12a\n\n"
    b"data: \xc3\xa9t\xc3\xa9\n\n"
    b"data: never dispatched"
)
EXPECTED = [
    ServerSentEvent("greet", "hello\n two spaces", "42"),
    ServerSentEvent("message", "", "42"),
    ServerSentEvent("message", '{"n": 1}', "42", 2500),
    ServerSentEvent("message", "keeps id", "42"),
    ServerSentEvent("message", "x", "42"),
    ServerSentEvent("message", "été", "42"),
]


def test_whole_stream() -> None:
    assert SSEDecoder().feed(STREAM) == EXPECTED


def test_byte_by_byte_gives_the_same_events() -> None:
    decoder = SSEDecoder()
    events = [e for i in range(len(STREAM)) for e in decoder.feed(STREAM[i : i + 1])]
    assert events == EXPECTED


@given(st.lists(st.integers(min_value=1, max_value=len(STREAM)), max_size=12))
def test_any_chunking_gives_the_same_events(cuts: list[int]) -> None:
    bounds = sorted({0, len(STREAM), *cuts})
    decoder = SSEDecoder()
    events = [e for a, b in itertools.pairwise(bounds) for e in decoder.feed(STREAM[a:b])]
    assert events == EXPECTED


def test_json_helper() -> None:
    assert ServerSentEvent(data='{"a": [1]}').json() == {"a": [1]}
