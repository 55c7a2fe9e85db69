"""``POST /captions`` written by hand with aiohttp + tenacity + aiobreaker +
cashews (+ aiolimiter for the per-user limit): the peer of
``examples/captions_api`` in ``python -m benchmarks --only examples``.

It does what the iogate endpoint does on its success path: validate the body,
take a token of the caller's rate limit, look the identical request up in a
cache, else call the OpenAI-compatible provider (retried on connection errors,
timeouts, 429 and 5xx by tenacity, behind an aiobreaker breaker, with an
``Idempotency-Key``), fail over to the Anthropic provider, keep the answer for
five minutes. Configured by the environment: ``OPENAI_URL`` and
``ANTHROPIC_URL`` (the fake providers' base URLs).

Serve with ``uvicorn benchmarks.examples_peer:app``.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Annotated, Any, Literal

import aiobreaker
import aiohttp
import orjson
from aiolimiter import AsyncLimiter
from cashews import cache
from fastapi import FastAPI, Header, HTTPException, Request
from pydantic import BaseModel, Field
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

OPENAI_URL = os.environ.get("OPENAI_URL", "http://127.0.0.1:9100/v1")
ANTHROPIC_URL = os.environ.get("ANTHROPIC_URL", "http://127.0.0.1:9101")

STYLES = {
    "casual": "You write relaxed, friendly Instagram captions.",
    "funny": "You write witty Instagram captions.",
}


class CaptionIn(BaseModel):
    prompt: str = Field(min_length=1, max_length=2000)
    style: Literal["casual", "funny"] = "casual"
    max_tokens: int = Field(default=60, ge=1, le=500)


class ProviderError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"provider answered {status}")
        self.status = status


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, ProviderError):
        return exc.status == 429 or exc.status >= 500
    return isinstance(exc, aiohttp.ClientError | TimeoutError)


cache.setup("mem://?size=1000000")
breakers = {
    "openai": aiobreaker.CircuitBreaker(fail_max=20, timeout_duration=timedelta(seconds=30)),
    "anthropic": aiobreaker.CircuitBreaker(fail_max=20, timeout_duration=timedelta(seconds=30)),
}
limiters: OrderedDict[str, AsyncLimiter] = OrderedDict()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    connector = aiohttp.TCPConnector(limit=100)
    app.state.http = aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=30, connect=10)
    )
    yield
    await app.state.http.close()


app = FastAPI(lifespan=lifespan)


async def _post(http: aiohttp.ClientSession, url: str, body: Any, headers: dict[str, str]) -> Any:
    async for attempt in AsyncRetrying(
        retry=retry_if_exception(_retryable),
        stop=stop_after_attempt(2),
        wait=wait_exponential_jitter(initial=0.02, max=0.2),
        reraise=True,
    ):
        with attempt:
            async with http.post(url, data=orjson.dumps(body), headers=headers) as resp:
                payload = await resp.read()
                if resp.status >= 400:
                    raise ProviderError(resp.status)
                return orjson.loads(payload)
    raise AssertionError("unreachable")


async def _openai(http: aiohttp.ClientSession, item: CaptionIn) -> dict[str, Any]:
    body = {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": STYLES[item.style]},
            {"role": "user", "content": item.prompt},
        ],
        "max_tokens": item.max_tokens,
    }
    headers = {
        "Authorization": "Bearer sk-fake",
        "Content-Type": "application/json",
        "Idempotency-Key": uuid.uuid4().hex,
    }
    answer = await breakers["openai"].call_async(
        _post, http, OPENAI_URL + "/chat/completions", body, headers
    )
    usage = answer.get("usage") or {}
    return {
        "caption": answer["choices"][0]["message"]["content"].strip(),
        "provider": "openai",
        "finish_reason": answer["choices"][0].get("finish_reason"),
        "tokens": usage.get("total_tokens"),
    }


async def _anthropic(http: aiohttp.ClientSession, item: CaptionIn) -> dict[str, Any]:
    body = {
        "model": "claude-3-5-haiku-latest",
        "system": STYLES[item.style],
        "messages": [{"role": "user", "content": item.prompt}],
        "max_tokens": item.max_tokens,
    }
    headers = {
        "x-api-key": "fake",
        "anthropic-version": "2023-06-01",
        "Content-Type": "application/json",
        "Idempotency-Key": uuid.uuid4().hex,
    }
    answer = await breakers["anthropic"].call_async(
        _post, http, ANTHROPIC_URL + "/v1/messages", body, headers
    )
    usage = answer.get("usage") or {}
    return {
        "caption": answer["content"][0]["text"].strip(),
        "provider": "anthropic",
        "finish_reason": answer.get("stop_reason"),
        "tokens": (usage.get("input_tokens") or 0) + (usage.get("output_tokens") or 0),
    }


async def _generate(http: aiohttp.ClientSession, item: CaptionIn) -> dict[str, Any]:
    try:
        return await _openai(http, item)
    except (aiobreaker.CircuitBreakerError, ProviderError, aiohttp.ClientError, TimeoutError):
        return await _anthropic(http, item)


@app.post("/captions")
async def caption(
    body: CaptionIn,
    request: Request,
    user: Annotated[str, Header(alias="X-User-Id", pattern=r"^[A-Za-z0-9_.-]{1,64}$")],
) -> dict[str, Any]:
    limiter = limiters.get(user)
    if limiter is None:
        limiter = limiters[user] = AsyncLimiter(1_000_000, 1)
        if len(limiters) > 10_000:
            limiters.popitem(last=False)
    if not limiter.has_capacity():
        raise HTTPException(429, "rate limited", {"Retry-After": "1"})
    await limiter.acquire()
    key = (
        "caption:"
        + hashlib.sha256(orjson.dumps(body.model_dump(), option=orjson.OPT_SORT_KEYS)).hexdigest()
    )
    cached = await cache.get(key)
    if cached is not None:
        return {**cached, "cached": True}
    answer = await _generate(request.app.state.http, body)
    await cache.set(key, answer, expire=300)
    return {**answer, "cached": False}
