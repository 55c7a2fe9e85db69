"""Retries of an Upstream against a real loopback server: statuses, server delays,
idempotency keys, the breaker by status class. Delays are asserted on a step clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from iogate.errors import CircuitOpenError, RateLimitedError
from iogate.http.status import UPSTREAM_RECORD_ON, UPSTREAM_RETRY_ON
from iogate.http.upstream import Upstream
from iogate.policies import Backoff, CircuitBreaker, FakeClock, Pipeline, Retry
from iogate.policies.backoff import BackoffKind, Jitter
from tests.upstream_app import UpstreamServer


def _pipeline(
    clock: FakeClock, *, attempts: int = 3, breaker: CircuitBreaker | None = None
) -> Pipeline:
    retry = Retry(
        retry_on=UPSTREAM_RETRY_ON,
        max_attempts=attempts,
        backoff=Backoff(
            kind=BackoffKind.EXPONENTIAL, jitter=Jitter.NONE, initial_s=0.5, max_delay_s=8.0
        ),
        clock=clock,
    )
    return Pipeline(resource="api", retry=retry, circuit_breaker=breaker, clock=clock)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0, auto_advance=True)


@pytest.fixture
async def api(upstream: UpstreamServer, clock: FakeClock) -> AsyncIterator[Upstream]:
    async with Upstream("api", base_url=upstream.base_url, runner=_pipeline(clock)) as client:
        yield client


def _hits(upstream: UpstreamServer, key: str) -> list[dict[str, str]]:
    return [s.headers for s in upstream.seen if s.path == f"/api/seq/{key}"]


async def test_5xx_then_success_is_retried_with_backoff(
    api: Upstream, clock: FakeClock, upstream: UpstreamServer
) -> None:
    resp = await api.get("/seq/a", params={"codes": "503,500,200"})
    assert (resp.status, resp.attempts) == (200, 3)
    assert clock.sleeps_s == [0.5, 1.0]
    assert len(_hits(upstream, "a")) == 3


@pytest.mark.parametrize("code", [408, 409, 429, 502, 529])
async def test_each_retryable_status(api: Upstream, code: int, upstream: UpstreamServer) -> None:
    resp = await api.get(f"/seq/s{code}", params={"codes": f"{code},200"})
    assert (resp.status, resp.attempts) == (200, 2)


@pytest.mark.parametrize("code", [400, 401, 403, 404, 422])
async def test_client_errors_are_not_retried(
    api: Upstream, code: int, upstream: UpstreamServer
) -> None:
    resp = await api.get(f"/seq/c{code}", params={"codes": f"{code},200"})
    assert (resp.status, resp.attempts) == (code, 1)
    assert len(_hits(upstream, f"c{code}")) == 1


async def test_retry_after_ms_sets_the_delay(api: Upstream, clock: FakeClock) -> None:
    resp = await api.get("/seq/ms", params={"codes": "429,200", "h": "retry-after-ms:250"})
    assert resp.status == 200
    assert clock.sleeps_s == [0.25]


async def test_retry_after_seconds_and_http_date(api: Upstream, clock: FakeClock) -> None:
    await api.get("/seq/sec", params={"codes": "503,200", "h": "Retry-After:3"})
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
    await api.get("/seq/date", params={"codes": "503,200", "h": f"Retry-After:{when}"})
    assert clock.sleeps_s[0] == 3.0
    assert 18.0 <= clock.sleeps_s[1] <= 20.0


async def test_openai_reset_header_on_429(api: Upstream, clock: FakeClock) -> None:
    params = [
        ("codes", "429,200"),
        ("h", "x-ratelimit-remaining-requests:0"),
        ("h", "x-ratelimit-reset-requests:1.5s"),
        ("h", "x-ratelimit-reset-tokens:6m0s"),
    ]
    resp = await api.get("/seq/reset", params=dict(params[:1]), headers={})
    assert resp.status == 200  # sanity: plain 429 then 200, backoff used
    assert clock.sleeps_s == [0.5]
    url = "/seq/reset2?" + "&".join(f"{k}={v}" for k, v in params)
    await api.get(url)
    assert clock.sleeps_s[-1] == 1.5  # the exhausted limit's reset, not the longest


async def test_retry_after_beyond_the_cap_raises_rate_limited(
    api: Upstream, upstream: UpstreamServer
) -> None:
    with pytest.raises(RateLimitedError) as info:
        await api.get("/seq/cap", params={"codes": "429,200", "h": "retry-after:300"})
    assert info.value.retry_after_s == 300.0
    assert len(_hits(upstream, "cap")) == 1


async def test_x_should_retry_overrides(api: Upstream, upstream: UpstreamServer) -> None:
    no = await api.get("/seq/no", params={"codes": "503,200", "h": "x-should-retry:false"})
    assert (no.status, no.attempts) == (503, 1)
    yes = await api.get("/seq/yes", params={"codes": "400,200", "h": "x-should-retry:true"})
    assert (yes.status, yes.attempts) == (200, 2)


async def test_exhausted_retries_return_the_last_response(api: Upstream, clock: FakeClock) -> None:
    resp = await api.get("/seq/down", params={"codes": "503"})
    assert (resp.status, resp.attempts) == (503, 3)
    assert resp.json() == {"attempt": 3, "status": 503}
    assert clock.sleeps_s == [0.5, 1.0]


async def test_keyless_post_is_never_retried(api: Upstream, upstream: UpstreamServer) -> None:
    resp = await api.post("/seq/post?codes=503,200", json={"x": 1})
    assert (resp.status, resp.attempts) == (503, 1)
    hits = _hits(upstream, "post")
    assert len(hits) == 1
    assert "idempotency-key" not in hits[0]


async def test_post_with_generated_key_reuses_it_on_every_attempt(
    api: Upstream, upstream: UpstreamServer
) -> None:
    resp = await api.post("/seq/key?codes=500,429,200", json={"x": 1}, idempotency_key=True)
    assert (resp.status, resp.attempts) == (200, 3)
    keys = {h["idempotency-key"] for h in _hits(upstream, "key")}
    assert len(_hits(upstream, "key")) == 3
    assert len(keys) == 1
    assert keys.pop().startswith("iogate-")


async def test_upstream_wide_idempotency_keys(upstream: UpstreamServer, clock: FakeClock) -> None:
    async with Upstream(
        "k", base_url=upstream.base_url, idempotency_keys=True, runner=_pipeline(clock)
    ) as api:
        first = await api.post("/seq/k1?codes=503,200", data=b"x")
        await api.post("/seq/k2?codes=200", data=b"x")
    assert first.attempts == 2
    k1 = {h["idempotency-key"] for h in _hits(upstream, "k1")}
    k2 = {h["idempotency-key"] for h in _hits(upstream, "k2")}
    assert len(k1) == 1
    assert len(k2) == 1
    assert k1 != k2


async def test_caller_key_is_sent_and_makes_post_retryable(
    api: Upstream, upstream: UpstreamServer
) -> None:
    resp = await api.post("/seq/own?codes=503,200", data=b"x", headers={"Idempotency-Key": "abc"})
    assert resp.attempts == 2
    assert [h["idempotency-key"] for h in _hits(upstream, "own")] == ["abc", "abc"]


async def test_connection_reset_is_retried_for_get(api: Upstream, upstream: UpstreamServer) -> None:
    resp = await api.get("/flaky/r1", params={"fail": 2})
    # aiohttp itself re-sends an idempotent request once when a *reused*
    # connection turns out closed, so attempts may be 2 for 3 server hits.
    assert resp.status == 200
    assert resp.json() == {"attempt": 3}
    assert resp.attempts in (2, 3)


async def test_breaker_counts_5xx_but_not_4xx(upstream: UpstreamServer, clock: FakeClock) -> None:
    breaker = CircuitBreaker(
        name="api",
        failure_rate_threshold=0.5,
        window_size=10,
        minimum_calls=4,
        wait_in_open_s=30.0,
        record_on=UPSTREAM_RECORD_ON,
        clock=clock,
    )
    async with Upstream(
        "api", base_url=upstream.base_url, runner=_pipeline(clock, attempts=1, breaker=breaker)
    ) as api:
        for _ in range(6):
            assert (await api.get("/seq/nf", params={"codes": "404"})).status == 404
        for _ in range(5):  # 6 ok + 4 failed = 40 %; the 5th makes 5/10 = 50 %
            assert (await api.get("/seq/boom", params={"codes": "500"})).status == 500
        with pytest.raises(CircuitOpenError):
            await api.get("/seq/boom", params={"codes": "500"})
    assert len(_hits(upstream, "boom")) == 5
