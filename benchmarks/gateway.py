"""The HTTP gateway under load: point select on SQLite over HTTP, with wrk.

Subjects, each a real server process on a free loopback port, on the same
SQLite file (1,000 rows), driven by ``wrk -t2 -c32`` with the same JSON body:

* ``iogate.gateway``      ``iogate serve`` with its default policies and metrics,
                          and auth on: every request carries an API key holding
                          ``db:main:read`` only, so the statement also runs in
                          the engine's read-only mode (``POST /v1/databases/main/query``)
* ``fastapi+aiosqlite``   a bare FastAPI endpoint doing the same query on one
                          aiosqlite connection (pydantic body, orjson reply):
                          what a hand-written service costs
* ``datasette``           Datasette's JSON API (``GET /bench.json?sql=...&id=7
                          &_shape=array``), the issue-8 peer, with the database
                          opened immutable (``-i``: its fastest read-only mode),
                          from its own venv (``.venv-datasette``, made by
                          ``make bench``)

and the same point select on PostgreSQL (a temporary cluster, 1,000 rows),
the gateway logged in as a *superuser* as in the issue-16 attack:

* ``iogate.gateway.postgres``  ``iogate serve``, a key holding ``db:pg:read``
                          only, ``read_role`` set: the statement runs on a
                          connection that logged in as the least-privilege
                          read role, in a ``READ ONLY`` transaction
* ``fastapi+asyncpg``     a bare FastAPI endpoint doing the same query on an
                          ``asyncpg.create_pool`` pool (as that superuser, no
                          transaction: what a hand-written service costs)

Each PostgreSQL subject is also run once through a counting TCP proxy: the
``ReadyForQuery`` messages the server sends per request are its round trips
(every simple query and every extended-protocol Sync ends with one), reported
as ``round_trips_per_request``.

Rounds alternate the subjects (a noisy neighbour hits both alike); the median
of the rounds is reported. wrk runs on the same 2 cores as the server, so
absolute figures are lower than on separate machines; the ratio is the figure
to watch.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from tests.servers import free_port, wait_for_port

from iogate.server.keys import hash_key, new_key

from .harness import Result

TITLE = "point select over HTTP on SQLite, wrk -t2 -c32"
BASELINE = "fastapi+aiosqlite"
COMPARE = None

BODY = '{"sql": "SELECT id, email, name FROM users WHERE id = :id", "params": {"id": 7}}'
COUNTED_REQUESTS = 200
DATASETTE_PATH = (
    "/bench.json?sql=SELECT+id%2C+email%2C+name+FROM+users+WHERE+id+%3D+%3Aid&id=7&_shape=array"
)
DATASETTE = Path(__file__).resolve().parent.parent / ".venv-datasette" / "bin" / "datasette"

BARE_APP = """
from contextlib import asynccontextmanager

import aiosqlite
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel


class Query(BaseModel):
    sql: str
    params: dict | list | None = None


@asynccontextmanager
async def lifespan(app):
    app.state.db = await aiosqlite.connect(DB)
    yield
    await app.state.db.close()


app = FastAPI(lifespan=lifespan)


@app.post("/query")
async def query(body: Query, request: Request) -> Response:
    rows = await request.app.state.db.execute_fetchall(body.sql, body.params or ())
    return Response(orjson.dumps({"rows": [list(r) for r in rows]}), media_type="application/json")
"""


BARE_PG_APP = """
from contextlib import asynccontextmanager

import asyncpg
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel


class Query(BaseModel):
    sql: str
    params: dict | list | None = None


@asynccontextmanager
async def lifespan(app):
    app.state.pool = await asyncpg.create_pool(DSN, min_size=10, max_size=10)
    yield
    await app.state.pool.close()


app = FastAPI(lifespan=lifespan)


@app.post("/query")
async def query(body: Query, request: Request) -> Response:
    rows = await request.app.state.pool.fetch(
        "SELECT id, email, name FROM users WHERE id = $1", body.params["id"]
    )
    return Response(orjson.dumps({"rows": [list(r) for r in rows]}), media_type="application/json")
"""


async def _make_pg(dsn: str, read_role: str) -> None:
    import asyncpg

    from iogate.databases._postgres_roles import roles_sql

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "CREATE TABLE users (id serial PRIMARY KEY, email text, name text);"
            "INSERT INTO users (email, name) SELECT 'user' || i || '@example.com', 'User ' || i"
            " FROM generate_series(1, 1000) i"
        )
        await conn.execute(
            roles_sql(database="pg", url=dsn, read_role=read_role, write_role="bench_write")
        )
    finally:
        await conn.close()


def _pg_servers(
    tmp: Path, key: str, dsn: str, read_role: str
) -> dict[str, tuple[list[str], str, bool]]:
    """The PostgreSQL subjects; ``dsn`` is the superuser's (or a proxy's)."""
    (tmp / "bare_pg_app.py").write_text(f"DSN = {dsn!r}\n" + BARE_PG_APP)
    (tmp / "iogate_pg.toml").write_text(
        f'[databases.pg]\nurl = "{dsn}"\nread_role = "{read_role}"\n\n'
        f'[keys.bench]\nsha256 = "{hash_key(key)}"\nscopes = ["db:pg:read"]\n'
    )
    iogate = [sys.executable, "-m", "iogate", "serve", "--config", str(tmp / "iogate_pg.toml")]
    iogate += ["--log-level", "warning", "--port"]
    bare = [sys.executable, "-m", "uvicorn", "bare_pg_app:app", "--app-dir", str(tmp)]
    bare += ["--log-level", "warning", "--no-access-log", "--port"]
    return {
        "iogate.gateway.postgres": (iogate, "/v1/databases/pg/query", True),
        "fastapi+asyncpg": (bare, "/query", True),
    }


class _CountingProxy:
    """A TCP proxy to PostgreSQL counting the server's ReadyForQuery ('Z')
    messages: one per round trip. Needs ``sslmode=disable`` (so the server's
    stream is typed messages from its first byte)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.ready = 0

    async def serve(self) -> asyncio.AbstractServer:
        return await asyncio.start_server(self._client, "127.0.0.1", 0)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
            dst.close()

        async def count() -> None:
            # the server's stream: 1 type byte, 4 bytes big-endian length (itself included)
            while True:
                try:
                    head = await up_reader.readexactly(5)
                    body = await up_reader.readexactly(int.from_bytes(head[1:], "big") - 4)
                except asyncio.IncompleteReadError:
                    break
                if head[:1] == b"Z":
                    self.ready += 1
                writer.write(head + body)
                await writer.drain()
            writer.close()

        await asyncio.gather(pipe(reader, up_writer), count(), return_exceptions=True)


def _round_trips(
    subject: str, command: list[str], path: str, key: str, proxy: _CountingProxy, tmp: Path
) -> float:
    """Server round trips per request of ``subject`` (served through ``proxy``)."""
    import urllib.request

    port = free_port()
    log = tmp / f"{subject}.count.log"
    with log.open("ab") as out:
        proc = subprocess.Popen([*command, str(port)], stdout=out, stderr=out)
    try:
        wait_for_port(port, proc, subject)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}{path}",
            data=BODY.encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
        )
        for _ in range(20):  # warm: every pooled connection opened, statements cached
            urllib.request.urlopen(request).read()
        before = proxy.ready
        for _ in range(COUNTED_REQUESTS):
            urllib.request.urlopen(request).read()
        return (proxy.ready - before) / COUNTED_REQUESTS
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _wrk(url: str, script: Path, seconds: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t2", "-c32", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"non-2xx answers from {url}:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = {
        p: _ms(re.search(rf"^\s+{p}%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
        for p in ("50", "99")
    }
    return {"requests_per_s": rps, "latency_p50_ms": lat["50"], "latency_p99_ms": lat["99"]}


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def _make_db(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT, name TEXT)")
        conn.executemany(
            "INSERT INTO users (email, name) VALUES (?, ?)",
            [(f"user{i}@example.com", f"User {i}") for i in range(1000)],
        )


def _servers(tmp: Path, key: str) -> dict[str, tuple[list[str], str, bool]]:
    db = tmp / "bench.db"
    (tmp / "bare_app.py").write_text(f"DB = {str(db)!r}\n" + BARE_APP)
    (tmp / "iogate.toml").write_text(
        f'[databases.main]\nurl = "sqlite:///{db}"\n\n'
        f'[keys.bench]\nsha256 = "{hash_key(key)}"\nscopes = ["db:main:read"]\n'
    )
    iogate = [sys.executable, "-m", "iogate", "serve", "--config", str(tmp / "iogate.toml")]
    iogate += ["--log-level", "warning", "--port"]
    bare = [sys.executable, "-m", "uvicorn", "bare_app:app", "--app-dir", str(tmp)]
    bare += ["--log-level", "warning", "--no-access-log", "--port"]
    # Its own copy of the same rows, fully checkpointed: an immutable open
    # ignores a WAL file, and the other subjects' connections may leave one.
    copy = tmp / "bench" / "bench.db"
    copy.parent.mkdir()
    with sqlite3.connect(db) as src, sqlite3.connect(copy) as dst:
        src.backup(dst)
    with sqlite3.connect(copy) as conn:
        conn.execute("PRAGMA journal_mode=DELETE")
    datasette = [str(DATASETTE), "serve", "-i", str(copy), "--host", "127.0.0.1", "--port"]
    return {
        "iogate.gateway": (iogate, "/v1/databases/main/query", True),
        "fastapi+aiosqlite": (bare, "/query", True),
        "datasette": (datasette, DATASETTE_PATH, False),
    }


def _measure(
    subject: str, command: list[str], path: str, script: Path, seconds: int
) -> dict[str, float]:
    port = free_port()
    # Output to a file: Datasette logs every request, and a pipe read by a
    # terminal would slow it down (a file is what a deployment would use).
    log = script.parent / f"{subject}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen([*command, str(port)], stdout=out, stderr=out)
    try:
        try:
            wait_for_port(port, proc, subject)
        except RuntimeError:
            sys.stderr.write(log.read_text(errors="replace")[-2000:])
            raise
        url = f"http://127.0.0.1:{port}{path}"
        _wrk(url, script, max(1, seconds // 3))  # warm-up
        return _wrk(url, script, seconds)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


async def run(*, quick: bool = False) -> list[Result]:
    """Alternate the subjects for a few rounds; report the medians."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed: run scripts/install-services.sh bench")
    if not DATASETTE.exists():
        raise RuntimeError(f"{DATASETTE} is missing: `make bench` installs it")
    return await asyncio.to_thread(_run_sync, 1 if quick else 3, 3 if quick else 10)


def _run_sync(rounds: int, seconds: int) -> list[Result]:
    from tests.servers import postgres_server

    with (
        tempfile.TemporaryDirectory(prefix="iogate-bench-gw-") as name,
        postgres_server() as pg,
    ):
        tmp = Path(name)
        read_role = "bench_read"
        asyncio.run(_make_pg(pg.dsn, read_role))
        _make_db(tmp / "bench.db")
        key = new_key()
        script = tmp / "point.lua"
        script.write_text(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f'wrk.headers["Authorization"] = "Bearer {key}"\n'
            f"wrk.body = '{BODY}'\n"
        )
        get = tmp / "get.lua"
        get.write_text('wrk.method = "GET"\n')
        runs: dict[str, list[dict[str, float]]] = {}
        servers = _servers(tmp, key)
        servers.update(_pg_servers(tmp, key, pg.dsn, read_role))
        for _ in range(rounds):
            for subject, (command, path, post) in servers.items():
                runs.setdefault(subject, []).append(
                    _measure(subject, command, path, script if post else get, seconds)
                )
        trips = asyncio.run(_count_round_trips(tmp, key, pg.port, read_role))
    units = {"requests_per_s": "req/s", "latency_p50_ms": "ms", "latency_p99_ms": "ms"}
    results = [
        Result(subject, metric, statistics.median(r[metric] for r in results), unit)
        for metric, unit in units.items()
        for subject, results in runs.items()
    ]
    results += [
        Result(subject, "round_trips_per_request", value, "round trips")
        for subject, value in trips.items()
    ]
    return results


async def _count_round_trips(tmp: Path, key: str, port: int, read_role: str) -> dict[str, float]:
    proxy = _CountingProxy(port)
    server = await proxy.serve()
    proxied = f"postgresql://iogate@127.0.0.1:{server.sockets[0].getsockname()[1]}/postgres"
    counted = tmp / "counted"
    counted.mkdir()
    try:
        servers = _pg_servers(counted, key, proxied + "?sslmode=disable", read_role)
        return {
            subject: await asyncio.to_thread(
                _round_trips, subject, command, path, key, proxy, counted
            )
            for subject, (command, path, _) in servers.items()
        }
    finally:
        server.close()


def summary(results: Sequence[Result]) -> list[str]:
    """The throughput ratios iogate / bare FastAPI and iogate / Datasette."""
    rps = {r.subject: r.value for r in results if r.metric == "requests_per_s"}
    ours = rps["iogate.gateway"]
    bare, datasette = rps["fastapi+aiosqlite"], rps["datasette"]
    trips = {r.subject: r.value for r in results if r.metric == "round_trips_per_request"}
    pg, bare_pg = rps["iogate.gateway.postgres"], rps["fastapi+asyncpg"]
    return [
        f"iogate.gateway: {ours:,.0f} req/s = {ours / bare:.2f}x a bare FastAPI + aiosqlite "
        f"endpoint ({bare:,.0f} req/s); issue 8 targets >= 1.0x",
        f"iogate.gateway = {ours / datasette:.2f}x Datasette's JSON API ({datasette:,.0f} req/s);"
        " issue 8 targets >= 3x",
        f"iogate.gateway.postgres (read key, least-privilege read role): {pg:,.0f} req/s ="
        f" {pg / bare_pg:.2f}x a bare FastAPI + asyncpg endpoint ({bare_pg:,.0f} req/s);"
        f" round trips per request {trips['iogate.gateway.postgres']:.2f} vs"
        f" {trips['fastapi+asyncpg']:.2f}",
    ]
