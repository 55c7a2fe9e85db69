"""The README's quickstart, run verbatim against `iogate serve` on the default config.

Every ``$ curl`` line of a ``console`` block is run by bash (with
``localhost:8080`` pointed at the test's port) and must print the JSON shown
under it; timing fields (``duration_ms``, ``uptime_s``, ``mean_ms``,
``max_ms``, latency percentiles) and ``request_id`` are compared by type
only. Every ``python`` block runs too, in one directory, and each one that
wrote there runs a second time (as a reader runs an example again: what the
first run wrote is there), printing what the README says both times. Every
relative link names a file of the checkout.
"""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

import iogate
from tests.servers import free_port, stop, wait_for_port

README = Path(__file__).resolve().parents[2] / "README.md"
VOLATILE = {"duration_ms", "uptime_s", "mean_ms", "max_ms", "request_id", "acquire_wait_p99_s"}
VOLATILE |= {"mean", "p50", "p90", "p99", "p99_9", "max"}  # /v1/stats latency_ms
# Children run in a temporary directory: they import this checkout's iogate
# even when PYTHONPATH is relative (``PYTHONPATH=src:.`` in a worktree).
ENV = {**os.environ, "PYTHONPATH": str(Path(iogate.__file__).resolve().parents[1])}


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), re.S)


def _console_steps() -> list[tuple[str, str]]:
    steps: list[tuple[str, str]] = []
    for block in _blocks("console"):
        for chunk in re.split(r"^\$ ", block, flags=re.M)[1:]:
            command, _, expected = chunk.partition("\n")
            steps.append((command, expected.strip()))
    return steps


def _normalise(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: type(v).__name__ if k in VOLATILE else _normalise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    return value


def test_quickstart_curl_calls_answer_what_the_readme_shows(tmp_path: Path) -> None:
    steps = _console_steps()
    assert len(steps) >= 8
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "iogate", "serve", "--port", str(port)],
        cwd=tmp_path,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc, "iogate serve")
        for command, expected in steps:
            assert command.startswith("curl "), command
            local = command.replace("localhost:8080", f"127.0.0.1:{port}")
            result = subprocess.run(
                ["bash", "-c", local], capture_output=True, text=True, timeout=30, check=False
            )
            assert result.returncode == 0, (command, result.stderr)
            got = _normalise(orjson.loads(result.stdout))
            assert got == _normalise(orjson.loads(expected)), command
    finally:
        stop(proc, signal.SIGTERM)
    assert (tmp_path / "var" / "iogate.db").exists()


EXPECTED_OUTPUT = [
    "200 {'page': 2, 'items': [1, 2]}\n100 {'id': 99}\n['tick 0', 'tick 1', 'tick 2']\n"
    "{'received': 18}\n10000 1",
    "ok 3\n[0, 1, 4, 9, 16]",
    "True",
    "[70, 2]\n['ada', 'bob']\nTrue",
    "200 {'notes': 1}\n404 application/problem+json urn:iogate:problem:unknown-resource\n"
    "401 who are you?\n200 function 1",
    "[True, True, True, False] True\n[['a@b.c']] 1",
    "True True False\nunknown",
    "hello, world\n[('archive/old.txt', 12)]\n12\nUnsafePathError\nUnsafePathError\nTrue",
    "succeeded {'total': 10} (4, 4)\nfailed ValueError: bad input",
    "10 10 1.0\nTrue\n0 0",
    "250 True\n300\n2 99 2",
]


def test_python_examples_run_twice_and_print_what_the_readme_says(tmp_path: Path) -> None:
    examples = _blocks("python")
    assert len(examples) == len(EXPECTED_OUTPUT)
    rerun = 0
    for example, expected in zip(examples, EXPECTED_OUTPUT, strict=True):
        before = _files(tmp_path)
        _run_python(example, expected, tmp_path)
        if _files(tmp_path) != before:  # it wrote: again, on what the first run left
            _run_python(example, expected, tmp_path)
            rerun += 1
    assert rerun >= 4  # the upstream, database, batch, files and tasks examples write


def _files(root: Path) -> dict[Path, tuple[int, int]]:
    return {f: (f.stat().st_size, f.stat().st_mtime_ns) for f in root.rglob("*") if f.is_file()}


def test_relative_links_name_files_of_the_checkout() -> None:
    text = README.read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    relative = [link for link in links if not re.match(r"[a-z]+:|#", link)]
    assert "docs/architecture.md" in relative
    for link in relative:
        target = README.parent / link.partition("#")[0]
        assert target.is_file() or (link.endswith("/") and target.is_dir()), link
        assert "shared" not in target.resolve().relative_to(README.parent).parts, link


def _run_python(example: str, expected: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", example],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected
