"""Every result is bounded while it is read: a statement producing 10 million
rows answers its capped rows, flagged ``truncated``, in under 2 s, and the
resident memory of a real ``iogate serve`` process grows by less than 64 MiB
(VmHWM from /proc/<pid>/status, reset through clear_refs before each measure).
The byte cap stops the read too; a result of exactly ``max_rows`` rows is not
truncated. SQLite (a recursive CTE) and PostgreSQL (generate_series)."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest

from iogate.databases.guard import ResultLimits, SQLGuard
from iogate.databases.postgres import PostgresDatabase
from iogate.databases.sqlite import SQLiteDatabase
from tests.servers import PostgresServer, free_port, stop, wait_for_port
from tests.subprocess_env import start_iogate

TEN_MILLION = 10_000_000
MAX_ROWS = 1000
MAX_BYTES = 64 * 1024
RSS_LIMIT = 64 * 1024 * 1024
SQLITE_BIG = (
    "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 10000000)"
    " SELECT n, hex(zeroblob(50)) AS pad FROM g"
)
PG_BIG = "SELECT g, repeat('x', 100) AS pad FROM generate_series(1, 10000000) g"
# PostgreSQL materialises a FROM-clause set-returning function before its first
# row (~0.6 s for PG_BIG on an idle machine, whatever reads it); in the select
# list it streams. The paths test uses this one, so its time is the gateway's.
PG_STREAMED = "SELECT g, repeat('x', 100) AS pad FROM (SELECT generate_series(1, 10000000) g) s"


class Served:
    """A running ``iogate serve`` child and its address."""

    def __init__(self, proc: Any, base: str) -> None:
        self.proc = proc
        self.base = base

    def reset_peak(self) -> int:
        """Reset the child's VmHWM to its current RSS (Linux clear_refs "5");
        return that RSS in bytes."""
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")
        return _status_kib(self.proc.pid, "VmRSS") * 1024

    def peak(self) -> int:
        return _status_kib(self.proc.pid, "VmHWM") * 1024


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


def _serve(tmp: Path, config: str) -> Iterator[Served]:
    (tmp / "iogate.toml").write_text(config)
    port = free_port()
    proc = start_iogate(tmp, port)
    try:
        wait_for_port(port, proc, "iogate serve")
        yield Served(proc, f"http://127.0.0.1:{port}")
    finally:
        stop(proc, signal.SIGTERM)


def _databases(name: str, url: str, big: str, extra: str = "") -> str:
    return (
        f'[databases.{name}]\nurl = "{url}"\nmax_rows = {MAX_ROWS}\n{extra}'
        f'[databases.{name}.queries.big]\nsql = "{big}"\n'
        f'[databases.{name}bytes]\nurl = "{url}"\nmax_rows = {TEN_MILLION}\n{extra}'
        f"max_response_bytes = {MAX_BYTES}\n"
    )


@pytest.fixture(scope="module")
def lite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("lite")
    yield from _serve(tmp, _databases("lite", "sqlite:///var/lite.db", SQLITE_BIG))


@pytest.fixture(scope="module")
def pgserve(tmp_path_factory: pytest.TempPathFactory, pg: PostgresServer) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("pg")
    # the fixture's login is a superuser and auth is off: what is tested here is the bound
    privileged = "allow_privileged_login = true\n"
    yield from _serve(tmp, _databases("pg", pg.dsn, PG_BIG, privileged))


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


async def _post(http: aiohttp.ClientSession, url: str, body: object) -> tuple[int, Any, int]:
    async with http.post(url, json=body) as resp:
        raw = await resp.read()
        return resp.status, orjson.loads(raw), len(raw)


async def _warm(http: aiohttp.ClientSession, served: Served, db: str) -> None:
    # every code path once, so imports and pools are in the baseline
    for name in (db, db + "bytes"):
        url = f"{served.base}/v1/databases/{name}/query"
        status, _, _ = await _post(http, url, {"sql": "SELECT 1"})
        assert status == 200


async def _bounded_big(
    http: aiohttp.ClientSession, served: Served, db: str, sql: str, engine_s: float = 0.0
) -> None:
    """``engine_s``: what the engine itself takes for the statement's capped
    rows, measured beside the gateway; past 1 s (a loaded machine) the 2 s
    budget is the engine's time plus 1 s."""
    await _warm(http, served, db)
    baseline = served.reset_peak()
    started = time.monotonic()
    status, body, _ = await _post(http, f"{served.base}/v1/databases/{db}/query", {"sql": sql})
    elapsed = time.monotonic() - started
    growth = served.peak() - baseline
    mib = growth / 2**20
    print(f"{db}, 10M rows, max_rows: {elapsed:.2f}s (engine {engine_s:.2f}s), RSS +{mib:.1f} MiB")
    assert status == 200, body
    assert body["truncated"] is True
    assert body["row_count"] == MAX_ROWS == len(body["rows"])
    assert body["rows"][0][0] == 1
    assert body["rows"][-1][0] == MAX_ROWS
    assert elapsed < max(2.0, engine_s + 1.0), f"{elapsed:.2f}s (the engine: {engine_s:.2f}s)"
    assert growth < RSS_LIMIT, f"resident memory grew by {growth / 2**20:.1f} MiB"


async def _byte_capped(
    http: aiohttp.ClientSession, served: Served, db: str, sql: str, engine_s: float = 0.0
) -> None:
    await _warm(http, served, db)
    baseline = served.reset_peak()
    started = time.monotonic()
    url = f"{served.base}/v1/databases/{db}bytes/query"
    status, body, _ = await _post(http, url, {"sql": sql})
    elapsed = time.monotonic() - started
    growth = served.peak() - baseline
    mib = growth / 2**20
    print(f"{db}, 10M rows, byte cap: {elapsed:.2f}s (engine {engine_s:.2f}s), RSS +{mib:.1f} MiB")
    assert status == 200, body
    assert body["truncated"] is True
    rows_bytes = len(orjson.dumps(body["rows"]))
    assert 0.9 * MAX_BYTES < rows_bytes <= MAX_BYTES
    assert body["row_count"] == len(body["rows"])
    assert elapsed < max(2.0, engine_s + 1.0), f"{elapsed:.2f}s (the engine: {engine_s:.2f}s)"
    assert growth < RSS_LIMIT, f"resident memory grew by {growth / 2**20:.1f} MiB"


async def _exact(http: aiohttp.ClientSession, served: Served, db: str, series: str) -> None:
    url = f"{served.base}/v1/databases/{db}/query"
    _, body, _ = await _post(http, url, {"sql": series.format(n=MAX_ROWS)})
    assert len(body["rows"]) == MAX_ROWS
    assert "truncated" not in body
    _, body, _ = await _post(http, url, {"sql": series.format(n=MAX_ROWS + 1)})
    assert len(body["rows"]) == MAX_ROWS
    assert body["truncated"] is True


async def _every_path(http: aiohttp.ClientSession, served: Served, db: str, sql: str) -> None:
    """Named query, /batch, /v1/batch and the legacy path all stop at max_rows + 1."""
    base = served.base
    answers: list[dict[str, Any]] = []
    started = time.monotonic()
    _, body, _ = await _post(http, f"{base}/v1/databases/{db}/queries/big", {})
    answers.append(body)
    _, body, _ = await _post(http, f"{base}/database/execute", {"db_name": db, "query": sql})
    answers.append(body)
    for transaction in (True, False):
        url = f"{base}/v1/databases/{db}/batch"
        _, body, _ = await _post(
            http, url, {"statements": [{"sql": sql}], "transaction": transaction}
        )
        answers.append(body["results"][0])
    step = {"kind": "database", "database": db, "sql": sql}
    _, body, _ = await _post(
        http, f"{base}/v1/batch", {"steps": [step, {**step, "transaction": "t"}]}
    )
    answers.extend(r["value"] for r in body["results"])
    elapsed = time.monotonic() - started
    for answer in answers:
        assert answer["truncated"] is True, json.dumps(answer)[:300]
        assert len(answer["rows"]) == MAX_ROWS
    assert elapsed < 4.0, f"{len(answers)} capped reads took {elapsed:.2f}s"


# -- SQLite --------------------------------------------------------------------


async def test_sqlite_ten_million_rows_capped_while_read(
    lite: Served, http: aiohttp.ClientSession
) -> None:
    await _bounded_big(http, lite, "lite", SQLITE_BIG)


async def test_sqlite_byte_cap_stops_the_read(lite: Served, http: aiohttp.ClientSession) -> None:
    await _byte_capped(http, lite, "lite", SQLITE_BIG)


async def test_sqlite_exactly_max_rows_is_not_truncated(
    lite: Served, http: aiohttp.ClientSession
) -> None:
    series = (
        "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < {n})"
        " SELECT n FROM g"
    )
    await _exact(http, lite, "lite", series)


async def test_sqlite_every_result_path_is_bounded(
    lite: Served, http: aiohttp.ClientSession
) -> None:
    await _every_path(http, lite, "lite", SQLITE_BIG)


async def test_sqlite_library_reads_bounded_and_unbounded(tmp_path: Path) -> None:
    limits = ResultLimits(max_rows=3, max_bytes=1 << 20)
    cte = "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 10)"
    sql = cte + " SELECT n FROM g"
    async with SQLiteDatabase("lib", path=str(tmp_path / "lib.db")) as db:
        whole = await db.query(sql)
        assert len(whole.rows) == 10
        assert not whole.truncated
        capped = await db.query(sql, limits=limits)
        assert capped.rows == [(1,), (2,), (3,)]
        assert capped.truncated
        guarded = await db.query_guarded(sql, guard=SQLGuard(read_only=True), limits=limits)
        assert guarded.rows == [(1,), (2,), (3,)]
        assert guarded.truncated
        async with db.transaction() as tx:
            in_tx = await tx.query(sql, limits=limits)
            assert len(in_tx.rows) == 3
            assert in_tx.truncated
        insert = cte + " INSERT INTO t (x) SELECT n FROM g RETURNING x"
        written = await db.batch(["CREATE TABLE t (x INTEGER)", insert], limits=limits)
        last = written[1]
        assert not isinstance(last, Exception)
        assert len(last.rows) == 3
        assert last.truncated
        assert await db.fetch_val("SELECT count(*) FROM t") == 10  # the write ran whole
        exact = await db.query(sql, limits=ResultLimits(max_rows=10, max_bytes=1 << 20))
        assert len(exact.rows) == 10
        assert not exact.truncated


# -- PostgreSQL ----------------------------------------------------------------


async def _engine_s(pg: PostgresServer) -> float:
    """PostgreSQL's own time for PG_BIG's first 10,000 rows, read by asyncpg directly."""
    conn = await asyncpg.connect(pg.dsn)
    try:
        started = time.monotonic()
        await conn.fetch(PG_BIG + " LIMIT 10000")
        return time.monotonic() - started
    finally:
        await conn.close()


@pytest.mark.postgres
async def test_postgres_ten_million_rows_capped_while_read(
    pgserve: Served, http: aiohttp.ClientSession, pg: PostgresServer
) -> None:
    await _bounded_big(http, pgserve, "pg", PG_BIG, await _engine_s(pg))


@pytest.mark.postgres
async def test_postgres_byte_cap_stops_the_read(
    pgserve: Served, http: aiohttp.ClientSession, pg: PostgresServer
) -> None:
    await _byte_capped(http, pgserve, "pg", PG_BIG, await _engine_s(pg))


@pytest.mark.postgres
async def test_postgres_exactly_max_rows_is_not_truncated(
    pgserve: Served, http: aiohttp.ClientSession
) -> None:
    await _exact(http, pgserve, "pg", "SELECT g FROM generate_series(1, {n}) g")


@pytest.mark.postgres
async def test_postgres_every_result_path_is_bounded(
    pgserve: Served, http: aiohttp.ClientSession
) -> None:
    await _every_path(http, pgserve, "pg", PG_STREAMED)


@pytest.mark.postgres
async def test_postgres_library_reads_bounded_and_unbounded(pg: PostgresServer) -> None:
    limits = ResultLimits(max_rows=1500, max_bytes=1 << 20)
    async with PostgresDatabase("lib", dsn=pg.dsn) as db:
        whole = await db.query("SELECT g FROM generate_series(1, 3000) g")
        assert len(whole.rows) == 3000
        assert not whole.truncated
        # read-only: the portal of the READ ONLY transaction is continued chunk by chunk
        guarded = await db.query_guarded(PG_BIG, guard=SQLGuard(read_only=True), limits=limits)
        assert len(guarded.rows) == 1500
        assert guarded.truncated
        assert guarded.rows[-1][0] == 1500
        # outside a transaction: read in chunks in a transaction of its own, run once
        # (a SELECT may call a function that writes: it must never run a second time)
        await db.execute("DROP TABLE IF EXISTS bounded_calls")
        await db.execute("CREATE TABLE bounded_calls (g int)")
        await db.execute(
            "CREATE OR REPLACE FUNCTION bounded_note(g int) RETURNS int VOLATILE LANGUAGE sql"
            " AS $$ INSERT INTO bounded_calls VALUES (g) RETURNING g $$"
        )
        wide = ResultLimits(max_rows=20_000, max_bytes=1 << 24)
        once = await db.query(
            "SELECT bounded_note(g) FROM generate_series(1, 30000) g", limits=wide
        )
        assert len(once.rows) == 20_000
        assert once.truncated
        assert once.rows[-1] == (20_000,)
        calls = await db.fetch_val("SELECT count(*) FROM bounded_calls")
        assert calls == 20_001  # each row the server produced, once: no second run
        await db.execute("DROP FUNCTION bounded_note(int); DROP TABLE bounded_calls")
        async with db.transaction() as tx:
            in_tx = await tx.query(PG_BIG, limits=limits)
            assert len(in_tx.rows) == 1500
            assert in_tx.truncated
        # a write outside a transaction runs once, whole; its RETURNING rows are capped
        await db.execute("DROP TABLE IF EXISTS bounded_w")
        await db.execute("CREATE TABLE bounded_w (x int)")
        try:
            sql = "INSERT INTO bounded_w SELECT g FROM generate_series(1, 5000) g RETURNING x"
            written = await db.query(sql, limits=limits)
            assert len(written.rows) == 1500
            assert written.truncated
            assert await db.fetch_val("SELECT count(*) FROM bounded_w") == 5000
            point = await db.query("SELECT 1 AS one", limits=limits)
            assert point.rows == [(1,)]
            assert not point.truncated
            empty = await db.query("SELECT 1 WHERE false", limits=limits)
            assert empty.rows == []
            assert not empty.truncated
        finally:
            await db.execute("DROP TABLE bounded_w")


# -- each row converted to JSON once ---------------------------------------------


class _Counting:
    """``to_json_rows`` of :mod:`iogate.databases.guard`, counting the rows it converts."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import iogate.databases.guard as guard_module

        self.rows = 0
        real = guard_module.to_json_rows

        def counted(rows: Any) -> list[list[Any]]:
            self.rows += len(rows)
            return real(rows)

        monkeypatch.setattr(guard_module, "to_json_rows", counted)


def _reference(rows: list[tuple[Any, ...]]) -> list[list[Any]]:
    from iogate.databases._values import to_json_rows

    return to_json_rows(rows)


async def _converted_once(db: Any, sql: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bounded read of 2,500 rows (its chunks after the first measured) renders
    the same body as converting its rows afresh, each row converted once; with a
    row cap the rows kept are converted once too."""
    from iogate.databases.guard import result_body

    limits = ResultLimits(max_rows=10_000, max_bytes=1 << 24)
    counting = _Counting(monkeypatch)
    result = await db.query(sql, limits=limits)
    body = result_body(result, limits)
    assert len(result.rows) == 2500
    assert len(result.encoded) == 2000  # the two full chunks the read measured
    assert body["rows"] == _reference(result.rows)
    assert counting.rows == 2500
    # a big integer (a string in JSON) and a fraction, past the first chunk too
    assert body["rows"][2499] == _reference([result.rows[2499]])[0]
    capped_limits = ResultLimits(max_rows=1500, max_bytes=1 << 24)
    counting.rows = 0
    capped = await db.query(sql, limits=capped_limits)
    capped_body = result_body(capped, capped_limits)
    assert capped_body["truncated"] is True
    assert capped_body["rows"] == _reference(capped.rows)
    assert len(capped_body["rows"]) == 1500
    assert counting.rows == 1500


async def test_sqlite_bounded_rows_are_converted_to_json_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cte = "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 2500)"
    sql = cte + " SELECT n, 9007199254740993 + n, n / 7.0, 'r' || n FROM g"
    async with SQLiteDatabase("once", path=str(tmp_path / "once.db")) as db:
        await _converted_once(db, sql, monkeypatch)


@pytest.mark.postgres
async def test_postgres_bounded_rows_are_converted_to_json_once(
    pg: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    sql = "SELECT g, 9007199254740993 + g, g / 7.0, 'r' || g FROM generate_series(1, 2500) g"
    async with PostgresDatabase("once", dsn=pg.dsn) as db:
        await _converted_once(db, sql, monkeypatch)
