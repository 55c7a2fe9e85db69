"""Slow clients cannot hold the gateway: a real ``iogate serve`` process with
``[server.limits] body_timeout = head_timeout = 0.3``, ``max_head_bytes =
16384`` and ``max_connections = 3``, spoken to over raw sockets. A body that
stalls (or never starts) is answered 408 problem+json and the connection
closed; a file upload (streamed to disk) may take longer than that as long as
its pieces keep coming; a silent connection or a dripping head gets 408, an
oversized head 431, and connections past the ceiling get uvicorn's 503."""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Iterator

import pytest

from tests.servers import free_port, stop, wait_for_port
from tests.subprocess_env import start_iogate

BODY_TIMEOUT_S = 0.3
MAX_CONNECTIONS = 3
MAX_HEAD_BYTES = 16384
QUERY = b'{"sql": "SELECT 1 AS one"}'


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    tmp = tmp_path_factory.mktemp("slow")
    (tmp / "iogate.toml").write_text(
        '[databases.main]\nurl = "sqlite:///var/main.db"\n\n'
        '[files]\nbase_dir = "files"\nmax_file_bytes = 1048576\n\n'
        f"[server.limits]\nbody_timeout = {BODY_TIMEOUT_S}\n"
        f"max_connections = {MAX_CONNECTIONS}\n"
        f"head_timeout = {BODY_TIMEOUT_S}\nmax_head_bytes = {MAX_HEAD_BYTES}\n"
    )
    number = free_port()
    proc = start_iogate(tmp, number)
    try:
        wait_for_port(number, proc, "iogate serve")
        yield number
    finally:
        stop(proc, signal.SIGTERM)


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.settimeout(5)
    return sock


def _post_head(length: int) -> bytes:
    return (
        b"POST /v1/databases/main/query HTTP/1.1\r\nHost: gw\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: " + str(length).encode() + b"\r\n\r\n"
    )


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response (Content-Length framed) from ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        if not piece:
            raise AssertionError(f"connection closed mid-response: {data!r}")
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        piece = sock.recv(65536)
        if not piece:
            break
        body += piece
    return status, headers, body


def _closed(sock: socket.socket) -> bool:
    """Whether the server closed ``sock`` (EOF within the socket's timeout)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def _check_408(sock: socket.socket, started: float, slug: str = "body-timeout") -> None:
    status, headers, body = _read_response(sock)
    elapsed = time.monotonic() - started
    assert status == 408, body
    assert headers["content-type"] == "application/problem+json"
    assert headers["connection"] == "close"
    problem = json.loads(body)
    assert problem["type"] == f"urn:iogate:problem:{slug}"
    assert problem["status"] == 408
    assert BODY_TIMEOUT_S <= elapsed < BODY_TIMEOUT_S + 1.0, f"answered after {elapsed:.2f}s"
    assert _closed(sock)


def test_stalled_body_gets_408_and_the_connection_closed(port: int) -> None:
    with _connect(port) as sock:
        started = time.monotonic()
        sock.sendall(_post_head(len(QUERY)) + QUERY[:10])  # the rest never comes
        _check_408(sock, started)


def test_body_that_never_starts_gets_408(port: int) -> None:
    with _connect(port) as sock:
        started = time.monotonic()
        sock.sendall(_post_head(len(QUERY)))
        _check_408(sock, started)


def test_bodies_in_time_are_served_on_a_kept_alive_connection(port: int) -> None:
    with _connect(port) as sock:
        sock.sendall(_post_head(len(QUERY)) + QUERY)  # in one message
        status, _, body = _read_response(sock)
        assert status == 200
        assert json.loads(body)["rows"] == [[1]]
        sock.sendall(_post_head(len(QUERY)) + QUERY[:5])  # in pieces, well within time
        sock.sendall(QUERY[5:])
        status, headers, body = _read_response(sock)
        assert status == 200
        assert json.loads(body)["rows"] == [[1]]
        assert headers.get("connection") != "close"
        head = _post_head(len(QUERY))  # a head in two pieces, well within time
        sock.sendall(head[:20])
        sock.sendall(head[20:] + QUERY)
        status, _, body = _read_response(sock)
        assert status == 200
        assert json.loads(body)["rows"] == [[1]]


def test_silent_connection_gets_408_and_is_closed(port: int) -> None:
    started = time.monotonic()  # the head's clock starts when the connection opens
    with _connect(port) as sock:
        _check_408(sock, started, "head-timeout")  # nothing sent at all


def test_dripping_head_gets_408(port: int) -> None:
    started = time.monotonic()  # the head's clock starts when the connection opens
    with _connect(port) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: gw\r\n")  # the blank line never comes
        _check_408(sock, started, "head-timeout")


def test_oversized_head_gets_431_and_is_closed(port: int) -> None:
    with _connect(port) as sock:
        # past the bound in one send, then nothing: all of it is read, so the
        # server's close is a FIN after its answer, not a reset
        sock.sendall(
            b"GET /health HTTP/1.1\r\nHost: gw\r\nX-Big: " + b"a" * (MAX_HEAD_BYTES + 4096)
        )
        status, headers, body = _read_response(sock)
        assert status == 431, body
        assert headers["connection"] == "close"
        assert json.loads(body)["type"] == "urn:iogate:problem:head-too-large"
        assert _closed(sock)


def _put_head(path: str, length: int) -> bytes:
    return (
        f"PUT /v1/files/{path} HTTP/1.1\r\nHost: gw\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def test_steady_upload_may_outlast_body_timeout(port: int) -> None:
    pieces = 6
    with _connect(port) as sock:
        started = time.monotonic()
        sock.sendall(_put_head("steady.bin", pieces * 100))
        for _ in range(pieces):  # a slow client: a piece every 0.1 s, 0.6 s in all
            sock.sendall(b"s" * 100)
            time.sleep(0.1)
        status, _, body = _read_response(sock)
        assert time.monotonic() - started > 2 * BODY_TIMEOUT_S
        assert status == 201, body
        assert json.loads(body)["size"] == pieces * 100


def test_stalled_upload_gets_408(port: int) -> None:
    with _connect(port) as sock:
        started = time.monotonic()
        sock.sendall(_put_head("stalled.bin", 1000) + b"x" * 10)
        _check_408(sock, started)


def _health(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: gw\r\n\r\n")
    return _read_response(sock)


def test_connections_past_the_ceiling_get_503(port: int) -> None:
    held = [_connect(port) for _ in range(MAX_CONNECTIONS)]
    try:
        for sock in held:  # each one answered and kept open
            assert _health(sock)[0] == 200
        with _connect(port) as extra:
            status, headers, body = _health(extra)
            assert status == 503
            assert headers["content-type"].startswith("text/plain")  # uvicorn's own answer
            assert body == b"Service Unavailable"
            assert headers["connection"] == "close"
        # (uvicorn counts open connections: while one more than the ceiling is
        # open, a request on any of them would get 503.) A closed one frees room:
        held.pop().close()
        deadline = time.monotonic() + 5  # the server notices the close asynchronously
        while True:
            with _connect(port) as again:
                status = _health(again)[0]
            if status == 200 or time.monotonic() > deadline:
                break
        assert status == 200
    finally:
        for sock in held:
            sock.close()
