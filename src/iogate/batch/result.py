"""What a batch returns: one :class:`StepResult` per step, in input order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["BatchResult", "StepResult"]


@dataclass(frozen=True, slots=True)
class StepResult:
    """The outcome of one step.

    Attributes:
        ok: the step succeeded.
        value: its result (JSON-safe) when ``ok``: a database step's
            ``{"columns", "column_types", "rows", "row_count", "last_insert_id"}``
            (plus ``"truncated": true`` when rows were cut at the caller's
            limit); an upstream step's ``{"status", "headers", "body",
            "body_encoding"}``; a cache step's ``{"hit", "value"}`` (get),
            ``{"stored": true}`` (set) or ``{"deleted": bool}`` (delete).
        problem: an RFC 9457 problem body when not ``ok`` (the same mapping
            as the gateway's responses), with ``step`` set to the index.
        duration_ms: wall time of the step, milliseconds (0 if it never ran).
        skipped: its condition was false (``ok`` is false, the problem says so).
        status: the upstream's HTTP status, when an upstream answered.
    """

    ok: bool
    value: Any = None
    problem: dict[str, Any] | None = None
    duration_ms: float = 0.0
    skipped: bool = False
    status: int | None = None

    @property
    def failed(self) -> bool:
        """Not ok, and not because its condition skipped it."""
        return not self.ok and not self.skipped

    def to_json(self) -> dict[str, Any]:
        """``{"ok", "value"|"problem", "duration_ms"}`` (and ``"skipped": true``)."""
        body: dict[str, Any] = {"ok": self.ok}
        if self.ok:
            body["value"] = self.value
        else:
            body["problem"] = self.problem
        if self.skipped:
            body["skipped"] = True
        body["duration_ms"] = round(self.duration_ms, 3)
        return body


@dataclass(frozen=True, slots=True)
class BatchResult:
    """Every step's result in input order, and the batch's wall time (ms)."""

    results: tuple[StepResult, ...]
    duration_ms: float

    @property
    def ok(self) -> bool:
        """No step failed (skipped steps do not count as failures)."""
        return not any(r.failed for r in self.results)

    def to_json(self) -> dict[str, Any]:
        """``{"results": [...], "duration_ms": ...}``: the ``POST /v1/batch`` body."""
        return {
            "results": [r.to_json() for r in self.results],
            "duration_ms": round(self.duration_ms, 3),
        }
