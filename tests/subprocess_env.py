"""The environment of a child ``python -m iogate`` / ``python -c`` in the tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def child_env() -> dict[str, str]:
    """This process's environment with this checkout's ``src`` first on
    ``PYTHONPATH``: a child started in a temporary directory then imports the
    code under test (a relative ``PYTHONPATH=src`` would not resolve there)."""
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(SRC), path) if p)}


def start_iogate(cwd: Path, port: int, config: str = "iogate.toml") -> subprocess.Popen[bytes]:
    """``iogate serve -c <config> --port <port>`` as a child process in ``cwd``
    (output discarded); the caller waits for its port and stops it."""
    command = [sys.executable, "-m", "iogate", "serve", "-c", config, "--port", str(port)]
    return subprocess.Popen(
        [*command, "--log-level", "warning"],
        cwd=cwd,
        env=child_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
