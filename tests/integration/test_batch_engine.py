"""The mixed batch engine (iogate.batch.run_batch) on a real SQLite file and a
real upstream HTTP server: dataflow, conditions, transactions, concurrency,
one deadline, fail_fast, scopes and problem details."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from iogate.batch import Batch, run_batch
from iogate.config import parse_config
from iogate.gateway import Gateway
from iogate.server.auth import Principal
from tests.upstream_app import INFLIGHT, UpstreamServer


@pytest.fixture
async def gateway(tmp_path: Path, upstream: UpstreamServer) -> AsyncIterator[Gateway]:
    config = parse_config(
        {
            "databases": {"main": {"url": f"sqlite:///{tmp_path / 'b.db'}"}},
            "upstreams": {"example": {"base_url": upstream.base_url}},
        },
        environ={},
    )
    async with Gateway(config) as gw:
        db = gw.database("main")
        await db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT UNIQUE)")
        await db.execute("INSERT INTO users (id, email) VALUES (7, 'a@b.c')")
        yield gw


async def _run(gateway: Gateway, body: dict[str, Any], **kw: Any) -> list[dict[str, Any]]:
    result = await run_batch(gateway, Batch.model_validate(body), **kw)
    results: list[dict[str, Any]] = result.to_json()["results"]
    return results


async def test_steps_flow_values_into_later_steps(
    gateway: Gateway, upstream: UpstreamServer
) -> None:
    seen: list[tuple[int, int]] = []
    results = await _run(
        gateway,
        {
            "steps": [
                {
                    "kind": "database",
                    "database": "main",
                    "sql": "SELECT id FROM users WHERE email = :e",
                    "params": {"e": "a@b.c"},
                },
                {
                    "kind": "upstream",
                    "upstream": "example",
                    "method": "POST",
                    "path": "/echo",
                    "json": {"user": {"$ref": "steps.0.rows.0.0"}},
                },
                {"kind": "cache", "op": "set", "key": "k", "value": {"$ref": "steps.1.status"}},
                {"kind": "cache", "op": "get", "key": "k", "when": {"ok": 2}},
                {"kind": "cache", "op": "delete", "key": "user:a@b.c"},
            ]
        },
        progress=lambda done, total: seen.append((done, total)),
    )
    assert [r["ok"] for r in results] == [True] * 5
    assert results[0]["value"]["rows"] == [[7]]
    assert results[1]["value"]["body"]["body"] == '{"user":7}'
    assert upstream.seen[-1].method == "POST"
    assert results[3]["value"] == {"hit": True, "value": 200}
    assert results[4]["value"] == {"deleted": False}
    assert all(isinstance(r["duration_ms"], float) for r in results)
    assert seen[-1] == (5, 5)
    assert len(seen) == 5


async def test_one_failure_does_not_fail_the_others_and_dependents_fail(
    gateway: Gateway,
) -> None:
    results = await _run(
        gateway,
        {
            "steps": [
                {"kind": "database", "database": "main", "sql": "SELECT nope FROM users"},
                {"kind": "database", "database": "main", "sql": "SELECT count(*) FROM users"},
                {
                    "kind": "database",
                    "database": "main",
                    "sql": "SELECT :x",
                    "params": {"x": {"$ref": "steps.0.rows.0.0"}},
                },
                {
                    "kind": "database",
                    "database": "main",
                    "sql": "SELECT :x",
                    "params": {"x": {"$ref": "steps.1.rows.5.0"}},
                },
            ]
        },
    )
    assert [r["ok"] for r in results] == [False, True, False, False]
    bad_sql = results[0]["problem"]
    assert bad_sql["type"] == "urn:iogate:problem:bad-query"
    assert bad_sql["status"] == 400
    assert bad_sql["step"] == 0
    assert results[2]["problem"]["status"] == 424
    assert results[3]["problem"]["type"] == "urn:iogate:problem:invalid-input"
    assert "steps.1.rows.5" in results[3]["problem"]["detail"]


async def test_conditions_choose_the_steps_that_run(gateway: Gateway) -> None:
    results = await _run(
        gateway,
        {
            "steps": [
                {"kind": "upstream", "upstream": "example", "path": "/status/404"},
                {"kind": "cache", "op": "set", "key": "a", "value": 1, "when": {"ok": 0}},
                {"kind": "cache", "op": "set", "key": "b", "value": 2, "when": {"error": 0}},
                {
                    "kind": "cache",
                    "op": "set",
                    "key": "c",
                    "value": 3,
                    "when": {"and": [{"status": {"step": 0, "in": [404]}}, {"not": {"ok": 0}}]},
                },
                {
                    "kind": "cache",
                    "op": "set",
                    "key": "d",
                    "value": 4,
                    "when": {"or": [{"status": {"step": 0, "min": 500}}, {"ok": 1}]},
                },
            ]
        },
    )
    assert results[0]["ok"] is False
    assert results[0]["problem"]["upstream_status"] == 404
    assert results[1]["skipped"] is True
    assert results[1]["problem"]["status"] == 412
    assert [r["ok"] for r in results[2:4]] == [True, True]
    assert results[4].get("skipped") is True
    assert await gateway.cache.get("api:a") is None
    assert await gateway.cache.get("api:c") == 3


async def test_a_transaction_group_commits_together_or_not_at_all(gateway: Gateway) -> None:
    insert = "INSERT INTO users (id, email) VALUES (:id, :e)"
    results = await _run(
        gateway,
        {
            "steps": [
                {
                    "kind": "database",
                    "database": "main",
                    "sql": insert,
                    "params": {"id": 1, "e": "x@y"},
                    "transaction": "t",
                },
                {
                    "kind": "database",
                    "database": "main",
                    "sql": insert,
                    "params": {"id": 2, "e": "a@b.c"},  # duplicate email
                    "transaction": "t",
                },
                {
                    "kind": "database",
                    "database": "main",
                    "sql": insert,
                    "params": {"id": 3, "e": "z@y"},
                    "transaction": "t",
                },
                {
                    "kind": "database",
                    "database": "main",
                    "sql": "SELECT :v",
                    "params": {"v": {"$ref": "steps.0.row_count"}},
                },
            ]
        },
    )
    assert [r["ok"] for r in results] == [False, False, False, False]
    assert results[0]["problem"]["type"] == "urn:iogate:problem:rolled-back"
    assert results[1]["problem"]["type"] == "urn:iogate:problem:integrity-violation"
    assert results[2]["problem"]["type"] == "urn:iogate:problem:rolled-back"
    assert results[3]["problem"]["status"] == 424  # never saw the rolled-back value
    assert await gateway.database("main").fetch_val("SELECT count(*) FROM users") == 1

    ok = await _run(
        gateway,
        {
            "steps": [
                {
                    "kind": "database",
                    "database": "main",
                    "sql": insert + " RETURNING id",
                    "params": {"id": 10, "e": "p@q"},
                    "transaction": "t",
                },
                {
                    "kind": "database",
                    "database": "main",
                    "sql": "UPDATE users SET email = 'r@s' WHERE id = :id",
                    "params": {"id": {"$ref": "steps.0.rows.0.0"}},
                    "transaction": "t",
                },
            ]
        },
    )
    assert [r["ok"] for r in ok] == [True, True]
    assert (
        await gateway.database("main").fetch_val("SELECT email FROM users WHERE id = 10") == "r@s"
    )


async def test_max_concurrent_bounds_the_steps_in_flight(
    gateway: Gateway, upstream: UpstreamServer
) -> None:
    steps = [
        {"kind": "upstream", "upstream": "example", "path": f"/slow/{i}?ms=30"} for i in range(8)
    ]
    results = await _run(gateway, {"steps": steps, "max_concurrent": 3})
    assert all(r["ok"] for r in results)
    assert [r["value"]["body"]["i"] for r in results] == [str(i) for i in range(8)]
    assert upstream.app[INFLIGHT][0] == 3


async def test_one_deadline_for_the_whole_batch(gateway: Gateway) -> None:
    results = await _run(
        gateway,
        {
            "steps": [
                {"kind": "cache", "op": "set", "key": "k", "value": 1},
                {"kind": "upstream", "upstream": "example", "path": "/hang"},
                {"kind": "cache", "op": "get", "key": "k", "when": {"ok": 1}},
            ],
            "timeout": 0.3,
        },
    )
    assert results[0]["ok"] is True
    assert results[1]["problem"]["type"] == "urn:iogate:problem:timeout"
    assert results[2]["problem"]["status"] == 504


async def test_a_batch_of_one_transaction_runs_in_the_callers_task_under_its_deadline(
    gateway: Gateway,
) -> None:
    """One unit (here one transaction) runs in the calling task, not a task of
    its own; its deadline still cuts it and nothing of it is committed."""
    forever = (
        "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c) SELECT count(*) FROM c"
    )
    steps = [
        {
            "kind": "database",
            "database": "main",
            "sql": "INSERT INTO users (id, email) VALUES (50, 'd@e')",
            "transaction": "t",
        },
        {"kind": "database", "database": "main", "sql": forever, "transaction": "t"},
    ]
    tasks: list[asyncio.Task[Any] | None] = []
    results = await _run(
        gateway,
        {"steps": steps, "timeout": 0.3},
        progress=lambda done, total: tasks.append(asyncio.current_task()),
    )
    assert tasks
    assert set(tasks) == {asyncio.current_task()}
    assert [r["ok"] for r in results] == [False, False]
    assert results[1]["problem"]["status"] == 504
    assert await gateway.database("main").fetch_val("SELECT count(*) FROM users") == 1
    ok = await _run(
        gateway,
        {"steps": [{"kind": "database", "database": "main", "sql": "SELECT 1 AS one"}]},
        progress=lambda done, total: tasks.append(asyncio.current_task()),
    )
    assert ok[0]["ok"] is True
    assert ok[0]["value"]["rows"] == [[1]]
    assert set(tasks) == {asyncio.current_task()}


async def test_fail_fast_aborts_the_unfinished_steps(gateway: Gateway) -> None:
    results = await _run(
        gateway,
        {
            "steps": [
                {"kind": "upstream", "upstream": "example", "path": "/hang"},
                {"kind": "database", "database": "main", "sql": "SELEC 1"},
                {"kind": "cache", "op": "get", "key": "x", "when": {"ok": 0}},
            ],
            "fail_fast": True,
        },
    )
    assert results[1]["problem"]["status"] == 400
    assert results[0]["problem"]["type"] == "urn:iogate:problem:aborted"
    assert results[2]["problem"]["type"] == "urn:iogate:problem:aborted"


async def test_each_step_is_checked_against_the_principals_scopes(gateway: Gateway) -> None:
    reader = Principal("reporting", scopes=frozenset({"db:main:read", "cache:read"}))
    results = await _run(
        gateway,
        {
            "steps": [
                {"kind": "database", "database": "main", "sql": "SELECT count(*) FROM users"},
                {"kind": "database", "database": "main", "sql": "DELETE FROM users"},
                {
                    "kind": "database",
                    "database": "main",
                    "sql": "WITH x AS (SELECT 1) INSERT INTO users (email) SELECT 'w' FROM x",
                },
                {"kind": "upstream", "upstream": "example", "path": "/echo"},
                {"kind": "cache", "op": "get", "key": "k"},
                {"kind": "cache", "op": "set", "key": "k", "value": 1},
            ]
        },
        principal=reader,
    )
    assert [r["ok"] for r in results] == [True, False, False, False, True, False]
    assert results[1]["problem"]["type"] == "urn:iogate:problem:read-only"
    assert results[2]["problem"]["type"] == "urn:iogate:problem:read-only"
    assert results[3]["problem"]["type"] == "urn:iogate:problem:forbidden"
    assert results[5]["problem"]["status"] == 403
    assert await gateway.database("main").fetch_val("SELECT count(*) FROM users") == 1


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        (
            [
                {"kind": "cache", "op": "get", "key": {"$ref": "steps.1.value"}},
                {"kind": "cache", "op": "get", "key": "k"},
            ],
            "only use earlier steps",
        ),
        ([{"kind": "cache", "op": "get", "key": "k", "when": {"ok": 0}}], "only use earlier"),
        ([{"kind": "cache", "op": "get", "key": {"$ref": "step.0"}}], r"invalid \$ref"),
        ([{"kind": "cache", "op": "get", "key": "k", "when": {"maybe": 0}}], "unknown condition"),
        (
            [
                {"kind": "cache", "op": "get", "key": "k"},
                {
                    "kind": "cache",
                    "op": "get",
                    "key": "k",
                    "when": {"status": {"step": 0, "in": 1}},
                },
            ],
            'condition "status" takes',
        ),
        (
            [
                {"kind": "cache", "op": "get", "key": "k"},
                {"kind": "database", "database": "a", "sql": "SELECT 1", "transaction": "t"},
                {"kind": "database", "database": "b", "sql": "SELECT 1", "transaction": "t"},
            ],
            "spans two databases",
        ),
        (
            [
                {"kind": "database", "database": "a", "sql": "SELECT 1", "transaction": "t"},
                {"kind": "cache", "op": "get", "key": "k"},
                {
                    "kind": "database",
                    "database": "a",
                    "sql": "SELECT 1",
                    "transaction": "t",
                    "when": {"ok": 1},
                },
            ],
            "after the transaction's first step",
        ),
    ],
)
def test_forward_references_cycles_and_bad_conditions_are_refused(
    steps: list[dict[str, Any]], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        Batch.model_validate({"steps": steps})
