"""Provider adapters against the protocol-faithful fake servers, with scripted faults."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from iogate.errors import OperationTimeout, UpstreamHTTPError
from iogate.http.auth import ApiKeyHeader, BearerAuth
from iogate.http.limits import UpstreamLimits
from iogate.http.providers import (
    AnthropicProvider,
    CompletionChunk,
    GenerateRequest,
    HuggingFaceProvider,
    OpenAIProvider,
    ProviderStreamError,
    Usage,
)
from iogate.http.status import UPSTREAM_RETRY_ON
from iogate.http.upstream import Upstream
from iogate.policies import Backoff, FakeClock, Pipeline, Retry
from iogate.policies.backoff import BackoffKind, Jitter
from tests.fakes.llm import FakeLLM, Fault, fake_llm_server

REQ = GenerateRequest(prompt="the quick brown fox", model="m-1", max_tokens=3, temperature=0)


@pytest.fixture
async def llm() -> AsyncIterator[FakeLLM]:
    async with fake_llm_server() as server:
        yield server


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0, auto_advance=True)


def _upstream(base: str, clock: FakeClock, **kw: object) -> Upstream:
    retry = Retry(
        retry_on=UPSTREAM_RETRY_ON,
        max_attempts=4,
        backoff=Backoff(
            kind=BackoffKind.EXPONENTIAL, jitter=Jitter.NONE, initial_s=0.5, max_delay_s=8.0
        ),
        clock=clock,
    )
    return Upstream(
        "llm", base_url=base, runner=Pipeline(resource="llm", retry=retry, clock=clock), **kw
    )  # type: ignore[arg-type]


async def _collect(chunks: AsyncIterator[CompletionChunk]) -> tuple[str, list[CompletionChunk]]:
    got = [c async for c in chunks]
    return "".join(c.text for c in got), got


async def test_openai_generate_and_stream(llm: FakeLLM, clock: FakeClock) -> None:
    async with _upstream(
        llm.base_url + "/v1", clock, auth=BearerAuth("sk-O"), idempotency_keys=True
    ) as api:
        ai = OpenAIProvider(api)
        done = await ai.generate(REQ)
        text, chunks = await _collect(ai.stream(REQ))
    assert (done.text, done.finish_reason, done.usage) == ("echo: the quick", "length", Usage(4, 3))
    assert text == "echo: the quick"
    assert chunks[-1].usage == Usage(4, 3)
    assert "length" in [c.finish_reason for c in chunks]
    sent = llm.seen[0]
    assert sent.headers["authorization"] == "Bearer sk-O"
    assert sent.body == {
        "model": "m-1",
        "messages": [{"role": "user", "content": "the quick brown fox"}],
        "max_tokens": 3,
        "temperature": 0,
    }
    assert llm.seen[1].body["stream_options"] == {"include_usage": True}


async def test_openai_429_retry_after_ms_reuses_the_idempotency_key(
    llm: FakeLLM, clock: FakeClock
) -> None:
    llm.script["/v1/chat/completions"] = [
        Fault(
            status=429, headers={"retry-after-ms": "1200"}, body={"error": {"type": "rate_limit"}}
        ),
        Fault(status=500),
    ]
    async with _upstream(llm.base_url + "/v1", clock, idempotency_keys=True) as api:
        done = await OpenAIProvider(api).generate(REQ)
    assert done.text == "echo: the quick"
    assert clock.sleeps_s == [1.2, 1.0]  # server's delay, then backoff for attempt 2
    keys = [s.headers["idempotency-key"] for s in llm.seen]
    assert len(keys) == 3
    assert len(set(keys)) == 1


async def test_keyless_provider_post_is_not_retried(llm: FakeLLM, clock: FakeClock) -> None:
    llm.script["/v1/chat/completions"] = [Fault(status=503)]
    async with _upstream(llm.base_url + "/v1", clock) as api:
        with pytest.raises(UpstreamHTTPError) as info:
            await OpenAIProvider(api).generate(REQ)
    assert (info.value.status, info.value.attempts, len(llm.seen)) == (503, 1, 1)


async def test_openai_error_mid_stream(llm: FakeLLM, clock: FakeClock) -> None:
    llm.script["/v1/chat/completions"] = [Fault(error_after=2)]
    got: list[str] = []
    async with _upstream(llm.base_url + "/v1", clock) as api:
        with pytest.raises(ProviderStreamError) as info:  # noqa: PT012 - partial output kept
            async for chunk in OpenAIProvider(api).stream(REQ):
                got.append(chunk.text)
    assert got == ["echo:", " the"]
    assert info.value.kind == "server_error"


async def test_anthropic_headers_529_and_named_events(llm: FakeLLM, clock: FakeClock) -> None:
    llm.script["/v1/messages"] = [
        Fault(status=529, body={"type": "error", "error": {"type": "overloaded_error"}})
    ]
    async with _upstream(
        llm.base_url, clock, auth=ApiKeyHeader("sk-A"), idempotency_keys=True
    ) as api:
        claude = AnthropicProvider(api)
        done = await claude.generate(
            GenerateRequest(
                messages=[
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": "hi there"},
                ],
                model="c-1",
            )
        )
        text, chunks = await _collect(claude.stream(REQ))
    assert (done.text, done.finish_reason, done.usage) == (
        "echo: hi there",
        "end_turn",
        Usage(2, 3),
    )
    assert clock.sleeps_s == [0.5]  # the 529 was retried after the backoff
    first = llm.seen[0]
    assert first.headers["x-api-key"] == "sk-A"
    assert first.headers["anthropic-version"] == "2023-06-01"
    assert llm.seen[1].body["system"] == "be brief"
    assert all(m["role"] != "system" for m in llm.seen[1].body["messages"])
    assert text == "echo: the quick"
    assert chunks[-1] == CompletionChunk("", "max_tokens", Usage(4, 3))


async def test_anthropic_error_event_after_200(llm: FakeLLM, clock: FakeClock) -> None:
    llm.script["/v1/messages"] = [Fault(error_after=1)]
    async with _upstream(llm.base_url, clock, auth=ApiKeyHeader("sk-A")) as api:
        with pytest.raises(ProviderStreamError, match="overloaded_error"):
            await _collect(AnthropicProvider(api).stream(REQ))


async def test_tgi_generate_stream_and_greedy_temperature(llm: FakeLLM, clock: FakeClock) -> None:
    async with _upstream(llm.base_url, clock) as api:
        tgi = HuggingFaceProvider(api, mode="tgi")
        done = await tgi.generate(REQ)
        text, chunks = await _collect(tgi.stream(REQ))
    assert (done.text, done.finish_reason, done.usage) == (
        "echo: the quick",
        "length",
        Usage(None, 3),
    )
    assert text == "echo: the quick"
    assert chunks[-1].finish_reason == "length"
    assert llm.seen[0].body["parameters"] == {
        "max_new_tokens": 3,
        "details": True,
        "do_sample": False,
    }


async def test_hf_inference_api_503_loading_waits_estimated_time(
    llm: FakeLLM, clock: FakeClock
) -> None:
    path = "/models/org/model-x"
    llm.script[path] = [
        Fault(
            status=503,
            body={"error": "Model org/model-x is currently loading", "estimated_time": 7.5},
        )
    ]
    async with _upstream(llm.base_url, clock, retry_hint=HuggingFaceProvider.retry_hint) as api:
        done = await HuggingFaceProvider(api, mode="inference_api").generate(
            GenerateRequest(prompt="a b", model="org/model-x", max_tokens=5, temperature=0.7)
        )
    assert done.text == "echo: a b"
    assert clock.sleeps_s == [7.5]
    assert llm.seen[-1].body["parameters"]["return_full_text"] is False


async def test_connection_reset_then_success(llm: FakeLLM, clock: FakeClock) -> None:
    llm.script["/generate"] = [Fault(reset=True)]
    async with _upstream(llm.base_url, clock, idempotency_keys=True) as api:
        done = await HuggingFaceProvider(api).generate(REQ)
    assert done.text == "echo: the quick"
    assert len(llm.seen) == 2


async def test_slow_first_byte_is_cut_by_the_timeout_and_retried(
    llm: FakeLLM, clock: FakeClock
) -> None:
    llm.script["/generate"] = [Fault(delay_s=0.5)]
    async with _upstream(llm.base_url, clock, timeout_s=0.15) as api:
        started = time.perf_counter()
        done = await HuggingFaceProvider(api).generate(REQ)
        elapsed = time.perf_counter() - started
    assert done.text == "echo: the quick"
    assert 0.14 <= elapsed < 0.45  # the slow attempt was cut at 0.15 s, not waited out
    assert len(llm.seen) == 2


async def test_always_slow_first_byte_raises_timeout(llm: FakeLLM, clock: FakeClock) -> None:
    llm.script["/generate"] = [Fault(delay_s=0.3) for _ in range(4)]
    async with _upstream(llm.base_url, clock, timeout_s=0.1) as api:
        with pytest.raises(OperationTimeout) as info:
            await HuggingFaceProvider(api).generate(REQ)
    assert info.value.attempts == 4
    assert clock.sleeps_s == [0.5, 1.0, 2.0]


async def test_token_limit_settles_from_usage(llm: FakeLLM, clock: FakeClock) -> None:
    limits = UpstreamLimits(tokens_per_minute=10_000, clock=clock)
    async with _upstream(llm.base_url + "/v1", clock, limits=limits) as api:
        await OpenAIProvider(api).generate(REQ)
        await _collect(OpenAIProvider(api).stream(REQ))
    snap = limits.stats()
    assert snap.tokens_estimated == 2 * REQ.estimated_tokens()
    assert snap.tokens_used == 2 * 7
