"""TaskStore: task rows in an SQL database through iogate's own API.

One table (``iogate_tasks`` by default), portable SQL that SQLite and
PostgreSQL both run (``:name`` parameters, ``DOUBLE PRECISION`` timestamps,
JSON kept as text). Every call goes through the database's resilience
pipeline; writes are never retried (not idempotent).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from iogate.databases.base import Row, SQLDatabase
from iogate.tasks.models import TaskRecord, TaskState

__all__ = ["TaskStore"]

_COLUMNS = (
    "id, kind, name, state, idempotent, attempts, created_at, started_at, finished_at, "
    "progress_done, progress_total, result, problem, definition"
)


class TaskStore:
    """Reads and writes task rows (the table name is checked to be a plain
    identifier, the only text formatted into the SQL; values are bound).

    Args:
        database: an open (or to-be-opened) SQLite or PostgreSQL database.
        table: the table name (letters, digits, underscores).
    """

    def __init__(self, database: SQLDatabase, *, table: str = "iogate_tasks") -> None:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", table):
            raise ValueError(f"table must be a plain SQL identifier, got {table!r}")
        self.database = database
        self.table = table

    async def create_schema(self) -> None:
        """Create the table and its index if missing."""
        t = self.table
        await self.database.execute(
            f"CREATE TABLE IF NOT EXISTS {t} ("
            "id TEXT PRIMARY KEY, kind TEXT NOT NULL, name TEXT, state TEXT NOT NULL, "
            "idempotent INTEGER NOT NULL, attempts INTEGER NOT NULL, "
            "created_at DOUBLE PRECISION NOT NULL, started_at DOUBLE PRECISION, "
            "finished_at DOUBLE PRECISION, progress_done INTEGER NOT NULL, "
            "progress_total INTEGER, result TEXT, problem TEXT, definition TEXT)"
        )
        await self.database.execute(
            f"CREATE INDEX IF NOT EXISTS {t}_state_created ON {t} (state, created_at)"
        )

    async def insert(self, record: TaskRecord) -> None:
        """Store a new task."""
        await self.database.execute(
            f"INSERT INTO {self.table} ({_COLUMNS}) VALUES (:id, :kind, :name, :state, "  # noqa: S608
            ":idempotent, :attempts, :created_at, :started_at, :finished_at, :done, :total, "
            ":result, :problem, :definition)",
            _params(record),
        )

    async def update(self, record: TaskRecord) -> None:
        """Store a task's new state, progress, result or problem."""
        await self.database.execute(
            f"UPDATE {self.table} SET state = :state, attempts = :attempts, "  # noqa: S608
            "started_at = :started_at, finished_at = :finished_at, progress_done = :done, "
            "progress_total = :total, result = :result, problem = :problem WHERE id = :id",
            _params(record),
        )

    async def get(self, task_id: str) -> TaskRecord | None:
        """The task ``task_id``, or ``None``."""
        row = await self.database.fetch_one(
            f"SELECT {_COLUMNS} FROM {self.table} WHERE id = :id",  # noqa: S608
            {"id": task_id},
        )
        return None if row is None else _record(row)

    async def list(
        self, *, states: Sequence[TaskState] = (), kind: str | None = None, limit: int = 100
    ) -> list[TaskRecord]:
        """Tasks, newest first, filtered by state(s) and kind; at most ``limit`` rows."""
        where: list[str] = []
        params: dict[str, Any] = {"limit": limit}
        if states:
            names = []
            for i, state in enumerate(states):
                params[f"s{i}"] = state.value
                names.append(f":s{i}")
            where.append(f"state IN ({', '.join(names)})")
        if kind is not None:
            where.append("kind = :kind")
            params["kind"] = kind
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = await self.database.fetch(
            f"SELECT {_COLUMNS} FROM {self.table}{clause} "  # noqa: S608
            "ORDER BY created_at DESC, id LIMIT :limit",
            params,
        )
        return [_record(row) for row in rows]


def _params(r: TaskRecord) -> dict[str, Any]:
    return {
        "id": r.id,
        "kind": r.kind,
        "name": r.name,
        "state": r.state.value,
        "idempotent": int(r.idempotent),
        "attempts": r.attempts,
        "created_at": r.created_at,
        "started_at": r.started_at,
        "finished_at": r.finished_at,
        "done": r.done,
        "total": r.total,
        "result": _dumps(r.result),
        "problem": _dumps(r.problem),
        "definition": _dumps(r.definition),
    }


def _dumps(value: Any) -> str | None:
    """JSON text of a stored value. The standard library's encoder, not orjson:
    a caller's integers may exceed 64 bits (orjson refuses them, and would read
    them back as floats)."""
    return None if value is None else json.dumps(value, separators=(",", ":"), default=repr)


def _json(text: Any) -> Any:
    return None if text is None else json.loads(text)


def _record(row: Row) -> TaskRecord:
    return TaskRecord(
        id=row[0],
        kind=row[1],
        name=row[2],
        state=TaskState(row[3]),
        idempotent=bool(row[4]),
        attempts=int(row[5]),
        created_at=float(row[6]),
        started_at=None if row[7] is None else float(row[7]),
        finished_at=None if row[8] is None else float(row[8]),
        done=int(row[9]),
        total=None if row[10] is None else int(row[10]),
        result=_json(row[11]),
        problem=_json(row[12]),
        definition=_json(row[13]),
    )
