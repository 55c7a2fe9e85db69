"""``[tasks] backend``: the embedded default stays as it was; ``saq`` finds its
Redis (``url``, a Redis database, or ``[cache] redis_url``) or refuses to start;
``iogate worker`` refuses the embedded backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from iogate.cli import app
from iogate.config import parse_config
from iogate.errors import ConfigError
from iogate.gateway import Gateway
from iogate.tasks import TaskManager
from iogate.tasks.distributed import SaqTaskManager


def _gateway(tmp_path: Path, tasks: dict[str, Any], **more: Any) -> Gateway:
    config = {
        "databases": {
            "main": {"url": f"sqlite:///{tmp_path / 'main.db'}"},
            "shared": {"url": "redis://127.0.0.1:6390/2"},
        },
        "tasks": tasks,
        **more,
    }
    return Gateway(parse_config(config, environ={}))


def test_the_embedded_store_is_the_default_and_its_keys_still_work(tmp_path: Path) -> None:
    gateway = _gateway(tmp_path, {"max_concurrency": 2, "drain_timeout": 1.5})
    assert isinstance(gateway.tasks, TaskManager)
    assert (gateway.tasks.max_concurrency, gateway.tasks.drain_timeout_s) == (2, 1.5)


def test_saq_finds_its_redis_in_url_a_redis_database_or_the_cache(tmp_path: Path) -> None:
    explicit = _gateway(tmp_path, {"backend": "saq", "url": "redis://127.0.0.1:6391/0"})
    assert isinstance(explicit.tasks, SaqTaskManager)
    assert explicit.tasks.url == "redis://127.0.0.1:6391/0"
    assert "batch" in explicit.tasks.runners
    reused = _gateway(tmp_path, {"backend": "saq", "database": "shared", "heartbeat_timeout_s": 4})
    assert isinstance(reused.tasks, SaqTaskManager)
    assert (reused.tasks.url, reused.tasks.heartbeat_timeout_s) == ("redis://127.0.0.1:6390/2", 4)
    cached = _gateway(tmp_path, {"backend": "saq"}, cache={"redis_url": "redis://127.0.0.1:6392/1"})
    assert isinstance(cached.tasks, SaqTaskManager)
    assert cached.tasks.url == "redis://127.0.0.1:6392/1"


@pytest.mark.parametrize(
    ("tasks", "key"),
    [
        ({"backend": "saq"}, "tasks.url"),
        ({"backend": "saq", "database": "main"}, "tasks.database"),
    ],
)
def test_saq_without_a_redis_is_refused(tmp_path: Path, tasks: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _gateway(tmp_path, tasks)
    assert caught.value.key == key


@pytest.mark.parametrize(
    "tasks",
    [
        {"backend": "rabbit"},
        {"backend": "saq", "url": "http://127.0.0.1:6379"},
        {"backend": "saq", "url": "redis://x", "heartbeat_timeout_s": 0},
        {"backend": "saq", "url": "redis://x", "max_attempts": 1},
        {"backend": "saq", "url": "redis://x", "queue": "no spaces"},
    ],
)
def test_bad_tasks_options_are_config_errors(tasks: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        parse_config({"tasks": tasks}, environ={})


def test_iogate_worker_refuses_the_embedded_backend(tmp_path: Path) -> None:
    config = tmp_path / "iogate.toml"
    config.write_text(f'[databases.main]\nurl = "sqlite:///{tmp_path / "main.db"}"\n')
    result = CliRunner().invoke(app, ["worker", "-c", str(config)])
    assert result.exit_code == 2
    assert "distributed [tasks] backend" in result.output
