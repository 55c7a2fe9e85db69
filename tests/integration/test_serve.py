"""End to end: `iogate serve` as a subprocess, spoken to over HTTP."""

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.servers import free_port, stop, wait_for_port
from tests.upstream_app import UpstreamServer

IOGATE = [sys.executable, "-m", "iogate"]


async def wait_ready(port: int, proc: subprocess.Popen[bytes]) -> None:
    """Poll /health without blocking the loop (the upstream app runs in it)."""
    async with aiohttp.ClientSession() as http:
        for _ in range(600):
            assert proc.poll() is None, "iogate serve exited"
            try:
                async with http.get(f"http://127.0.0.1:{port}/health") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
    raise AssertionError("iogate serve did not become ready")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


def _start(
    args: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*IOGATE, "serve", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


@pytest.fixture
def served(workdir: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port = free_port()
    proc = _start(["--port", str(port)], workdir)
    try:
        wait_for_port(port, proc, "iogate serve")
        yield port, proc
    finally:
        stop(proc, signal.SIGTERM)
        if proc.stdout:
            proc.stdout.close()


async def test_default_serve_creates_sqlite_in_var_and_answers(
    served: tuple[int, subprocess.Popen[bytes]], workdir: Path
) -> None:
    port, _ = served
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/health") as resp:
            assert resp.status == 200
            assert (await resp.json())["status"] == "ok"
        body = {"sql": "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"}
        async with http.post(f"{base}/v1/databases/main/query", json=body) as resp:
            assert resp.status == 200
        body = {"sql": "INSERT INTO t (v) VALUES (:v)", "params": {"v": "x"}}
        async with http.post(f"{base}/v1/databases/main/query", json=body) as resp:
            assert (await resp.json())["row_count"] == 1
        async with http.post(
            f"{base}/database/execute", json={"db_name": "main", "query": "SELECT v FROM t"}
        ) as resp:
            assert (await resp.json())["rows"] == [["x"]]
    db = workdir / "var" / "iogate.db"
    assert db.exists()
    assert (workdir / "var" / "iogate.db-wal").exists()


async def test_serve_with_config_reaches_the_upstream_with_its_secret(
    workdir: Path, upstream: UpstreamServer
) -> None:
    config = workdir / "iogate.toml"
    config.write_text(
        f"""
[databases.main]
url = "sqlite:///data/main.db"

[upstreams.example]
base_url = "{upstream.base_url}"
headers = {{ "x-api-key" = "${{EXAMPLE_API_KEY}}" }}
"""
    )
    port = free_port()
    proc = _start(
        ["--config", str(config), "--port", str(port)],
        workdir,
        {"EXAMPLE_API_KEY": "sk-e2e-SECRET"},
    )
    try:
        await wait_ready(port, proc)
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"http://127.0.0.1:{port}/v1/upstreams/example/request",
                json={"path": "/echo/ping", "params": {"a": 1}},
            ) as resp,
        ):
            assert resp.status == 200
            answer = await resp.json()
        assert answer["status"] == 200
        assert answer["body"]["path"] == "/api/echo/ping"
        assert upstream.seen[-1].headers["x-api-key"] == "sk-e2e-SECRET"
        assert (workdir / "data" / "main.db").exists()
    finally:
        stop(proc, signal.SIGTERM)
        output = proc.stdout.read().decode() if proc.stdout else ""
        if proc.stdout:
            proc.stdout.close()
    assert "sk-e2e-SECRET" not in output
    # uvicorn shuts down gracefully, then re-raises the signal it caught.
    assert "Application shutdown complete" in output
    assert proc.returncode in (0, -signal.SIGTERM)


def test_invalid_config_stops_startup_naming_the_key(workdir: Path) -> None:
    config = workdir / "iogate.toml"
    config.write_text('[databases.pg]\nurl = "mysql://h/db"\n')
    result = subprocess.run(
        [*IOGATE, "serve", "--config", str(config), "--port", str(free_port())],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "databases.pg.url" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_and_init(workdir: Path) -> None:
    result = subprocess.run(
        [*IOGATE, "init", "iogate.toml"], cwd=workdir, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    assert (workdir / "iogate.toml").exists()
    result = subprocess.run(
        [*IOGATE, "check", "--config", "iogate.toml"],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "main" in result.stdout
    assert "ok" in result.stdout
