"""examples/video_jobs over HTTP, on real PostgreSQL and the bundled fake
video API on loopback: the whole render, SSE progress, a restart mid-job,
a failed render, and an upload whose connection drops."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest

from examples.video_jobs.app import VideoSettings, create_app
from examples.video_jobs.config import video_config
from examples.video_jobs.fake_heygen import FakeHeyGen
from tests.servers import PostgresServer, serve_asgi

pytestmark = pytest.mark.postgres

FAST = VideoSettings(poll_initial_s=0.01, poll_max_s=0.05, render_deadline_s=5.0)


@dataclass
class Videos:
    base: str
    http: aiohttp.ClientSession

    async def create(self, script: str = "Hello from iogate") -> str:
        async with self.http.post(
            self.base + "/videos", json={"script": script}, headers={"X-User-Id": "ada"}
        ) as r:
            assert r.status == 202
            video_id: str = (await r.json())["id"]
            return video_id

    async def job(self, video_id: str) -> dict[str, Any]:
        async with self.http.get(f"{self.base}/videos/{video_id}") as r:
            assert r.status == 200
            job: dict[str, Any] = await r.json()
            return job

    async def until(self, video_id: str, *statuses: str) -> dict[str, Any]:
        for _ in range(300):  # bounded poll of the job's state
            job = await self.job(video_id)
            if job["status"] in statuses:
                return job
            await asyncio.sleep(0.01)
        raise AssertionError(f"{video_id} stayed {job['status']}")


@pytest.fixture
async def dsn(pg: PostgresServer) -> AsyncIterator[str]:
    schema = f"v_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg.dsn)
    await admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{pg.dsn}?search_path={schema}"
    finally:
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()


@pytest.fixture
async def heygen() -> AsyncIterator[FakeHeyGen]:
    fake = FakeHeyGen(polls_to_render=3, video_bytes=300_000)
    async with fake.serve():
        yield fake


@asynccontextmanager
async def running(dsn: str, heygen: FakeHeyGen, files: Path) -> AsyncIterator[Videos]:
    config = video_config(database_url=dsn, heygen_url=heygen.base_url, files_dir=str(files))
    async with serve_asgi(create_app(config, FAST)) as base, aiohttp.ClientSession() as http:
        yield Videos(base, http)


async def test_a_video_is_created_polled_downloaded_and_streamed(
    dsn: str, heygen: FakeHeyGen, tmp_path: Path
) -> None:
    async with running(dsn, heygen, tmp_path / "files") as app:
        video_id = await app.create("Welcome to the show")
        statuses: list[str] = []
        async with app.http.get(f"{app.base}/videos/{video_id}/events") as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            async for line in r.content:
                if line.startswith(b"data: "):
                    statuses.append(orjson.loads(line[6:])["status"])
        assert statuses == ["queued", "submitted", "processing", "downloading", "completed"]
        job = await app.job(video_id)
        assert job["status"] == "completed"
        provider_id = job["provider_video_id"]
        expected = heygen.content(provider_id)
        assert job["size_bytes"] == len(expected)
        assert job["sha256"] == hashlib.sha256(expected).hexdigest()
        assert [e["seq"] for e in job["events"]] == [1, 2, 3, 4, 5]
        async with app.http.get(f"{app.base}/videos/{video_id}/file") as r:
            assert r.status == 200
            assert await r.read() == expected
        assert (tmp_path / "files" / "videos" / f"{video_id}.mp4").read_bytes() == expected
        assert heygen.renders[provider_id].script == "Welcome to the show"
        assert heygen.by_key == {f"video-{video_id}": provider_id}
        async with app.http.get(f"{app.base}/videos/nope") as r:
            assert r.status == 404
            assert r.headers["content-type"] == "application/problem+json"


async def test_a_restart_mid_job_resumes_the_job_without_a_second_render(
    dsn: str, heygen: FakeHeyGen, tmp_path: Path
) -> None:
    heygen.hold = True  # the render stays "pending" while the app is stopped
    async with running(dsn, heygen, tmp_path / "files") as app:
        video_id = await app.create()
        await app.until(video_id, "processing")
    # the first process is gone (its task interrupted); the job is still open
    heygen.hold = False
    async with running(dsn, heygen, tmp_path / "files") as app:
        job = await app.until(video_id, "completed", "failed")
        assert job["status"] == "completed", job
        statuses = [e["status"] for e in job["events"]]
        assert statuses[:3] == ["queued", "submitted", "processing"]
        assert "resumed" in statuses
        assert statuses[-1] == "completed"
    assert heygen.create_calls == 1  # resumed from the stored provider id
    assert len(heygen.renders) == 1


async def test_a_failed_render_is_recorded_with_the_providers_reason(
    dsn: str, heygen: FakeHeyGen, tmp_path: Path
) -> None:
    heygen.fail_next = True
    async with running(dsn, heygen, tmp_path / "files") as app:
        video_id = await app.create()
        job = await app.until(video_id, "completed", "failed")
        assert job["status"] == "failed"
        assert job["error"] == "avatar not found"
        assert job["events"][-1]["detail"] == {"code": 40119, "message": "avatar not found"}
        async with app.http.get(f"{app.base}/videos/{video_id}/file") as r:
            assert r.status == 404


async def test_an_interrupted_asset_upload_is_retried_whole_once(
    dsn: str, heygen: FakeHeyGen, tmp_path: Path
) -> None:
    heygen.reset_uploads = 1  # the first attempt's connection drops half-way
    payload = bytes(range(256)) * 4096  # 1 MiB
    async with (
        running(dsn, heygen, tmp_path / "files") as app,
        app.http.post(
            f"{app.base}/assets?filename=logo.png",
            data=payload,
            headers={"Content-Type": "image/png"},
        ) as r,
    ):
        body = await r.json()
        assert r.status == 200, body
    assert body["attempts"] == 2
    assert body["size_bytes"] == len(payload)
    assert heygen.upload_attempts == 2
    assert list(heygen.assets.values()) == [payload]  # one asset, whole
    assert body["asset"]["id"] in heygen.assets
    assert body["asset"]["name"] == "logo.png"
