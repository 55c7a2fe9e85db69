"""Queries through iogate vs the raw drivers, side by side in one run.

Throughput of 32 concurrent callers (asyncio tasks in one process, default
event loop), each awaiting one call after another for a fixed time; the
subjects of one comparison are interleaved round-robin and the best of N
repeats is kept (a noisy neighbour hits every subject alike). PostgreSQL and
Redis run on a CPU of their own, the clients on the others
(:func:`~benchmarks.harness.servers_apart`); SQLite, which has no server,
runs on every CPU.

* PostgreSQL point select (``SELECT v FROM bench WHERE id = $1``, random ids
  of 10,000 rows) on a temporary cluster the scenario starts itself:
  ``iogate`` = ``Gateway(...).database("pg").fetch_one`` with the default
  database pipeline (deadline, retry, breaker...), vs ``pool.fetchrow`` of a
  raw asyncpg pool of the same size (10).
* SQLite point select on a WAL file database: iogate's reader pool (2
  readers, the default) vs one raw aiosqlite connection
  (``execute_fetchall``: one trip to its thread per query, its fastest call).
* Redis GET: ``Gateway(...).redis("kv").get`` vs a raw redis-py client
  (hiredis), both with up to 32 connections; iogate auto-pipelines the GETs
  of concurrent callers (one round trip per loop iteration), and the
  ``iogate (no auto-pipelining)`` row is the same resource with
  ``auto_pipeline = false`` (a round trip per GET, as redis-py does).
* MongoDB ``find_one`` by ``_id`` (random ids of 1,000 documents):
  ``Gateway(...).mongo("docs").find_one`` with the default database pipeline
  vs ``collection.find_one`` of a raw ``pymongo.AsyncMongoClient``, both
  with a pool of 10. The server is the test fixture's: ``mongod`` when on
  PATH, else nx-27017 (MongoDB's wire protocol in pure Python over SQLite,
  ~0.7 ms per ``find_one`` on its own: the server bounds both subjects); the
  row's subject names say which.
* pgbench's TPC-B-like transaction (``pgbench -i`` schema, scale 1, 8
  clients): iogate's ``async with db.transaction()`` running the five
  statements vs ``pgbench -c 8 -j 2`` itself (C, simple protocol).

``iogate (no pipeline)`` rows are the same backend without the resilience
pipeline: the difference is the pipeline's share.
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
BASELINE = "raw driver"

CALLERS = 32
ROWS = 10_000
MONGO = "mongodb find_one by _id, 32 callers"
TARGETS = {
    "postgres point select": 0.9,
    "sqlite point select": 1.0,
    "redis GET": 0.9,
    MONGO: 0.9,
}
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
                "raw driver": lambda: pool.fetchrow(sql_raw, rnd(ROWS)),
                "iogate": lambda: db.fetch_one(sql_iogate, {"id": rnd(ROWS)}),
                "iogate (no pipeline)": lambda: bare.fetch_one(sql_iogate, {"id": rnd(ROWS)}),
            },
            callers=CALLERS,
            seconds=seconds,
            repeats=repeats,
        )
        results += [Result(s, "postgres point select", v, "q/s") for s, v in best.items()]
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
        Result("raw driver", "pgbench TPC-B transaction (8 clients)", best_pgbench, "tps"),
        Result("iogate", "pgbench TPC-B transaction (8 clients)", best_iogate, "tps"),
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
                    "raw driver": lambda: raw.execute_fetchall(sql, (rnd(ROWS),)),
                    "iogate": lambda: db.fetch_one(sql, [rnd(ROWS)]),
                },
                callers=CALLERS,
                seconds=seconds,
                repeats=repeats,
            )
    return [Result(s, "sqlite point select", v, "q/s") for s, v in best.items()]


async def _redis(url: str, seconds: float, repeats: int) -> list[Result]:
    config = parse_config({"databases": {"kv": {"url": url, "pool_size": CALLERS}}}, environ={})
    single = parse_config(
        {"databases": {"kv": {"url": url, "pool_size": CALLERS, "auto_pipeline": False}}},
        environ={},
    )
    async with Gateway(config) as gateway, Gateway(single) as gateway_single:
        unbatched = gateway_single.redis("kv")
        raw = aioredis.Redis.from_url(url, max_connections=CALLERS)
        try:
            kv = gateway.redis("kv")
            await kv.set("bench:key", "value")
            best = await compare(
                {
                    "raw driver": lambda: raw.get("bench:key"),
                    "iogate": lambda: kv.get("bench:key"),
                    "iogate (no auto-pipelining)": lambda: unbatched.get("bench:key"),
                },
                callers=CALLERS,
                seconds=seconds,
                repeats=repeats,
            )
        finally:
            await raw.aclose()
    return [Result(s, "redis GET", v, "q/s") for s, v in best.items()]


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
                    "raw driver": lambda: users.find_one({"_id": rnd(MONGO_DOCS)}),
                    "iogate": lambda: db.find_one("users", {"_id": rnd(MONGO_DOCS)}),
                },
                callers=CALLERS,
                seconds=seconds,
                repeats=repeats,
            )
    finally:
        await raw.close()
    print(f"  ({MONGO}: server {server})")
    return [Result(s, MONGO, v, "q/s") for s, v in best.items()]


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


def summary(results: Sequence[Result]) -> list[str]:
    """One verdict per target of issue 4, and the TPC-B ratio."""
    by = {(r.metric, r.subject): r.value for r in results}
    lines = []
    for metric, target in TARGETS.items():
        ratio = by[(metric, "iogate")] / by[(metric, "raw driver")]
        verdict = "met" if ratio >= target else "MISSED"
        lines.append(f"target {metric}: iogate >= {target:g}x raw: {ratio:.2f}x ({verdict})")
    metric = "pgbench TPC-B transaction (8 clients)"
    ratio = by[(metric, "iogate")] / by[(metric, "raw driver")]
    lines.append(f"{metric}: iogate transaction() / pgbench = {ratio:.2f}x (reported)")
    return lines
