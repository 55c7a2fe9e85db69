from pathlib import Path

import pytest

from iogate.config import DEFAULT_SQLITE_URL, default_config, load_config, parse_config
from iogate.errors import ConfigError
from iogate.gateway import Gateway

ISSUE_SHAPE = """
[databases.main]
url = "sqlite:///var/iogate.db"

[databases.pg]
url = "postgresql://app@127.0.0.1:5432/app"

[upstreams.example]
base_url = "http://127.0.0.1:9000/api"
headers = { "x-api-key" = "${EXAMPLE_API_KEY}" }
"""


def test_default_is_one_sqlite_database_named_main() -> None:
    config = default_config()
    assert list(config.databases) == ["main"]
    assert config.databases["main"].url == DEFAULT_SQLITE_URL
    assert config.databases["main"].kind == "sqlite"
    assert config.databases["main"].sqlite_path() == "var/iogate.db"
    assert config.upstreams == {}
    assert (config.server.host, config.server.port) == ("127.0.0.1", 8080)


def test_no_path_gives_the_default() -> None:
    assert load_config(None) == default_config()


def test_the_documented_shape_loads_with_env_interpolation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXAMPLE_API_KEY", "k-123")
    path = tmp_path / "iogate.toml"
    path.write_text(ISSUE_SHAPE)
    config = load_config(path)
    assert config.databases["pg"].kind == "postgresql"
    assert config.databases["main"].kind == "sqlite"
    assert config.upstreams["example"].base_url == "http://127.0.0.1:9000/api"
    assert config.upstreams["example"].headers == {"x-api-key": "k-123"}


def test_missing_env_variable_names_the_key() -> None:
    data = {"upstreams": {"x": {"base_url": "http://h/", "headers": {"auth": "${NOPE}"}}}}
    with pytest.raises(ConfigError) as info:
        parse_config(data, environ={})
    assert info.value.key == "upstreams.x.headers.auth"
    assert "NOPE" in str(info.value)


def test_env_default_and_escape() -> None:
    data = {"databases": {"d": {"url": "redis://${HOST:-127.0.0.1}:6379/0"}}}
    assert parse_config(data, environ={}).databases["d"].url == "redis://127.0.0.1:6379/0"
    data = {"upstreams": {"u": {"base_url": "http://h/", "headers": {"t": "$${LITERAL}"}}}}
    assert parse_config(data, environ={}).upstreams["u"].headers["t"] == "${LITERAL}"


def test_parse_config_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOGATE_TEST_TOKEN", "tok-42")
    data = {"upstreams": {"u": {"base_url": "http://h/", "headers": {"t": "${IOGATE_TEST_TOKEN}"}}}}
    assert parse_config(data).upstreams["u"].headers["t"] == "tok-42"
    monkeypatch.delenv("IOGATE_TEST_TOKEN")
    with pytest.raises(ConfigError, match="IOGATE_TEST_TOKEN"):
        parse_config(data)


@pytest.mark.parametrize(
    ("data", "key", "words"),
    [
        ({"databases": {"pg": {"url": "mysql://h/db"}}}, "databases.pg.url", "mysql"),
        ({"databases": {"pg": {"url": "sqlite://x.db"}}}, "databases.pg.url", "sqlite:///"),
        ({"databases": {"pg": {"url": "sqlite:///a", "pool": 3}}}, "databases.pg.pool", "Extra"),
        ({"databases": {"pg": {}}}, "databases.pg.url", "required"),
        ({"upstreams": {"u": {"base_url": "ftp://h"}}}, "upstreams.u.base_url", "http"),
        ({"upstreams": {"u": {"base_url": "http://h", "timeout": 0}}}, "upstreams.u.timeout", ""),
        ({"server": {"port": 70000}}, "server.port", ""),
        ({"databses": {}}, "databses", "Extra"),
        ({"databases": {"bad name": {"url": "sqlite:///a"}}}, "databases.bad name", ""),
    ],
)
def test_invalid_config_names_the_offending_key(data: dict, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(data, environ={})
    assert info.value.key is not None
    assert info.value.key.startswith(key)
    assert str(info.value).startswith(info.value.key + ": ")
    assert words in str(info.value)


def test_unreadable_and_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[databases.main\nurl = 1")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(bad)


def test_absolute_and_memory_sqlite_paths() -> None:
    config = parse_config(
        {"databases": {"a": {"url": "sqlite:////tmp/x.db"}, "m": {"url": "sqlite:///:memory:"}}},
        environ={},
    )
    assert config.databases["a"].sqlite_path() == "/tmp/x.db"
    assert config.databases["m"].sqlite_path() == ":memory:"


def test_redis_auto_pipelining_is_on_unless_switched_off() -> None:
    on = parse_config({"databases": {"kv": {"url": "redis://127.0.0.1:1/0"}}}, environ={})
    off = parse_config(
        {"databases": {"kv": {"url": "redis://127.0.0.1:1/0", "auto_pipeline": False}}},
        environ={},
    )
    assert on.databases["kv"].auto_pipeline is True
    assert off.databases["kv"].auto_pipeline is False
    assert Gateway(off).redis("kv").auto_pipeline is False
