"""Real servers for the tests: PostgreSQL and Redis on temporary directories
and free loopback ports, started from the Debian packages.

PostgreSQL refuses to run as root, so when the tests run as root the cluster
belongs to an unprivileged user (``postgres`` from the Debian package, else
``nobody``) and its processes run as that user.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from starlette.types import ASGIApp

READY_TIMEOUT_S = 30.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    """Block until ``port`` accepts connections (readiness of a child process).

    A server process gives no start-up notification, so this polls, every
    20 ms, bounded by READY_TIMEOUT_S and failing at once if the process exits.
    It orders nothing inside a test: tests start only once this returns.
    """
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise RuntimeError(f"{what} did not listen on port {port} within {READY_TIMEOUT_S}s")


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _postgres_bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=_version_key)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("postgres")
    if on_path:
        return Path(on_path).resolve().parent
    raise RuntimeError("PostgreSQL is not installed: run scripts/install-services.sh")


def _version_key(path: str) -> int:
    part = path.split("/")[4]
    return int(part) if part.isdigit() else 0


@dataclass
class PostgresServer:
    """A running temporary cluster; ``dsn`` connects as a superuser over TCP."""

    port: int
    user: str
    dsn: str
    datadir: Path
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        stop(self.process, signal.SIGINT)  # "fast" shutdown

    def start(self) -> None:
        """Start it again after :meth:`stop` (same data, same port)."""
        self.process = _start_postgres(self.datadir, self.port)


def _run_as() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root and no unprivileged user to run PostgreSQL as")


def _start_postgres(datadir: Path, port: int) -> subprocess.Popen[bytes]:
    bindir = _postgres_bindir()
    owner = _run_as()
    log = open(datadir / "postgres.log", "ab")  # noqa: SIM115 (the child keeps its copy)
    proc = subprocess.Popen(
        [
            str(bindir / "postgres"),
            "-D",
            str(datadir / "data"),
            "-p",
            str(port),
            "-k",
            str(datadir),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=200",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
        user=owner.pw_uid if owner else None,
        group=owner.pw_gid if owner else None,
    )
    log.close()
    wait_for_port(port, proc, "postgres")
    _wait_accepting(bindir, port, proc)
    return proc


def _wait_accepting(bindir: Path, port: int, proc: subprocess.Popen[bytes]) -> None:
    """The port listens before recovery ends ("the database system is starting
    up"): poll pg_isready (it answers at once while the server is starting, so
    the 50 ms pause between asks is needed), bounded like wait_for_port."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"postgres exited with code {proc.returncode}")
        ready = subprocess.run(
            [str(bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port), "-t", "1"],
            check=False,
        )
        if ready.returncode == 0:
            return
        time.sleep(0.05)
    raise RuntimeError(f"postgres on port {port} did not accept connections in time")


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """A temporary PostgreSQL cluster for the duration of the block."""
    bindir = _postgres_bindir()
    owner = _run_as()
    datadir = Path(tempfile.mkdtemp(prefix="iogate-pg-"))
    if owner:
        os.chown(datadir, owner.pw_uid, owner.pw_gid)
    subprocess.run(
        [
            str(bindir / "initdb"),
            "-D",
            str(datadir / "data"),
            "-U",
            "iogate",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-instructions",
            "--no-sync",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        user=owner.pw_uid if owner else None,
        group=owner.pw_gid if owner else None,
    )
    port = free_port()
    proc = _start_postgres(datadir, port)
    server = PostgresServer(
        port, "iogate", f"postgresql://iogate@127.0.0.1:{port}/postgres", datadir, proc
    )
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(datadir, ignore_errors=True)


@dataclass
class RedisServer:
    port: int
    url: str
    process: subprocess.Popen[bytes]
    argv: list[str] = field(default_factory=list)

    def stop(self) -> None:
        """Stop the server (an outage; :meth:`start` brings it back on the same port)."""
        stop(self.process)

    def start(self) -> None:
        """Start it again after :meth:`stop` (same port, empty: no persistence)."""
        self.process = subprocess.Popen(
            self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for_port(self.port, self.process, "redis-server")


@contextlib.contextmanager
def redis_server() -> Iterator[RedisServer]:
    """A temporary Redis server (no persistence) for the duration of the block."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not os.path.exists(binary):
        raise RuntimeError("redis-server is not installed: run scripts/install-services.sh")
    workdir = Path(tempfile.mkdtemp(prefix="iogate-redis-"))
    port = free_port()
    argv = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(workdir),
        "--save",
        "",
        "--appendonly",
        "no",
        "--protected-mode",
        "yes",
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = RedisServer(port, f"redis://127.0.0.1:{port}/0", proc, argv)
    try:
        wait_for_port(port, proc, "redis-server")
        yield server
    finally:
        stop(server.process)
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.asynccontextmanager
async def serve_aiohttp(
    app: Any, *, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[int]:
    """Serve an ``aiohttp.web.Application`` on 127.0.0.1 and a free port in the
    running loop; yields the port."""
    from aiohttp import web

    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    try:
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


@asynccontextmanager
async def serve_asgi(app: FastAPI | ASGIApp) -> AsyncIterator[str]:
    """Run ``app`` with uvicorn on a free loopback port, in the running loop;
    yields its base URL once uvicorn says it has started (the one readiness
    helper of the suite: every in-process server starts here)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    for _ in range(500):  # readiness of the server task, bounded
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    if not server.started:
        await task
        raise RuntimeError("gateway did not start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@dataclass
class MongoServer:
    """A MongoDB wire-protocol server on a temporary directory: a real ``mongod``
    (a one-member replica set, so sessions and transactions work) when one is
    on PATH, else nx-27017 (PyPI; MongoDB's wire protocol over SQLite).
    :meth:`stop` / :meth:`start` keep the data directory: what was
    acknowledged survives a restart."""

    kind: str  # "mongod" or "nx-27017"
    port: int
    datadir: Path
    argv: list[str]
    process: subprocess.Popen[bytes]

    def url(self, database: str) -> str:
        """A connection string for ``database`` on this server."""
        return f"mongodb://127.0.0.1:{self.port}/{database}?directConnection=true"

    def stop(self) -> None:
        """Stop the server (an outage; :meth:`start` brings it back)."""
        stop(self.process)

    def start(self) -> None:
        """Start it again after :meth:`stop` (same data, same port)."""
        self.process = _start_mongo(self.argv, self.port, self.datadir)
        if self.kind == "mongod":
            _await_primary(self.port)


def _start_mongo(argv: list[str], port: int, datadir: Path) -> subprocess.Popen[bytes]:
    log = open(datadir / "server.log", "ab")  # noqa: SIM115 (the child keeps its copy)
    proc = subprocess.Popen(argv, stdout=log, stderr=log, cwd=datadir)
    log.close()
    wait_for_port(port, proc, argv[0])
    return proc


def _await_primary(port: int) -> None:
    """Initiate the one-member replica set (once) and wait until it is primary:
    mongod elects itself a few hundred milliseconds after start; polled every
    50 ms, bounded by READY_TIMEOUT_S."""
    from pymongo import MongoClient
    from pymongo.errors import OperationFailure

    client: MongoClient[dict[str, Any]] = MongoClient(
        f"mongodb://127.0.0.1:{port}/?directConnection=true", serverSelectionTimeoutMS=5000
    )
    try:
        with contextlib.suppress(OperationFailure):  # already initiated (a restart)
            client.admin.command(
                "replSetInitiate",
                {"_id": "rs0", "members": [{"_id": 0, "host": f"127.0.0.1:{port}"}]},
            )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if client.admin.command("hello").get("isWritablePrimary"):
                return
            time.sleep(0.05)
        raise RuntimeError(f"mongod on port {port} did not become primary in time")
    finally:
        client.close()


@contextlib.contextmanager
def mongo_server() -> Iterator[MongoServer]:
    """A temporary MongoDB server (see :class:`MongoServer`) for the block."""
    datadir = Path(tempfile.mkdtemp(prefix="iogate-mongo-"))
    port = free_port()
    mongod = shutil.which("mongod")
    if mongod:
        kind = "mongod"
        argv = [mongod, "--port", str(port), "--bind_ip", "127.0.0.1", "--dbpath", str(datadir),
                "--replSet", "rs0", "--quiet", "--nounixsocket"]  # fmt: skip
    else:
        kind = "nx-27017"
        script = Path(sys.executable).parent / "nx-27017"
        if not script.exists():
            raise RuntimeError("nx-27017 is not installed: run `make test` (the dev extra)")
        argv = [str(script), "--host", "127.0.0.1", "--port", str(port),
                "--data-dir", str(datadir / "data"), "--log-file", str(datadir / "nx.log"),
                "--pid-file", str(datadir / "nx.pid")]  # fmt: skip
    proc = _start_mongo(argv, port, datadir)
    server = MongoServer(kind, port, datadir, argv, proc)
    try:
        if kind == "mongod":
            _await_primary(port)
        yield server
    finally:
        server.stop()
        shutil.rmtree(datadir, ignore_errors=True)
