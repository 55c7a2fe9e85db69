"""The ``iogate`` command line: port bounds, help texts as written, ``--version``,
and a port in use (a real socket holds it; ``iogate serve`` runs as a subprocess)."""

from __future__ import annotations

import inspect
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from iogate import __version__
from iogate.cli import app
from tests.subprocess_env import child_env

IOGATE = [sys.executable, "-m", "iogate"]


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*IOGATE, *args],
        cwd=cwd,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_version_option_and_command() -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["--version"])
    assert (result.exit_code, result.output) == (0, f"iogate {__version__}\n")
    result = runner.invoke(app, ["version"])
    assert (result.exit_code, result.output) == (0, f"{__version__}\n")


@pytest.mark.parametrize("port", ["0", "65536", "99999", "-1"])
def test_serve_refuses_a_port_outside_1_to_65535(port: str) -> None:
    result = CliRunner().invoke(app, ["serve", "--port", port])
    assert result.exit_code == 2
    assert "Invalid value for '--port'" in result.output


def test_serve_refuses_a_config_port_outside_the_range(tmp_path: Path) -> None:
    (tmp_path / "iogate.toml").write_text("[server]\nport = 0\n")
    result = _run("serve", "--config", "iogate.toml", cwd=tmp_path)
    assert result.returncode == 2
    assert "port 0 is not between 1 and 65535" in result.stderr


def _commands(group: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path under ``group`` (typer's own click: groups have ``commands``)."""
    out: list[tuple[str, ...]] = []
    for name, command in group.commands.items():
        out.append((*prefix, name))
        if hasattr(command, "commands"):
            out += _commands(command, (*prefix, name))
    return out


def test_help_texts_keep_their_brackets() -> None:
    """Every ``[...]`` of a command's docstring and of its options' help shows in
    ``--help`` as written (Rich markup would swallow ``[keys]``)."""
    root: Any = typer.main.get_command(app)
    runner = CliRunner()
    checked = 0
    for path in _commands(root):
        command = root
        for name in path:
            command = command.commands[name]
        texts = [inspect.cleandoc(command.help or "")]
        texts += [p.help for p in command.params if getattr(p, "help", None)]
        result = runner.invoke(app, [*path, "--help"], terminal_width=200)
        assert result.exit_code == 0, path
        shown = " ".join(result.output.split())
        for text in texts:
            for bracketed in re.findall(r"\[[^\]\s]+\]", text):
                assert bracketed in shown, (path, bracketed)
                checked += 1
    assert checked >= 4  # [keys], [server] (serve); [keys.<name>] twice (keys create)
    serve = runner.invoke(app, ["serve", "--help"], terminal_width=200).output
    assert "Without [keys] authentication is off" in " ".join(serve.split())
    assert "[server] shutdown_timeout" in " ".join(serve.split())
    create = runner.invoke(app, ["keys", "create", "--help"], terminal_width=200).output
    assert "the [keys.<name>] table" in " ".join(create.split())


def test_serve_on_a_port_in_use_says_so_and_exits_1(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = _run("serve", "--port", str(port), cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"port {port} on 127.0.0.1 is already in use" in lines[0]
    assert "--port" in lines[0]  # the hint
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "var").exists()  # refused before any resource opened
