"""The Instagram-captions service, on iogate and FastAPI.

Routes (every caller names itself in ``X-User-Id``):

- ``POST /captions`` — prompt + style → a caption from the primary LLM
  provider, or from the secondary one when the primary fails (its breaker
  open, down, rate-limited); the identical request is answered from the
  gateway cache; a per-user rate limit; the providers' token budgets
  (``tokens_per_minute``) apply.
- ``POST /captions/stream`` — the same, streamed as server-sent events from
  the primary provider's own SSE stream.
- ``POST /captions/batch`` → 202 and a task id; the prompts run in the
  background with bounded concurrency, each item's error isolated;
  ``GET /captions/batch/{id}`` shows progress and, at the end, the results.
- ``POST /save-profile``, ``GET /user-profile/{user_id}`` — profiles in
  PostgreSQL or SQLite, read through the cache; a save invalidates what it
  changed, so a user reads their own write at once.
- ``POST /process-request`` — profile, generation and storing the caption in
  one dataflow under one deadline.
- ``GET /stats`` — the library's figures and insights; the gateway's own
  routes are mounted under ``/gateway`` for holders of an API key.
"""

from __future__ import annotations

import gc
import hashlib
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Annotated, Any, Literal

import orjson
from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from iogate import (
    CircuitOpenError,
    Gateway,
    IogateConfig,
    IogateError,
    OperationTimeout,
    RateLimitedError,
    RateLimiter,
    SQLDatabase,
    UpstreamConnectionError,
    UpstreamHTTPError,
    deadline_scope,
)
from iogate import fastapi as iogate_fastapi
from iogate.http.providers import Completion, GenerateRequest, Provider
from iogate.observability import monitored
from iogate.policies import Fallback, map_concurrent
from iogate.tasks import TaskContext
from iogate.wire.problems import problem_for

__all__ = ["CaptionSettings", "create_app"]

Style = Literal["casual", "professional", "funny", "inspirational", "minimal"]
ProviderName = Literal["openai", "anthropic", "huggingface"]

STYLE_PROMPTS: dict[str, str] = {
    "casual": "You write relaxed, friendly Instagram captions.",
    "professional": "You write polished Instagram captions for a brand.",
    "funny": "You write witty Instagram captions.",
    "inspirational": "You write uplifting Instagram captions.",
    "minimal": "You write very short Instagram captions.",
}

_ONLY_CAPTION = " Answer with the caption only, for the photo the user describes."

# What makes the primary provider's answer unavailable, so the secondary is asked.
FAILOVER = (
    CircuitOpenError,
    UpstreamConnectionError,
    OperationTimeout,
    RateLimitedError,
    UpstreamHTTPError,
)

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS caption_profiles (user_id TEXT PRIMARY KEY,"
    " display_name TEXT NOT NULL, tone TEXT NOT NULL, hashtags TEXT NOT NULL,"
    " updated_at DOUBLE PRECISION NOT NULL)",
    "CREATE TABLE IF NOT EXISTS captions (id TEXT PRIMARY KEY, user_id TEXT NOT NULL,"
    " prompt TEXT NOT NULL, caption TEXT NOT NULL, provider TEXT NOT NULL,"
    " created_at DOUBLE PRECISION NOT NULL)",
)


@dataclass(frozen=True, kw_only=True)
class CaptionSettings:
    """How the service uses the gateway.

    Attributes:
        database: the SQL database of profiles and captions.
        primary / secondary: the upstreams (with ``provider`` set) asked first
            and on failover.
        cache_ttl_s: seconds an answer to an identical request is kept.
        profile_ttl_s: seconds a profile read is kept (a save invalidates it).
        user_rate_per_s / user_burst: each user's request rate (token bucket).
        max_users_tracked: users whose rate limiter is kept (least recent dropped).
        batch_max_concurrent: generations of one batch in flight at once.
        deadline_s: the whole of ``/process-request``, seconds.
        slow_s: generations at least this long are logged on ``iogate.slow``.
    """

    database: str = "main"
    primary: str = "openai"
    secondary: str = "anthropic"
    cache_ttl_s: float = 300.0
    profile_ttl_s: float = 60.0
    user_rate_per_s: float = 5.0
    user_burst: float = 10.0
    max_users_tracked: int = 10_000
    batch_max_concurrent: int = 4
    deadline_s: float = 20.0
    slow_s: float = 2.0


UserId = Annotated[str, Header(alias="X-User-Id", pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


class CaptionIn(BaseModel):
    """One caption to write."""

    prompt: str = Field(min_length=1, max_length=2000)
    style: Style = "casual"
    max_tokens: int = Field(default=60, ge=1, le=500)
    provider: ProviderName | None = Field(
        default=None, description="Ask this upstream only (no failover)."
    )


class BatchIn(BaseModel):
    """Many captions at once."""

    items: list[CaptionIn] = Field(min_length=1, max_length=200)
    max_concurrent: int | None = Field(default=None, ge=1, le=32)


class ProfileIn(BaseModel):
    """A user's profile."""

    user_id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    display_name: str = Field(min_length=1, max_length=100)
    tone: Style = "casual"
    hashtags: list[str] = Field(default_factory=list, max_length=30)


class ProcessIn(BaseModel):
    """``/process-request``: the user's prompt; style and hashtags come from their profile."""

    prompt: str = Field(min_length=1, max_length=2000)
    max_tokens: int = Field(default=60, ge=1, le=500)


class CaptionService:
    """The service's state over one open Gateway."""

    def __init__(self, gateway: Gateway, settings: CaptionSettings) -> None:
        self.gateway = gateway
        self.settings = settings
        self.db: SQLDatabase = gateway.database(settings.database)
        self._limiters: OrderedDict[str, RateLimiter] = OrderedDict()
        self.failovers = 0
        self.generate = monitored(
            "captions", metrics=gateway.metrics, operation="generate", slow_s=settings.slow_s
        )(self._generate)

    # -- callers' limits ---------------------------------------------------------

    async def admit(self, user: str) -> None:
        """Take one request from ``user``'s rate limit.

        Raises:
            RateLimitedError: over the limit (429 with ``Retry-After``).
        """
        limiter = self._limiters.get(user)
        if limiter is None:
            limiter = RateLimiter(
                rate=self.settings.user_rate_per_s,
                burst=self.settings.user_burst,
                max_wait_s=0.0,
                name=f"user:{user}",
            )
            self._limiters[user] = limiter
            if len(self._limiters) > self.settings.max_users_tracked:
                self._limiters.popitem(last=False)
        else:
            self._limiters.move_to_end(user)
        await limiter.acquire()

    # -- generation --------------------------------------------------------------

    def provider(self, name: str) -> Provider:
        """The LLM adapter of upstream ``name``."""
        provider = self.gateway.upstream(name).provider
        if provider is None:
            raise IogateError(f"upstream {name!r} has no provider configured")
        return provider

    async def _generate(self, item: CaptionIn) -> dict[str, Any]:
        """One caption: the primary provider, or the secondary on failover."""
        request = GenerateRequest(
            prompt=item.prompt,
            system=STYLE_PROMPTS[item.style] + _ONLY_CAPTION,
            max_tokens=item.max_tokens,
        )
        if item.provider is not None:
            return _answer(item.provider, await self.provider(item.provider).generate(request))
        primary, secondary = self.settings.primary, self.settings.secondary

        async def failover(exc: BaseException) -> dict[str, Any]:
            status = exc.status if isinstance(exc, UpstreamHTTPError) else None
            if status is not None and status < 500 and status != 429:
                raise exc  # the request itself is wrong: another provider would refuse it too
            self.failovers += 1
            answer = _answer(secondary, await self.provider(secondary).generate(request))
            return {**answer, "failover_from": primary, "failover_reason": type(exc).__name__}

        fallback = Fallback(on=FAILOVER, handler=failover, name="captions-failover")

        async def ask_primary() -> dict[str, Any]:
            return _answer(primary, await self.provider(primary).generate(request))

        result: dict[str, Any] = await fallback.run(ask_primary)
        return result

    async def caption(self, item: CaptionIn) -> dict[str, Any]:
        """A caption, from the cache when this exact request was answered before."""
        key = (
            "caption:"
            + hashlib.sha256(
                orjson.dumps(item.model_dump(), option=orjson.OPT_SORT_KEYS)
            ).hexdigest()
        )
        loaded = False

        async def load() -> dict[str, Any]:
            nonlocal loaded
            loaded = True
            return await self.generate(item)

        answer = await self.gateway.cache.get_or_load(key, load, ttl_s=self.settings.cache_ttl_s)
        return {**answer, "cached": not loaded}

    # -- profiles ----------------------------------------------------------------

    async def profile(self, user_id: str) -> dict[str, Any] | None:
        """The profile, read through the cache (tagged by table: a save through
        the same database invalidates it before it returns)."""
        rows = await self.db.fetch(
            "SELECT user_id, display_name, tone, hashtags, updated_at"
            " FROM caption_profiles WHERE user_id = :user_id",
            {"user_id": user_id},
            cache_ttl_s=self.settings.profile_ttl_s,
        )
        if not rows:
            return None
        row = rows[0]
        return {
            "user_id": row[0],
            "display_name": row[1],
            "tone": row[2],
            "hashtags": row[3].split() if row[3] else [],
            "updated_at": row[4],
        }

    async def save_profile(self, profile: ProfileIn) -> dict[str, Any]:
        """Insert or update a profile; returns it as stored."""
        await self.db.execute(
            "INSERT INTO caption_profiles (user_id, display_name, tone, hashtags, updated_at)"
            " VALUES (:user_id, :display_name, :tone, :hashtags, :updated_at)"
            " ON CONFLICT (user_id) DO UPDATE SET display_name = excluded.display_name,"
            " tone = excluded.tone, hashtags = excluded.hashtags,"
            " updated_at = excluded.updated_at",
            {
                "user_id": profile.user_id,
                "display_name": profile.display_name,
                "tone": profile.tone,
                "hashtags": " ".join(profile.hashtags),
                "updated_at": time.time(),
            },
        )
        saved = await self.profile(profile.user_id)
        assert saved is not None
        return saved

    async def process(self, user_id: str, body: ProcessIn) -> dict[str, Any]:
        """Profile → caption in the profile's tone, with its hashtags → stored."""
        async with deadline_scope(self.settings.deadline_s, operation="process-request"):
            profile = await self.profile(user_id)
            style: Style = profile["tone"] if profile is not None else "casual"
            answer = await self.caption(
                CaptionIn(prompt=body.prompt, style=style, max_tokens=body.max_tokens)
            )
            tags = " ".join(f"#{t.lstrip('#')}" for t in (profile or {}).get("hashtags", []))
            text = f"{answer['caption']} {tags}".strip()
            caption_id = uuid.uuid4().hex
            await self.db.execute(
                "INSERT INTO captions (id, user_id, prompt, caption, provider, created_at)"
                " VALUES (:id, :user_id, :prompt, :caption, :provider, :created_at)",
                {
                    "id": caption_id,
                    "user_id": user_id,
                    "prompt": body.prompt,
                    "caption": text,
                    "provider": answer["provider"],
                    "created_at": time.time(),
                },
            )
        return {"id": caption_id, "caption": text, "profile": profile, "generation": answer}

    # -- batches -----------------------------------------------------------------

    async def run_batch(self, body: BatchIn, ctx: TaskContext) -> dict[str, Any]:
        """Every item, ``max_concurrent`` at a time; an item's error is its own."""
        total = len(body.items)
        done = 0
        ctx.progress(0, total)

        async def one(item: CaptionIn) -> dict[str, Any]:
            nonlocal done
            try:
                return {"ok": True, **await self.caption(item)}
            except IogateError as exc:
                return {"ok": False, "problem": problem_for(exc)[1]}
            finally:
                done += 1
                ctx.progress(done, total)

        limit = body.max_concurrent or self.settings.batch_max_concurrent
        items = await map_concurrent(one, body.items, max_concurrent=limit)
        failed = sum(1 for i in items if not i["ok"])
        return {"items": items, "succeeded": total - failed, "failed": failed}

    def stats(self) -> dict[str, Any]:
        """Per resource: calls, errors, p99 and breaker state; insights; cache."""
        snapshot = self.gateway.metrics.stats()
        resources: dict[str, Any] = {}
        for r in snapshot.resources:
            breaker = r.policies.circuit_breaker if r.policies is not None else None
            resources[r.resource] = {
                "calls": r.calls,
                "errors": r.errors,
                "mean_ms": round(r.mean_ms, 3),
                "p99_ms": {o.operation: o.latency.p99_ms for o in r.operations},
                "circuit_breaker": breaker.state.value if breaker is not None else None,
            }
        return {
            "resources": resources,
            "failovers": self.failovers,
            "insights": [asdict(i) for i in snapshot.insights],
            "slow_operations": [asdict(s) for s in snapshot.slow],
            "cache": self.gateway.cache.stats().as_json(),
        }


def _answer(provider: str, completion: Completion) -> dict[str, Any]:
    usage = completion.usage
    return {
        "caption": completion.text.strip(),
        "provider": provider,
        "finish_reason": completion.finish_reason,
        "tokens": usage.total_tokens if usage is not None else None,
    }


async def service(request: Request) -> CaptionService:
    """The app's :class:`CaptionService` (a FastAPI dependency; ``async``: a
    plain ``def`` dependency would run in a worker thread)."""
    found: CaptionService = request.app.state.captions
    return found


Service = Annotated[CaptionService, Depends(service)]


def create_app(
    config: IogateConfig | Mapping[str, Any],
    settings: CaptionSettings | None = None,
    *,
    freeze_heap: bool = False,
) -> FastAPI:
    """The captions app over the gateway of ``config`` (needs the upstreams
    named by ``settings`` with a ``provider``, and its SQL database);
    ``freeze_heap`` as :func:`iogate.fastapi.open_gateway` (on in a deployment,
    off in tests that start many apps)."""
    settings = settings or CaptionSettings()
    source = config if isinstance(config, IogateConfig) else dict(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with iogate_fastapi.open_gateway(app, source) as gateway:
            db = gateway.database(settings.database)
            for statement in SCHEMA:
                await db.execute(statement)
            app.state.captions = CaptionService(gateway, settings)
            if freeze_heap:  # after start-up: see iogate.fastapi.open_gateway
                gc.collect()
                gc.freeze()
            yield

    app = FastAPI(title="captions", lifespan=lifespan)
    iogate_fastapi.install_problem_handlers(app)

    @app.post("/captions")
    async def caption(body: CaptionIn, user: UserId, svc: Service) -> dict[str, Any]:
        """A caption for ``prompt`` in ``style`` (cached, rate-limited, with failover)."""
        await svc.admit(user)
        return await svc.caption(body)

    @app.post("/captions/stream")
    async def caption_stream(body: CaptionIn, user: UserId, svc: Service) -> StreamingResponse:
        """The caption as server-sent events: ``data: {"text": ...}`` per piece,
        then ``event: done`` with the finish reason and token usage."""
        await svc.admit(user)
        provider = svc.provider(body.provider or settings.primary)
        request = GenerateRequest(
            prompt=body.prompt,
            system=STYLE_PROMPTS[body.style] + _ONLY_CAPTION,
            max_tokens=body.max_tokens,
        )

        async def events() -> AsyncIterator[bytes]:
            finish: str | None = None
            tokens: int | None = None
            try:
                async for chunk in provider.stream(request):
                    if chunk.text:
                        yield b"data: " + orjson.dumps({"text": chunk.text}) + b"\n\n"
                    finish = chunk.finish_reason or finish
                    if chunk.usage is not None:
                        tokens = chunk.usage.total_tokens
            except IogateError as exc:  # the answer has begun: the error is an event
                yield b"event: error\ndata: " + orjson.dumps(problem_for(exc)[1]) + b"\n\n"
                return
            done = {"finish_reason": finish, "tokens": tokens}
            yield b"event: done\ndata: " + orjson.dumps(done) + b"\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/captions/batch", status_code=202)
    async def batch(body: BatchIn, user: UserId, svc: Service, request: Request) -> dict[str, Any]:
        """Queue the items as one background task; poll ``GET /captions/batch/{id}``."""
        await svc.admit(user)
        tasks = await iogate_fastapi.tasks(request)
        handle = await tasks.submit(lambda ctx: svc.run_batch(body, ctx), name=f"captions:{user}")
        return {"id": handle.id, "status": "queued", "items": len(body.items)}

    @app.get("/captions/batch/{task_id}")
    async def batch_status(task_id: str, request: Request) -> dict[str, Any]:
        """The batch's status, progress and (once finished) results."""
        record = await (await iogate_fastapi.tasks(request)).get(task_id)
        return record.to_json()

    @app.post("/save-profile")
    async def save_profile(body: ProfileIn, svc: Service) -> dict[str, Any]:
        """Create or update a profile; the next read sees it."""
        return await svc.save_profile(body)

    @app.get("/user-profile/{user_id}")
    async def user_profile(user_id: str, svc: Service) -> dict[str, Any]:
        """A profile (read through the cache)."""
        profile = await svc.profile(user_id)
        if profile is None:
            raise HTTPException(404, f"no profile for {user_id!r}")
        return profile

    @app.post("/process-request")
    async def process_request(body: ProcessIn, user: UserId, svc: Service) -> dict[str, Any]:
        """Profile, caption and storage in one dataflow under one deadline."""
        await svc.admit(user)
        return await svc.process(user, body)

    @app.get("/stats")
    async def stats(svc: Service) -> dict[str, Any]:
        """The library's figures: per-resource calls and latency, breaker
        states, failovers, insights, slow operations and the cache."""
        return svc.stats()

    # last: routes match in order, so the service's own routes are found first
    app.include_router(
        iogate_fastapi.gateway_router(auth=iogate_fastapi.api_key_principal), prefix="/gateway"
    )
    return app
