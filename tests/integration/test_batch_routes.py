"""POST /v1/batch and the original POST /batch/execute over real HTTP."""

from __future__ import annotations

from tests.conftest import GatewayClient
from tests.upstream_app import UpstreamServer


async def test_v1_batch_runs_steps_and_answers_in_order(
    gateway_client: GatewayClient, upstream: UpstreamServer
) -> None:
    status, _, body = await gateway_client.post(
        "/v1/batch",
        {
            "steps": [
                {"kind": "database", "database": "main", "sql": "SELECT 41 + 1 AS n"},
                {
                    "kind": "upstream",
                    "upstream": "example",
                    "method": "POST",
                    "path": "/echo",
                    "json": {"n": {"$ref": "steps.0.rows.0.0"}},
                },
                {"kind": "database", "database": "nope", "sql": "SELECT 1"},
            ]
        },
    )
    assert status == 200
    assert isinstance(body, dict)
    results = body["results"]
    assert [r["ok"] for r in results] == [True, True, False]
    assert results[1]["value"]["body"]["body"] == '{"n":42}'
    assert results[2]["problem"]["type"] == "urn:iogate:problem:unknown-resource"
    assert results[2]["problem"]["step"] == 2


async def test_malformed_steps_are_a_422_problem(gateway_client: GatewayClient) -> None:
    status, headers, body = await gateway_client.post(
        "/v1/batch",
        {"steps": [{"kind": "cache", "op": "get", "key": {"$ref": "steps.0.value"}}]},
    )
    assert status == 422
    assert headers["Content-Type"] == "application/problem+json"
    assert isinstance(body, dict)
    assert "earlier steps" in body["detail"]


async def test_original_batch_execute_translates_operations(
    gateway_client: GatewayClient,
) -> None:
    status, _, body = await gateway_client.post(
        "/batch/execute",
        {
            "operations": [
                {
                    "type": "database",
                    "db_name": "main",
                    "query": "SELECT :a AS a",
                    "params": {"a": 5},
                },
                {"type": "api", "api_name": "example", "endpoint": "/echo", "params": {"q": 1}},
                {"type": "cache", "op": "set", "key": "k", "value": [1, 2]},
            ]
        },
    )
    assert status == 200
    assert isinstance(body, dict)
    results = body["results"]
    assert results[0]["value"]["rows"] == [[5]]
    assert results[1]["value"]["body"]["query"] == {"q": "1"}
    assert results[2]["value"] == {"stored": True}

    status, _, problem = await gateway_client.post(
        "/batch/execute", {"operations": [{"type": "database", "db_name": "main"}]}
    )
    assert status == 400
    assert isinstance(problem, dict)
    assert "needs a query" in problem["detail"]
