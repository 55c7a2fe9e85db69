"""examples/captions_api over HTTP, on real PostgreSQL and the bundled fake
providers on loopback: cache, per-user rate limit, token budget, batch,
profiles with read-your-writes, process-request, streaming, failover."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from fastapi import FastAPI

from examples.captions_api.app import CaptionService, CaptionSettings, create_app
from examples.captions_api.config import captions_config
from examples.captions_api.fake_llm import FakeLLM, Fault
from iogate.server.keys import hash_key, new_key
from tests.servers import PostgresServer, serve_asgi

pytestmark = pytest.mark.postgres

CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
HF = "/models/HuggingFaceH4/zephyr-7b-beta"


@dataclass
class Captions:
    base: str
    http: aiohttp.ClientSession
    app: FastAPI
    openai: FakeLLM
    anthropic: FakeLLM
    admin_key: str

    async def post(
        self, path: str, body: Any, *, user: str = "ada"
    ) -> tuple[int, dict[str, str], Any]:
        async with self.http.post(self.base + path, json=body, headers={"X-User-Id": user}) as r:
            headers = {k.lower(): v for k, v in r.headers.items()}
            return r.status, headers, await r.json(content_type=None)

    async def get(self, path: str, **headers: str) -> tuple[int, Any]:
        async with self.http.get(self.base + path, headers=headers) as r:
            return r.status, await r.json(content_type=None)

    @property
    def service(self) -> CaptionService:
        svc: CaptionService = self.app.state.captions
        return svc


@asynccontextmanager
async def running(
    pg: PostgresServer, settings: CaptionSettings | None = None, **config: Any
) -> AsyncIterator[Captions]:
    """The app on its own PostgreSQL schema, with a fake OpenAI (which also
    serves the Hugging Face path) and a fake Anthropic."""
    schema = f"c_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg.dsn)
    await admin.execute(f"CREATE SCHEMA {schema}")
    key = new_key()
    openai, anthropic = FakeLLM("openai-fake"), FakeLLM("anthropic-fake")
    try:
        async with openai.serve() as openai_url, anthropic.serve() as anthropic_url:
            cfg = captions_config(
                database_url=f"{pg.dsn}?search_path={schema}",
                openai_url=openai_url + "/v1",
                anthropic_url=anthropic_url,
                huggingface_url=openai_url,
                keys={"ops": {"sha256": hash_key(key), "scopes": ["admin"]}},
                **config,
            )
            app = create_app(cfg, settings)
            async with serve_asgi(app) as base, aiohttp.ClientSession() as http:
                yield Captions(base, http, app, openai, anthropic, key)
    finally:
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()


@pytest.fixture
async def captions(pg: PostgresServer) -> AsyncIterator[Captions]:
    async with running(pg) as c:
        yield c


async def test_a_caption_is_generated_once_then_served_from_the_cache(captions: Captions) -> None:
    body = {"prompt": "a sunset over the sea", "style": "funny"}
    status, _, first = await captions.post("/captions", body)
    assert status == 200, first
    assert first["provider"] == "openai"
    assert first["cached"] is False
    assert first["caption"] == "caption by openai-fake: a sunset over the sea"
    assert first["tokens"] > 0
    status, _, again = await captions.post("/captions", body, user="bob")  # same request
    assert (status, again["cached"], again["caption"]) == (200, True, first["caption"])
    status, _, other = await captions.post("/captions", {**body, "style": "minimal"})
    assert (status, other["cached"]) == (200, False)
    assert captions.openai.calls(CHAT) == 2
    # the OpenAI wire format: bearer key, model, system prompt of the style
    _, headers, sent = captions.openai.requests[0]
    assert headers["authorization"] == "Bearer sk-fake"
    assert sent["model"] == "gpt-4o-mini"
    assert sent["messages"][0]["role"] == "system"
    assert "witty" in sent["messages"][0]["content"]
    assert "idempotency-key" in headers  # so a retry of this POST is safe


async def test_each_user_has_a_rate_limit(pg: PostgresServer) -> None:
    settings = CaptionSettings(user_rate_per_s=0.5, user_burst=2)
    async with running(pg, settings) as c:
        for i in range(2):
            status, _, _ = await c.post("/captions", {"prompt": f"cat {i}"})
            assert status == 200
        status, headers, problem = await c.post("/captions", {"prompt": "cat 3"})
        assert status == 429
        assert problem["type"] == "urn:iogate:problem:rate-limited"
        assert int(headers["retry-after"]) >= 1
        status, _, _ = await c.post("/captions", {"prompt": "cat 3"}, user="bob")
        assert status == 200  # another user's bucket
        status, _, problem = await c.post("/captions", {"prompt": "x"}, user="bad user!")
        assert status == 422


async def test_provider_429_with_a_short_retry_after_is_waited_out(captions: Captions) -> None:
    captions.openai.faults[CHAT] = [Fault(status=429, headers={"retry-after-ms": "150"})]
    started = time.perf_counter()
    status, _, answer = await captions.post("/captions", {"prompt": "a dog"})
    elapsed = time.perf_counter() - started
    assert (status, answer["provider"]) == (200, "openai")
    assert captions.openai.calls(CHAT) == 2
    assert elapsed >= 0.15  # the wait the provider asked for
    keys = {h["idempotency-key"] for _, h, _ in captions.openai.requests}
    assert len(keys) == 1  # the retry is the same request


async def test_provider_429_asking_a_long_wait_fails_over(captions: Captions) -> None:
    captions.openai.faults[CHAT] = [Fault(status=429, headers={"retry-after": "60"})]
    started = time.perf_counter()
    status, _, answer = await captions.post("/captions", {"prompt": "a dog"})
    assert time.perf_counter() - started < 2.0  # not 60 s
    assert status == 200, answer
    assert answer["provider"] == "anthropic"
    assert answer["failover_from"] == "openai"
    assert answer["failover_reason"] == "RateLimitedError"
    assert answer["caption"] == "caption by anthropic-fake: a dog"
    _, headers, sent = captions.anthropic.requests[0]
    assert headers["x-api-key"] == "fake"
    assert headers["anthropic-version"]
    assert sent["max_tokens"] == 60


async def test_provider_down_fails_over_and_its_breaker_opens(captions: Captions) -> None:
    captions.openai.down = True
    for i in range(6):
        status, _, answer = await captions.post("/captions", {"prompt": f"photo {i}"})
        assert (status, answer["provider"]) == (200, "anthropic"), answer
    _, stats = await captions.get("/stats")
    assert stats["resources"]["openai"]["circuit_breaker"] == "open"
    assert stats["failovers"] == 6
    seen = captions.openai.calls(CHAT)
    status, _, answer = await captions.post("/captions", {"prompt": "photo 7"})
    assert (status, answer["failover_reason"]) == (200, "CircuitOpenError")
    assert captions.openai.calls(CHAT) == seen  # an open breaker sends nothing


async def test_both_providers_down_is_a_502_problem(captions: Captions) -> None:
    captions.openai.down = captions.anthropic.down = True
    status, headers, problem = await captions.post("/captions", {"prompt": "nothing works"})
    assert status == 502
    assert headers["content-type"] == "application/problem+json"
    assert problem["type"] == "urn:iogate:problem:upstream-unreachable"
    assert problem["resource"] == "anthropic"
    assert "sk-fake" not in orjson.dumps(problem).decode()


async def test_the_token_budget_refuses_with_retry_after(pg: PostgresServer) -> None:
    # Each call takes its estimate (~320 tokens) up front and gives back what
    # the answer's usage shows it did not use (~125 used): ~6 calls per provider.
    async with running(pg, tokens_per_minute=1000) as c:
        answers: list[dict[str, Any]] = []
        long_prompt = " ".join(["waves"] * 60)
        for i in range(20):
            body = {"prompt": f"{long_prompt} {i}", "max_tokens": 200}
            status, headers, answer = await c.post("/captions", body, user=f"u{i}")
            if status != 200:
                break
            answers.append(answer)
        assert status == 429, answer
        assert answer["type"] == "urn:iogate:problem:rate-limited"
        assert int(headers["retry-after"]) >= 1
        assert answers  # the budget allowed some first
        assert {a["provider"] for a in answers} == {"openai", "anthropic"}  # then failover


async def test_a_batch_runs_in_the_background_with_progress_and_isolated_errors(
    captions: Captions,
) -> None:
    captions.openai.faults[HF] = [Fault(status=400)]  # the Hugging Face item fails
    items: list[dict[str, Any]] = [{"prompt": f"mountain {i}"} for i in range(5)]
    items.append({"prompt": "lake", "provider": "huggingface"})
    status, _, queued = await captions.post(
        "/captions/batch", {"items": items, "max_concurrent": 2}
    )
    assert status == 202
    for _ in range(200):  # bounded poll
        status, record = await captions.get(f"/captions/batch/{queued['id']}")
        if record["status"] not in ("queued", "running"):
            break
        await asyncio.sleep(0.01)
    assert record["status"] == "succeeded", record
    assert record["progress"] == {"done": 6, "total": 6}
    result = record["result"]
    assert (result["succeeded"], result["failed"]) == (5, 1)
    assert [i["ok"] for i in result["items"]] == [True] * 5 + [False]
    assert result["items"][0]["caption"] == "caption by openai-fake: mountain 0"
    assert result["items"][5]["problem"]["upstream_status"] == 400


async def test_profiles_are_cached_and_a_user_reads_their_own_write(captions: Captions) -> None:
    profile = {"user_id": "ada", "display_name": "Ada", "tone": "funny", "hashtags": ["sea"]}
    status, _, saved = await captions.post("/save-profile", profile)
    assert (status, saved["tone"], saved["hashtags"]) == (200, "funny", ["sea"])
    metrics = captions.service.gateway.metrics

    def fetches() -> int:
        main = metrics.stats().resource("main")
        op = main.operation("fetch") if main is not None else None
        return op.calls if op is not None else 0

    before = fetches()
    for _ in range(3):
        status, got = await captions.get("/user-profile/ada")
        assert (status, got["tone"]) == (200, "funny")
    assert fetches() == before  # served from the cache
    status, _, saved = await captions.post("/save-profile", {**profile, "tone": "minimal"})
    status, got = await captions.get("/user-profile/ada")
    assert (status, got["tone"]) == (200, "minimal")  # the save invalidated the cached read
    status, problem = await captions.get("/user-profile/nobody")
    assert (status, problem["status"]) == (404, 404)


async def test_process_request_uses_the_profile_and_stores_the_caption(
    captions: Captions,
) -> None:
    profile = {"user_id": "ada", "display_name": "Ada", "tone": "inspirational",
               "hashtags": ["coffee", "#morning"]}  # fmt: skip
    await captions.post("/save-profile", profile)
    status, _, done = await captions.post("/process-request", {"prompt": "morning coffee"})
    assert status == 200, done
    assert done["caption"] == "caption by openai-fake: morning coffee #coffee #morning"
    assert done["profile"]["tone"] == "inspirational"
    assert "uplifting" in captions.openai.requests[-1][2]["messages"][0]["content"]
    # stored: read back through the gateway routes mounted under /gateway
    auth = {"Authorization": f"Bearer {captions.admin_key}"}
    query = {"sql": "SELECT caption FROM captions WHERE id = :id", "params": {"id": done["id"]}}
    async with captions.http.post(
        captions.base + "/gateway/v1/databases/main/query", json=query, headers=auth
    ) as r:
        assert r.status == 200
        assert (await r.json())["rows"] == [[done["caption"]]]
    async with captions.http.post(
        captions.base + "/gateway/v1/databases/main/query", json=query
    ) as r:
        assert r.status == 401


async def test_a_caption_streams_as_server_sent_events(captions: Captions) -> None:
    async with captions.http.post(
        captions.base + "/captions/stream",
        json={"prompt": "city lights at night"},
        headers={"X-User-Id": "ada"},
    ) as r:
        assert r.status == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = (await r.read()).decode()
    events = [block for block in raw.split("\n\n") if block]
    texts = [orjson.loads(e.removeprefix("data: "))["text"] for e in events[:-1]]
    assert "".join(texts) == "caption by openai-fake: city lights at night"
    assert events[-1].startswith("event: done\n")
    done = orjson.loads(events[-1].split("data: ", 1)[1])
    assert done["finish_reason"] == "stop"
    assert done["tokens"] > 0
    assert captions.openai.requests[-1][2]["stream"] is True


async def test_stats_show_the_librarys_figures(captions: Captions) -> None:
    await captions.post("/captions", {"prompt": "a tree"})
    await captions.post("/captions", {"prompt": "a tree"})
    status, stats = await captions.get("/stats")
    assert status == 200
    assert stats["resources"]["captions"]["calls"] == 1  # the cached answer did not generate
    assert stats["resources"]["openai"]["calls"] == 1
    assert stats["resources"]["openai"]["circuit_breaker"] == "closed"
    assert stats["cache"]["l1"]["hits"] >= 1
    assert isinstance(stats["insights"], list)
    status, gateway_stats = await captions.get(
        "/gateway/v1/stats", Authorization=f"Bearer {captions.admin_key}"
    )
    assert status == 200
    assert gateway_stats["resources"]["captions"]["kind"] == "function"
