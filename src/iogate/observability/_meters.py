"""Counters an upstream keeps for the metrics: status classes and LLM token usage.

:class:`UpstreamMeter` is updated by :class:`~iogate.http.upstream.Upstream`
(one list increment per attempt that got an answer) and by the provider
adapters (tokens per model, from the answer's ``usage``); the recorder reads
it at snapshot time. Plain integers, no lock: one event loop.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["STATUS_CLASSES", "TokenUsage", "UpstreamMeter"]

STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx", "other")
"""Labels of :attr:`UpstreamMeter.statuses`, by index."""


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Tokens used with one model: ``input`` (prompt), ``output`` (completion), ``calls``."""

    model: str
    input: int
    output: int
    calls: int


class UpstreamMeter:
    """Answers by status class and tokens by model, since start."""

    __slots__ = ("_tokens", "statuses")

    def __init__(self) -> None:
        self.statuses = [0, 0, 0, 0, 0, 0]
        self._tokens: dict[str, list[int]] = {}

    def status(self, code: int) -> None:
        """Count one answer with HTTP status ``code``."""
        i = code // 100 - 1
        self.statuses[i if 0 <= i < 5 else 5] += 1

    def tokens(
        self, model: str | None, input_tokens: int | None, output_tokens: int | None
    ) -> None:
        """Count one generation's token usage (``None``: the provider did not say)."""
        row = self._tokens.get(model or "unknown")
        if row is None:
            row = self._tokens[model or "unknown"] = [0, 0, 0]
        row[0] += input_tokens or 0
        row[1] += output_tokens or 0
        row[2] += 1

    def status_counts(self) -> dict[str, int]:
        """Answers by class label (``"2xx"``...), classes never seen included as 0."""
        return dict(zip(STATUS_CLASSES, self.statuses, strict=True))

    def token_usage(self) -> tuple[TokenUsage, ...]:
        """Usage per model, sorted by model name."""
        return tuple(TokenUsage(m, *row) for m, row in sorted(self._tokens.items()))
