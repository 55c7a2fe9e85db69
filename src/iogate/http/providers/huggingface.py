"""Hugging Face text generation: the serverless Inference API and TGI servers.

- ``mode="tgi"`` (text-generation-inference): ``POST /generate`` →
  ``{"generated_text", "details": {"finish_reason", "generated_tokens"}}``;
  ``POST /generate_stream`` → SSE ``data:`` lines of
  ``{"index", "token": {"id", "text", "logprob", "special"}, "generated_text",
  "details"}``, the last with ``generated_text`` and ``details``; an error as
  ``data: {"error", "error_type"}``.
- ``mode="inference_api"``: ``POST /models/{model}`` → a *list*
  ``[{"generated_text": ...}]`` (``return_full_text: false`` asked); with
  ``stream: true`` the TGI event format.
- Body: ``{"inputs", "parameters": {"max_new_tokens", "temperature",
  "details": true}}``. TGI refuses ``temperature: 0``: greedy decoding is
  asked with ``do_sample: false`` instead.
- ``503`` with ``{"error": "... is currently loading", "estimated_time": 20.0}``
  means the model is loading: :meth:`HuggingFaceProvider.retry_hint` turns
  ``estimated_time`` into the retry delay (capped as any server delay).

Generation calls are marked idempotent (retried on 5xx / 429 / connection
errors without a key): they change no server state.

Sources: TGI OpenAPI (``/generate``, ``/generate_stream``), Hugging Face
Inference API docs ("Model loading and latency").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import orjson

from iogate.http.providers.base import (
    Completion,
    CompletionChunk,
    GenerateRequest,
    Provider,
    Usage,
)
from iogate.http.sse import ServerSentEvent

if TYPE_CHECKING:
    from iogate.http.response import Response
    from iogate.http.upstream import Upstream

__all__ = ["HuggingFaceProvider"]


class HuggingFaceProvider(Provider):
    """Text generation on TGI (``mode="tgi"``) or the Inference API."""

    kind = "huggingface"
    idempotent = True
    """Text generation changes no server state and these APIs take no idempotency
    key; a 503 "loading" answer means the model never ran, so a retry is safe."""

    def __init__(
        self,
        upstream: Upstream,
        *,
        model: str | None = None,
        mode: Literal["tgi", "inference_api"] = "tgi",
    ) -> None:
        super().__init__(upstream, model=model)
        self.mode = mode

    def build(self, req: GenerateRequest, *, stream: bool) -> tuple[str, dict[str, Any]]:
        """See the module docstring."""
        params: dict[str, Any] = {"max_new_tokens": req.max_tokens, "details": True}
        if req.temperature is not None:
            if req.temperature > 0:
                params["temperature"] = req.temperature
            else:
                params["do_sample"] = False
        prompt = req.as_prompt() if not req.system else f"{req.system}\n{req.as_prompt()}"
        body: dict[str, Any] = {"inputs": prompt, "parameters": params}
        if self.mode == "tgi":
            return ("/generate_stream" if stream else "/generate"), body
        params["return_full_text"] = False
        if stream:
            body["stream"] = True
        return f"/models/{self._model(req)}", body

    def parse(self, body: Any) -> Completion:
        """A TGI object or an Inference API list of one."""
        item = body[0] if isinstance(body, list) and body else body
        details = item.get("details") or {}
        tokens = details.get("generated_tokens")
        usage = Usage(None, tokens) if tokens is not None else None
        return Completion(
            item.get("generated_text") or "", usage, details.get("finish_reason"), body
        )

    def parse_event(self, event: ServerSentEvent, state: dict[str, Any]) -> CompletionChunk | None:
        """One token event; the last carries ``details``."""
        data = event.json()
        if "error" in data:
            raise self._error(str(data.get("error_type") or "error"), str(data["error"]))
        token = data.get("token") or {}
        text = "" if token.get("special") else token.get("text", "")
        details = data.get("details")
        if details:
            tokens = details.get("generated_tokens")
            usage = Usage(None, tokens) if tokens is not None else None
            return CompletionChunk(text, details.get("finish_reason"), usage)
        return CompletionChunk(text)

    @staticmethod
    def retry_hint(response: Response) -> float | None:
        """``estimated_time`` (seconds) of a 503 "model loading" answer."""
        if response.status != 503:
            return None
        try:
            body = orjson.loads(response.body)
        except orjson.JSONDecodeError:
            return None
        value = body.get("estimated_time") if isinstance(body, dict) else None
        return float(value) if isinstance(value, int | float) and value >= 0 else None
