import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from iogate.config import UpstreamConfig
from iogate.errors import (
    InvalidInputError,
    OperationTimeout,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamHTTPError,
)
from iogate.http._factory import build_upstream
from iogate.http.upstream import Upstream
from iogate.policies.config import PoliciesConfig, RetryConfig
from iogate.policies.timeout import deadline_scope
from tests.servers import free_port
from tests.upstream_app import UpstreamServer


@pytest.fixture
async def api(upstream: UpstreamServer) -> AsyncIterator[Upstream]:
    async with Upstream(
        "example", base_url=upstream.base_url, headers={"x-api-key": "sk-SECRET"}
    ) as client:
        yield client


async def test_get_with_query_and_default_headers(api: Upstream, upstream: UpstreamServer) -> None:
    resp = await api.get("/echo/items?limit=5", params={"page": 2})
    assert resp.ok
    assert resp.status == 200
    body = resp.json()
    assert body["path"] == "/api/echo/items"
    assert body["query"] == {"limit": "5", "page": "2"}
    assert body["headers"]["x-api-key"] == "sk-SECRET"
    assert resp.elapsed_s > 0


async def test_configured_headers_win_and_hop_by_hop_headers_are_dropped(
    api: Upstream, upstream: UpstreamServer
) -> None:
    await api.get("/echo", headers={"X-Api-Key": "stolen", "X-Trace": "t1", "Host": "evil"})
    seen = upstream.seen[-1]
    assert seen.headers["x-api-key"] == "sk-SECRET"
    assert seen.headers["x-trace"] == "t1"
    assert seen.headers["host"].startswith("127.0.0.1:")


async def test_cookies_set_by_one_answer_are_never_sent_again(upstream: UpstreamServer) -> None:
    """One session serves every caller: a Set-Cookie must not leak to the next request.
    (By host name: aiohttp's cookie jar ignores cookies of bare IP addresses anyway.)"""
    base = upstream.base_url.replace("127.0.0.1", "localhost")
    async with Upstream("example", base_url=base) as api:
        resp = await api.get("/seq/cookie?codes=404&h=Set-Cookie:sid=caller-a; Path=/")
        assert resp.status == 404
        assert resp.headers["Set-Cookie"].startswith("sid=caller-a")
        body = (await api.get("/echo")).json()
    assert "cookie" not in body["headers"]


async def test_post_json_and_raw_body(api: Upstream) -> None:
    resp = await api.post("/echo", json={"a": [1, 2]})
    assert resp.json()["body"] == '{"a":[1,2]}'
    assert resp.json()["headers"]["content-type"] == "application/json"
    resp = await api.request("PUT", "/echo", data="raw", headers={"content-type": "text/plain"})
    assert resp.json()["body"] == "raw"
    with pytest.raises(InvalidInputError):
        await api.request("POST", "/echo", json={}, data="x")


async def test_error_statuses_are_answers_until_raise_for_status(api: Upstream) -> None:
    resp = await api.get("/status/503")
    assert (resp.status, resp.ok) == (503, False)
    with pytest.raises(UpstreamHTTPError) as info:
        resp.raise_for_status()
    assert info.value.status == 503
    assert "status 503" in (info.value.body_excerpt or "")


async def test_text_and_binary_bodies(api: Upstream) -> None:
    assert (await api.get("/text")).text() == "héllo"
    assert (await api.get("/binary")).body == bytes(range(256))


@pytest.mark.parametrize(
    "path", ["http://127.0.0.1:1/x", "//127.0.0.1/outside", "/../outside", "/%2e%2e/outside"]
)
async def test_paths_outside_the_base_never_reach_the_network(
    api: Upstream, upstream: UpstreamServer, path: str
) -> None:
    with pytest.raises(InvalidInputError):
        await api.get(path)
    assert upstream.seen == []


async def test_redirects_are_not_followed(api: Upstream, upstream: UpstreamServer) -> None:
    resp = await api.get("/redirect")
    assert resp.status == 302
    assert resp.headers["location"] == "http://127.0.0.2:9/elsewhere"
    assert len(upstream.seen) == 1


async def test_response_size_limit(upstream: UpstreamServer) -> None:
    async with Upstream("u", base_url=upstream.base_url, max_response_bytes=10_000) as small:
        with pytest.raises(UpstreamError, match="limit"):
            await small.get("/big")
        assert len((await small.get("/text")).body) == len("héllo".encode())


async def test_unreachable_upstream() -> None:
    async with Upstream("down", base_url=f"http://127.0.0.1:{free_port()}/") as down:
        with pytest.raises(UpstreamConnectionError, match="cannot reach upstream 'down'"):
            await down.get("/x")


async def test_an_attempt_past_its_timeout_is_cancelled_and_raises(
    upstream: UpstreamServer,
) -> None:
    async with Upstream("slow", base_url=upstream.base_url, timeout_s=0.2) as slow:
        started = time.monotonic()
        with pytest.raises(OperationTimeout, match=r"attempt timed out after 0\.2s"):
            await slow.get("/hang")
        assert 0.2 <= time.monotonic() - started < 3.0
        task = asyncio.current_task()
        assert task is not None
        assert task.cancelling() == 0  # the timer's cancellation was taken back
        assert (await slow.get("/text")).ok  # the session and its pool still serve


async def test_a_hanging_attempt_is_retried_after_its_timeout(upstream: UpstreamServer) -> None:
    policies = PoliciesConfig(
        retry=RetryConfig(max_attempts=2, backoff="constant", initial=0.0, max_delay=0.0)
    )
    config = UpstreamConfig(base_url=upstream.base_url, timeout=0.3, policies=policies)
    api, pipeline = build_upstream("retrying", config)
    assert pipeline.timeout is not None
    assert pipeline.timeout.timeout_s == 0.3  # the upstream's timeout bounds each attempt
    async with api:
        resp = await api.get("/hang-once/a")
    assert resp.json() == {"attempt": 2}
    assert resp.attempts == 2
    assert pipeline.timeout.timeouts == 1


async def test_a_deadline_tighter_than_the_timeout_bounds_the_attempt(
    upstream: UpstreamServer,
) -> None:
    async with Upstream("slow", base_url=upstream.base_url, timeout_s=30) as slow:
        started = time.monotonic()
        with pytest.raises(OperationTimeout, match=r"deadline of 0\.2s exceeded"):
            async with deadline_scope(0.2):
                await slow.get("/hang")
        assert time.monotonic() - started < 3.0


async def test_a_cancelled_caller_is_cancelled_not_timed_out(upstream: UpstreamServer) -> None:
    async with Upstream("slow", base_url=upstream.base_url, timeout_s=30) as slow:
        call = asyncio.create_task(slow.get("/hang"))
        async with asyncio.timeout(5):
            while not any(r.path == "/api/hang" for r in upstream.seen):
                await asyncio.sleep(0.005)  # until the request is at the server
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert (await slow.get("/text")).ok


def test_repr_masks_credentials() -> None:
    api = Upstream("x", base_url="http://127.0.0.1/", headers={"Authorization": "Bearer sk-1"})
    assert "sk-1" not in repr(api)
    assert "Authorization: ***" in repr(api)
