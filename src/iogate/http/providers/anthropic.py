"""Anthropic Messages API.

Request: ``POST /v1/messages`` (base URL ``https://api.anthropic.com``) with
headers ``x-api-key`` (configure :class:`~iogate.http.auth.ApiKeyHeader`) and
``anthropic-version: 2023-06-01``; body ``model``, ``max_tokens`` (required),
``messages``, optional ``system`` and ``temperature``, ``stream``.
Answer: ``content`` blocks (``type: "text"``), ``stop_reason``,
``usage.input_tokens`` / ``usage.output_tokens``.

Streams use named SSE events: ``message_start`` (``message.usage.input_tokens``),
``content_block_start``, ``content_block_delta`` (``delta.type: "text_delta"``,
``delta.text``), ``content_block_stop``, ``message_delta`` (``delta.stop_reason``,
``usage.output_tokens``), ``message_stop``, ``ping``, and ``error``
(``error.type``, e.g. ``overloaded_error``) — which may arrive after a 200.
A 529 Overloaded status is retried as any 5xx. Source: Anthropic API
reference, "Messages" and "Streaming Messages".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from iogate.http.providers.base import (
    Completion,
    CompletionChunk,
    GenerateRequest,
    Provider,
    Usage,
)
from iogate.http.sse import ServerSentEvent

if TYPE_CHECKING:
    from iogate.http.upstream import Upstream

__all__ = ["ANTHROPIC_VERSION", "AnthropicProvider"]

ANTHROPIC_VERSION = "2023-06-01"


class AnthropicProvider(Provider):
    """The Messages API; ``version`` goes in ``anthropic-version``."""

    kind = "anthropic"

    def __init__(
        self, upstream: Upstream, *, model: str | None = None, version: str = ANTHROPIC_VERSION
    ) -> None:
        super().__init__(upstream, model=model)
        self.version = version

    def headers(self) -> dict[str, str]:
        """``anthropic-version``."""
        return {"anthropic-version": self.version}

    def build(self, req: GenerateRequest, *, stream: bool) -> tuple[str, dict[str, Any]]:
        """See the module docstring (system messages move to ``system``)."""
        messages = [m for m in req.chat() if m["role"] != "system"]
        system = req.system or "\n".join(m["content"] for m in req.chat() if m["role"] == "system")
        body: dict[str, Any] = {
            "model": self._model(req),
            "max_tokens": req.max_tokens,
            "messages": messages,
        }
        if system:
            body["system"] = system
        if req.temperature is not None:
            body["temperature"] = req.temperature
        if stream:
            body["stream"] = True
        return "/v1/messages", body

    def parse(self, body: Any) -> Completion:
        """Text blocks joined, ``stop_reason``, ``usage``."""
        text = "".join(
            b.get("text", "") for b in body.get("content", []) if b.get("type") == "text"
        )
        raw = body.get("usage") or {}
        usage = Usage(raw.get("input_tokens"), raw.get("output_tokens")) if raw else None
        return Completion(text, usage, body.get("stop_reason"), body)

    def parse_event(self, event: ServerSentEvent, state: dict[str, Any]) -> CompletionChunk | None:
        """See the module docstring for the event names."""
        name = event.event
        if name in ("ping", "content_block_start", "content_block_stop", "message_stop"):
            return None
        data = event.json()
        if name == "error":
            err = data.get("error") or {}
            raise self._error(str(err.get("type") or "error"), str(err.get("message") or ""))
        if name == "message_start":
            usage = ((data.get("message") or {}).get("usage")) or {}
            state["input_tokens"] = usage.get("input_tokens")
            return None
        if name == "content_block_delta":
            delta = data.get("delta") or {}
            if delta.get("type") == "text_delta":
                return CompletionChunk(delta.get("text", ""))
            return None
        if name == "message_delta":
            out = (data.get("usage") or {}).get("output_tokens")
            stop = (data.get("delta") or {}).get("stop_reason")
            return CompletionChunk("", stop, Usage(state.get("input_tokens"), out))
        return None
