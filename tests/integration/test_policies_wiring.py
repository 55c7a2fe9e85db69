"""The resilience pipeline on real resources, configured from iogate.toml."""

from typing import Any

import aiohttp
import pytest

from iogate.config import default_policies, parse_config
from iogate.errors import ConfigError, UpstreamConnectionError
from iogate.gateway import Gateway
from iogate.policies import CircuitState
from tests.conftest import serve_app
from tests.servers import free_port
from tests.upstream_app import UpstreamServer

FAST_RETRY = {"max_attempts": 3, "initial": 0.001, "max_delay": 0.002}


def _config(upstream: str, policies: dict[str, Any] | None = None) -> Any:
    table: dict[str, Any] = {"base_url": upstream}
    if policies is not None:
        table["policies"] = policies
    return parse_config({"upstreams": {"api": table}}, environ={})


async def test_a_dropped_connection_is_retried_for_get_but_never_for_a_keyless_post(
    upstream: UpstreamServer,
) -> None:
    config = _config(upstream.base_url, {"retry": FAST_RETRY})
    async with Gateway(config) as gateway:
        api = gateway.upstream("api")
        resp = await api.get("/flaky/g?fail=2")
        assert resp.json() == {"attempt": 3}
        with pytest.raises(UpstreamConnectionError):
            await api.post("/flaky/p?fail=1", json={})
        assert [s.path for s in upstream.seen].count("/api/flaky/p") == 1
        keyed = await api.post("/flaky/k?fail=1", json={}, headers={"Idempotency-Key": "abc"})
        assert keyed.json() == {"attempt": 2}
        calls = {op.operation: op for op in gateway.metrics.stats().resources[0].operations}
        assert calls["GET"].calls == 1  # one call, three attempts
        assert calls["POST"].outcomes == {"UpstreamConnectionError": 1, "ok": 1}


async def test_an_open_breaker_answers_503_with_retry_after() -> None:
    policies = {
        "circuit_breaker": {
            "failure_rate": 0.5,
            "minimum_calls": 2,
            "window": 2,
            "wait_in_open": 30,
        }
    }
    config = _config(f"http://127.0.0.1:{free_port()}/", policies)
    async with serve_app(config) as client:
        for _ in range(2):
            status, _, _ = await client.post("/v1/upstreams/api/request", {"path": "/x"})
            assert status == 502
        status, headers, problem = await client.post("/v1/upstreams/api/request", {"path": "/x"})
        assert status == 503
        assert problem["type"] == "urn:iogate:problem:circuit-open"  # type: ignore[index]
        assert 29 <= int(headers["Retry-After"]) <= 30


async def test_default_policies_apply_when_the_config_names_none(sqlite_path: str) -> None:
    config = parse_config({"databases": {"main": {"url": f"sqlite:///{sqlite_path}"}}}, environ={})
    async with Gateway(config) as gateway:
        assert await gateway.database("main").fetch_val("SELECT 1") == 1
        snap = gateway.pipeline("main").stats()
        assert snap.circuit_breaker is not None
        assert snap.circuit_breaker.state is CircuitState.CLOSED
        assert snap.retry is not None
    assert default_policies("database").deadline == 30.0


def test_a_policies_typo_names_the_key() -> None:
    with pytest.raises(ConfigError) as info:
        _config("http://127.0.0.1:1/", {"retry": {"max_atempts": 2}})
    assert info.value.key == "upstreams.api.policies.retry.max_atempts"


async def test_stats_count_every_trip_of_the_breaker(upstream: UpstreamServer) -> None:
    """Issue 16: /v1/stats kept ``trips`` at 0 once the breaker had closed again."""
    from iogate.policies import FakeClock
    from iogate.server.app import create_app
    from tests.conftest import GatewayClient, serve_asgi

    breaker = {"failure_rate": 0.5, "minimum_calls": 2, "window": 2, "half_open_calls": 1}
    config = _config(upstream.base_url, {"circuit_breaker": {**breaker, "wait_in_open": 30}})
    clock = FakeClock()
    app = create_app(gateway=Gateway(config, clock=clock))
    async with serve_asgi(app) as base_url, aiohttp.ClientSession() as session:
        client = GatewayClient(base_url, session)
        for _ in range(2):  # two 5xx: closed -> open
            await client.post("/v1/upstreams/api/request", {"path": "/status/500"})
        _, _, stats = await client.get("/v1/stats")
        assert stats["resources"]["api"]["circuit_breaker"]["state"] == "open"  # type: ignore[index]
        clock.advance(30.0)  # the half-open trial succeeds: half_open -> closed
        status, _, _ = await client.post("/v1/upstreams/api/request", {"path": "/status/200"})
        assert status == 200
        _, _, stats = await client.get("/v1/stats")
    cb = stats["resources"]["api"]["circuit_breaker"]  # type: ignore[index]
    assert cb["state"] == "closed"
    assert cb["transitions"] == {"closed->open": 1, "half_open->closed": 1, "open->half_open": 1}
    assert cb["trips"] == 1


async def test_policy_figures_keep_their_json_keys(upstream: UpstreamServer) -> None:
    """Issue 17 renamed the policies' Python names (``stats()``, ``..._s``); the HTTP
    API keeps its keys: /v1/stats and /v1/circuit-breakers map them explicitly."""
    policies = {
        "retry": FAST_RETRY,
        "circuit_breaker": {"minimum_calls": 5, "window": 10},
        "rate_limit": {"rate": 1000.0},
        "bulkhead": {"max_concurrent": 4},
        "timeout": 5.0,
        "deadline": 10.0,
    }
    async with serve_app(_config(upstream.base_url, policies)) as client:
        status, _, _ = await client.post("/v1/upstreams/api/request", {"path": "/echo"})
        assert status == 200
        _, _, stats = await client.get("/v1/stats")
        _, _, breakers = await client.get("/v1/circuit-breakers")
    api = stats["resources"]["api"]  # type: ignore[index]
    assert {"retries", "retry_budget_refusals", "circuit_breaker", "rate_limiter"} <= set(api)
    assert set(api["circuit_breaker"]) == {"state", "trips", "not_permitted", "transitions"}
    assert api["rate_limiter"] == {"waited": 0, "rejected": 0}
    assert (api["retries"], api["retry_budget_refusals"]) == (0, 0)
    (breaker,) = breakers["circuit_breakers"]  # type: ignore[index]
    assert set(breaker) == {
        "name",
        "state",
        "failure_rate",
        "slow_call_rate",
        "buffered_calls",
        "failed_calls",
        "successful_calls",
        "not_permitted_calls",
        "trips",
        "retry_after_s",
    }
    assert (breaker["name"], breaker["state"], breaker["successful_calls"]) == ("api", "closed", 1)
