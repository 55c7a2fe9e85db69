"""``/v1/files/{path}`` through a real uvicorn server: streaming both ways,
status codes, and traversal attempts that must touch nothing outside the base."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from yarl import URL

from iogate.config import parse_config
from tests.conftest import GatewayClient, serve_app


@pytest.fixture
async def files_client(tmp_path: Path) -> AsyncIterator[GatewayClient]:
    config = parse_config(
        {
            "databases": {"main": {"url": f"sqlite:///{tmp_path / 'db.sqlite'}"}},
            "files": {"base_dir": str(tmp_path / "base"), "max_file_bytes": 1_000_000},
        },
        environ={},
    )
    async with serve_app(config) as client:
        yield client


async def _raw(client: GatewayClient, method: str, raw_path: str, data: bytes | None = None):
    url = URL(client.base_url + raw_path, encoded=True)
    async with client.session.request(method, url, data=data) as resp:
        return resp.status, resp.headers.get("content-type", ""), await resp.read()


async def test_put_get_list_delete(files_client: GatewayClient, tmp_path: Path) -> None:
    payload = os.urandom(300_000)
    status, _, body = await _raw(files_client, "PUT", "/v1/files/videos/clip.mp4", payload)
    assert status == 201, body
    status, _, _ = await _raw(files_client, "PUT", "/v1/files/videos/clip.mp4", payload)
    assert status == 200
    status, ctype, body = await _raw(files_client, "GET", "/v1/files/videos/clip.mp4")
    assert (status, ctype, body) == (200, "video/mp4", payload)
    assert (tmp_path / "base" / "videos" / "clip.mp4").read_bytes() == payload
    status, _, listing = await _raw(files_client, "GET", "/v1/files/videos")
    assert status == 200
    assert b'"path":"videos/clip.mp4"' in listing
    status, _, _ = await _raw(
        files_client, "PUT", "/v1/files/videos/clip.mp4?overwrite=false", b"x"
    )
    assert status == 409
    status, _, _ = await _raw(files_client, "DELETE", "/v1/files/videos/clip.mp4")
    assert status == 204
    status, ctype, body = await _raw(files_client, "GET", "/v1/files/videos/clip.mp4")
    assert (status, ctype) == (404, "application/problem+json")
    assert b"file-not-found" in body


async def test_too_large_upload_is_413_and_leaves_nothing(
    files_client: GatewayClient, tmp_path: Path
) -> None:
    async def stream() -> AsyncIterator[bytes]:  # no Content-Length: checked while streaming
        for _ in range(20):
            yield b"x" * 100_000

    url = files_client.base_url + "/v1/files/big.bin"
    async with files_client.session.put(url, data=stream()) as resp:
        assert resp.status == 413  # the edge's body count or the store's limit, whichever first
        assert resp.headers["content-type"] == "application/problem+json"
    status, _, _ = await _raw(files_client, "PUT", "/v1/files/big.bin", b"y" * 1_000_001)
    assert status == 413
    assert os.listdir(tmp_path / "base") == []


TRAVERSALS = [
    ("/v1/files/../../etc/passwd", 400),
    ("/v1/files/%2e%2e/%2e%2e/etc/passwd", 400),
    ("/v1/files/..%2f..%2fetc%2fpasswd", 400),
    ("/v1/files/a/%2E%2E/%2E%2E/outside.txt", 400),
    ("/v1/files//etc/passwd", 400),
    ("/v1/files/%2fetc%2fpasswd", 400),
    ("/v1/files/evil%00.txt", 400),
    ("/v1/files/etc/passwd", 403),  # base/etc is a symlink to /etc
    ("/v1/files/etc/iogate-pwned", 403),
    ("/v1/files/out/secret.txt", 403),  # base/out is a symlink to a sibling directory
]


@pytest.mark.parametrize(("raw_path", "expected"), TRAVERSALS)
async def test_traversal_attempts_are_refused(
    files_client: GatewayClient, tmp_path: Path, raw_path: str, expected: int
) -> None:
    base = tmp_path / "base"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    os.symlink("/etc", base / "etc")
    os.symlink(outside, base / "out")
    before = sorted(p.name for p in tmp_path.iterdir()), sorted(os.listdir(outside))
    for method, data in (("GET", None), ("PUT", b"pwned"), ("DELETE", None)):
        status, ctype, body = await _raw(files_client, method, raw_path, data)
        assert (method, status) == (method, expected), body
        assert ctype == "application/problem+json"
        slug = b"invalid-path" if expected == 400 else b"path-outside-base"
        assert slug in body
        assert b"Traceback" not in body
        assert str(tmp_path).encode() not in body  # the base's absolute path is never shown
    after = sorted(p.name for p in tmp_path.iterdir()), sorted(os.listdir(outside))
    assert after == before
    assert (outside / "secret.txt").read_text() == "secret"
    assert not os.path.exists("/etc/iogate-pwned")
    assert sorted(os.listdir(base)) == ["etc", "out"]


async def test_not_configured_is_a_404_problem(gateway_client: GatewayClient) -> None:
    status, _, body = await gateway_client.get("/v1/files/x")
    assert status == 404
    assert isinstance(body, dict)
    assert body["type"] == "urn:iogate:problem:files-not-configured"


async def test_scopes_files_read_and_files_write(tmp_path: Path) -> None:
    from iogate.server.auth import Principal
    from tests.as_principal import serve_as

    config = parse_config({"files": {"base_dir": str(tmp_path / "base")}}, environ={})
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "a.txt").write_text("a")
    reader = Principal("reader", scopes=frozenset({"files:read"}))
    async with serve_as(config, reader) as (client, _):
        assert (await _raw(client, "GET", "/v1/files/a.txt"))[::2] == (200, b"a")
        for method in ("PUT", "DELETE"):
            status, ctype, body = await _raw(client, method, "/v1/files/a.txt", b"b")
            assert (status, ctype) == (403, "application/problem+json")
            assert b"files:write" in body
    writer = Principal("writer", scopes=frozenset({"files:write"}))
    async with serve_as(config, writer) as (client, _):
        status, _, body = await _raw(client, "GET", "/v1/files/a.txt")
        assert status == 403
        assert b"files:read" in body
        assert (await _raw(client, "PUT", "/v1/files/a.txt", b"b"))[0] == 200
    assert (tmp_path / "base" / "a.txt").read_text() == "b"
