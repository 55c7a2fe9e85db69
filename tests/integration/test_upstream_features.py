"""Auth, response cache, batch, streaming/SSE and files against the real loopback app."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from iogate.cache.memory import MemoryCache
from iogate.config import UpstreamConfig
from iogate.errors import (
    InvalidInputError,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamHTTPError,
)
from iogate.http._factory import build_upstream
from iogate.http.auth import ApiKeyHeader, ApiKeyQuery, BearerAuth
from iogate.http.batch import BatchProgress, UpstreamBatchItem
from iogate.http.options import ConnectionOptions
from iogate.http.response_cache import ResponseCache
from iogate.http.sse import ServerSentEvent
from iogate.http.upstream import Upstream
from tests.servers import free_port
from tests.upstream_app import INFLIGHT, UpstreamServer


async def test_auth_schemes_are_sent_and_win(upstream: UpstreamServer) -> None:
    async with Upstream("b", base_url=upstream.base_url, auth=BearerAuth("sk-B")) as api:
        body = (await api.get("/echo", headers={"Authorization": "Bearer stolen"})).json()
        assert body["headers"]["authorization"] == "Bearer sk-B"
    async with Upstream("h", base_url=upstream.base_url, auth=ApiKeyHeader("sk-H")) as api:
        assert (await api.get("/echo")).json()["headers"]["x-api-key"] == "sk-H"
    async with Upstream("q", base_url=upstream.base_url, auth=ApiKeyQuery("sk-Q", "key")) as api:
        assert (await api.get("/echo?key=mine&x=1")).json()["query"] == {"key": "sk-Q", "x": "1"}
        assert "sk-Q" not in repr(api)


async def test_query_secret_never_in_errors() -> None:
    auth = ApiKeyQuery("sk-SECRET-Q")
    async with Upstream("down", base_url=f"http://127.0.0.1:{free_port()}/", auth=auth) as api:
        with pytest.raises(UpstreamConnectionError) as info:
            await api.get("/x")
    text = f"{info.value} {info.value!r} {info.value.__cause__}"
    assert "SECRET" not in str(info.value)
    assert "SECRET" not in repr(info.value)
    assert text  # the chained aiohttp error is not ours to render


def test_connection_option_bounds() -> None:
    with pytest.raises(ValueError, match="ca_bundle"):
        ConnectionOptions(verify_tls=False, ca_bundle="/etc/ssl/certs/ca-certificates.crt")
    with pytest.raises(ValueError, match="max_per_host"):
        ConnectionOptions(max_per_host=-1)


def _cached_upstream(upstream: UpstreamServer) -> Upstream:
    return Upstream(
        "c", base_url=upstream.base_url, cache=ResponseCache(MemoryCache(), namespace="c")
    )


async def test_max_age_serves_from_cache(upstream: UpstreamServer) -> None:
    async with _cached_upstream(upstream) as api:
        first = await api.get("/cached", params={"cc": "max-age=60"})
        second = await api.get("/cached", params={"cc": "max-age=60"})
    assert (first.from_cache, second.from_cache) == (False, True)
    assert second.body == first.body
    assert sum(s.path == "/api/cached" for s in upstream.seen) == 1


async def test_no_store_is_never_cached(upstream: UpstreamServer) -> None:
    async with _cached_upstream(upstream) as api:
        await api.get("/cached", params={"cc": "no-store"})
        again = await api.get("/cached", params={"cc": "no-store"})
    assert not again.from_cache
    assert sum(s.path == "/api/cached" for s in upstream.seen) == 2


async def test_no_cache_revalidates_with_etag(upstream: UpstreamServer) -> None:
    async with _cached_upstream(upstream) as api:
        first = await api.get("/cached", params={"cc": "no-cache"})
        second = await api.get("/cached", params={"cc": "no-cache"})
    seen = [s for s in upstream.seen if s.path == "/api/cached"]
    assert len(seen) == 2
    assert "if-none-match" not in seen[0].headers
    assert seen[1].headers["if-none-match"] == '"v1"'
    assert second.status == 200
    assert second.from_cache
    assert second.body == first.body


async def test_post_cached_only_with_cache_ttl_under_a_canonical_body(
    upstream: UpstreamServer,
) -> None:
    async with _cached_upstream(upstream) as api:
        a = await api.post("/echo/llm", json={"model": "m", "temperature": 0}, cache_ttl_s=60)
        b = await api.post("/echo/llm", json={"temperature": 0, "model": "m"}, cache_ttl_s=60)
        c = await api.post("/echo/llm", json={"model": "m", "temperature": 0})
    assert (a.from_cache, b.from_cache, c.from_cache) == (False, True, False)
    assert sum(s.path == "/api/echo/llm" for s in upstream.seen) == 2


async def test_batch_keeps_order_caps_concurrency_and_isolates_failures(
    upstream: UpstreamServer,
) -> None:
    progress: list[BatchProgress] = []
    items = [UpstreamBatchItem(path=f"/slow/{i}?ms=30") for i in range(10)]
    items[3] = UpstreamBatchItem(path="/status/404")
    items[6] = UpstreamBatchItem(path="../escape")
    async with Upstream("b", base_url=upstream.base_url) as api:
        results = await api.batch(items, max_concurrent=3, on_progress=progress.append)
    assert len(results) == 10
    assert isinstance(results[6], InvalidInputError)
    r3 = results[3]
    assert not isinstance(r3, Exception)
    assert r3.status == 404
    for i in (0, 1, 2, 4, 5, 7, 8, 9):
        r = results[i]
        assert not isinstance(r, Exception)
        assert r.json() == {"i": str(i)}
    assert upstream.app[INFLIGHT][0] == 3
    assert [p.done for p in progress] == list(range(1, 11))
    assert sum(not p.ok for p in progress) == 1


async def test_stream_chunks_and_sse_events(upstream: UpstreamServer) -> None:
    async with Upstream("s", base_url=upstream.base_url) as api:
        async with api.stream("GET", "/blob", params={"kb": 512}) as resp:
            assert resp.status == 200
            sizes = [len(c) async for c in resp.iter_chunks()]
        assert sum(sizes) == 512 * 1024
        assert max(sizes) <= 256 * 1024  # read as it arrives, never the whole body at once
        async with api.stream("GET", "/events") as resp:
            events = [e async for e in resp.iter_events()]
    assert events == [
        ServerSentEvent("greet", "hello\n world", "7"),
        ServerSentEvent("message", '{"n": 1}', "7"),
        ServerSentEvent("message", "last", "7", 1500),
    ]


async def test_stream_error_status_is_read_whole(upstream: UpstreamServer) -> None:
    async with (
        Upstream("s", base_url=upstream.base_url) as api,
        api.stream("GET", "/status/418") as resp,
    ):
        assert resp.status == 418
        assert b"status 418" in b"".join([c async for c in resp.iter_chunks()])


async def test_upload_streams_a_file_as_multipart(upstream: UpstreamServer, tmp_path: Path) -> None:
    data = bytes(range(256)) * 2400  # 600 KiB (the app keeps bodies under 1 MiB)
    src = tmp_path / "in.bin"
    src.write_bytes(data)
    async with Upstream("f", base_url=upstream.base_url) as api:
        resp = await api.upload("/upload", src, field="doc", fields={"purpose": "test"})
    parts = resp.json()["parts"]
    assert parts[0] == {
        "name": "purpose",
        "filename": None,
        "size": 4,
        "sha256": hashlib.sha256(b"test").hexdigest(),
    }
    assert parts[1] == {
        "name": "doc",
        "filename": "in.bin",
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


async def test_download_is_atomic_with_digest_and_size_checks(
    upstream: UpstreamServer, tmp_path: Path
) -> None:
    expected = b"".join(bytes([i % 256]) * 1024 for i in range(300))
    dest = tmp_path / "out.bin"
    async with Upstream("f", base_url=upstream.base_url) as api:
        done = await api.download("/blob?kb=300", dest, sha256=hashlib.sha256(expected).hexdigest())
        assert (done.size_bytes, done.path, dest.read_bytes() == expected) == (
            len(expected),
            dest,
            True,
        )
        dest.write_bytes(b"old")
        with pytest.raises(UpstreamError, match="SHA-256"):
            await api.download("/blob?kb=300", dest, sha256="0" * 64)
        with pytest.raises(UpstreamError, match="limit"):
            await api.download("/blob?kb=300", dest, max_bytes=100_000)
        with pytest.raises(UpstreamConnectionError):
            await api.download("/blob?kb=300&cut=1", dest)
        with pytest.raises(UpstreamHTTPError):
            await api.download("/status/404", dest)
    assert dest.read_bytes() == b"old"  # never replaced by a bad download
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]  # no temp files left


async def test_config_concurrency_cap_and_limits(upstream: UpstreamServer) -> None:
    cfg = UpstreamConfig(
        base_url=upstream.base_url,
        max_concurrent=2,
        rate_limit_per_minute=600,
        auth={"scheme": "query", "secret": "sk-CFG", "name": "key"},  # type: ignore[arg-type]
    )
    api, pipeline = build_upstream("capped", cfg)
    assert pipeline.bulkhead is not None
    assert api.limits is not None
    assert "sk-CFG" not in repr(api)
    assert "sk-CFG" not in repr(cfg)
    async with api:
        results = await api.batch(
            [UpstreamBatchItem(path=f"/slow/{i}?ms=30") for i in range(6)], max_concurrent=6
        )
    assert all(not isinstance(r, Exception) and r.ok for r in results)
    assert upstream.app[INFLIGHT][0] == 2  # the bulkhead, not the batch, capped it
    assert upstream.seen[-1].query["key"] == "sk-CFG"
    assert api.limits.stats().admitted == 6
