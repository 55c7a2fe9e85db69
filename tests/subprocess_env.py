"""The environment of a child ``python -m iogate`` / ``python -c`` in the tests."""

from __future__ import annotations

import os
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def child_env() -> dict[str, str]:
    """This process's environment with this checkout's ``src`` first on
    ``PYTHONPATH``: a child started in a temporary directory then imports the
    code under test (a relative ``PYTHONPATH=src`` would not resolve there)."""
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(SRC), path) if p)}
