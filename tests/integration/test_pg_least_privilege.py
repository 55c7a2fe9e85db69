"""PostgreSQL least privilege enforced by the engine, with the gateway logged
in as a *superuser*: every caller runs on connections that log in as its
role (``read_role`` / ``write_role`` / a key's own role), created by the SQL
``iogate roles sql`` prints. No statement a key sends can reach the login's
privileges (programs, server files, dblink as the superuser, SET ROLE back,
signalling the admin's backend), and afterwards the data, the sequence, the
server's files and pg_stat_activity are as they were. A privileged login that
callers would run as is refused at start (exit 2) unless
``allow_privileged_login = true``; a wrong role password is a 503 problem that
never shows the password; a start-up failure is one line, no traceback."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from iogate.config import IogateConfig, parse_config
from iogate.databases._postgres_roles import roles_sql
from iogate.gateway import Gateway
from iogate.server.keys import hash_key, new_key
from tests.conftest import serve_app
from tests.keyed_client import KeyedClient
from tests.servers import PostgresServer, free_port
from tests.subprocess_env import child_env

pytestmark = pytest.mark.postgres

KEYS = {name: new_key() for name in ("reader", "writer", "analyst")}


@dataclass
class Cluster:
    """A database of its own on the test cluster, its roles and a directory
    the server's OS user may write to (where a successful attack would leave
    a file)."""

    admin_dsn: str  # superuser, on the database below
    dbname: str
    read: str
    write: str
    analyst: str
    login: str  # the superuser the gateway logs in as
    files: Path


def _dsn(pg: PostgresServer, dbname: str, user: str | None = None) -> str:
    return f"postgresql://{user or pg.user}@127.0.0.1:{pg.port}/{dbname}"


@pytest.fixture(scope="module")
def cluster(pg: PostgresServer) -> Iterator[Cluster]:
    tag = uuid.uuid4().hex[:8]
    dbname = f"lp_{tag}"
    files = Path(tempfile.mkdtemp(prefix="iogate-lp-"))
    files.chmod(0o777)  # the server runs as another OS user
    c = Cluster(_dsn(pg, dbname), dbname, f"lpr_{tag}", f"lpw_{tag}", f"lpa_{tag}", pg.user, files)

    async def setup() -> None:
        root = await asyncpg.connect(pg.dsn)
        try:
            await root.execute(f"CREATE DATABASE {dbname}")
        finally:
            await root.close()
        conn = await asyncpg.connect(c.admin_dsn)
        try:
            await conn.execute(
                "CREATE EXTENSION dblink; CREATE SCHEMA vault;"
                "CREATE TABLE items (id serial PRIMARY KEY, name text);"
                "INSERT INTO items (name) VALUES ('one'), ('two');"
                "CREATE SEQUENCE counter; CREATE TABLE vault.secret (token text);"
                "INSERT INTO vault.secret VALUES ('s3cr3t')"
            )
            # what `iogate roles sql` prints, run as is
            await conn.execute(
                roles_sql(
                    database="pg",
                    url=c.admin_dsn,
                    read_role=c.read,
                    write_role=c.write,
                    key_roles=[c.analyst],
                )
            )
        finally:
            await conn.close()

    async def teardown() -> None:
        root = await asyncpg.connect(pg.dsn)
        try:
            await root.execute(f"DROP DATABASE {dbname} WITH (FORCE)")
            for role in (c.read, c.write, c.analyst):
                await root.execute(f"DROP ROLE {role}")
        finally:
            await root.close()

    try:
        asyncio.run(setup())
        yield c
    finally:
        asyncio.run(teardown())
        shutil.rmtree(files, ignore_errors=True)


def _config(c: Cluster, **db: Any) -> IogateConfig:
    scopes = {"reader": ["db:pg:read"], "writer": ["db:pg:write"], "analyst": ["db:pg:read"]}
    keys: dict[str, Any] = {
        name: {"sha256": hash_key(KEYS[name]), "scopes": scopes[name]} for name in KEYS
    }
    keys["analyst"]["roles"] = {"pg": c.analyst}
    pg_cfg: dict[str, Any] = {
        "url": c.admin_dsn,
        "pool_size": 2,
        "read_role": c.read,
        "write_role": c.write,
        "queries": {
            "whoami": {"sql": "SELECT current_user, session_user"},
            "whoami_w": {"sql": "SELECT current_user, session_user", "write": True},
        },
        **db,
    }
    return parse_config({"databases": {"pg": pg_cfg}, "keys": keys}, environ={})


@asynccontextmanager
async def _serve(config: IogateConfig) -> AsyncIterator[KeyedClient]:
    async with serve_app(config) as gw:
        yield KeyedClient(gw.base_url, gw.session, KEYS, "pg")


async def _state(conn: asyncpg.Connection, c: Cluster) -> tuple[Any, ...]:
    """What no read key may change: the data, the sequence, large objects,
    ALTER SYSTEM's file, the tables and the files in ``c.files``."""
    return (
        await conn.fetch("SELECT id, name FROM items ORDER BY id"),
        await conn.fetchrow("SELECT last_value, is_called FROM counter"),
        await conn.fetchval("SELECT count(*) FROM pg_largeobject_metadata"),
        await conn.fetchval("SELECT count(*) FROM pg_file_settings WHERE name = 'work_mem'"),
        await conn.fetch("SELECT relname FROM pg_class WHERE relname LIKE 'hacked%'"),
        sorted(os.listdir(c.files)),
    )


def _attacks(c: Cluster, admin_pid: int) -> list[str]:
    as_login = f"dbname={c.dbname} user={c.login} host=127.0.0.1"
    f = c.files
    return [
        f"COPY (SELECT 1) TO PROGRAM 'touch {f}/program'",
        f"COPY items TO '{f}/copy'",
        "COPY items FROM PROGRAM 'echo 9'",
        f"SELECT dblink_exec('{as_login}', 'CREATE TABLE hacked_a (x int)')",
        f"SELECT * FROM dblink('{as_login}', 'CREATE TABLE hacked_b (x int)') AS t(x text)",
        "SELECT pg_read_file('PG_VERSION')",
        "SELECT lo_import('/etc/hostname')",
        f"SELECT pg_terminate_backend({admin_pid})",
        f"SET ROLE {c.login}",
        f"SET SESSION AUTHORIZATION {c.login}",
        f"SELECT set_config('role', '{c.login}', true),"
        f" dblink_exec('{as_login}', 'CREATE TABLE hacked_c (x int)')",
        f"SELECT set_config('role', '{c.login}', false)",
        "ALTER SYSTEM SET work_mem = '1MB'",
        "VACUUM items",
        "CREATE TEMP TABLE scratch (x int)",
        "SELECT nextval('counter')",
        "SELECT * FROM items FOR UPDATE",
        "WITH d AS (DELETE FROM items RETURNING id) SELECT count(*) FROM d",
        "UPDATE items SET name = 'x'",
        "SELECT token FROM vault.secret",
    ]


async def test_a_read_key_reaches_none_of_the_superuser_login(cluster: Cluster) -> None:
    admin = await asyncpg.connect(cluster.admin_dsn)
    listener = await asyncpg.connect(cluster.admin_dsn)
    heard: list[str] = []
    await listener.add_listener("lp", lambda *a: heard.append(a[3]))
    try:
        admin_pid = admin.get_server_pid()
        before = await _state(admin, cluster)
        async with _serve(_config(cluster)) as client:
            for sql in _attacks(cluster, admin_pid):
                status, body = await client.sql(sql, "reader")
                assert 400 <= status < 500, (sql, status, body)
                assert body["type"].startswith("urn:iogate:problem:"), (sql, body)
            # allowed by PostgreSQL in a READ ONLY transaction, undone by its ROLLBACK
            for sql in (
                "RESET ROLE",
                "SELECT set_config('default_transaction_read_only', 'off', false)",
                "SELECT pg_notify('lp', 'attack')",
                "SELECT lo_from_bytea(0, 'x')",
            ):
                status, body = await client.sql(sql, "reader")
                assert status in (200, 403), (sql, status, body)
            # the two-step escape, in a transaction and not
            for transaction in (True, False):
                steps = [{"sql": "RESET ROLE"}, {"sql": f"SET ROLE {cluster.login}"}]
                steps.append({"sql": f"COPY (SELECT 1) TO PROGRAM 'touch {cluster.files}/b'"})
                status, body = await client.post(
                    "/v1/databases/pg/batch",
                    {"statements": steps, "transaction": transaction},
                    "reader",
                )
                if transaction:
                    assert status in (400, 403), body
                else:
                    assert status == 200
                    assert [r.get("error", {}).get("status") for r in body["results"]][1:] == [
                        403,
                        403,
                    ]
            status, body = await client.post(
                "/v1/batch",
                {
                    "steps": [
                        {"kind": "database", "database": "pg", "sql": s, "transaction": "t"}
                        for s in (
                            "RESET ROLE",
                            f"COPY (SELECT 1) TO PROGRAM 'touch {cluster.files}/c'",
                        )
                    ]
                },
                "reader",
            )
            assert status == 200, body
            assert body["results"][1]["ok"] is False, body
            assert body["results"][1]["problem"]["status"] == 403, body
            # still the read role, still read-only, after all of the above
            status, body = await client.sql("SELECT current_user, session_user", "reader")
            assert body["rows"] == [[cluster.read, cluster.read]]
            status, body = await client.sql("INSERT INTO items (name) VALUES ('w')", "reader")
            assert status == 403
        await admin.execute("NOTIFY lp, 'marker'")
        deadline = time.monotonic() + 5
        while "marker" not in heard and time.monotonic() < deadline:
            await listener.execute("SELECT 1")  # lets the notification in
        assert heard == ["marker"]  # the attack's notification was rolled back
        assert await _state(admin, cluster) == before
        assert (
            await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", admin_pid)
            == 1
        )
    finally:
        await listener.close()
        await admin.close()


async def test_the_superuser_login_itself_could_do_it(cluster: Cluster) -> None:
    """The control: the attacks above are real (the login runs programs)."""
    admin = await asyncpg.connect(cluster.admin_dsn)
    try:
        await admin.execute(f"COPY (SELECT 1) TO PROGRAM 'touch {cluster.files}/control'")
        assert (cluster.files / "control").exists()
    finally:
        (cluster.files / "control").unlink(missing_ok=True)
        await admin.close()


async def test_each_path_runs_as_the_callers_role(cluster: Cluster) -> None:
    who = "SELECT current_user, session_user"
    async with _serve(_config(cluster)) as client:
        for key, role, query in (
            ("reader", cluster.read, "whoami"),
            ("writer", cluster.write, "whoami_w"),
        ):
            status, body = await client.sql(who, key)
            assert body.get("rows") == [[role, role]], (key, body)
            status, body = await client.post(
                f"/v1/databases/pg/queries/{query}", {"params": {}}, key
            )
            assert body.get("rows") == [[role, role]], (key, body)
            status, body = await client.post(
                "/v1/databases/pg/batch", {"statements": [{"sql": who}]}, key
            )
            assert body["results"][0]["rows"] == [[role, role]], (key, body)
            headers = {"Authorization": f"Bearer {KEYS[key]}"}
            async with client.http.post(
                client.base + "/v1/databases/pg/stream", json={"sql": who}, headers=headers
            ) as resp:
                lines = (await resp.text()).splitlines()
            assert lines[1] == f'["{role}","{role}"]', (key, lines)
            status, body = await client.post("/v1/databases/pg/describe", {"sql": who}, key)
            assert status == 200
        status, body = await client.sql(who, "analyst")
        assert body["rows"] == [[cluster.analyst, cluster.analyst]]
        status, body = await client.sql("SELECT * FROM items", "analyst")
        assert (status, body["type"]) == (403, "urn:iogate:problem:permission-denied")


async def test_a_write_key_writes_as_its_role_and_nothing_more(cluster: Cluster) -> None:
    admin = await asyncpg.connect(cluster.admin_dsn)
    try:
        async with _serve(_config(cluster)) as client:
            status, body = await client.sql(
                "INSERT INTO items (name) VALUES ('w') RETURNING id", "writer"
            )
            assert (status, body["row_count"]) == (200, 1)
            new_id = body["rows"][0][0]
            for sql in (
                f"COPY (SELECT 1) TO PROGRAM 'touch {cluster.files}/w'",
                f"SET ROLE {cluster.login}",
                f"SET SESSION AUTHORIZATION {cluster.login}",
                "ALTER SYSTEM SET work_mem = '1MB'",
                "SELECT pg_read_file('PG_VERSION')",
                "SELECT token FROM vault.secret",
                f"SELECT pg_terminate_backend({admin.get_server_pid()})",
            ):
                status, body = await client.sql(sql, "writer")
                assert status == 403, (sql, body)
                assert body["type"] == "urn:iogate:problem:permission-denied", body
            status, body = await client.post(
                "/v1/databases/pg/batch",
                {"statements": [{"sql": "RESET ROLE"}, {"sql": "COPY items TO PROGRAM 'cat'"}]},
                "writer",
            )
            assert status == 403, body
            # a session-level RESET/SET of a write key does not reach the next call
            status, _ = await client.sql("SET statement_timeout = '1ms'", "writer")
            status, body = await client.sql("SELECT current_user, pg_sleep(0.01)", "writer")
            assert (status, body["rows"][0][0]) == (200, cluster.write)
        assert os.listdir(cluster.files) == []
    finally:
        await admin.execute("DELETE FROM items WHERE id = $1", new_id)
        await admin.close()


async def test_a_least_privilege_login_needs_no_roles(cluster: Cluster, pg: PostgresServer) -> None:
    config = parse_config(
        {
            "databases": {"pg": {"url": _dsn(pg, cluster.dbname, cluster.write)}},
            "keys": {"reader": {"sha256": hash_key(KEYS["reader"]), "scopes": ["db:pg:read"]}},
        },
        environ={},
    )
    async with _serve(config) as client:
        status, body = await client.sql("SELECT count(*) FROM items", "reader")
        assert (status, body["rows"]) == (200, [[2]])
        status, body = await client.sql("COPY (SELECT 1) TO PROGRAM 'true'", "reader")
        assert status == 403
        status, body = await client.sql("DELETE FROM items", "reader")
        assert (status, body["type"]) == (403, "urn:iogate:problem:read-only")
        for sql in ("VACUUM items", "ALTER SYSTEM SET work_mem = '1MB'"):  # SQLSTATE 25001
            status, body = await client.sql(sql, "reader")
            assert (status, body["type"], body["sqlstate"]) == (
                400,
                "urn:iogate:problem:bad-query",
                "25001",
            )


async def test_with_auth_off_the_anonymous_caller_runs_as_the_write_role(
    cluster: Cluster,
) -> None:
    config = parse_config(
        {
            "databases": {
                "pg": {
                    "url": cluster.admin_dsn,
                    "read_role": cluster.read,
                    "write_role": cluster.write,
                }
            }
        },
        environ={},
    )
    async with serve_app(config) as gw:
        status, _, body = await gw.post(
            "/v1/databases/pg/query", {"sql": "SELECT current_user, session_user"}
        )
        assert body["rows"] == [[cluster.write, cluster.write]]  # type: ignore[index]
        status, _, body = await gw.post(
            "/v1/databases/pg/query", {"sql": "COPY (SELECT 1) TO PROGRAM 'true'"}
        )
        assert status == 403


def _write_config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "iogate.toml"
    path.write_text(body, encoding="utf-8")
    return path


def _iogate(*args: str, cwd: Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "iogate", *args],
        cwd=cwd,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_a_privileged_login_is_refused_at_start(cluster: Cluster, tmp_path: Path) -> None:
    reader = hash_key(KEYS["reader"])
    path = _write_config(
        tmp_path,
        f'[databases.pg]\nurl = "{cluster.admin_dsn}"\n'
        f'[keys.reader]\nsha256 = "{reader}"\nscopes = ["db:pg:read"]\n',
    )
    for command in (
        ["check", "-c", str(path)],
        ["serve", "-c", str(path), "--port", str(free_port())],
    ):
        done = _iogate(*command, cwd=tmp_path)
        assert done.returncode == 2, (command, done.stderr)
        assert "read_role = " in done.stderr
        assert "iogate roles sql --database pg" in done.stderr
        assert "allow_privileged_login = true" in done.stderr
        assert "Traceback" not in done.stderr


async def test_allow_privileged_login_starts_with_a_warning(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    config = parse_config(
        {"databases": {"pg": {"url": cluster.admin_dsn, "allow_privileged_login": True}}},
        environ={},
    )
    with caplog.at_level(logging.WARNING, logger="iogate.databases.postgres"):
        async with Gateway(config) as gw:
            assert await gw.database("pg").fetch_val("SELECT 1") == 1
    warnings = [r.getMessage() for r in caplog.records if r.name == "iogate.databases.postgres"]
    assert len(warnings) == 1, warnings
    assert "superuser" in warnings[0], warnings


async def test_a_configured_role_must_exist_and_be_unprivileged(cluster: Cluster) -> None:
    from iogate.errors import ConfigError

    for role, says in (
        ("lp_nobody_" + uuid.uuid4().hex[:6], "does not exist"),
        (cluster.login, "privileged"),
    ):
        config = parse_config(
            {
                "databases": {
                    "pg": {"url": cluster.admin_dsn, "read_role": role, "write_role": cluster.write}
                }
            },
            environ={},
        )
        with pytest.raises(ConfigError, match=says):
            async with Gateway(config):
                pass


@pytest.fixture
def password_role(cluster: Cluster, pg: PostgresServer) -> Iterator[str]:
    """A role that must give its password (a pg_hba.conf line for it alone)."""
    role = f"lpp_{uuid.uuid4().hex[:8]}"
    hba = pg.datadir / "data" / "pg_hba.conf"
    original = hba.read_text()

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(cluster.admin_dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(
        run(f"CREATE ROLE {role} LOGIN PASSWORD 'right-pw'; GRANT SELECT ON items TO {role}")
    )
    hba.write_text(f"host all {role} 127.0.0.1/32 scram-sha-256\n" + original)
    asyncio.run(run("SELECT pg_reload_conf()"))
    try:
        yield role
    finally:
        hba.write_text(original)
        asyncio.run(run(f"SELECT pg_reload_conf(); DROP OWNED BY {role}; DROP ROLE {role}"))


async def test_a_wrong_role_password_is_a_503_that_never_shows_it(
    cluster: Cluster, password_role: str, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "wrong-Pa55-" + uuid.uuid4().hex
    config = parse_config(
        {
            "databases": {
                "pg": {
                    "url": cluster.admin_dsn,
                    "pool_min_size": 0,
                    "read_role": password_role,
                    "write_role": cluster.write,
                    "role_passwords": {password_role: "${ROLE_PW}"},
                }
            },
            "keys": {"reader": {"sha256": hash_key(KEYS["reader"]), "scopes": ["db:pg:read"]}},
        },
        environ={"ROLE_PW": secret},
    )
    with caplog.at_level(logging.INFO):
        async with _serve(config) as client:
            for _ in range(2):
                status, body = await client.sql("SELECT 1", "reader")
                assert (status, body["type"]) == (503, "urn:iogate:problem:database-unavailable")
                assert secret not in str(body)
    refused = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1, [r.getMessage() for r in refused]
    assert password_role in refused[0].getMessage()
    assert all(secret not in r.getMessage() for r in caplog.records)


def test_a_start_up_failure_is_one_line(
    cluster: Cluster, password_role: str, tmp_path: Path
) -> None:
    secret = "wrong-Pa55-" + uuid.uuid4().hex
    path = _write_config(
        tmp_path,
        f'[databases.pg]\nurl = "{cluster.admin_dsn}"\nread_role = "{password_role}"\n'
        f'write_role = "{cluster.write}"\nrole_passwords = {{ {password_role} = "{secret}" }}\n',
    )
    done = _iogate("serve", "-c", str(path), "--port", str(free_port()), cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert secret not in done.stderr
    lines = [x for x in done.stderr.splitlines() if x.startswith("iogate: cannot start")]
    assert len(lines) == 1, done.stderr
    assert "[pg.open]" in lines[0], done.stderr
    assert "password authentication failed" in lines[0], done.stderr


async def test_no_identity_set_in_one_call_reaches_the_next(cluster: Cluster) -> None:
    """``RESET ALL`` (asyncpg's reset) leaves ROLE and SESSION AUTHORIZATION:
    the pool's reset resets both, and rolls back a guarded read's transaction
    in the same query."""
    from iogate.databases.guard import SQLGuard
    from iogate.databases.postgres import PostgresDatabase

    async with PostgresDatabase("pg", dsn=cluster.admin_dsn, min_size=1, max_size=1) as db:
        await db.execute(f"SET SESSION AUTHORIZATION {cluster.read}")
        assert await db.fetch_val("SELECT current_user") == cluster.login
        await db.execute(f"SET ROLE {cluster.write}")
        assert await db.fetch_val("SELECT current_user") == cluster.login
        result = await db.query_guarded(
            "SELECT txid_current_if_assigned() IS NULL", guard=SQLGuard(read_only=True)
        )
        assert result.rows == [(True,)]
        await db.execute("VACUUM items")  # "cannot run inside a transaction block" otherwise


def test_an_unreachable_database_at_start_is_one_line(tmp_path: Path) -> None:
    url = f"postgresql://iogate@127.0.0.1:{free_port()}/postgres"
    path = _write_config(tmp_path, f'[databases.pg]\nurl = "{url}"\nconnect_timeout = 2.0\n')
    done = _iogate("serve", "-c", str(path), "--port", str(free_port()), cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    lines = [x for x in done.stderr.splitlines() if x.startswith("iogate: cannot start")]
    assert lines == [lines[0]], done.stderr
    assert "[pg.open] cannot reach PostgreSQL" in lines[0], done.stderr


async def test_pool_min_size_0_starts_without_the_database_unless_a_refusal_is_due(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from iogate.errors import TransientDatabaseError

    url = f"postgresql://iogate@127.0.0.1:{free_port()}/postgres"
    for allow in (True, False):
        cfg = {"url": url, "pool_min_size": 0, "allow_privileged_login": allow}
        config = parse_config({"databases": {"pg": cfg}}, environ={})
        if allow:
            with caplog.at_level(logging.WARNING, logger="iogate.databases.postgres"):
                async with Gateway(config):
                    pass
            assert "were not inspected" in caplog.text
        else:
            with pytest.raises(TransientDatabaseError):
                async with Gateway(config):
                    pass
