"""Provider adapters: request building and answer parsing for LLM APIs.

:func:`provider_for` picks the adapter of a configured provider kind.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from iogate.http.providers.anthropic import AnthropicProvider
from iogate.http.providers.base import (
    Completion,
    CompletionChunk,
    GenerateRequest,
    Provider,
    ProviderStreamError,
    Usage,
)
from iogate.http.providers.huggingface import HuggingFaceProvider
from iogate.http.providers.openai import OpenAIProvider

if TYPE_CHECKING:
    from iogate.http.upstream import Upstream

__all__ = [
    "AnthropicProvider",
    "Completion",
    "CompletionChunk",
    "GenerateRequest",
    "HuggingFaceProvider",
    "OpenAIProvider",
    "Provider",
    "ProviderKind",
    "ProviderStreamError",
    "Usage",
    "provider_for",
]

ProviderKind = Literal["openai", "anthropic", "huggingface", "tgi"]


def provider_for(kind: ProviderKind, upstream: Upstream, *, model: str | None = None) -> Provider:
    """The adapter of ``kind`` over ``upstream`` (``"tgi"``: Hugging Face TGI mode,
    ``"huggingface"``: the Inference API)."""
    if kind == "openai":
        return OpenAIProvider(upstream, model=model)
    if kind == "anthropic":
        return AnthropicProvider(upstream, model=model)
    mode: Literal["tgi", "inference_api"] = "tgi" if kind == "tgi" else "inference_api"
    return HuggingFaceProvider(upstream, model=model, mode=mode)
