"""The HTTP gateway under load, workload by workload, with wrk.

Every workload is driven by ``wrk -t2 -c32`` against a few real server
processes on free loopback ports, started once and measured in alternating
rounds (a noisy neighbour hits every subject alike; the median of the rounds
is reported, and each iogate subject's ratio to its bare endpoint in every
round, which runs the two back to back, in alternating order: the median of
those paired ratios and their range, ``ratio_to_bare[_min|_max]``):

* ``iogate.gateway``       ``iogate serve`` with its default policies and
                           metrics, auth on: reads carry a key holding
                           ``db:<name>:read`` only (PostgreSQL: it runs as the
                           least-privilege ``read_role``, read-only), writes a
                           key holding ``db:<name>:write`` (``write_role``),
                           relayed calls a key holding ``upstream:echo``
* ``fastapi+asyncpg``      a bare FastAPI endpoint (pydantic body, orjson
  ``fastapi+aiosqlite``    reply) doing the same statement with the same
  ``fastapi+aiohttp``      driver and the same pool size (asyncpg pool of 10,
                           one aiosqlite connection, one aiohttp session):
                           what a hand-written service costs
* ``datasette``            Datasette's JSON API on the SQLite reads (opened
                           immutable, ``-i``: its fastest read-only mode), from
                           its own venv (``.venv-datasette``, made by ``make bench``)
* ``raw-asgi``             the floor: a raw ASGI app on the same uvicorn
                           (httptools, uvloop) answering a fixed JSON body, and
                           a SQLite point select done in the event loop with
                           the standard ``sqlite3`` module

The gateway logs in to PostgreSQL as a *superuser* (the issue-16 attack); the
bare asyncpg endpoint uses that login directly. The relayed upstream is a raw
ASGI app answering a small JSON body (GET) or echoing the posted one (POST).

Each PostgreSQL point select is also run once through a counting TCP proxy:
the ``ReadyForQuery`` messages the server sends per request are its round
trips (every simple query and every extended-protocol Sync ends with one),
reported as ``round_trips_per_request``.

``IOGATE_BENCH_WORKLOADS=pg,floor`` runs only the workloads whose names start
with one of those prefixes (all of them by default).

Subjects are named ``<workload>: <subject>``; the table's ratio column is the
distance from the floor (``raw-asgi`` fixed JSON), :func:`summary` prints each
workload's ratio to its bare endpoint. wrk runs on the same 2 cores as the
servers, so absolute figures are lower than on separate machines.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.servers import free_port, wait_for_port

from iogate.server.keys import hash_key, new_key

from .harness import Result

TITLE = "the gateway over HTTP, per workload, wrk -t2 -c32"
BASELINE = "floor: raw-asgi"
COMPARE = None

COUNTED_REQUESTS = 200
DATASETTE = Path(__file__).resolve().parent.parent / ".venv-datasette" / "bin" / "datasette"

POINT = "SELECT id, email, name FROM users WHERE id = :id"
RANGE = "SELECT id, email, name FROM users WHERE id >= :lo AND id < :hi ORDER BY id"
JOIN = (
    "SELECT u.id, u.email, o.total, o.placed FROM users u JOIN orders o ON o.user_id = u.id"
    " WHERE u.id = :id ORDER BY o.id"
)
INSERT = "INSERT INTO events (user_id, kind) VALUES (:user_id, :kind)"
UPDATE = "UPDATE users SET name = :name WHERE id = :id"

FLOOR_APP = """
import sqlite3

import orjson

_BODY = orjson.dumps({"ok": True, "rows": [[7, "user7@example.com", "User 7"]]})
_HEADERS = [(b"content-type", b"application/json")]
_DB = sqlite3.connect(DB, check_same_thread=False)
_POINT = "SELECT id, email, name FROM users WHERE id = :id"


async def app(scope, receive, send):
    if scope["type"] != "http":
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"] == "/sqlite":
        query = orjson.loads(body)
        rows = _DB.execute(query["sql"], query["params"]).fetchall()
        out = orjson.dumps({"rows": [list(r) for r in rows]})
    elif scope["method"] == "POST":
        out = body
    else:
        out = _BODY
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": out})
"""

BARE_APP = """
from contextlib import asynccontextmanager

import aiohttp
import aiosqlite
import asyncpg
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field


class Query(BaseModel):
    sql: str
    params: dict | None = None


class Relay(BaseModel):
    method: str = "GET"
    path: str = ""
    json_body: dict | list | None = Field(None, alias="json")


@asynccontextmanager
async def lifespan(app):
    app.state.db = await aiosqlite.connect(DB)
    app.state.pool = await asyncpg.create_pool(DSN, min_size=10, max_size=10)
    app.state.http = aiohttp.ClientSession(UPSTREAM)
    yield
    await app.state.http.close()
    await app.state.pool.close()
    await app.state.db.close()


app = FastAPI(lifespan=lifespan)


def _json(body):
    return Response(orjson.dumps(body, default=str), media_type="application/json")


def _pg(sql, params):
    # the :name placeholders as $n, in order of appearance (the benchmark's
    # statements name each parameter once)
    names = []
    def sub(m):
        names.append(m.group(1))
        return f"${len(names)}"
    import re
    text = re.sub(r":(\\w+)", sub, sql)
    return text, [params[n] for n in names]


@app.post("/sqlite/query")
async def sqlite_query(body: Query, request: Request) -> Response:
    db = request.app.state.db
    if body.sql.startswith("INSERT"):
        cursor = await db.execute(body.sql, body.params or {})
        await db.commit()
        return _json({"rows_affected": cursor.rowcount})
    rows = await db.execute_fetchall(body.sql, body.params or {})
    return _json({"rows": [list(r) for r in rows]})


@app.post("/pg/query")
async def pg_query(body: Query, request: Request) -> Response:
    text, args = _pg(body.sql, body.params or {})
    pool = request.app.state.pool
    if body.sql.startswith("INSERT"):
        status = await pool.execute(text, *args)
        return _json({"rows_affected": int(status.rsplit(" ", 1)[-1])})
    rows = await pool.fetch(text, *args)
    return _json({"rows": [list(r) for r in rows]})


class Steps(BaseModel):
    steps: list[Query]


@app.post("/pg/transaction")
async def pg_transaction(body: Steps, request: Request) -> Response:
    results = []
    async with request.app.state.pool.acquire() as conn, conn.transaction():
        for step in body.steps:
            text, args = _pg(step.sql, step.params or {})
            results.append([list(r) for r in await conn.fetch(text, *args)])
    return _json({"results": results})


@app.post("/relay")
async def relay(body: Relay, request: Request) -> Response:
    async with request.app.state.http.request(body.method, body.path, json=body.json_body) as r:
        answer = await r.json()
        return _json({"status": r.status, "body": answer})
"""


@dataclass(frozen=True, slots=True)
class Target:
    """One subject of one workload: the server, the path, the key and the body.

    A body holding :data:`ANY_USER` gets, per request, a user id drawn
    uniformly from 100..999 in its place (wrk's Lua ``math.random``; three
    digits, so every body has one length); :meth:`fixed_body` puts user 7
    there (the in-process and round-trip counts)."""

    server: str
    path: str
    body: str | None  # None: a GET
    key: str = ""  # "read", "write", "relay" or "" (no Authorization)

    def fixed_body(self) -> str | None:
        """The body with user 7 in place of :data:`ANY_USER`."""
        return None if self.body is None else self.body.replace(ANY_USER, "7")


ANY_USER = "__ANY_USER__"
"""The mark, in a body, of a user id drawn per request (see :class:`Target`)."""


def _q(sql: str, params: dict[str, object]) -> str:
    import json

    return json.dumps({"sql": sql, "params": params})


def _workloads() -> dict[str, dict[str, Target]]:
    import json
    from urllib.parse import quote

    def ds(sql: str, **params: int) -> str:
        args = "".join(f"&{k}={v}" for k, v in params.items())
        return f"/bench.json?sql={quote(sql)}{args}&_shape=array"

    point = _q(POINT, {"id": 7})
    r20, r200 = _q(RANGE, {"lo": 100, "hi": 120}), _q(RANGE, {"lo": 100, "hi": 300})
    ins = _q(INSERT, {"user_id": 7, "kind": "click"})

    def tx(user: object) -> str:
        step = {"kind": "database", "database": "pg", "transaction": "t"}
        update = {"sql": UPDATE, "params": {"id": user, "name": "User 7"}}
        point = {"sql": POINT, "params": {"id": user}}
        return json.dumps({"steps": [{**step, **update}, {**step, **point}]})

    def bare_tx(user: object) -> str:
        steps = [{"sql": UPDATE, "params": {"id": user, "name": "User 7"}}]
        return json.dumps({"steps": [*steps, {"sql": POINT, "params": {"id": user}}]})

    def spread(body: str) -> str:  # the id a JSON number again, drawn per request
        return body.replace(f'"{ANY_USER}"', ANY_USER)

    get = json.dumps({"method": "GET", "path": "/item"})
    post = json.dumps({"method": "POST", "path": "/item", "json": {"id": 7, "tags": ["a", "b"]}})
    sq, pg = "/v1/databases/main/query", "/v1/databases/pg/query"
    return {
        "floor": {"raw-asgi": Target("raw-asgi", "/json", None)},
        "sqlite point select": {
            "iogate.gateway": Target("iogate", sq, point, "read"),
            "fastapi+aiosqlite": Target("bare", "/sqlite/query", point),
            "datasette": Target("datasette", ds(POINT, id=7), None),
            "raw-asgi+sqlite3": Target("raw-asgi", "/sqlite", point),
        },
        "sqlite range 20": {
            "iogate.gateway": Target("iogate", sq, r20, "read"),
            "fastapi+aiosqlite": Target("bare", "/sqlite/query", r20),
            "datasette": Target("datasette", ds(RANGE, lo=100, hi=120), None),
        },
        "sqlite range 200": {
            "iogate.gateway": Target("iogate", sq, r200, "read"),
            "fastapi+aiosqlite": Target("bare", "/sqlite/query", r200),
            "datasette": Target("datasette", ds(RANGE, lo=100, hi=300), None),
        },
        "sqlite insert": {
            "iogate.gateway": Target("iogate", sq, ins, "write"),
            "fastapi+aiosqlite": Target("bare", "/sqlite/query", ins),
        },
        "pg point select": {
            "iogate.gateway (read key)": Target("iogate", pg, point, "read"),
            "iogate.gateway (write key)": Target("iogate", pg, point, "write"),
            "fastapi+asyncpg": Target("bare", "/pg/query", point),
        },
        "pg join": {
            "iogate.gateway": Target("iogate", pg, _q(JOIN, {"id": 7}), "read"),
            "fastapi+asyncpg": Target("bare", "/pg/query", _q(JOIN, {"id": 7})),
        },
        "pg insert": {
            "iogate.gateway": Target("iogate", pg, ins, "write"),
            "fastapi+asyncpg": Target("bare", "/pg/query", ins),
        },
        "pg transaction": {  # every request updates user 7: one hot row
            "iogate.gateway": Target("iogate", "/v1/batch", tx(7), "write"),
            "fastapi+asyncpg": Target("bare", "/pg/transaction", bare_tx(7)),
        },
        "pg transaction, rows spread": {  # a user of 100..999 per request
            "iogate.gateway": Target("iogate", "/v1/batch", spread(tx(ANY_USER)), "write"),
            "fastapi+asyncpg": Target("bare", "/pg/transaction", spread(bare_tx(ANY_USER))),
        },
        "upstream GET": {
            "iogate.gateway": Target("iogate", "/v1/upstreams/echo/request", get, "relay"),
            "fastapi+aiohttp": Target("bare", "/relay", get),
        },
        "upstream POST": {
            "iogate.gateway": Target("iogate", "/v1/upstreams/echo/request", post, "relay"),
            "fastapi+aiohttp": Target("bare", "/relay", post),
        },
    }


def _selected(workloads: dict[str, dict[str, Target]]) -> dict[str, dict[str, Target]]:
    """The workloads ``IOGATE_BENCH_WORKLOADS`` names (comma-separated
    prefixes of workload names, e.g. ``pg,floor``); all when unset."""
    wanted = [w.strip() for w in os.environ.get("IOGATE_BENCH_WORKLOADS", "").split(",")]
    wanted = [w for w in wanted if w]
    if not wanted:
        return workloads
    return {w: t for w, t in workloads.items() if any(w.startswith(p) for p in wanted)}


BARE = {
    "sqlite": "fastapi+aiosqlite",
    "pg point select": "fastapi+asyncpg",
    "pg": "fastapi+asyncpg",
    "upstream": "fastapi+aiohttp",
}


class _CountingProxy:
    """A TCP proxy to PostgreSQL counting the server's ReadyForQuery ('Z')
    messages: one per round trip. Needs ``sslmode=disable`` (so the server's
    stream is typed messages from its first byte)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.ready = 0

    async def serve(self) -> asyncio.Server:
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


async def _make_pg(dsn: str) -> None:
    import asyncpg

    from iogate.databases._postgres_roles import roles_sql

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "CREATE TABLE users (id serial PRIMARY KEY, email text, name text);"
            "INSERT INTO users (email, name) SELECT 'user' || i || '@example.com', 'User ' || i"
            " FROM generate_series(1, 1000) i;"
            "CREATE TABLE orders (id serial PRIMARY KEY, user_id int REFERENCES users,"
            " total numeric(10, 2), placed date);"
            "INSERT INTO orders (user_id, total, placed) SELECT 1 + i % 1000, i % 97 + 0.5,"
            " date '2026-01-01' + i % 300 FROM generate_series(1, 5000) i;"
            "CREATE INDEX ON orders (user_id);"
            "CREATE TABLE events (id serial PRIMARY KEY, user_id int, kind text)"
        )
        await conn.execute(
            roles_sql(database="pg", url=dsn, read_role="bench_read", write_role="bench_write")
        )
    finally:
        await conn.close()


def _make_db(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT, name TEXT)")
        conn.executemany(
            "INSERT INTO users (email, name) VALUES (?, ?)",
            [(f"user{i}@example.com", f"User {i}") for i in range(1000)],
        )
        conn.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, user_id INTEGER, kind TEXT)")


def _commands(
    tmp: Path, keys: dict[str, str], dsn: str, upstream_port: int, tag: str = ""
) -> dict[str, list[str]]:
    """The server commands (``--port`` last, its value appended by the caller)."""
    db = tmp / "bench.db"
    app_dir = tmp / f"apps{tag}"
    app_dir.mkdir(exist_ok=True)
    upstream = f"http://127.0.0.1:{upstream_port}"
    (app_dir / "bare_app.py").write_text(
        f"DB = {str(db)!r}\nDSN = {dsn!r}\nUPSTREAM = {upstream!r}\n" + BARE_APP
    )
    (app_dir / "floor_app.py").write_text(f"DB = {str(db)!r}\n" + FLOOR_APP)
    scopes = {
        "read": ["db:main:read", "db:pg:read"],
        "write": ["db:main:write", "db:pg:write"],
        "relay": ["upstream:echo"],
    }
    config = app_dir / "iogate.toml"
    config.write_text(
        f'[databases.main]\nurl = "sqlite:///{db}"\n\n'
        f'[databases.pg]\nurl = "{dsn}"\nread_role = "bench_read"\nwrite_role = "bench_write"\n\n'
        f'[upstreams.echo]\nbase_url = "{upstream}"\n\n'
        + "".join(
            f'[keys.{name}]\nsha256 = "{hash_key(keys[name])}"\nscopes = {scopes[name]!r}\n\n'
            for name in scopes
        ).replace("'", '"')
    )
    uvicorn = [sys.executable, "-m", "uvicorn", "--app-dir", str(app_dir), "--log-level"]
    uvicorn += ["warning", "--no-access-log", "--loop", "uvloop", "--http", "httptools"]
    # Its own copy of the same rows, fully checkpointed: an immutable open
    # ignores a WAL file, and the other subjects' connections may leave one.
    copy = tmp / "bench" / "bench.db"
    if not copy.exists():
        copy.parent.mkdir()
        with sqlite3.connect(db) as src, sqlite3.connect(copy) as dst:
            src.backup(dst)
        with sqlite3.connect(copy) as conn:
            conn.execute("PRAGMA journal_mode=DELETE")
    iogate = [sys.executable, "-m", "iogate", "serve", "--config", str(config)]
    return {
        "iogate": [*iogate, "--log-level", "warning", "--port"],
        "bare": [*uvicorn, "bare_app:app", "--port"],
        "raw-asgi": [*uvicorn, "floor_app:app", "--port"],
        "datasette": [str(DATASETTE), "serve", "-i", str(copy), "--host", "127.0.0.1", "--port"],
    }


class _Servers:
    """The server processes, each on a free port, output to a log file
    (Datasette logs every request: a file is what a deployment would use)."""

    def __init__(self, commands: dict[str, list[str]], ports: dict[str, int], logs: Path) -> None:
        self.ports = ports
        self._procs: list[subprocess.Popen[bytes]] = []
        try:
            for name, command in commands.items():
                log = logs / f"{name}.log"
                with log.open("ab") as out:
                    proc = subprocess.Popen([*command, str(ports[name])], stdout=out, stderr=out)
                self._procs.append(proc)
                try:
                    wait_for_port(ports[name], proc, name)
                except RuntimeError:
                    sys.stderr.write(log.read_text(errors="replace")[-2000:])
                    raise
        except BaseException:
            self.close()
            raise

    @property
    def pids(self) -> list[int]:
        """The servers' process ids, in the order of ``commands``."""
        return [proc.pid for proc in self._procs]

    def close(self) -> None:
        for proc in self._procs:
            proc.terminate()
        for proc in self._procs:
            proc.wait(timeout=30)


def _script(path: Path, target: Target, keys: dict[str, str]) -> Path:
    lines = []
    if target.body is not None:
        body = target.body.replace("\\", "\\\\").replace("'", "\\'")
        lines += [
            'wrk.method = "POST"',
            'wrk.headers["Content-Type"] = "application/json"',
            f"wrk.body = '{body}'",
        ]
    if target.key:
        lines.append(f'wrk.headers["Authorization"] = "Bearer {keys[target.key]}"')
    if target.body is not None and ANY_USER in target.body:
        lines += [
            "request = function()",
            f'  local body = string.gsub(wrk.body, "{ANY_USER}", tostring(math.random(100, 999)))',
            "  return wrk.format(nil, nil, nil, body)",
            "end",
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


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
    if rps == 0:  # every connection failed (a server that exited): no figure to keep
        raise RuntimeError(f"no answers from {url}:\n{out}")
    lat = {
        p: _ms(re.search(rf"^\s+{p}%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
        for p in ("50", "99")
    }
    return {"ops_per_s": rps, "p50_ms": lat["50"], "p99_ms": lat["99"]}


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


async def run(*, quick: bool = False) -> list[Result]:
    """Alternate the subjects for a few rounds; report the medians."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed: run scripts/install-services.sh bench")
    needs = {t.server for targets in _selected(_workloads()).values() for t in targets.values()}
    if "datasette" in needs and not DATASETTE.exists():
        raise RuntimeError(f"{DATASETTE} is missing: `make bench` installs it")
    return await asyncio.to_thread(_run_sync, 1 if quick else 4, 2 if quick else 3)


def _run_sync(rounds: int, seconds: int) -> list[Result]:
    from tests.servers import postgres_server

    with (
        tempfile.TemporaryDirectory(prefix="iogate-bench-gw-") as name,
        postgres_server() as pg,
    ):
        tmp = Path(name)
        asyncio.run(_make_pg(pg.dsn))
        _make_db(tmp / "bench.db")
        keys = {k: new_key() for k in ("read", "write", "relay")}
        ports = {name: free_port() for name in ("iogate", "bare", "raw-asgi", "datasette")}
        commands = _commands(tmp, keys, pg.dsn, ports["raw-asgi"])
        workloads = _selected(_workloads())
        needed = {t.server for targets in workloads.values() for t in targets.values()}
        commands = {k: c for k, c in commands.items() if k in needed | {"raw-asgi"}}
        scripts = {
            (w, s): _script(tmp / f"{i}-{j}.lua", t, keys)
            for i, (w, targets) in enumerate(workloads.items())
            for j, (s, t) in enumerate(targets.items())
        }
        runs: dict[tuple[str, str], list[dict[str, float]]] = {}
        servers = _Servers(commands, ports, tmp)
        try:
            for round_no in range(rounds):
                for workload, targets in workloads.items():
                    # Every other round runs a workload's subjects in reverse
                    # order, so none always runs first (or right after another
                    # workload's heaviest subject).
                    order = list(targets.items())
                    for subject, target in order[::-1] if round_no % 2 else order:
                        url = f"http://127.0.0.1:{ports[target.server]}{target.path}"
                        script = scripts[workload, subject]
                        _wrk(url, script, 1)  # warm-up
                        runs.setdefault((workload, subject), []).append(_wrk(url, script, seconds))
        finally:
            servers.close()
        trips: dict[str, float] = {}
        if "pg point select" in workloads:
            trips = asyncio.run(_count_round_trips(tmp, keys, pg.port, ports["raw-asgi"]))
    units = {"ops_per_s": "req/s", "p50_ms": "ms", "p99_ms": "ms"}
    results = [
        Result(f"{w}: {s}", metric, statistics.median(r[metric] for r in rs), unit)
        for metric, unit in units.items()
        for (w, s), rs in runs.items()
    ]
    results += _paired_ratios(workloads, runs)
    results += [
        Result(f"pg point select: {subject}", "round_trips_per_request", value, "round trips")
        for subject, value in trips.items()
    ]
    return results


def _paired_ratios(
    workloads: dict[str, dict[str, Target]], runs: dict[tuple[str, str], list[dict[str, float]]]
) -> list[Result]:
    """Each iogate subject's requests/s over its bare endpoint's *in the same
    round* (the two run back to back): the median of those ratios
    (``ratio_to_bare``), and the lowest and highest (``ratio_to_bare_min``,
    ``ratio_to_bare_max``), which show how far the machine's noise moves it."""
    results = []
    for workload, targets in workloads.items():
        bare = next((s for s in targets if s.startswith("fastapi+")), None)
        if bare is None:
            continue
        theirs = runs[workload, bare]
        for subject in targets:
            if not subject.startswith("iogate"):
                continue
            ours = runs[workload, subject]
            ratios = [a["ops_per_s"] / b["ops_per_s"] for a, b in zip(ours, theirs, strict=True)]
            name = f"{workload}: {subject}"
            results += [
                Result(name, "ratio_to_bare", statistics.median(ratios), "x"),
                Result(name, "ratio_to_bare_min", min(ratios), "x"),
                Result(name, "ratio_to_bare_max", max(ratios), "x"),
            ]
    return results


async def _count_round_trips(
    tmp: Path, keys: dict[str, str], port: int, upstream_port: int
) -> dict[str, float]:
    """Server round trips per PostgreSQL point select, per subject."""
    proxy = _CountingProxy(port)
    server = await proxy.serve()
    proxied = f"postgresql://iogate@127.0.0.1:{server.sockets[0].getsockname()[1]}/postgres"
    try:
        commands = _commands(tmp, keys, proxied + "?sslmode=disable", upstream_port, tag="-counted")
        targets = _workloads()["pg point select"]
        return {
            subject: await asyncio.to_thread(
                _round_trips, commands[target.server], target, keys, proxy, tmp
            )
            for subject, target in targets.items()
        }
    finally:
        server.close()


def _round_trips(
    command: list[str], target: Target, keys: dict[str, str], proxy: _CountingProxy, tmp: Path
) -> float:
    """Server round trips per request of ``target`` (its server on ``proxy``)."""
    import urllib.request

    port = free_port()
    servers = _Servers({"counted": command}, {"counted": port}, tmp)
    try:
        headers = {"Content-Type": "application/json"}
        if target.key:
            headers["Authorization"] = f"Bearer {keys[target.key]}"
        body = target.fixed_body()
        assert body is not None
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}{target.path}", data=body.encode(), headers=headers
        )
        for _ in range(20):  # warm: every pooled connection opened, statements cached
            urllib.request.urlopen(request).read()
        before = proxy.ready
        for _ in range(COUNTED_REQUESTS):
            urllib.request.urlopen(request).read()
        return (proxy.ready - before) / COUNTED_REQUESTS
    finally:
        servers.close()


def summary(results: Sequence[Result]) -> list[str]:
    """Each workload's ratios to its bare endpoint (and Datasette), p99 ratio,
    distance from the floor."""
    rps = {r.subject: r.value for r in results if r.metric == "ops_per_s"}
    p99 = {r.subject: r.value for r in results if r.metric == "p99_ms"}
    trips = {r.subject: r.value for r in results if r.metric == "round_trips_per_request"}
    paired = {(r.subject, r.metric): r.value for r in results if r.metric.startswith("ratio_to")}
    floor = rps.get("floor: raw-asgi")
    lines = []
    for workload, targets in _selected(_workloads()).items():
        bare = next((s for s in targets if s.startswith("fastapi+")), None)
        if bare is None:
            continue
        base = f"{workload}: {bare}"
        for subject in targets:
            if not subject.startswith("iogate"):
                continue
            ours = f"{workload}: {subject}"
            line = f"{ours}: {rps[ours]:,.0f} req/s = {rps[ours] / rps[base]:.2f}x {bare}"
            line += f" ({rps[base]:,.0f})"
            if (ours, "ratio_to_bare") in paired:
                line += (
                    f", per round {paired[ours, 'ratio_to_bare']:.2f}x"
                    f" ({paired[ours, 'ratio_to_bare_min']:.2f}-"
                    f"{paired[ours, 'ratio_to_bare_max']:.2f})"
                )
            line += f", p99 {p99[ours] / p99[base]:.2f}x theirs"
            if f"{workload}: datasette" in rps:
                line += f", {rps[ours] / rps[f'{workload}: datasette']:.2f}x datasette"
            if floor:
                line += f", {floor / rps[ours]:.1f}x below the floor"
            if ours in trips:
                line += f"; round trips {trips[ours]:.2f} vs {trips[base]:.2f}"
            lines.append(line)
    return lines
