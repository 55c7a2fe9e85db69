"""SQL safety on SQLite, enforced by the engine: a read-only key cannot write
through any SQL path (reader connections in query_only mode with an
authorizer), multi-statement strings are refused, a table allowlist holds,
results are capped; named queries and describe. Over real HTTP, with a
test-only ASGI middleware standing in for the API-key middleware: it puts
the Principal named by the ``x-test-key`` header where auth.principal_of
reads it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from iogate.config import parse_config
from iogate.databases.guard import SQLGuard
from iogate.errors import QueryError, ReadOnlyViolation, TableNotAllowed
from iogate.gateway import Gateway
from iogate.server.app import create_app
from iogate.server.auth import Principal
from iogate.server.problems import problem_response
from tests.servers import serve_asgi

PRINCIPALS = {
    "reader": Principal("reader", scopes=frozenset({"db:main:read"})),
    "writer": Principal("writer", scopes=frozenset({"db:main:write"})),
    "users-only": Principal(
        "users-only", scopes=frozenset({"db:main:write"}), tables=frozenset({"users"})
    ),
    "small": Principal("small", scopes=frozenset({"db:main:read"}), max_rows=3, max_bytes=10_000),
    "named": Principal("named", scopes=frozenset({"db:main:query:user_by_id"})),
}


class _TestPrincipal:
    """Test-only: sets scope["state"]["principal"] from the x-test-key header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            key = dict(scope["headers"]).get(b"x-test-key")
            if key is not None:
                scope.setdefault("state", {})["principal"] = PRINCIPALS[key.decode()]
        await self.app(scope, receive, send)


async def _forbidden(request: Request, exc: Exception) -> Response:
    body = {"type": "urn:iogate:problem:forbidden", "status": 403, "detail": str(exc)}
    return problem_response(403, body)


class Client:
    def __init__(self, base: str, session: aiohttp.ClientSession) -> None:
        self.base = base
        self.session = session

    async def post(self, path: str, body: object, key: str | None = None) -> tuple[int, Any]:
        headers = {"x-test-key": key} if key else {}
        async with self.session.post(self.base + path, json=body, headers=headers) as resp:
            text = await resp.text()
            if resp.content_type == "application/x-ndjson":
                return resp.status, text
            return resp.status, await resp.json(content_type=None)

    async def sql(self, sql: str, key: str | None = None, params: Any = None) -> tuple[int, Any]:
        return await self.post("/v1/databases/main/query", {"sql": sql, "params": params}, key)


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[Client]:
    config = parse_config(
        {
            "databases": {
                "main": {
                    "url": f"sqlite:///{tmp_path / 'safe.db'}",
                    "max_rows": 50,
                    "queries": {
                        "user_by_id": {"sql": "SELECT id, email FROM users WHERE id = :id"},
                        "rename": {
                            "sql": "UPDATE users SET email = :e WHERE id = :id",
                            "write": True,
                        },
                    },
                }
            }
        },
        environ={},
    )
    app = create_app(config)
    app.add_middleware(_TestPrincipal)
    app.add_exception_handler(PermissionError, _forbidden)  # as the key middleware's branch does
    async with serve_asgi(app) as base_url, aiohttp.ClientSession() as session:
        c = Client(base_url, session)
        for sql in (
            "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT)",
            "CREATE TABLE secret (token TEXT)",
            "CREATE VIEW emails AS SELECT email FROM users",
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100)"
            " INSERT INTO users (id, email) SELECT i, 'u' || i FROM n",
        ):
            assert (await c.sql(sql))[0] == 200
        assert (await c.sql("INSERT INTO secret VALUES ('s3cr3t')"))[0] == 200
        yield c


WRITES = [
    "INSERT INTO users (email) VALUES ('x')",
    "INSERT INTO users (email) VALUES ('x') RETURNING id",
    "UPDATE users SET email = 'x' RETURNING id",
    "DELETE FROM users",
    "WITH w AS (SELECT 1 AS one) INSERT INTO users (email) SELECT 'x' FROM w",
    "REPLACE INTO users (id, email) VALUES (1, 'x')",
    "CREATE TABLE evil (a)",
    "CREATE TEMP TABLE evil (a)",
    "DROP TABLE secret",
    "ALTER TABLE users ADD COLUMN evil TEXT",
    "PRAGMA query_only = 0",
    "PRAGMA journal_mode = DELETE",
    "PRAGMA writable_schema = 1",
    "VACUUM",
    "ANALYZE",
]


async def test_a_read_only_key_cannot_write_through_query(client: Client) -> None:
    for sql in WRITES:
        status, body = await client.sql(sql, "reader")
        assert status == 403, (sql, body)
        assert body["type"] == "urn:iogate:problem:read-only", sql
    _, count = await client.sql("SELECT count(*) FROM users")
    assert count["rows"] == [[100]]
    _, tables = await client.sql("SELECT count(*) FROM sqlite_master")
    assert tables["rows"] == [[3]]


async def test_attach_is_refused_and_creates_no_file(client: Client, tmp_path: Path) -> None:
    target = tmp_path / "attached.db"
    status, body = await client.sql(f"ATTACH DATABASE '{target}' AS x", "reader")
    assert status == 403
    assert body["type"] == "urn:iogate:problem:read-only"
    assert not target.exists()


async def test_a_reader_cannot_be_left_in_a_transaction_or_unlocked(client: Client) -> None:
    for _ in range(4):  # every reader of the rotation
        status, body = await client.sql("BEGIN", "reader")
        assert status == 400
        assert "transaction control" in body["detail"]
        assert (await client.sql("PRAGMA query_only = OFF", "reader"))[0] == 403
    assert (await client.sql("INSERT INTO users (id, email) VALUES (500, 'new')", "writer"))[
        0
    ] == 200
    for _ in range(4):  # no reader kept an old snapshot, none became writable
        _, body = await client.sql("SELECT count(*) FROM users", "reader")
        assert body["rows"] == [[101]]
        assert (await client.sql("DELETE FROM users", "reader"))[0] == 403


async def test_a_read_only_key_cannot_write_through_other_sql_paths(client: Client) -> None:
    write = "DELETE FROM users"
    status, body = await client.post(
        "/v1/databases/main/batch", {"statements": [{"sql": write}]}, "reader"
    )
    assert status == 403
    status, body = await client.post(
        "/v1/databases/main/batch", {"statements": [{"sql": write}], "transaction": False}, "reader"
    )
    assert body["results"][0]["error"]["type"] == "urn:iogate:problem:read-only"
    status, body = await client.post(
        "/v1/databases/main/stream", {"sql": write + " RETURNING id"}, "reader"
    )
    assert status == 403
    status, body = await client.post(
        "/database/execute", {"db_name": "main", "query": write}, "reader"
    )
    assert status == 403
    status, body = await client.post(
        "/v1/batch",
        {
            "steps": [
                {"kind": "database", "database": "main", "sql": write},
                {"kind": "database", "database": "main", "sql": write, "transaction": "t"},
            ]
        },
        "reader",
    )
    assert [r["problem"]["type"] for r in body["results"]] == ["urn:iogate:problem:read-only"] * 2
    status, body = await client.post(
        "/v1/databases/main/queries/rename", {"params": {"id": 1, "e": "x"}}, "reader"
    )
    assert status == 403
    _, count = await client.sql("SELECT count(*) FROM users WHERE email LIKE 'u%'")
    assert count["rows"] == [[100]]


async def test_several_statements_in_one_string_are_refused(client: Client) -> None:
    for key in (None, "reader", "writer", "users-only"):
        for sql in (
            "SELECT 1; DELETE FROM users",
            "SELECT * FROM users WHERE id = 1; DROP TABLE secret; --",
        ):
            status, body = await client.sql(sql, key)
            assert status == 400, (key, sql)
            assert body["type"] == "urn:iogate:problem:bad-query"
            assert "one statement" in body["detail"]
    status, _ = await client.sql("UPDATE users SET email = 'x' WHERE id = 1; DELETE FROM secret")
    assert status == 400
    _, email = await client.sql("SELECT email FROM users WHERE id = 1")
    assert email["rows"] == [["u1"]]
    _, count = await client.sql("SELECT count(*) FROM secret")
    assert count["rows"] == [[1]]


async def test_a_table_allowlist_is_enforced_by_the_authorizer(client: Client) -> None:
    assert (await client.sql("SELECT token FROM secret"))[0] == 200  # cached unrestricted
    for sql in (
        "SELECT token FROM secret",
        "SELECT count(*) FROM secret",
        "SELECT * FROM users, secret",
        "SELECT email FROM users WHERE email IN (SELECT token FROM secret)",
        "INSERT INTO secret VALUES ('x')",
        "SELECT name FROM sqlite_master",
        "PRAGMA table_info(secret)",
        "CREATE TABLE evil (a)",
    ):
        status, body = await client.sql(sql, "users-only")
        assert status == 403, sql
        assert body["type"] == "urn:iogate:problem:table-not-allowed", sql
    status, body = await client.sql("SELECT count(*) FROM users", "users-only")
    assert body["rows"] == [[100]]
    assert (await client.sql("UPDATE users SET email = 'z' WHERE id = 1", "users-only"))[0] == 200
    assert (await client.sql("SELECT * FROM emails", "users-only"))[0] == 403  # view not listed
    status, body = await client.post(
        "/v1/databases/main/describe", {"sql": "SELECT * FROM secret"}, "users-only"
    )
    assert status == 403


async def test_rows_and_bytes_are_capped_with_a_truncated_flag(client: Client) -> None:
    status, body = await client.sql("SELECT id FROM users ORDER BY id")
    assert status == 200
    assert len(body["rows"]) == 50  # the database's max_rows
    assert body["truncated"] is True
    assert body["row_count"] == 50
    _, body = await client.sql("SELECT id FROM users ORDER BY id", "small")
    assert body["rows"] == [[1], [2], [3]]
    _, body = await client.sql("SELECT id FROM users WHERE id = 1")
    assert "truncated" not in body
    _, body = await client.sql("SELECT printf('%.5000c', 'x') FROM users LIMIT 10", "small")
    assert len(body["rows"]) < 3
    assert body["truncated"] is True
    status, text = await client.post(
        "/v1/databases/main/stream", {"sql": "SELECT id FROM users"}, "small"
    )
    assert text.strip().splitlines()[-1] == '{"row_count":3,"truncated":true}'


async def test_named_queries_are_callable_by_name_without_sql_rights(client: Client) -> None:
    status, body = await client.post(
        "/v1/databases/main/queries/user_by_id", {"params": {"id": 7}}, "named"
    )
    assert status == 200
    assert body["rows"] == [[7, "u7"]]
    assert (await client.sql("SELECT 1", "named"))[0] == 403  # no raw SQL
    status, _ = await client.post("/v1/databases/main/queries/rename", {"params": {}}, "named")
    assert status == 403
    status, body = await client.post("/v1/databases/main/queries/nope", {}, "writer")
    assert status == 404
    status, body = await client.post(
        "/v1/databases/main/queries/rename", {"params": {"id": 7, "e": "new"}}, "writer"
    )
    assert body["row_count"] == 1


async def test_describe_returns_columns_and_parameters_without_running(client: Client) -> None:
    status, body = await client.post(
        "/v1/databases/main/describe",
        {"sql": "SELECT id, email AS mail FROM users WHERE id = :id AND email = :e"},
        "reader",
    )
    assert status == 200
    assert body == {
        "columns": [{"name": "id", "type": "INTEGER"}, {"name": "mail", "type": "TEXT"}],
        "parameters": [{"name": "id", "type": None}, {"name": "e", "type": None}],
    }
    status, body = await client.post(
        "/v1/databases/main/describe", {"sql": "DELETE FROM users WHERE id = ?"}, "writer"
    )
    assert body == {"columns": [], "parameters": [{"name": None, "type": None}]}
    _, count = await client.sql("SELECT count(*) FROM users")
    assert count["rows"] == [[100]]  # described, not run
    status, body = await client.post(
        "/v1/databases/main/describe", {"sql": "SELECT 1; SELECT 2"}, "reader"
    )
    assert status == 400
    status, body = await client.post("/v1/databases/main/describe", {"sql": "SELEC 1"}, "reader")
    assert status == 400
    for path in ("/v1/databases/main/describe", "/v1/databases/main/query"):
        status, body = await client.post(path, {"sql": "SELECT '\ud800'"}, "reader")
        assert status in (400, 422)  # refused, never a 500


async def test_the_library_guard_on_an_in_memory_database() -> None:
    config = parse_config({"databases": {"m": {"url": "sqlite:///:memory:"}}}, environ={})
    async with Gateway(config) as gateway:
        db = gateway.database("m")
        await db.execute("CREATE TABLE t (a)")
        read_only = SQLGuard(read_only=True)
        with pytest.raises(ReadOnlyViolation):
            await db.query_guarded("INSERT INTO t VALUES (1)", guard=read_only)
        with pytest.raises(ReadOnlyViolation):
            await db.query_guarded("PRAGMA query_only = 0", guard=read_only)
        with pytest.raises(TableNotAllowed):
            await db.query_guarded("SELECT * FROM t", guard=SQLGuard(tables=frozenset({"u"})))
        with pytest.raises(QueryError):
            await db.query_guarded("SELECT 1; SELECT 2", guard=read_only)
        with pytest.raises(QueryError, match="UTF-8"):
            await db.query("SELECT ?", ["\ud800"])
        with pytest.raises(QueryError, match="UTF-8"):
            await db.describe("SELECT '\ud800'")
        await db.execute("INSERT INTO t VALUES (1)")  # the writer is writable again
        assert (await db.query_guarded("SELECT a FROM t", guard=read_only)).rows == [(1,)]
