"""PostgreSQL's own CPU per point select, with each way of resetting the connection after it.

On one connection to a temporary server, a prepared point select runs
``--requests`` times followed by the queries of one variant (each its own
simple query, so its own round trip), and the backend's CPU (user + kernel,
``/proc/<pid>/stat``) is divided by the requests; variants alternate over
``--rounds`` rounds and the lowest figure is printed::

    PYTHONPATH=src:. python -m benchmarks.pg_reset_cost [--requests 20000] [--rounds 2]

What it showed (2026-12-04): a round trip costs the server ~35 µs of CPU
whatever it carries, the reset query's contents a few µs. So a read costs
PostgreSQL what its round trips cost, and the lean reset after a read-only
statement (``ROLLBACK; SELECT pg_advisory_unlock_all()``) saves ~10 µs of the
whole one, not a round trip.
"""

from __future__ import annotations

import argparse
import asyncio
import os

import asyncpg

_TICK = os.sysconf("SC_CLK_TCK")
_ASYNCPG_RESET = "SELECT pg_advisory_unlock_all();\nCLOSE ALL;\nUNLISTEN *;\nRESET ALL;"
_IDENTITY = "\nRESET SESSION AUTHORIZATION;\nRESET ROLE;"
VARIANTS: dict[str, tuple[str, ...]] = {
    "statement only": (),
    "+ asyncpg's reset": (_ASYNCPG_RESET,),
    "+ asyncpg's reset + identity": (_ASYNCPG_RESET + _IDENTITY,),
    "BEGIN READ ONLY, + ROLLBACK and the whole reset": (
        "BEGIN READ ONLY",
        "ROLLBACK;\n" + _ASYNCPG_RESET + _IDENTITY,
    ),
    "BEGIN READ ONLY, + the lean reset": (
        "BEGIN READ ONLY",
        "ROLLBACK;\nSELECT pg_advisory_unlock_all();",
    ),
    "BEGIN READ ONLY, + ROLLBACK only": ("BEGIN READ ONLY", "ROLLBACK"),
}


def _cpu_s(pid: int) -> float:
    """User + kernel CPU seconds of process ``pid``."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


async def _variant(dsn: str, queries: tuple[str, ...], requests: int) -> float:
    """PostgreSQL CPU µs per point select followed by ``queries`` (a leading
    ``BEGIN ...`` runs before the select instead)."""
    conn = await asyncpg.connect(dsn)
    try:
        pid = conn.get_server_pid()
        stmt = await conn.prepare("SELECT id, name FROM reset_cost WHERE id = $1")
        before_select = queries[:1] if queries and queries[0].startswith("BEGIN") else ()
        after = queries[len(before_select) :]
        for _ in range(500):  # warm: plan cached, catalog caches filled
            await stmt.fetchrow(7)
        start = _cpu_s(pid)
        for _ in range(requests):
            for query in before_select:
                await conn.execute(query)
            await stmt.fetchrow(7)
            for query in after:
                await conn.execute(query)
        return (_cpu_s(pid) - start) * 1e6 / requests
    finally:
        await conn.close()


async def _run(dsn: str, requests: int, rounds: int) -> dict[str, float]:
    conn = await asyncpg.connect(dsn)
    await conn.execute(
        "CREATE TABLE reset_cost (id int PRIMARY KEY, name text);"
        "INSERT INTO reset_cost SELECT i, 'n' || i FROM generate_series(1, 1000) i"
    )
    await conn.close()
    best: dict[str, float] = {}
    for round_no in range(rounds):
        names = list(VARIANTS) if round_no % 2 == 0 else list(VARIANTS)[::-1]
        for name in names:
            value = await _variant(dsn, VARIANTS[name], requests)
            best[name] = min(best.get(name, value), value)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    from tests.servers import postgres_server

    with postgres_server() as pg:
        best = asyncio.run(_run(pg.dsn, args.requests, args.rounds))
    for name, value in best.items():
        print(f"{name:50} {value:6.1f} µs of PostgreSQL CPU per request")


if __name__ == "__main__":
    main()
