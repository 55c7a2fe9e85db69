"""iogate.http: upstream HTTP APIs on one pooled aiohttp session per upstream.

Modules, one concern each: ``upstream`` (the resource), ``transport`` (aiohttp
session, one attempt, error translation), ``response`` / ``streaming``
(answers), ``retry_after`` (when and how long to retry), ``status`` (error
statuses as pipeline errors), ``idempotency``, ``auth``, ``options``,
``limits`` (request / token rates), ``response_cache``, ``batch``, ``files``,
``sse``, ``urls`` (egress guard), ``headers`` (a caller's headers, validated
and filtered), ``redact`` (secrets out of relayed answers), ``factory`` (from
config), ``providers``.
"""

from iogate.http.auth import ApiKeyHeader, ApiKeyQuery, Auth, BearerAuth
from iogate.http.batch import BatchProgress, UpstreamBatchItem
from iogate.http.files import Download
from iogate.http.headers import caller_headers, check_header
from iogate.http.limits import LimitsSnapshot, UpstreamLimits
from iogate.http.options import ConnectionOptions
from iogate.http.providers import (
    AnthropicProvider,
    Completion,
    CompletionChunk,
    GenerateRequest,
    HuggingFaceProvider,
    OpenAIProvider,
    Provider,
    ProviderStreamError,
    Usage,
)
from iogate.http.redact import Redactor, StreamRedactor
from iogate.http.response import Response
from iogate.http.response_cache import ResponseCache
from iogate.http.sse import ServerSentEvent, SSEDecoder
from iogate.http.status import UPSTREAM_RECORD_ON, UPSTREAM_RETRY_ON
from iogate.http.streaming import StreamResponse
from iogate.http.upstream import Upstream

__all__ = [
    "UPSTREAM_RECORD_ON",
    "UPSTREAM_RETRY_ON",
    "AnthropicProvider",
    "ApiKeyHeader",
    "ApiKeyQuery",
    "Auth",
    "BatchProgress",
    "UpstreamBatchItem",
    "BearerAuth",
    "Completion",
    "CompletionChunk",
    "ConnectionOptions",
    "Download",
    "GenerateRequest",
    "HuggingFaceProvider",
    "LimitsSnapshot",
    "OpenAIProvider",
    "Provider",
    "ProviderStreamError",
    "Redactor",
    "Response",
    "ResponseCache",
    "SSEDecoder",
    "ServerSentEvent",
    "StreamRedactor",
    "StreamResponse",
    "Upstream",
    "UpstreamLimits",
    "Usage",
    "caller_headers",
    "check_header",
]
