"""Bytes a client may send that the gateway must refuse with a 4xx problem,
never a 500: lone surrogates in JSON bodies, URLs whose percent-escapes are
not UTF-8, odd header bytes, file names the file system cannot hold, and
requests uvicorn's parser rejects (the real ``iogate serve`` over a raw
socket). Real SQLite, real loopback upstream, real uvicorn."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from yarl import URL

from iogate.config import parse_config
from iogate.files import FileStore, UnsafePathError
from iogate.files import _paths as file_paths
from iogate.server.app import create_app
from iogate.server.deps import JsonBodyRoute
from iogate.server.keys import hash_key
from iogate.server.protocol import HTTP_PROTOCOL, ProblemH11Protocol
from tests.conftest import GatewayClient, serve_app
from tests.servers import free_port, stop, wait_for_port
from tests.subprocess_env import child_env
from tests.upstream_app import UpstreamServer

PROBLEM = "application/problem+json"
KEY = "iog_hostile_input_test_key_0123456789"
LONE = '"\\ud800"'  # JSON text of a lone (high) surrogate
LOW = '"\\udc80"'  # a lone low surrogate: what surrogateescape makes of byte 0x80


@pytest.fixture
async def client(tmp_path: Path, upstream: UpstreamServer) -> AsyncIterator[GatewayClient]:
    config = parse_config(
        {
            "databases": {"main": {"url": f"sqlite:///{tmp_path / 'db.sqlite'}"}},
            "upstreams": {"example": {"base_url": upstream.base_url}},
            "files": {"base_dir": str(tmp_path / "base"), "max_file_bytes": 1_000_000},
        },
        environ={},
    )
    async with serve_app(config) as served:
        yield served


async def _send(
    client: GatewayClient,
    method: str,
    raw_path: str,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, str, Any]:
    url = URL(client.base_url + raw_path, encoded=True)
    sent = {"content-type": "application/json", **(headers or {})}
    async with client.session.request(method, url, data=data, headers=sent) as resp:
        body = await resp.read()
        ctype = resp.headers.get("content-type", "")
        return resp.status, ctype, json.loads(body) if body else None


# -- 1. JSON bodies ---------------------------------------------------------------

BODIES = [
    ("POST", "/v1/databases/main/query", '{"sql": %s}'),
    ("POST", "/v1/databases/main/query", '{"sql": "SELECT :a", "params": {"a": %s}}'),
    ("POST", "/v1/databases/main/query", '{"sql": "SELECT :a", "params": {%s: 1}}'),
    ("POST", "/v1/databases/main/batch", '{"statements": [{"sql": %s}]}'),
    ("POST", "/v1/databases/main/batch", '{"statements": [{"sql": "SELECT ?", "params": [[%s]]}]}'),
    ("POST", "/v1/upstreams/example/request", '{"method": "POST", "json": {"a": [%s]}}'),
    ("POST", "/v1/upstreams/example/request", '{"method": "POST", "json": {%s: 1}}'),
    ("POST", "/v1/upstreams/example/request", '{"method": "POST", "body": %s}'),
    ("POST", "/v1/upstreams/example/request", '{"path": %s}'),
    ("POST", "/v1/upstreams/example/request", '{"params": {"q": %s}}'),
    ("POST", "/v1/upstreams/example/batch", '{"requests": [{"method": "POST", "body": %s}]}'),
    ("POST", "/v1/upstreams/example/generate", '{"prompt": %s}'),
    ("POST", "/v1/batch", '{"steps": [{"kind": "database", "database": "main", "sql": %s}]}'),
    ("POST", "/v1/batch", '{"steps": [{"kind": "cache", "op": "set", "key": %s, "value": 1}]}'),
    ("POST", "/v1/batch", '{"steps": [{"kind": "cache", "op": "set", "key": "k", "value": %s}]}'),
    ("POST", "/v1/tasks", '{"name": %s, "steps": [{"kind": "cache", "op": "get", "key": "a"}]}'),
    ("PUT", "/v1/cache/k", '{"value": %s}'),
    ("PUT", "/v1/cache/k", '{"value": {"nested": {%s: [1]}}}'),
    ("POST", "/v1/cache/invalidate", '{"prefix": %s}'),
    ("POST", "/database/execute", '{"query": "SELECT :a", "params": {"a": %s}}'),
    ("POST", "/api/execute", '{"api_name": "example", "method": "POST", "data": %s}'),
]


@pytest.mark.parametrize(("method", "path", "template"), BODIES)
async def test_a_lone_surrogate_anywhere_in_a_body_is_422_before_any_route_logic(
    client: GatewayClient, upstream: UpstreamServer, method: str, path: str, template: str
) -> None:
    for surrogate in (LONE, LOW, '"a\\ud800b"'):
        body = (template % surrogate).encode()
        status, ctype, problem = await _send(client, method, path, body)
        assert (status, ctype) == (422, PROBLEM), (surrogate, problem)
        assert problem["type"] == "urn:iogate:problem:invalid-request"
        assert problem["errors"][0]["type"] == "json_invalid"
        assert problem["detail"].startswith("Invalid JSON: "), problem["detail"]
    assert upstream.seen == []  # refused at the edge: nothing was sent anywhere
    status, _, _ = await _send(client, "GET", "/v1/cache/k")
    assert status == 404  # nothing was stored either


@pytest.mark.parametrize(
    "raw",
    [
        b'{"value": "\xed\xa0\x80"}',  # a surrogate in CESU-8 (json.loads: surrogatepass)
        b'{"value": "\xff"}',  # not UTF-8 at all
        b'{"value": "\xc0\xaf"}',  # overlong "/"
    ],
)
async def test_a_body_that_is_not_utf8_is_422(client: GatewayClient, raw: bytes) -> None:
    for method, path in (("PUT", "/v1/cache/k"), ("POST", "/v1/databases/main/query")):
        status, ctype, problem = await _send(client, method, path, raw)
        assert (status, ctype) == (422, PROBLEM), (path, problem)
        assert problem["errors"][0]["type"] == "json_invalid"


async def test_paired_surrogates_and_big_integers_still_work(client: GatewayClient) -> None:
    big = 123456789012345678901234567890  # beyond 64 bits: kept exact, as json.loads did
    body = '{"value": {"emoji": "\\ud83d\\ude00", "big": ' + str(big) + "}}"
    status, _, _ = await _send(client, "PUT", "/v1/cache/k", body.encode())
    assert status == 200
    status, _, answer = await _send(client, "GET", "/v1/cache/k")
    assert status == 200
    # exact digits (the cache's JSON encoding writes integers past 64 bits as text)
    assert answer["value"] == {"emoji": "\U0001f600", "big": str(big)}


def test_every_route_of_the_app_parses_json_with_the_strict_route_class() -> None:
    routes = [r for r in create_app().routes if hasattr(r, "body_field")]
    assert len(routes) >= 20
    loose = [r.path for r in routes if not isinstance(r, JsonBodyRoute)]  # type: ignore[attr-defined]
    assert loose == []


# -- 1b. URLs and headers -----------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "raw_path"),
    [
        ("POST", "/v1/databases/%ED%A0%80/query"),
        ("POST", "/v1/databases/%FF/query"),
        ("GET", "/v1/cache/%FF"),
        ("PUT", "/v1/cache/%ED%A0%80"),
        ("PUT", "/v1/files/%FF"),
        ("PUT", "/v1/files/a/%C0%AFb"),
        ("POST", "/v1/databases/main/query?x=%FF"),
        ("GET", "/v1/tasks?status=%E2%82"),
    ],
)
async def test_percent_escapes_that_are_not_utf8_are_400_invalid_url(
    client: GatewayClient, tmp_path: Path, method: str, raw_path: str
) -> None:
    status, ctype, problem = await _send(client, method, raw_path, b'{"value": 1, "sql": "1"}')
    assert (status, ctype) == (400, PROBLEM), problem
    assert problem["type"] == "urn:iogate:problem:invalid-url"
    assert problem["request_id"]
    assert not (tmp_path / "base").exists() or list((tmp_path / "base").iterdir()) == []
    # the server decodes %FF to U+FFFD: had it gone through, this key would exist
    status, _, _ = await _send(client, "GET", "/v1/cache/%EF%BF%BD%EF%BF%BD%EF%BF%BD")
    assert status == 404


async def test_valid_percent_encoded_utf8_is_served(client: GatewayClient, tmp_path: Path) -> None:
    async with client.session.put(
        URL(client.base_url + "/v1/files/caf%C3%A9/%F0%9F%98%80.txt", encoded=True), data=b"x"
    ) as resp:
        assert resp.status == 201
    assert (tmp_path / "base" / "café" / "\U0001f600.txt").read_bytes() == b"x"


async def _raw_http(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """One request written byte for byte (no client library normalising it);
    the answer read to EOF."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


@pytest.fixture
async def keyed_port(tmp_path: Path) -> AsyncIterator[int]:
    config = parse_config(
        {
            "databases": {"main": {"url": f"sqlite:///{tmp_path / 'db.sqlite'}"}},
            "keys": {"k": {"sha256": hash_key(KEY), "scopes": ["db:main:read"]}},
        },
        environ={},
    )
    async with serve_app(config) as served:
        yield URL(served.base_url).port or 0


def _post(headers: bytes) -> bytes:
    body = b'{"sql": "SELECT 1 AS one"}'
    return (
        b"POST /v1/databases/main/query HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s"
        % (len(body), headers, body)
    )


@pytest.mark.parametrize(
    "authorization",
    [
        b"Bearer \xff\xfe\x80",
        b"Bearer " + KEY.encode() + b"\xff",
        b"\xc3\xa9\xed\xa0\x80",
        b"Bearer",
    ],
)
async def test_odd_bytes_in_authorization_are_401(keyed_port: int, authorization: bytes) -> None:
    status, headers, body = await _raw_http(
        keyed_port, _post(b"Authorization: %s\r\n" % authorization)
    )
    assert (status, headers["content-type"]) == (401, PROBLEM), body
    assert json.loads(body)["type"] == "urn:iogate:problem:unauthorized"
    auth = b"Authorization: Bearer %s\r\n" % KEY.encode()
    status, _, _ = await _raw_http(keyed_port, _post(auth))
    assert status == 200  # the same request with the real key is served


@pytest.mark.parametrize(
    "value", [b"\xff\xfe", b"1\xc2\xa0", b"nan", b"inf", b"1e999", b"-1", b"0"]
)
async def test_odd_x_request_timeout_is_400(keyed_port: int, value: bytes) -> None:
    auth = b"Authorization: Bearer %s\r\n" % KEY.encode()
    request = _post(auth + b"X-Request-Timeout: %s\r\n" % value)
    status, headers, body = await _raw_http(keyed_port, request)
    assert (status, headers["content-type"]) == (400, PROBLEM), body
    assert "X-Request-Timeout" in json.loads(body)["detail"]


@pytest.mark.parametrize("value", [b"\xff\xfe", b"a\xc3\xa9", b"x" * 129, b"a b", b"{}"])
async def test_odd_x_request_id_is_replaced_not_echoed(keyed_port: int, value: bytes) -> None:
    auth = b"Authorization: Bearer %s\r\n" % KEY.encode()
    status, headers, _ = await _raw_http(keyed_port, _post(auth + b"X-Request-ID: %s\r\n" % value))
    assert status == 200
    assert len(headers["x-request-id"]) == 16
    assert headers["x-request-id"].encode() != value


# -- 2. file names -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw_path", "detail"),
    [
        ("a" * 256, "component is longer than 255 bytes"),
        ("d/" + "%C3%A9" * 128, "component is longer than 255 bytes"),  # 128 chars, 256 bytes
        ("/".join(["d" * 200] * 21), "path is longer than 4096 bytes"),
        ("a%00b", "NUL byte"),
    ],
)
async def test_unrepresentable_file_names_are_400(
    client: GatewayClient, tmp_path: Path, raw_path: str, detail: str
) -> None:
    for method in ("PUT", "GET", "DELETE"):
        status, ctype, problem = await _send(client, method, "/v1/files/" + raw_path, b"x")
        assert (status, ctype) == (400, PROBLEM), (method, problem)
        assert problem["type"] == "urn:iogate:problem:invalid-path"
        assert detail in problem["detail"]
        assert len(problem["path"]) <= 257  # shown, not echoed whole
    assert not (tmp_path / "base").exists() or list((tmp_path / "base").iterdir()) == []


async def test_a_name_of_exactly_255_bytes_is_stored(client: GatewayClient, tmp_path: Path) -> None:
    status, _, _ = await _send(client, "PUT", "/v1/files/" + "b" * 255, b"x")
    assert status == 201
    assert (tmp_path / "base" / ("b" * 255)).read_bytes() == b"x"


async def test_enametoolong_from_the_file_system_is_400(
    client: GatewayClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a file system with a smaller NAME_MAX than the lexical bound (eCryptfs: 143)
    # is what lets a name through to the kernel; raising the bound does the same here
    monkeypatch.setattr(file_paths, "MAX_NAME_BYTES", 10_000)
    for method in ("PUT", "GET", "DELETE"):
        status, ctype, problem = await _send(client, method, "/v1/files/d/" + "a" * 300, b"x")
        assert (status, ctype) == (400, PROBLEM), (method, problem)
        assert problem["type"] == "urn:iogate:problem:invalid-path"
        assert "File name too long" in problem["detail"]


@pytest.mark.parametrize("name", ["\ud800", "a/\udcff", "x\udc80y.txt"])
async def test_the_store_refuses_names_utf8_cannot_encode(tmp_path: Path, name: str) -> None:
    async with FileStore(tmp_path / "base", max_file_bytes=100) as store:
        for call in (store.write_bytes(name, b"x"), store.read_bytes(name), store.delete(name)):
            with pytest.raises(UnsafePathError, match="lone surrogate") as caught:
                await call
            caught.value.path.encode("utf-8")  # showable: escaped, never the surrogate
    assert list((tmp_path / "base").iterdir()) == []


def test_only_name_errors_become_unsafe_path_errors(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="too long") as too_long:
        os.open(tmp_path / ("a" * 300), os.O_RDONLY)
    mapped = file_paths.name_error(too_long.value, "a" * 300)
    assert isinstance(mapped, UnsafePathError)
    assert mapped.path.endswith("…")
    for code in (errno.EIO, errno.ENOSPC, errno.EACCES, errno.EMFILE):
        server_side = OSError(code, os.strerror(code))
        assert file_paths.name_error(server_side, "a") is server_side  # stays a 5xx


# -- 3. requests uvicorn's parser refuses -------------------------------------------

MALFORMED = [
    b"GARBAGE\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n",  # space in a field name
    b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",  # NUL in a value
    b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n",  # bare CR in a value
    b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n",  # non-ASCII request target
    b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
]


def _assert_malformed_problem(status: int, headers: dict[str, str], body: bytes) -> None:
    assert (status, headers["content-type"]) == (400, PROBLEM), body
    assert headers["connection"] == "close"
    assert int(headers["content-length"]) == len(body)
    problem = json.loads(body)
    assert problem["type"] == "urn:iogate:problem:malformed-request"
    assert problem["status"] == 400


@pytest.fixture(scope="module")
def served_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """``iogate serve`` as a child process, its log in a file."""
    workdir = tmp_path_factory.mktemp("serve")
    (workdir / "iogate.toml").write_text(
        f'[databases.main]\nurl = "sqlite:///{workdir / "db.sqlite"}"\n'
    )
    port = free_port()
    log = workdir / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "iogate", "serve", "--port", str(port)],
            cwd=workdir,
            env=child_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_port(port, proc, "iogate serve")
            yield port, log
        finally:
            stop(proc, signal.SIGTERM)


@pytest.mark.parametrize("request_bytes", MALFORMED)
async def test_iogate_serve_answers_a_malformed_request_with_a_problem(
    served_port: tuple[int, Path], request_bytes: bytes
) -> None:
    port, _ = served_port
    _assert_malformed_problem(*await _raw_http(port, request_bytes))


async def test_a_malformed_request_is_logged_as_a_warning_without_a_traceback(
    served_port: tuple[int, Path],
) -> None:
    port, log = served_port
    for request_bytes in MALFORMED:
        await _raw_http(port, request_bytes)
    status, _, _ = await _raw_http(
        port, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert status == 200  # still serving
    text = log.read_text()
    records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    warned = [r for r in records if "Invalid HTTP request" in r.get("message", "")]
    assert len(warned) >= len(MALFORMED)
    assert {r["level"].lower() for r in warned} == {"warning"}
    assert "Traceback" not in text


@pytest.fixture
def h11_port(tmp_path: Path) -> Iterator[int]:
    """The gateway in a uvicorn thread with the h11 protocol (httptools absent)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    app = create_app(
        parse_config({"databases": {"main": {"url": f"sqlite:///{tmp_path / 'd.db'}"}}}, environ={})
    )
    server = uvicorn.Server(uvicorn.Config(app, http=ProblemH11Protocol, log_level="critical"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    ready = threading.Event()
    for _ in range(1000):  # bounded poll of the thread's readiness
        if server.started or not thread.is_alive():
            break
        ready.wait(0.01)
    assert server.started
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@pytest.mark.parametrize("request_bytes", MALFORMED)
async def test_the_h11_protocol_answers_a_malformed_request_with_a_problem(
    h11_port: int, request_bytes: bytes
) -> None:
    _assert_malformed_problem(*await _raw_http(h11_port, request_bytes))


def test_iogate_serve_uses_the_httptools_protocol_when_installed() -> None:
    assert HTTP_PROTOCOL.__name__ == "ProblemHttpToolsProtocol"


# -- 5. log lines -----------------------------------------------------------------------


async def test_client_caused_errors_log_nothing_at_error(
    client: GatewayClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    requests = [(method, path, (template % LONE).encode()) for method, path, template in BODIES]
    requests += [
        ("PUT", "/v1/files/" + "a" * 300, b"x"),
        ("GET", "/v1/cache/%FF", None),
        ("POST", "/v1/databases/main/query", b"{not json"),
    ]
    for method, path, data in requests:
        status, _, _ = await _send(client, method, path, data)
        assert 400 <= status < 500, (method, path, status)
    loud = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert loud == [], [r.getMessage() for r in loud]


async def test_an_integer_parameter_beyond_64_bits_is_400_on_sqlite(client: GatewayClient) -> None:
    big = 123456789012345678901234567890
    status, _, body = await client.post(
        "/v1/databases/main/query", {"sql": "SELECT :a", "params": {"a": big}}
    )
    assert status == 400
    assert body["type"] == "urn:iogate:problem:bad-query"  # type: ignore[index]
    status, _, body = await client.post(
        "/v1/batch",
        {"steps": [{"kind": "database", "database": "main", "sql": "SELECT ?", "params": [big]}]},
    )
    assert status == 200
    assert body["results"][0]["problem"]["status"] == 400  # type: ignore[index]
