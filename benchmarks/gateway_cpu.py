"""CPU per HTTP request of each process a gateway workload runs on, around wrk.

Requests per second move by ±10 % between runs on this shared 2-core
machine; where each request's CPU goes does not move as much. For each
workload of :mod:`benchmarks.gateway` and each subject (alternating, several
rounds), this runs ``wrk -t2 -c32`` against the subject's server and reads,
from ``/proc``, the CPU the server process spent in user and in kernel mode,
the CPU of every PostgreSQL process, and wrk's own, each divided by the
requests wrk completed::

    PYTHONPATH=src:. python -m benchmarks.gateway_cpu \\
        [--workloads "pg point select,pg transaction"] [--seconds 4] [--rounds 3]

A server process at ~100 % of a core is what bounds the throughput: then its
user + kernel CPU per request is the figure to lower. Datasette is left out.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import tempfile
from pathlib import Path

from benchmarks import gateway as g

_TICK = os.sysconf("SC_CLK_TCK")


def _cpu(pid: int) -> tuple[float, float]:
    """User and kernel CPU seconds of process ``pid`` (``/proc/<pid>/stat``)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / _TICK, int(fields[12]) / _TICK


def _postgres_cpu() -> dict[int, float]:
    """CPU seconds of every process named ``postgres`` (server and backends), by pid."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                text = stat.read()
            if "(postgres)" in text:
                user, system = _cpu(int(entry))
                found[int(entry)] = user + system
        except (FileNotFoundError, ProcessLookupError):
            continue  # a backend that exited meanwhile
    return found


def _spent(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds spent between two :func:`_postgres_cpu` readings (a process
    that exited in between is left out: its last CPU is unknown)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def _measure(url: str, script: Path, pid: int, seconds: int) -> str:
    user0, sys0 = _cpu(pid)
    pg0, own0 = _postgres_cpu(), os.times()
    out = subprocess.run(
        ["wrk", "-t2", "-c32", f"-d{seconds}s", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    own1, pg1 = os.times(), _postgres_cpu()
    user1, sys1 = _cpu(pid)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    per = 1e6 / (rps * seconds)  # µs per request for one second of CPU
    wrk = own1.children_user - own0.children_user + own1.children_system - own0.children_system
    busy = 100 * (user1 - user0 + sys1 - sys0) / seconds
    return (
        f"{rps:7,.0f} req/s  server user {(user1 - user0) * per:4.0f} µs, kernel"
        f" {(sys1 - sys0) * per:3.0f} µs ({busy:3.0f} % of a core)  PostgreSQL"
        f" {_spent(pg0, pg1) * per:4.0f} µs  wrk {wrk * per:3.0f} µs"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--workloads", default="pg point select,pg join,pg insert,pg transaction")
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from tests.servers import free_port, postgres_server

    from iogate.server.keys import new_key

    workloads = {w: g._workloads()[w] for w in args.workloads.split(",")}
    with tempfile.TemporaryDirectory(prefix="iogate-bench-cpu-") as name, postgres_server() as pg:
        tmp = Path(name)
        asyncio.run(g._make_pg(pg.dsn))
        g._make_db(tmp / "bench.db")
        keys = {k: new_key() for k in ("read", "write", "relay")}
        ports = {n: free_port() for n in ("iogate", "bare", "raw-asgi")}
        commands = g._commands(tmp, keys, pg.dsn, ports["raw-asgi"])
        servers = g._Servers({k: commands[k] for k in ports}, ports, tmp)
        pids = dict(zip(ports, servers.pids, strict=True))
        try:
            for _ in range(args.rounds):
                for workload, targets in workloads.items():
                    for subject, target in targets.items():
                        if target.server not in ports:
                            continue
                        url = f"http://127.0.0.1:{ports[target.server]}{target.path}"
                        script = g._script(tmp / "cpu.lua", target, keys)
                        g._wrk(url, script, 1)  # warm-up
                        figures = _measure(url, script, pids[target.server], args.seconds)
                        print(f"{workload}: {subject}: {figures}", flush=True)
        finally:
            servers.close()


if __name__ == "__main__":
    main()
