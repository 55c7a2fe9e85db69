"""``iogate query`` and ``iogate batch`` on a real SQLite file (typer's runner,
stdout and stderr apart)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from iogate.cli import app


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "iogate.toml"
    path.write_text(f'[databases.main]\nurl = "sqlite:///{tmp_path / "cli.db"}"\n')
    return path


def _run(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), input=stdin)
    return result.exit_code, result.stdout, result.stderr


def test_query_prints_a_table_or_json(config: Path) -> None:
    code, out, _ = _run("query", "main", "SELECT 1 AS one, 'x' AS two", "-c", str(config))
    assert code == 0
    assert "one" in out
    assert "1 row(s)" in out
    code, out, _ = _run(
        "query", "main", "SELECT :a AS a", "--params", '{"a": 5}', "--json", "-c", str(config)
    )
    assert code == 0
    assert orjson.loads(out)["rows"] == [[5]]
    code, _, err = _run("query", "main", "SELEC 1", "-c", str(config))
    assert code == 1
    assert "syntax error" in err


def test_batch_runs_ndjson_steps_and_exits_1_on_a_failed_step(config: Path, tmp_path: Path) -> None:
    steps = tmp_path / "steps.ndjson"
    steps.write_text(
        '{"kind": "database", "database": "main", "sql": "CREATE TABLE t (a)"}\n'
        '{"kind": "database", "database": "main", "sql": "INSERT INTO t VALUES (1)",'
        ' "when": {"ok": 0}}\n'
        '{"kind": "database", "database": "main", "sql": "SELEC"}\n'
    )
    code, out, _ = _run("batch", str(steps), "-c", str(config))
    lines = [orjson.loads(line) for line in out.splitlines()]
    assert [(r["step"], r["ok"]) for r in lines] == [(0, True), (1, True), (2, False)]
    assert lines[2]["problem"]["status"] == 400
    assert code == 1

    body = {"steps": [{"kind": "database", "database": "main", "sql": "SELECT count(*) FROM t"}]}
    code, out, _ = _run("batch", "-", "-c", str(config), stdin=orjson.dumps(body).decode())
    assert code == 0
    assert orjson.loads(out)["value"]["rows"] == [[1]]

    code, _, err = _run("batch", "-", "-c", str(config), stdin='{"steps": []}')
    assert code == 2
    assert "invalid batch file" in err
