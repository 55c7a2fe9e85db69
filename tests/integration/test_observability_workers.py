"""One view of the deployment (issue 18): under a real ``iogate serve --workers 2``
on loopback, ``/metrics`` and ``/v1/stats`` scraped through either worker
report the same totals — every worker's calls — and logs stay JSON."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from iogate.observability.metrics import Metrics
from tests.servers import free_port, stop, wait_for_port
from tests.subprocess_env import child_env

_OK = (("operation", "query"), ("outcome", "ok"), ("resource", "main"))


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``iogate serve --workers 2 --access-log``: its base URL and its stderr file."""
    (tmp_path / "iogate.toml").write_text('[databases.main]\nurl = "sqlite:///main.db"\n')
    port = free_port()
    log = tmp_path / "stderr.log"
    command = [sys.executable, "-m", "iogate", "serve", "-c", "iogate.toml", "--port", str(port)]
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [*command, "--workers", "2", "--access-log"],
            cwd=tmp_path,
            env=child_env(),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        try:
            wait_for_port(port, proc, "iogate serve --workers 2")
            yield f"http://127.0.0.1:{port}", log
        finally:
            stop(proc)


async def _get(url: str) -> tuple[str, bytes]:
    """One request on a new connection (the kernel hands each new connection
    to one of the workers); the answering worker (its request-id prefix) and body."""
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200
        return resp.headers["X-Request-ID"][:8], await resp.read()


async def _query(base: str) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{base}/v1/databases/main/query", json={"sql": "SELECT 1"}) as resp,
    ):
        assert resp.status == 200
        return resp.headers["X-Request-ID"][:8]


def _totals(text: bytes) -> tuple[float, float]:
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text.decode())
        for s in fam.samples
    }
    count = samples[("iogate_operation_duration_seconds_count", _OK)]
    inf = samples[("iogate_operation_duration_seconds_bucket", (("le", "+Inf"), *_OK))]
    assert ("process_resident_memory_bytes", ()) not in samples  # per worker, labelled
    return count, inf


async def test_metrics_through_any_worker_report_the_deployment_totals(
    workers: tuple[str, Path],
) -> None:
    base, log = workers
    answered: dict[str, int] = {}
    calls = 0
    while len(answered) < 2 or calls < 20:
        worker = await _query(base)
        answered[worker] = answered.get(worker, 0) + 1
        calls += 1
        assert calls < 400, answered  # both workers accept connections
    # each worker's figures reach the others within the snapshot interval (1 s):
    # scrape through both until each reports every call (bounded)
    seen: dict[str, tuple[float, float]] = {}
    deadline = time.monotonic() + 15
    while len(seen) < 2:
        assert time.monotonic() < deadline, seen
        worker, text = await _get(f"{base}/metrics")
        totals = _totals(text)
        if totals == (calls, calls):
            seen[worker] = totals
        await asyncio.sleep(0.05)  # a poll interval, not synchronisation
    assert set(seen) == set(answered)
    # /v1/stats the same way: every call, percentiles from the merged histograms
    stats_seen: set[str] = set()
    while len(stats_seen) < 2:
        assert time.monotonic() < deadline, stats_seen
        worker, body = await _get(f"{base}/v1/stats")
        op = orjson.loads(body)["resources"]["main"]["operations"]["query"]
        if op["calls"] == calls:
            assert op["outcomes"] == {"ok": calls}
            assert op["last_minute"]["calls"] == calls
            assert op["latency_ms"]["p99"] > 0
            stats_seen.add(worker)
    # per-process collectors are labelled by worker: two of each
    _, text = await _get(f"{base}/metrics")
    rss = [
        s
        for fam in text_string_to_metric_families(text.decode())
        for s in fam.samples
        if s.name == "process_resident_memory_bytes"
    ]
    assert len({s.labels["worker"] for s in rss}) == 2
    # JSON logs in the worker processes, the request log included
    lines = [orjson.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    access = [d for d in lines if d["logger"] == "iogate.request"]
    assert len(access) >= calls
    assert {d["path"] for d in access} >= {"/v1/databases/{name}/query", "/metrics"}
    assert any(d["logger"].startswith("uvicorn") for d in lines)
    plain = [line for line in log.read_text().splitlines() if line and not line.startswith("{")]
    assert all(line.startswith("iogate ") for line in plain), plain  # the banner only


def test_merged_histograms_give_the_percentiles_of_every_call() -> None:
    fast, slow = Metrics(), Metrics()
    for _ in range(90):
        fast.record("db", "q", "ok", 0.001)
    for _ in range(10):
        slow.record("db", "q", "ok", 0.5)
        slow.record("db", "q", "QueryError", 0.002)
    states = [orjson.loads(orjson.dumps(m.export_state())) for m in (fast, slow)]
    op = fast.merged(states).stats().resource("db").operation("q")  # type: ignore[union-attr]
    assert op is not None
    assert (op.calls, op.errors, op.outcomes) == (110, 10, {"QueryError": 10, "ok": 100})
    # p50 is a fast call and p99 a slow one: not the mean of the two p99s
    assert op.latency.p50_ms < 2
    assert 400 < op.latency.p99_ms <= 500
    assert op.last_minute.calls == 110
