"""``[tasks]`` of ``iogate.toml``: the gateway's background tasks."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["TasksConfig"]


class TasksConfig(BaseModel):
    """``[tasks]``: where task status and results are stored, and how many run.

    Attributes:
        enabled: serve ``/v1/tasks`` (default true when the database exists).
        backend: ``embedded`` (default): tasks run in the process that took
            them, stored in an SQL table (one process per table). ``saq``: tasks
            run on the SAQ queue in Redis, shared by every gateway process and
            ``iogate worker`` (the ``cluster`` extra; README "Deployment").
        database: embedded: the SQL database (SQLite or PostgreSQL) holding the
            table ``iogate_tasks``; absent: ``main`` if it is an SQL database,
            else tasks are off (``/v1/tasks`` answers 404). ``saq``: a Redis
            database of ``[databases]`` whose URL the queue reuses.
        url: ``saq``: the Redis URL of the queue (``redis://``, ``rediss://``,
            ``unix://``); absent: the URL of ``database``, else ``[cache] redis_url``.
        queue: ``saq``: the queue's name (its Redis keys start ``saq:<queue>:``).
        consume: ``saq``: this gateway process also runs tasks (``false``: it only
            submits, watches and cancels; ``iogate worker`` runs them).
        max_concurrency: tasks running at once in one process (1..1024); the
            rest wait queued.
        max_queued: tasks waiting or running before a submit is refused (503);
            ``saq``: counted over the whole queue.
        drain_timeout: seconds a graceful shutdown waits for running tasks
            before cancelling them (embedded: marked ``interrupted``; ``saq``:
            handed back to the queue, see README "Deployment").
        max_result_bytes: the largest stored result (JSON bytes); a larger
            result fails the task with the problem ``task-result-too-large``.
        max_attempts: ``saq``: how many times an ``idempotent`` task is started
            at most when the processes running it die (2..100).
        heartbeat_timeout_s: ``saq``: a running task whose process has not
            touched it for this long (whole seconds) is taken for dead; its
            process touches it every quarter of it.
        sweep_interval_s: ``saq``: how often (whole seconds) the queue is swept
            for dead tasks, by one process of the deployment at a time.
        retention_s: ``saq``: how long a finished task's record (status, result)
            is kept in Redis, whole seconds (0: forever).
        redis_timeout_s: ``saq``: seconds one queue operation of a request
            (submit, get, list, cancel) may take before it fails with 503.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    backend: Literal["embedded", "saq"] = "embedded"
    database: str | None = None
    url: str | None = None
    queue: str = Field(default="iogate", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    consume: bool = True
    max_concurrency: int = Field(default=4, ge=1, le=1024)
    max_queued: int = Field(default=1000, ge=1, le=1_000_000)
    drain_timeout: float = Field(default=10.0, ge=0)
    max_result_bytes: int = Field(default=16 * 2**20, ge=1024)
    max_attempts: int = Field(default=3, ge=2, le=100)
    heartbeat_timeout_s: int = Field(default=10, ge=1, le=3600)
    sweep_interval_s: int = Field(default=5, ge=1, le=3600)
    retention_s: int = Field(default=7 * 86400, ge=0)
    redis_timeout_s: float = Field(default=5.0, gt=0)

    @field_validator("url")
    @classmethod
    def _redis_scheme(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("url must start with redis://, rediss:// or unix://")
        return url
