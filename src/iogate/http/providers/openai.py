"""OpenAI-compatible chat completions (OpenAI, vLLM, llama.cpp server, Ollama's /v1...).

Request: ``POST {base}/chat/completions`` with ``model``, ``messages``,
``max_tokens``, ``temperature`` and, for streams, ``stream: true`` plus
``stream_options: {"include_usage": true}`` (the last chunk then carries
``usage`` and no choices). Stream chunks are SSE ``data:`` lines of
``chat.completion.chunk`` objects (``choices[0].delta.content``,
``choices[0].finish_reason``), ending with ``data: [DONE]``. An error inside
the stream arrives as ``data: {"error": {"type", "message"}}``.
Source: OpenAI API reference, "Chat Completions" and "Streaming".
Auth: ``Authorization: Bearer`` (configure :class:`~iogate.http.auth.BearerAuth`).
"""

from __future__ import annotations

from typing import Any

from iogate.http.providers.base import (
    Completion,
    CompletionChunk,
    GenerateRequest,
    Provider,
    Usage,
)
from iogate.http.sse import ServerSentEvent

__all__ = ["OpenAIProvider"]


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    return Usage(raw.get("prompt_tokens"), raw.get("completion_tokens"))


class OpenAIProvider(Provider):
    """Chat completions over an OpenAI-compatible API (base URL ending in ``/v1``)."""

    kind = "openai"

    def build(self, req: GenerateRequest, *, stream: bool) -> tuple[str, dict[str, Any]]:
        """See the module docstring."""
        messages = req.chat()
        if req.system:
            messages.insert(0, {"role": "system", "content": req.system})
        body: dict[str, Any] = {
            "model": self._model(req),
            "messages": messages,
            "max_tokens": req.max_tokens,
        }
        if req.temperature is not None:
            body["temperature"] = req.temperature
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return "/chat/completions", body

    def parse(self, body: Any) -> Completion:
        """``choices[0].message.content``, ``finish_reason`` and ``usage``."""
        choice = (body.get("choices") or [{}])[0]
        text = (choice.get("message") or {}).get("content") or ""
        return Completion(text, _usage(body.get("usage")), choice.get("finish_reason"), body)

    def parse_event(self, event: ServerSentEvent, state: dict[str, Any]) -> CompletionChunk | None:
        """One ``chat.completion.chunk``; ``[DONE]`` ends the stream (no chunk)."""
        if event.data == "[DONE]":
            return None
        data = event.json()
        if isinstance(data, dict) and "error" in data:
            err = data["error"] or {}
            raise self._error(str(err.get("type") or "error"), str(err.get("message") or ""))
        choices = data.get("choices") or []
        usage = _usage(data.get("usage"))
        if not choices:
            return CompletionChunk(usage=usage) if usage is not None else None
        choice = choices[0]
        text = (choice.get("delta") or {}).get("content") or ""
        return CompletionChunk(text, choice.get("finish_reason"), usage)
