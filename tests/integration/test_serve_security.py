"""`iogate serve` as a subprocess: keys from `iogate keys create`, the refusal to
serve a non-loopback address without keys, graceful shutdown, several workers."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import aiohttp
from typer.testing import CliRunner

import iogate
from iogate.cli import app
from iogate.server.keys import KEY_PREFIX, hash_key
from tests.servers import free_port, stop
from tests.upstream_app import INFLIGHT, UpstreamServer

IOGATE = [sys.executable, "-m", "iogate"]
# The child imports this iogate whatever its working directory (PYTHONPATH may be relative).
ENV = {**os.environ, "PYTHONPATH": str(Path(iogate.__file__).resolve().parents[1])}


def _create_key(*args: str) -> tuple[str, str]:
    result = CliRunner().invoke(app, ["keys", "create", *args])
    assert result.exit_code == 0, result.output
    key, _, snippet = result.stdout.partition("\n")
    return key, snippet


def test_keys_create_prints_the_key_once_and_its_hash() -> None:
    key, snippet = _create_key("--name", "ci", "--scopes", "db:main:read,upstream:example")
    assert key.startswith(KEY_PREFIX)
    table = tomllib.loads(snippet)["keys"]["ci"]
    assert table == {"sha256": hash_key(key), "scopes": ["db:main:read", "upstream:example"]}
    assert key not in snippet
    _, snippet = _create_key("--name", "tmp", "--expires", "2027-01-01T00:00:00+00:00")
    assert tomllib.loads(snippet)["keys"]["tmp"]["expires"].year == 2027
    bad = CliRunner().invoke(app, ["keys", "create", "--scopes", "db:main:drop"])
    assert bad.exit_code == 2
    assert "unknown scope" in bad.stderr


def test_non_loopback_without_keys_refuses_to_start(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0", "--port", "8080"])
    assert result.exit_code == 2
    assert "refusing to serve on 0.0.0.0 without API keys" in result.stderr
    assert "Traceback" not in result.output


async def _ready(port: int, proc: subprocess.Popen[bytes]) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(600):  # readiness of a child process (bounded poll)
            assert proc.poll() is None, "iogate serve exited"
            try:
                async with http.get(f"http://127.0.0.1:{port}/health") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
    raise AssertionError("iogate serve did not become ready")


def _serve(config: Path, port: int, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*IOGATE, "serve", "--config", str(config), "--port", str(port), *extra],
        cwd=config.parent,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _config(tmp_path: Path, upstream: UpstreamServer, snippet: str, shutdown: float) -> Path:
    config = tmp_path / "iogate.toml"
    config.write_text(
        f"""
[server]
shutdown_timeout = {shutdown}

[upstreams.example]
base_url = "{upstream.base_url}"

{snippet}
"""
    )
    return config


async def test_two_workers_and_sigterm_drains_the_in_flight_request(
    tmp_path: Path, upstream: UpstreamServer
) -> None:
    key, snippet = _create_key("--name", "ci", "--scopes", "upstream:example")
    port = free_port()
    proc = _serve(_config(tmp_path, upstream, snippet, 20.0), port, "--workers", "2")
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {key}"}
    try:
        await _ready(port, proc)
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{base}/v1/upstreams/example/request", json={"path": "/echo"}
            ) as resp:
                assert resp.status == 401
            for _ in range(4):  # whichever worker answers knows the key
                async with http.post(
                    f"{base}/v1/upstreams/example/request", json={"path": "/echo"}, headers=auth
                ) as resp:
                    assert resp.status == 200
            slow = asyncio.create_task(
                http.post(
                    f"{base}/v1/upstreams/example/request",
                    json={"path": "/slow/1", "params": {"ms": 1500}},
                    headers=auth,
                )
            )
            for _ in range(500):  # readiness: the slow request reached the upstream
                if upstream.app[INFLIGHT][1] == 1:
                    break
                await asyncio.sleep(0.01)
            assert upstream.app[INFLIGHT][1] == 1
            proc.send_signal(signal.SIGTERM)
            resp = await slow
            assert resp.status == 200
            answer = await resp.json()
            resp.release()
        assert answer["body"] == {"i": "1"}
        code = await asyncio.to_thread(proc.wait, 30)
    finally:
        stop(proc)
        output = proc.stdout.read().decode() if proc.stdout else ""
        if proc.stdout:
            proc.stdout.close()
    assert code in (0, -signal.SIGTERM)
    # each worker's lifespan closed its pools
    assert output.count("Application shutdown complete") == 2
    assert key not in output


async def test_shutdown_deadline_bounds_a_hanging_request(
    tmp_path: Path, upstream: UpstreamServer
) -> None:
    key, snippet = _create_key("--name", "ci", "--scopes", "upstream:example")
    port = free_port()
    proc = _serve(_config(tmp_path, upstream, snippet, 1.0), port)
    try:
        await _ready(port, proc)
        async with aiohttp.ClientSession() as http:
            hanging = asyncio.create_task(
                http.post(
                    f"http://127.0.0.1:{port}/v1/upstreams/example/request",
                    json={"path": "/hang"},
                    headers={"Authorization": f"Bearer {key}"},
                )
            )
            for _ in range(500):  # readiness: the request reached the upstream
                if any(s.path == "/api/hang" for s in upstream.seen):
                    break
                await asyncio.sleep(0.01)
            loop = asyncio.get_running_loop()
            started = loop.time()
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(proc.wait, 30)
            elapsed = loop.time() - started
            hanging.cancel()
    finally:
        stop(proc)
        output = proc.stdout.read().decode() if proc.stdout else ""
        if proc.stdout:
            proc.stdout.close()
    assert elapsed < 10  # 1 s drain deadline, not the upstream's 30 s timeout
    assert code in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in output
