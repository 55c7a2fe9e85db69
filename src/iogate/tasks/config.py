"""``[tasks]`` of ``iogate.toml``: the gateway's background tasks."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["TasksConfig"]


class TasksConfig(BaseModel):
    """``[tasks]``: where task status and results are stored, and how many run.

    Attributes:
        enabled: serve ``/v1/tasks`` (default true when the database exists).
        database: the SQL database (SQLite or PostgreSQL) holding the table
            ``iogate_tasks``; absent: ``main`` if it is an SQL database, else
            tasks are off (``/v1/tasks`` answers 404).
        max_concurrency: tasks running at once (1..1024); the rest wait queued.
        max_queued: tasks waiting or running before a submit is refused (503).
        drain_timeout: seconds a graceful shutdown waits for running tasks
            before cancelling them and marking them ``interrupted``.
        max_result_bytes: the largest stored result (JSON bytes); a larger
            result fails the task with the problem ``task-result-too-large``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    database: str | None = None
    max_concurrency: int = Field(default=4, ge=1, le=1024)
    max_queued: int = Field(default=1000, ge=1, le=1_000_000)
    drain_timeout: float = Field(default=10.0, ge=0)
    max_result_bytes: int = Field(default=16 * 2**20, ge=1024)
