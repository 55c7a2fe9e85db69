"""``POST /captions`` of examples/captions_api under wrk, against a hand-written peer.

Subjects, each a uvicorn process on a free loopback port (same flags), both
calling the same fake OpenAI process (``examples.captions_api.fake_llm``,
answering at once), driven by ``wrk -t2 -c32``:

* ``iogate.captions``   ``examples/captions_api`` (per-user rate limit, the
                        gateway cache, the provider through ``Upstream`` with
                        its pipeline, metrics and ``@monitored``, failover ready)
* ``aiohttp+tenacity+aiobreaker+cashews``  the same endpoint by hand
                        (``benchmarks/examples_peer.py``; aiolimiter for the
                        per-user limit)

Two workloads: ``cached`` (one body: after the first request every answer
comes from the cache) and ``fresh`` (a new prompt per request: every answer
is generated through the fake provider). Rounds alternate the subjects; the
median is reported. wrk, the servers and the fake share the machine's cores,
so the ratio is the figure to watch.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from tests.servers import free_port, wait_for_port

from .gateway import _wrk
from .harness import Result

TITLE = "POST /captions, wrk -t2 -c32, vs aiohttp + tenacity + aiobreaker + cashews"
BASELINE = "aiohttp+tenacity+aiobreaker+cashews"
COMPARE = None

ROOT = Path(__file__).resolve().parent.parent
PEER = "aiohttp+tenacity+aiobreaker+cashews"
OURS = "iogate.captions"

IOGATE_APP = """
from examples.captions_api.app import CaptionSettings, create_app
from examples.captions_api.config import captions_config

app = create_app(
    captions_config(database_url="sqlite:///" + DB, openai_url=URL + "/v1", anthropic_url=URL),
    CaptionSettings(user_rate_per_s=1e6, user_burst=1e6),
    freeze_heap=True,
)
"""

HEADERS = (
    'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
    'wrk.headers["X-User-Id"] = "bench"\n'
)
CACHED = HEADERS + """wrk.body = '{"prompt": "a sunset over the sea", "style": "funny"}'\n"""
FRESH = (
    HEADERS
    + """
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
local n = 0
function request()
  n = n + 1
  local body = '{"prompt": "photo ' .. tid .. '-' .. n .. '", "style": "casual"}'
  return wrk.format(nil, nil, nil, body)
end
"""
)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}


def _uvicorn(target: str, app_dir: Path, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        target,
        "--app-dir",
        str(app_dir),
        "--log-level",
        "warning",
        "--no-access-log",
        "--port",
        str(port),
    ]


def _measure(
    subject: str, command: list[str], env: dict[str, str], script: Path, seconds: int, log: Path
) -> dict[str, float]:
    port = int(command[-1])
    with log.open("ab") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=out, env=env, cwd=ROOT)
    try:
        try:
            wait_for_port(port, proc, subject)
        except RuntimeError:
            sys.stderr.write(log.read_text(errors="replace")[-2000:])
            raise
        url = f"http://127.0.0.1:{port}/captions"
        _wrk(url, script, max(1, seconds // 3))  # warm-up
        return _wrk(url, script, seconds)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


async def run(*, quick: bool = False) -> list[Result]:
    """Alternate the subjects for a few rounds per workload; report the medians."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed: run scripts/install-services.sh bench")
    return await asyncio.to_thread(_run_sync, 1 if quick else 3, 3 if quick else 8)


def _run_sync(rounds: int, seconds: int) -> list[Result]:
    with tempfile.TemporaryDirectory(prefix="iogate-bench-examples-") as name:
        tmp = Path(name)
        env = _env()
        fake_port = free_port()
        fake_log = tmp / "fake.log"
        with fake_log.open("ab") as out:
            fake = subprocess.Popen(
                [sys.executable, "-m", "examples.captions_api.fake_llm", "--port", str(fake_port)],
                stdout=out,
                stderr=out,
                env=env,
                cwd=ROOT,
            )
        try:
            wait_for_port(fake_port, fake, "fake LLM")
            url = f"http://127.0.0.1:{fake_port}"
            (tmp / "captions_iogate.py").write_text(
                f"DB = {str(tmp / 'captions.db')!r}\nURL = {url!r}\n" + IOGATE_APP
            )
            peer_env = {**env, "OPENAI_URL": url + "/v1", "ANTHROPIC_URL": url}
            scripts = {"cached": tmp / "cached.lua", "fresh": tmp / "fresh.lua"}
            scripts["cached"].write_text(CACHED)
            scripts["fresh"].write_text(FRESH)
            runs: dict[tuple[str, str], list[dict[str, float]]] = {}
            for _ in range(rounds):
                for workload, script in scripts.items():
                    for subject in (OURS, PEER):
                        port = free_port()
                        if subject == OURS:
                            command = _uvicorn("captions_iogate:app", tmp, port)
                            subject_env = env
                        else:
                            command = _uvicorn("benchmarks.examples_peer:app", ROOT, port)
                            subject_env = peer_env
                        figures = _measure(
                            subject, command, subject_env, script, seconds, tmp / "server.log"
                        )
                        runs.setdefault((subject, workload), []).append(figures)
        finally:
            fake.terminate()
            fake.wait(timeout=30)
    units = {"requests_per_s": "req/s", "latency_p50_ms": "ms", "latency_p99_ms": "ms"}
    return [
        Result(subject, f"{workload}_{metric}", statistics.median(r[metric] for r in rs), unit)
        for metric, unit in units.items()
        for (subject, workload), rs in runs.items()
    ]


def summary(results: Sequence[Result]) -> list[str]:
    """Throughput ratio and p99 per workload."""
    by = {(r.subject, r.metric): r.value for r in results}
    lines = []
    for workload in ("cached", "fresh"):
        ours = by[(OURS, f"{workload}_requests_per_s")]
        peer = by[(PEER, f"{workload}_requests_per_s")]
        lines.append(
            f"{workload}: iogate.captions {ours:,.0f} req/s (p99"
            f" {by[(OURS, f'{workload}_latency_p99_ms')]:.1f} ms) = {ours / peer:.2f}x the"
            f" hand-written peer {peer:,.0f} req/s (p99"
            f" {by[(PEER, f'{workload}_latency_p99_ms')]:.1f} ms); issue 20 targets >= 1.0x"
        )
    return lines
