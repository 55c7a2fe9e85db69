"""What every provider adapter shares: request / completion types and the call loop.

An adapter only *builds* requests and *parses* answers (JSON bodies and SSE
events); the transport — pool, retries, limits, cache — is the generic
:class:`~iogate.http.upstream.Upstream`. Token use is estimated before a call
(about four characters per token plus ``max_tokens``) for the upstream's
tokens-per-minute limit and corrected from the answer's ``usage``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from iogate.errors import InvalidInputError, UpstreamError, UpstreamHTTPError

if TYPE_CHECKING:
    from iogate.http.response import Response
    from iogate.http.sse import ServerSentEvent
    from iogate.http.upstream import Upstream

__all__ = [
    "Completion",
    "CompletionChunk",
    "GenerateRequest",
    "Provider",
    "ProviderStreamError",
    "Usage",
]


class ProviderStreamError(UpstreamError):
    """The provider reported an error inside a stream (``kind``: its error type)."""

    def __init__(self, message: str, *, kind: str, resource: str | None = None) -> None:
        super().__init__(message, resource=resource, operation="stream")
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens a call used (``None`` where the provider does not say)."""

    input_tokens: int | None = None
    output_tokens: int | None = None

    @property
    def total_tokens(self) -> int:
        """Input plus output, unknowns counted as 0."""
        return (self.input_tokens or 0) + (self.output_tokens or 0)


@dataclass(frozen=True, slots=True)
class Completion:
    """A whole generation: ``text``, ``usage``, why it stopped, and the provider's JSON."""

    text: str
    usage: Usage | None
    finish_reason: str | None
    raw: Any = None


@dataclass(frozen=True, slots=True)
class CompletionChunk:
    """One piece of a streamed generation: new ``text``; the last ones carry
    ``finish_reason`` and/or ``usage``."""

    text: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class GenerateRequest:
    """Provider-neutral input: ``prompt`` or chat ``messages`` (``{"role", "content"}``)."""

    prompt: str | None = None
    messages: Sequence[Mapping[str, str]] | None = None
    model: str | None = None
    max_tokens: int = 256
    temperature: float | None = None
    system: str | None = None

    def __post_init__(self) -> None:
        if (self.prompt is None) == (self.messages is None):
            raise InvalidInputError("pass exactly one of prompt and messages")
        if self.max_tokens < 1:
            raise InvalidInputError(f"max_tokens must be >= 1, got {self.max_tokens}")

    def chat(self) -> list[dict[str, str]]:
        """The input as chat messages."""
        if self.messages is not None:
            return [{"role": m["role"], "content": m["content"]} for m in self.messages]
        return [{"role": "user", "content": self.prompt or ""}]

    def as_prompt(self) -> str:
        """The input as one prompt string (messages joined by newlines)."""
        if self.prompt is not None:
            return self.prompt
        return "\n".join(m["content"] for m in self.messages or ())

    def estimated_tokens(self) -> int:
        """About four characters per token, plus ``max_tokens``."""
        chars = len(self.as_prompt()) + len(self.system or "")
        return chars // 4 + 1 + self.max_tokens


class Provider(ABC):
    """An adapter over ``upstream``; ``model`` is the default model name."""

    kind: str = ""
    idempotent: bool | None = None
    """Whether a generation may be retried regardless of an idempotency key
    (``None``: the upstream's rule — only with a key)."""

    def __init__(self, upstream: Upstream, *, model: str | None = None) -> None:
        self.upstream = upstream
        self.model = model

    def _model(self, req: GenerateRequest) -> str:
        model = req.model or self.model
        if not model:
            raise InvalidInputError(f"{self.kind}: no model given and no default configured")
        return model

    @abstractmethod
    def build(self, req: GenerateRequest, *, stream: bool) -> tuple[str, dict[str, Any]]:
        """The path and JSON body of a generation request."""

    def headers(self) -> dict[str, str]:
        """Extra headers of every call."""
        return {}

    @abstractmethod
    def parse(self, body: Any) -> Completion:
        """A completion from a whole JSON answer."""

    @abstractmethod
    def parse_event(self, event: ServerSentEvent, state: dict[str, Any]) -> CompletionChunk | None:
        """A chunk from one SSE event (``None``: nothing to emit; raise
        :class:`ProviderStreamError` on an error event). ``state`` is scratch space
        private to one stream (e.g. input tokens announced by a first event)."""

    @staticmethod
    def retry_hint(response: Response) -> float | None:
        """A delay in seconds read from an error body (none by default)."""
        return None

    async def generate(
        self, req: GenerateRequest, *, cache_ttl_s: float | None = None
    ) -> Completion:
        """One whole generation.

        Raises:
            UpstreamHTTPError: an error status after retries (with the body excerpt).
            OperationError: as :meth:`Upstream.request`.
        """
        path, body = self.build(req, stream=False)
        estimate = req.estimated_tokens()
        resp = await self.upstream.request(
            "POST",
            path,
            json=body,
            headers=self.headers(),
            tokens=estimate,
            cache_ttl_s=cache_ttl_s,
            idempotent=self.idempotent,
        )
        self._raise_for_status(resp)
        completion = self.parse(resp.json())
        self._settle(estimate, completion.usage, body.get("model"))
        return completion

    async def stream(self, req: GenerateRequest) -> AsyncGenerator[CompletionChunk, None]:
        """A streamed generation, chunk by chunk, as the provider sends them.

        Raises:
            UpstreamHTTPError: an error status (before the first chunk).
            ProviderStreamError: the provider reported an error mid-stream.
            UpstreamConnectionError, OperationTimeout: the stream broke off.
        """
        path, body = self.build(req, stream=True)
        estimate = req.estimated_tokens()
        usage: Usage | None = None
        state: dict[str, Any] = {}
        async with self.upstream.stream(
            "POST",
            path,
            json=body,
            headers=self.headers(),
            tokens=estimate,
            idempotent=self.idempotent,
        ) as resp:
            if not resp.ok:
                self._raise_for_status(await resp.read_whole(self.upstream.max_response_bytes))
            async for event in resp.iter_events():
                chunk = self.parse_event(event, state)
                if chunk is None:
                    continue
                if chunk.usage is not None:
                    usage = chunk.usage
                yield chunk
        self._settle(estimate, usage, body.get("model"))

    def _settle(self, estimate: int, usage: Usage | None, model: Any = None) -> None:
        if usage is not None:
            self.upstream.meter.tokens(
                model if isinstance(model, str) else self.model,
                usage.input_tokens,
                usage.output_tokens,
            )
        limits = self.upstream.limits
        if limits is not None and usage is not None:
            limits.settle(estimated=estimate, actual=usage.total_tokens)

    def _raise_for_status(self, resp: Response) -> None:
        """:meth:`Response.raise_for_status`, the error naming the upstream and
        its secrets redacted from the message and body excerpt."""
        if resp.status >= 400:
            try:
                resp.raise_for_status()
            except UpstreamHTTPError as exc:
                exc.resource = self.upstream.name
                self.upstream.redactor.error(exc)
                raise

    def _error(self, kind: str, message: str) -> ProviderStreamError:
        """A mid-stream error; the provider's message is cut to 300 characters
        after the upstream's secrets are redacted from it."""
        text = self.upstream.redactor.text(f"{self.kind} stream error ({kind}): {message}")
        return ProviderStreamError(text[:300], kind=kind, resource=self.upstream.name)
