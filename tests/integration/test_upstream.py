from collections.abc import AsyncIterator

import pytest

from iogate.errors import (
    InvalidInputError,
    OperationTimeout,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamHTTPError,
)
from iogate.http.upstream import Upstream
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


async def test_timeout_cancels_the_request(upstream: UpstreamServer) -> None:
    async with Upstream("slow", base_url=upstream.base_url, timeout_s=0.2) as slow:
        with pytest.raises(OperationTimeout):
            await slow.get("/hang")


def test_repr_masks_credentials() -> None:
    api = Upstream("x", base_url="http://127.0.0.1/", headers={"Authorization": "Bearer sk-1"})
    assert "sk-1" not in repr(api)
    assert "Authorization: ***" in repr(api)
