"""Queries through iogate vs the raw drivers, side by side in one run.

Throughput of 32 concurrent callers (asyncio tasks in one process, default
event loop), each awaiting one call after another for a fixed time; the
subjects of one comparison are interleaved round-robin and the best of N
repeats is kept (a noisy neighbour hits every subject alike). PostgreSQL and
Redis run on a CPU of their own, the clients on the others
(:func:`~benchmarks.harness.servers_apart`); SQLite, which has no server,
runs on every CPU.

Rows are ``<workload>: <subject>`` with the metric ``ops_per_s``; each
subject names what it is: the driver (``asyncpg``, ``aiosqlite``,
``redis-py``, ``pymongo``, ``pgbench``) or iogate's resource
(``iogate.postgres``, ``iogate.sqlite``, ``iogate.redis``, ``iogate.mongodb``).

* PostgreSQL point select (``SELECT v FROM bench WHERE id = $1``, random ids
  of 10,000 rows) on a temporary cluster the scenario starts itself:
  ``iogate.postgres`` = ``Gateway(...).database("pg").fetch_one`` with the
  default database pipeline (deadline, retry, breaker...), vs ``pool.fetchrow``
  of an ``asyncpg`` pool of the same size (10).
* SQLite point select on a WAL file database: ``iogate.sqlite``'s reader pool
  (2 readers, the default) vs one ``aiosqlite`` connection
  (``execute_fetchall``: one trip to its thread per query, its fastest call).
* Redis GET at 32, 128 and 512 callers, every subject on 32 connections:
  ``iogate.redis`` (``Gateway(...).redis("kv").get``) auto-pipelines the GETs
  of concurrent callers (one round trip per loop iteration);
  ``iogate.redis (no auto-pipelining)`` is the same resource with
  ``auto_pipeline = false`` (a round trip per GET); ``redis-py`` (hiredis,
  ``BlockingConnectionPool``) sends one GET per call, ``redis-py pipeline(10)``
  a pipeline of 10 GETs per call (counted as 10).
* MongoDB ``find_one`` by ``_id`` (random ids of 1,000 documents):
  ``iogate.mongodb`` (``Gateway(...).mongo("docs").find_one``, default
  database pipeline) vs ``collection.find_one`` of a ``pymongo``
  ``AsyncMongoClient``, both with a pool of 10. The server is the test
  fixture's: ``mongod`` when on PATH, else nx-27017 (MongoDB's wire protocol
  in pure Python over SQLite, ~0.7 ms per ``find_one`` on its own: the server
  bounds both subjects); the scenario prints which.
* pgbench's TPC-B-like transaction (``pgbench -i`` schema, scale 1, 8
  clients): ``iogate.postgres transaction()`` running the five statements vs
  ``pgbench -c 8 -j 2`` itself (C, simple protocol).

``(no pipeline)`` rows are the same backend without the resilience pipeline:
the difference is the pipeline's share.
"""

from __future__ import annotations

import asyncio
import glob
import logging
import random
import re
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import aiosqlite
import asyncpg
import redis.asyncio as aioredis

from iogate.config import parse_config
from iogate.databases.postgres import PostgresDatabase
from iogate.databases.sqlite import SQLiteDatabase
from iogate.databases.transactions import Transaction
from iogate.gateway import Gateway

from .harness import Result, servers_apart

TITLE = "queries per second at 32 concurrent callers, higher is better"
BASELINE = None

CALLERS = 32
ROWS = 10_000
MONGO = "mongodb find_one by _id, 32 callers"
PIPELINE = 10  # GETs per redis-py pipeline
REDIS_CALLERS = (32, 128, 512)
REDIS_POOL = 32
# workload -> (iogate's subject, the driver's subject, target ratio)
TARGETS = {
    "postgres point select": ("iogate.postgres", "asyncpg", 0.9),
    "sqlite point select": ("iogate.sqlite", "aiosqlite", 1.0),
    "redis GET, 32 callers": ("iogate.redis", "redis-py", 0.9),
    MONGO: ("iogate.mongodb", "pymongo", 0.9),
}
REDIS_TARGET_OPS = 50_000.0
TPCB = "pgbench TPC-B transaction, 8 clients"
MONGO_DOCS = 1_000

Call = Callable[[], Awaitable[object]]


async def throughput(call: Call, *, callers: int, seconds: float) -> float:
    """Calls per second of ``callers`` tasks each awaiting ``call()`` in a loop."""
    stop = False
    done = 0

    async def loop() -> None:
        nonlocal done
        while not stop:
            await call()
            done += 1

    tasks = [asyncio.create_task(loop()) for _ in range(callers)]
    await asyncio.sleep(seconds / 10)  # warm-up: every task is running
    done = 0
    started = time.perf_counter()
    await asyncio.sleep(seconds)
    rate = done / (time.perf_counter() - started)
    stop = True
    await asyncio.gather(*tasks)
    return rate


async def compare(
    subjects: dict[str, Call], *, callers: int, seconds: float, repeats: int
) -> dict[str, float]:
    """Best-of-``repeats`` throughput of each subject, repeats interleaved."""
    best = dict.fromkeys(subjects, 0.0)
    for _ in range(repeats):
        for name, call in subjects.items():
            best[name] = max(best[name], await throughput(call, callers=callers, seconds=seconds))
    return best


def _pgbench_bin() -> str:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pgbench"))
    if not found:
        raise RuntimeError("pgbench is not installed (Debian package postgresql)")
    return found[-1]


def _pgbench(port: int, *args: str) -> str:
    cmd = [_pgbench_bin(), "-h", "127.0.0.1", "-p", str(port), "-U", "iogate", *args, "postgres"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return done.stdout + done.stderr


async def _postgres(dsn: str, port: int, seconds: float, repeats: int) -> list[Result]:
    setup = await asyncpg.connect(dsn)
    await setup.execute("DROP TABLE IF EXISTS bench")
    await setup.execute("CREATE TABLE bench (id int PRIMARY KEY, v text)")
    await setup.executemany(
        "INSERT INTO bench VALUES ($1, $2)", [(i, f"value {i}") for i in range(ROWS)]
    )
    await setup.execute("ANALYZE bench")
    await setup.close()
    # the superuser login of the test cluster: accepted, as the raw driver runs as it too
    pg_conf = {"url": dsn, "pool_size": 10, "allow_privileged_login": True}
    config = parse_config({"databases": {"pg": pg_conf}}, environ={})
    rnd = random.Random(1).randrange
    sql_iogate = "SELECT v FROM bench WHERE id = :id"
    sql_raw = "SELECT v FROM bench WHERE id = $1"
    results: list[Result] = []
    async with (
        Gateway(config) as gateway,
        PostgresDatabase("bare", dsn=dsn, min_size=10, max_size=10) as bare,
        asyncpg.create_pool(dsn, min_size=10, max_size=10) as pool,
    ):
        db = gateway.database("pg")
        best = await compare(
            {
                "asyncpg": lambda: pool.fetchrow(sql_raw, rnd(ROWS)),
                "iogate.postgres": lambda: db.fetch_one(sql_iogate, {"id": rnd(ROWS)}),
                "iogate.postgres (no pipeline)": lambda: bare.fetch_one(
                    sql_iogate, {"id": rnd(ROWS)}
                ),
            },
            callers=CALLERS,
            seconds=seconds,
            repeats=repeats,
        )
        results += _rows("postgres point select", best)
        results += await _tpcb(dsn, port, seconds, repeats)
    return results


async def _tpcb(dsn: str, port: int, seconds: float, repeats: int) -> list[Result]:
    _pgbench(port, "-i", "-s", "1", "-q")
    clients = 8
    pg_conf = {"url": dsn, "pool_size": clients, "allow_privileged_login": True}
    config = parse_config({"databases": {"pg": pg_conf}}, environ={})
    rnd = random.Random(2).randint

    async def transaction(tx: Transaction) -> None:
        aid, bid, tid, delta = rnd(1, 100_000), 1, rnd(1, 10), rnd(-5000, 5000)
        await tx.execute(
            "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2", [delta, aid]
        )
        await tx.fetch_val("SELECT abalance FROM pgbench_accounts WHERE aid = $1", [aid])
        await tx.execute(
            "UPDATE pgbench_tellers SET tbalance = tbalance + $1 WHERE tid = $2", [delta, tid]
        )
        await tx.execute(
            "UPDATE pgbench_branches SET bbalance = bbalance + $1 WHERE bid = $2", [delta, bid]
        )
        await tx.execute(
            "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime)"
            " VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP)",
            [tid, bid, aid, delta],
        )

    best_pgbench = best_iogate = 0.0
    async with Gateway(config) as gateway:
        db = gateway.database("pg")

        async def one() -> None:
            async with db.transaction() as tx:
                await transaction(tx)

        for _ in range(repeats):
            out = await asyncio.to_thread(
                _pgbench, port, "-c", str(clients), "-j", "2", "-T", str(max(1, round(seconds * 2)))
            )
            match = re.search(r"tps = ([0-9.]+)", out)
            if match is None:
                raise RuntimeError(f"unexpected pgbench output: {out[-500:]}")
            best_pgbench = max(best_pgbench, float(match.group(1)))
            best_iogate = max(
                best_iogate, await throughput(one, callers=clients, seconds=seconds * 2)
            )
    return [
        Result(f"{TPCB}: pgbench", "ops_per_s", best_pgbench, "tps"),
        Result(f"{TPCB}: iogate.postgres transaction()", "ops_per_s", best_iogate, "tps"),
    ]


async def _sqlite(seconds: float, repeats: int) -> list[Result]:
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "bench.db")
        async with SQLiteDatabase("s", path=path) as setup:
            await setup.execute("CREATE TABLE bench (id INTEGER PRIMARY KEY, v TEXT)")
            await setup.execute_many(
                "INSERT INTO bench VALUES (?, ?)", [(i, f"value {i}") for i in range(ROWS)]
            )
        config = parse_config({"databases": {"s": {"url": f"sqlite:///{path}"}}}, environ={})
        rnd = random.Random(3).randrange
        sql = "SELECT v FROM bench WHERE id = ?"
        async with Gateway(config) as gateway, aiosqlite.connect(path) as raw:
            db = gateway.database("s")
            best = await compare(
                {
                    "aiosqlite": lambda: raw.execute_fetchall(sql, (rnd(ROWS),)),
                    "iogate.sqlite": lambda: db.fetch_one(sql, [rnd(ROWS)]),
                },
                callers=CALLERS,
                seconds=seconds,
                repeats=repeats,
            )
    return _rows("sqlite point select", best)


async def _redis(url: str, seconds: float, repeats: int) -> list[Result]:
    """GET/s at 32, 128 and 512 callers: iogate with and without auto-pipelining,
    redis-py one GET per call and redis-py's own pipelines of :data:`PIPELINE`
    GETs (each caller's ``pipeline().get() x N .execute()``, counted as N GETs),
    every subject on a pool of :data:`REDIS_POOL` connections (redis-py's
    ``BlockingConnectionPool``: callers beyond it wait, as iogate's do)."""
    pool = {"url": url, "pool_size": REDIS_POOL}
    config = parse_config({"databases": {"kv": pool}}, environ={})
    single = parse_config({"databases": {"kv": {**pool, "auto_pipeline": False}}}, environ={})
    results: list[Result] = []
    async with Gateway(config) as gateway, Gateway(single) as gateway_single:
        unbatched = gateway_single.redis("kv")
        raw = aioredis.Redis(
            connection_pool=aioredis.BlockingConnectionPool.from_url(
                url, max_connections=REDIS_POOL
            )
        )
        try:
            kv = gateway.redis("kv")
            await kv.set("bench:key", "value")

            async def pipelined() -> None:
                pipe = raw.pipeline(transaction=False)
                for _ in range(PIPELINE):
                    pipe.get("bench:key")
                await pipe.execute()

            for callers in REDIS_CALLERS:
                best = await compare(
                    {
                        "redis-py": lambda: raw.get("bench:key"),
                        f"redis-py pipeline({PIPELINE})": pipelined,
                        "iogate.redis": lambda: kv.get("bench:key"),
                        "iogate.redis (no auto-pipelining)": lambda: unbatched.get("bench:key"),
                    },
                    callers=callers,
                    seconds=seconds,
                    repeats=repeats,
                )
                best[f"redis-py pipeline({PIPELINE})"] *= PIPELINE
                results += _rows(f"redis GET, {callers} callers", best)
        finally:
            await raw.aclose()
    return results


async def _mongo(url: str, server: str, seconds: float, repeats: int) -> list[Result]:
    from pymongo import AsyncMongoClient

    config = parse_config({"databases": {"docs": {"url": url, "pool_size": 10}}}, environ={})
    rnd = random.Random(5).randrange
    raw: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(url, maxPoolSize=10)
    try:
        users = raw.get_default_database().users
        await users.delete_many({})
        await users.insert_many([{"_id": i, "v": f"value {i}"} for i in range(MONGO_DOCS)])
        async with Gateway(config) as gateway:
            db = gateway.mongo("docs")
            best = await compare(
                {
                    "pymongo": lambda: users.find_one({"_id": rnd(MONGO_DOCS)}),
                    "iogate.mongodb": lambda: db.find_one("users", {"_id": rnd(MONGO_DOCS)}),
                },
                callers=CALLERS,
                seconds=seconds,
                repeats=repeats,
            )
    finally:
        await raw.close()
    print(f"  ({MONGO}: server {server})")
    return _rows(MONGO, best)


async def run(*, quick: bool = False) -> list[Result]:
    """Start PostgreSQL and Redis on free ports, measure, stop them."""
    from tests.servers import mongo_server, postgres_server, redis_server

    seconds, repeats = (0.3, 1) if quick else (1.5, 5)
    # The MongoDB test server answers in ~1 ms: every call would be logged as slow.
    logging.getLogger("iogate.slow").setLevel(logging.ERROR)
    results: list[Result] = []
    # SQLite has no server: its comparison runs on every CPU (the reader pool's
    # threads and aiosqlite's thread beside the event loop).
    results += await _sqlite(seconds, repeats)
    # servers on one CPU, the clients on the others (see servers_apart)
    with servers_apart(postgres_server()) as pg, servers_apart(redis_server()) as rs:
        results += await _postgres(pg.dsn, pg.port, seconds, repeats)
        results += await _redis(rs.url, seconds, repeats)
    with servers_apart(mongo_server()) as mongo:
        results += await _mongo(mongo.url("bench"), mongo.kind, seconds, repeats)
    return results


def _rows(workload: str, best: dict[str, float]) -> list[Result]:
    return [Result(f"{workload}: {s}", "ops_per_s", v, "q/s") for s, v in best.items()]


def summary(results: Sequence[Result]) -> list[str]:
    """One verdict per target of issue 4 and of issue 22 (Redis), and the TPC-B ratio."""
    by = {r.subject: r.value for r in results}
    lines = []
    for workload, (ours, theirs, target) in TARGETS.items():
        ratio = by[f"{workload}: {ours}"] / by[f"{workload}: {theirs}"]
        verdict = "met" if ratio >= target else "MISSED"
        lines.append(f"target {workload}: {ours} >= {target:g}x {theirs}: {ratio:.2f}x ({verdict})")
    for callers in REDIS_CALLERS:
        workload = f"redis GET, {callers} callers"
        gets = by[f"{workload}: iogate.redis"]
        piped = by[f"{workload}: redis-py pipeline({PIPELINE})"]
        verdict = "met" if gets >= REDIS_TARGET_OPS else "MISSED"
        lines.append(
            f"{workload}: iogate.redis {gets:,.0f} GET/s ({verdict}: >= {REDIS_TARGET_OPS:,.0f});"
            f" redis-py {by[f'{workload}: redis-py']:,.0f},"
            f" redis-py pipeline({PIPELINE}) {piped:,.0f},"
            f" iogate.redis without auto-pipelining"
            f" {by[f'{workload}: iogate.redis (no auto-pipelining)']:,.0f}"
        )
    ratio = by[f"{TPCB}: iogate.postgres transaction()"] / by[f"{TPCB}: pgbench"]
    lines.append(f"{TPCB}: iogate.postgres transaction() / pgbench = {ratio:.2f}x (reported)")
    return lines
