"""Video jobs on iogate and FastAPI: the HeyGen flow, tracked in PostgreSQL.

- ``POST /videos`` stores the job (``queued``) and runs it as a background
  task (:mod:`iogate.tasks`): create the render with an idempotency key
  (``video-<id>``: a retried or resumed create makes no second video), poll
  its status with exponential backoff under a deadline, download the file
  through :meth:`Upstream.download` into the gateway's :class:`FileStore`,
  and record every state transition in ``video_events``.
- ``GET /videos/{id}`` — the job and its transitions; ``GET /videos/{id}/events``
  — the same as server-sent events, live until the job ends;
  ``GET /videos/{id}/file`` — the rendered file.
- On start, every job not finished (the app stopped mid-job) is resumed from
  its last stored state.
- ``POST /assets`` — a file uploaded to the provider through
  :meth:`Upstream.upload` (streamed from disk; retried whole with its
  idempotency key when the connection drops).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final

import orjson
from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from iogate import (
    Gateway,
    IogateConfig,
    IogateError,
    OperationTimeout,
    SQLDatabase,
    UpstreamError,
    deadline_scope,
)
from iogate import fastapi as iogate_fastapi
from iogate.files import FileStore
from iogate.tasks import TaskContext
from iogate.wire.problems import problem_for

__all__ = ["VideoSettings", "create_app"]

FINAL: Final = frozenset({"completed", "failed"})

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS videos (id TEXT PRIMARY KEY, user_id TEXT NOT NULL,"
    " script TEXT NOT NULL, avatar_id TEXT NOT NULL, status TEXT NOT NULL,"
    " provider_video_id TEXT, file_path TEXT, size_bytes BIGINT, sha256 TEXT, error TEXT,"
    " created_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL)",
    "CREATE TABLE IF NOT EXISTS video_events (video_id TEXT NOT NULL, seq INTEGER NOT NULL,"
    " status TEXT NOT NULL, detail TEXT, at DOUBLE PRECISION NOT NULL,"
    " PRIMARY KEY (video_id, seq))",
)


@dataclass(frozen=True, kw_only=True)
class VideoSettings:
    """How the service uses the gateway.

    Attributes:
        database: the SQL database of jobs and their events.
        upstream: the video API (``X-Api-Key`` in its configured headers).
        poll_initial_s / poll_max_s: status polling backoff, doubling (seconds).
        render_deadline_s: longest a render may take, polls included (seconds).
        max_video_bytes: the largest rendered file accepted (bytes).
    """

    database: str = "main"
    upstream: str = "heygen"
    poll_initial_s: float = 1.0
    poll_max_s: float = 15.0
    render_deadline_s: float = 1800.0
    max_video_bytes: int = 2 * 2**30


class VideoIn(BaseModel):
    """A video to render: the avatar speaks ``script``."""

    script: str = Field(min_length=1, max_length=5000)
    avatar_id: str = Field(default="Daisy-inskirt-20220818", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    voice_id: str = Field(default="2d5b0e6cf36f460aa7fc47e3eee4ba54", max_length=64)


UserId = Annotated[str, Header(alias="X-User-Id", pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


class _Changes:
    """Wakes the event streams when any job moves (they then read the table)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout_s: float) -> None:
        event = self._event
        try:
            await asyncio.wait_for(event.wait(), timeout_s)
        except TimeoutError:
            return


class VideoService:
    """The jobs over one open Gateway."""

    def __init__(self, gateway: Gateway, settings: VideoSettings) -> None:
        if gateway.files is None or gateway.tasks is None:
            raise IogateError("the video service needs [files] and [tasks]")
        self.gateway = gateway
        self.settings = settings
        self.db: SQLDatabase = gateway.database(settings.database)
        self.api = gateway.upstream(settings.upstream)
        self.files: FileStore = gateway.files
        self.files_root = Path(gateway.config.files.base_dir if gateway.config.files else ".")
        self.changes = _Changes()

    # -- the job table -------------------------------------------------------------

    async def job(self, video_id: str) -> dict[str, Any] | None:
        """The job row as a dict, or ``None``."""
        result = await self.db.query("SELECT * FROM videos WHERE id = :id", {"id": video_id})
        if not result.rows:
            return None
        return dict(zip([c.name for c in result.columns], result.rows[0], strict=True))

    async def events(self, video_id: str, after: int = 0) -> list[dict[str, Any]]:
        """The job's transitions with ``seq`` above ``after``, in order."""
        rows = await self.db.fetch(
            "SELECT seq, status, detail, at FROM video_events"
            " WHERE video_id = :id AND seq > :after ORDER BY seq",
            {"id": video_id, "after": after},
        )
        return [
            {
                "seq": r[0],
                "status": r[1],
                "detail": orjson.loads(r[2]) if r[2] else None,
                "at": r[3],
            }
            for r in rows
        ]

    async def transition(self, video_id: str, status: str, **fields: Any) -> None:
        """Store the job's new ``status`` (and columns in ``fields``) and its event,
        in one transaction."""
        detail = fields.pop("detail", None)
        sets = ", ".join(f"{name} = :{name}" for name in ("status", "updated_at", *fields))
        now = time.time()
        async with self.db.transaction() as tx:
            await tx.execute(
                f"UPDATE videos SET {sets} WHERE id = :id",  # noqa: S608 - names are ours
                {"id": video_id, "status": status, "updated_at": now, **fields},
            )
            seq = await tx.fetch_val(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM video_events WHERE video_id = :id",
                {"id": video_id},
            )
            await tx.execute(
                "INSERT INTO video_events (video_id, seq, status, detail, at)"
                " VALUES (:id, :seq, :status, :detail, :at)",
                {
                    "id": video_id,
                    "seq": seq,
                    "status": status,
                    "detail": orjson.dumps(detail).decode() if detail is not None else None,
                    "at": now,
                },
            )
        self.changes.notify()

    async def create(self, user: str, body: VideoIn) -> str:
        """Store a new job and start it; returns its id."""
        video_id = uuid.uuid4().hex
        now = time.time()
        await self.db.execute(
            "INSERT INTO videos (id, user_id, script, avatar_id, status, created_at, updated_at)"
            " VALUES (:id, :user_id, :script, :avatar_id, 'queued', :now, :now)",
            {"id": video_id, "user_id": user, "script": body.script,
             "avatar_id": body.avatar_id, "now": now},
        )  # fmt: skip
        await self.db.execute(
            "INSERT INTO video_events (video_id, seq, status, at) VALUES (:id, 1, 'queued', :now)",
            {"id": video_id, "now": now},
        )
        await self.start(video_id, voice_id=body.voice_id)
        return video_id

    async def start(self, video_id: str, *, voice_id: str | None = None) -> None:
        """Run the job ``video_id`` as a background task."""
        assert self.gateway.tasks is not None
        await self.gateway.tasks.submit(
            lambda ctx: self.render(video_id, ctx, voice_id=voice_id), name=f"video:{video_id}"
        )

    async def resume_unfinished(self) -> int:
        """Start again every job a stopped process left unfinished; returns how many."""
        rows = await self.db.fetch(
            "SELECT id FROM videos WHERE status NOT IN ('completed', 'failed') ORDER BY created_at"
        )
        for (video_id,) in rows:
            await self.transition(video_id, "resumed")
            await self.start(video_id)
        return len(rows)

    # -- the job -------------------------------------------------------------------

    async def render(
        self, video_id: str, ctx: TaskContext, *, voice_id: str | None = None
    ) -> dict[str, Any]:
        """Create → poll → download → completed (or failed), from the stored state."""
        job = await self.job(video_id)
        if job is None or job["status"] in FINAL:
            return {"status": job["status"] if job else "missing"}
        try:
            async with deadline_scope(self.settings.render_deadline_s, operation="render"):
                provider_id = job["provider_video_id"] or await self._submit(job, voice_id)
                url = await self._poll(video_id, provider_id, ctx)
                if url is None:
                    return {"status": "failed"}
                await self.transition(video_id, "downloading")
                relative = f"videos/{video_id}.mp4"
                target = self.files_root / relative
                await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
                download = await self.api.download(
                    self._api_path(url), target, max_bytes=self.settings.max_video_bytes
                )
        except OperationTimeout:
            await self.transition(video_id, "failed", error="the render passed its deadline")
            return {"status": "failed"}
        except UpstreamError as exc:
            detail = problem_for(exc)[1]
            await self.transition(video_id, "failed", error=detail["detail"], detail=detail)
            return {"status": "failed"}
        await self.transition(
            video_id,
            "completed",
            file_path=relative,
            size_bytes=download.size_bytes,
            sha256=download.sha256,
            detail={"size_bytes": download.size_bytes, "attempts": download.attempts},
        )
        ctx.progress(100, 100)
        return {"status": "completed", "size_bytes": download.size_bytes}

    async def _submit(self, job: dict[str, Any], voice_id: str | None) -> str:
        body = {
            "video_inputs": [
                {
                    "character": {"type": "avatar", "avatar_id": job["avatar_id"]},
                    "voice": {
                        "type": "text",
                        "input_text": job["script"],
                        "voice_id": voice_id or "2d5b0e6cf36f460aa7fc47e3eee4ba54",
                    },
                }
            ],
            "dimension": {"width": 1280, "height": 720},
        }
        # The key is the job's: a retry, or a resumed job, asks for the same render.
        resp = await self.api.post(
            "/v2/video/generate", json=body, idempotency_key=f"video-{job['id']}"
        )
        resp.raise_for_status()
        provider_id = str(resp.json()["data"]["video_id"])
        await self.transition(job["id"], "submitted", provider_video_id=provider_id)
        return provider_id

    async def _poll(self, video_id: str, provider_id: str, ctx: TaskContext) -> str | None:
        """Poll until rendered (its URL) or failed (``None``), backing off."""
        delay = self.settings.poll_initial_s
        polls = 0
        last = None
        while True:
            resp = await self.api.get("/v1/video_status.get", params={"video_id": provider_id})
            resp.raise_for_status()
            data = resp.json()["data"]
            polls += 1
            status = data["status"]
            if status == "completed":
                return str(data["video_url"])
            if status == "failed":
                error = (data.get("error") or {}).get("message", "the render failed")
                await self.transition(video_id, "failed", error=error, detail=data.get("error"))
                return None
            if status != last:
                await self.transition(video_id, "processing", detail={"provider_status": status})
                last = status
            ctx.progress(min(polls, 99), 100)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.settings.poll_max_s)

    def _api_path(self, url: str) -> str:
        """``url`` relative to the upstream's base URL (downloads go only to a
        configured upstream: no new egress).

        Raises:
            UpstreamError: the URL is elsewhere (configure that host as an upstream).
        """
        base = str(self.api.base_url).rstrip("/")
        if not url.startswith(base + "/"):
            raise UpstreamError("the rendered file is not under the upstream's base URL")
        return url[len(base) :]

    # -- assets --------------------------------------------------------------------

    async def upload_asset(self, request: Request, filename: str) -> dict[str, Any]:
        """Keep the request's body in the file area, then send it to the provider."""
        relative = f"assets/{uuid.uuid4().hex}-{filename}"
        size = await self.files.write_stream(relative, request.stream())
        resp = await self.api.upload(
            "/v1/asset",
            self.files_root / relative,
            filename=filename,
            content_type=request.headers.get("content-type", "application/octet-stream"),
            idempotency_key=True,
        )
        resp.raise_for_status()
        return {"asset": resp.json()["data"], "size_bytes": size, "attempts": resp.attempts}


async def service(request: Request) -> VideoService:
    """The app's :class:`VideoService` (a FastAPI dependency; ``async``: a
    plain ``def`` dependency would run in a worker thread)."""
    found: VideoService = request.app.state.videos
    return found


Service = Annotated[VideoService, Depends(service)]


def create_app(
    config: IogateConfig | Mapping[str, Any], settings: VideoSettings | None = None
) -> FastAPI:
    """The video app over the gateway of ``config`` (needs its SQL database,
    the video upstream, ``[files]`` and ``[tasks]``)."""
    settings = settings or VideoSettings()
    source = config if isinstance(config, IogateConfig) else dict(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with iogate_fastapi.open_gateway(app, source) as gateway:
            db = gateway.database(settings.database)
            for statement in SCHEMA:
                await db.execute(statement)
            svc = VideoService(gateway, settings)
            app.state.videos = svc
            await svc.resume_unfinished()
            yield

    app = FastAPI(title="video jobs", lifespan=lifespan)
    iogate_fastapi.install_problem_handlers(app)

    @app.post("/videos", status_code=202)
    async def create_video(body: VideoIn, user: UserId, svc: Service) -> dict[str, Any]:
        """Store the job and start rendering it in the background."""
        return {"id": await svc.create(user, body), "status": "queued"}

    @app.get("/videos/{video_id}")
    async def get_video(video_id: str, svc: Service) -> dict[str, Any]:
        """The job and its transitions."""
        job = await svc.job(video_id)
        if job is None:
            raise HTTPException(404, "no such video")
        return {**job, "events": await svc.events(video_id)}

    @app.get("/videos/{video_id}/events")
    async def video_events(video_id: str, svc: Service) -> StreamingResponse:
        """Server-sent events, one per transition (``event: status``), until
        the job is completed or failed; a comment every 15 s keeps it open."""
        if await svc.job(video_id) is None:
            raise HTTPException(404, "no such video")

        async def stream() -> AsyncIterator[bytes]:
            seen = 0
            while True:
                for event in await svc.events(video_id, after=seen):
                    seen = event["seq"]
                    yield b"event: status\ndata: " + orjson.dumps(event) + b"\n\n"
                    if event["status"] in FINAL:
                        return
                await svc.changes.wait(15.0)
                yield b": keep-alive\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    @app.get("/videos/{video_id}/file")
    async def video_file(video_id: str, svc: Service) -> StreamingResponse:
        """The rendered file (404 until the job is completed)."""
        job = await svc.job(video_id)
        if job is None or job["status"] != "completed":
            raise HTTPException(404, "no rendered file for this video")
        return StreamingResponse(svc.files.iter_bytes(job["file_path"]), media_type="video/mp4")

    @app.post("/assets")
    async def upload_asset(
        request: Request, svc: Service, filename: str = "asset.bin"
    ) -> dict[str, Any]:
        """Send the request body (an image, audio...) to the provider as an asset."""
        name = os.path.basename(filename)
        if not name or name.startswith("."):
            raise HTTPException(400, "a plain file name is required")
        return await svc.upload_asset(request, name)

    return app
