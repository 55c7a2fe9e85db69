"""The benchmark harness: scenario registry, timing helpers, result table and JSON.

A scenario is a module ``benchmarks/<name>.py`` exposing::

    TITLE: str                      # one line, printed above the table
    BASELINE: str                   # subject the "x baseline" ratio divides by
    COMPARE: str | None             # optional second subject ("N x cheaper than ...")
    async def run(*, quick: bool) -> list[Result]
    def summary(results) -> list[str]   # optional lines printed under the table

Results are written to ``benchmarks/results/<name>.json`` as a list of
``{"subject", "metric", "value", "unit"}`` objects. Registered scenarios
whose module does not exist yet print "not yet implemented" and are skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import TypeVar

from rich.console import Console
from rich.table import Table

__all__ = [
    "SCENARIOS",
    "Result",
    "all_cpus",
    "callgrind_instructions",
    "main",
    "servers_apart",
    "time_per_call",
]

RESULTS_DIR = Path(__file__).parent / "results"

SCENARIOS: dict[str, str] = {
    "policies": "success-path cost of the resilience pipeline vs tenacity, stamina, "
    "aiobreaker, aiolimiter",
    "databases": "queries through iogate vs the drivers (aiosqlite, asyncpg, redis-py, pymongo)",
    "upstreams": "HTTP calls through iogate vs raw aiohttp / httpx against a local nginx",
    "cache": "read-through cache hit/miss cost and request coalescing",
    "metrics": "cost of recording a call and of a 1,000-series /metrics scrape",
    "gateway": "the HTTP gateway under wrk, workload by workload, vs bare FastAPI endpoints, "
    "Datasette and the raw-ASGI floor",
    "hedging": "hedged vs unhedged upstream calls through the gateway: p50, p99, p99.9, "
    "extra requests",
    "cluster": "admissions through the Redis-backed (shared) rate limiter vs the in-process one",
    "examples": "POST /captions of examples/captions_api under wrk vs the same endpoint "
    "by hand (aiohttp + tenacity + aiobreaker + cashews)",
}


T = TypeVar("T")


@contextmanager
def all_cpus() -> Iterator[None]:
    """Run the calling thread, and the processes it starts, on every CPU of the
    machine for the block (undoing :func:`servers_apart`'s pinning, e.g. for a
    scenario that measures how several server processes scale), then restore.
    A no-op where affinity cannot be set."""
    try:
        original = os.sched_getaffinity(0)
        os.sched_setaffinity(0, range(os.cpu_count() or 1))
    except (AttributeError, OSError):
        yield
        return
    try:
        yield
    finally:
        os.sched_setaffinity(0, original)


@contextmanager
def servers_apart(servers: AbstractContextManager[T]) -> Iterator[T]:
    """Enter ``servers`` (a context that starts server processes) with the server
    processes on the machine's last CPU and this process, the client side, on
    the others; restore this process's CPUs on exit.

    This process pins itself to the last CPU while ``servers`` starts its
    processes, so they inherit that CPU (PostgreSQL's backends, forked later,
    too), then moves to the other CPUs. Otherwise the scheduler places server
    processes on the client's core now and then, and a throughput ratio
    between two clients swings by ±15 % from run to run with where the servers
    happened to land; apart, the client's own cost per call decides its
    throughput, which is what a client library adds. A no-op on a single CPU
    or where affinity cannot be set.
    """
    try:
        original = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        original = set()
    if len(original) < 2:
        with servers as value:
            yield value
        return
    server_cpu = max(original)
    os.sched_setaffinity(0, {server_cpu})
    try:
        with servers as value:
            os.sched_setaffinity(0, original - {server_cpu})
            yield value
    finally:
        os.sched_setaffinity(0, original)


@dataclass(frozen=True, slots=True)
class Result:
    """One measured figure: ``subject`` (``"iogate.pipeline"``), ``metric``
    (``"us_per_call"``), ``value`` and ``unit`` (``"us"``)."""

    subject: str
    metric: str
    value: float
    unit: str


async def time_per_call(
    subjects: dict[str, Callable[[], Awaitable[object]]],
    *,
    repeats: int = 15,
    target_s: float = 0.04,
) -> dict[str, float]:
    """Best-of-``repeats`` seconds per call of each subject.

    Each subject is first calibrated so that one repeat lasts ``target_s``;
    repeats are interleaved round-robin across subjects, so a noisy neighbour
    affects every subject alike, and the minimum is kept (the least disturbed
    run, as ``timeit`` recommends).
    """
    loops: dict[str, int] = {}
    for name, call in subjects.items():
        n = 100
        while True:
            elapsed = await _time_loop(call, n)
            if elapsed >= target_s / 4 or n >= 10_000_000:
                break
            n *= 4
        loops[name] = max(100, int(n * target_s / max(elapsed, 1e-9)))
    best = dict.fromkeys(subjects, float("inf"))
    for _ in range(repeats):
        for name, call in subjects.items():
            per_call = await _time_loop(call, loops[name]) / loops[name]
            best[name] = min(best[name], per_call)
    return best


async def _time_loop(call: Callable[[], Awaitable[object]], n: int) -> float:
    perf = time.perf_counter
    start = perf()
    for _ in range(n):
        await call()
    return perf() - start


def _load(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(f"benchmarks.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"benchmarks.{name}":
            return None
        raise


def _print_table(name: str, module: ModuleType, results: Sequence[Result]) -> None:
    """One rich table per metric, with ratios to BASELINE and from COMPARE."""
    baseline = getattr(module, "BASELINE", None)
    compare = getattr(module, "COMPARE", None)
    title = getattr(module, "TITLE", name)
    metrics: dict[str, dict[str, Result]] = {}
    for r in results:
        metrics.setdefault(r.metric, {})[r.subject] = r
    console = Console()
    for metric, by_subject in metrics.items():
        base = by_subject.get(baseline) if baseline else None
        ref = by_subject.get(compare) if compare else None
        table = Table(title=f"{name}: {title} ({metric})")
        table.add_column("subject")
        table.add_column(metric, justify="right")
        if base is not None:
            table.add_column(f"x {baseline}", justify="right")
        if ref is not None:
            table.add_column(f"{compare} / subject", justify="right")
        for r in by_subject.values():
            row = [r.subject, f"{r.value:,.3f} {r.unit}"]
            if base is not None:
                row.append(f"{r.value / base.value:,.2f}")
            if ref is not None:
                row.append(f"{ref.value / r.value:,.2f}" if r.value > 0 else "-")
            table.add_row(*row)
        console.print(table)


def _write(name: str, results: Sequence[Result]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    return path


def main(argv: Sequence[str]) -> int:
    """Run the selected scenarios (all by default); 0 unless a scenario crashed."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--only", help="comma-separated scenarios: " + ", ".join(SCENARIOS))
    parser.add_argument("--quick", action="store_true", help="fewer repeats (smoke test)")
    args = parser.parse_args(argv)
    names = list(SCENARIOS) if not args.only else [n.strip() for n in args.only.split(",")]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    print(
        f"iogate benchmarks on Python {platform.python_version()} "
        f"({platform.machine()}, {platform.system()})"
    )
    for name in names:
        module = _load(name)
        if module is None:
            print(f"\n[{name}] not yet implemented: skipped")
            continue
        print(f"\n[{name}] {SCENARIOS[name]}")
        results: list[Result] = asyncio.run(module.run(quick=args.quick))
        _print_table(name, module, results)
        summary = getattr(module, "summary", None)
        if summary is not None:
            for line in summary(results):
                print(line)
        print(f"wrote {_write(name, results)}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))


def callgrind_instructions(python_args: Sequence[str], out: Path) -> int:
    """Instructions (callgrind's ``Ir`` total) of ``python <python_args>``, run
    under ``valgrind --tool=callgrind`` with ``PYTHONHASHSEED=0`` (the same
    hashing, so the same work, every run); the profile is written to ``out``.

    Raises:
        RuntimeError: the process failed (its last output in the message) or
            callgrind wrote no total.
    """
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable]
    run = subprocess.run(
        [*command, *python_args], capture_output=True, text=True, env=env, check=False
    )
    if run.returncode != 0:
        raise RuntimeError(f"{' '.join(python_args)} failed under callgrind:\n{run.stderr[-2000:]}")
    match = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no instruction total in {out}")
    return int(match.group(1))
