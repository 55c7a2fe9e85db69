"""One external HTTP API: a pooled aiohttp session under a base URL.

- One :class:`aiohttp.ClientSession` per upstream, created in the running loop
  by :meth:`Upstream.open` and closed with it (aiohttp's documented usage: one
  session per application, not per request). Pool, keep-alive, DNS cache and
  TLS settings are :class:`~iogate.http.options.ConnectionOptions`.
- Paths are resolved strictly under the base URL (:mod:`iogate.http._urls`);
  redirects are not followed, so a 3xx never carries a call to another host.
- A caller's headers are validated (RFC 9110 tokens, no CR/LF/NUL or other
  control characters: :mod:`iogate.http.headers`) before any I/O; hop-by-hop
  ones and ``Host`` / ``Content-Length`` / ``Proxy-Authorization`` are dropped.
- Credentials (:mod:`iogate.http.auth`) and configured headers always win over
  a caller's of the same name (case-insensitively; a caller's query parameter
  named like an ``ApiKeyQuery`` one, in any case, is dropped), and are masked
  in ``repr``. :attr:`Upstream.redactor` replaces them in whatever a gateway
  relays of an answer (:mod:`iogate.http.redact`); a :class:`Response` itself
  is the upstream's answer, unchanged.
- An attempt's total timeout is the configured one or the call's remaining
  deadline (:func:`iogate.policies.remaining`), whichever is shorter.

Retries (the pipeline's, :mod:`iogate.http._retry_after` for the rules): a
call may be retried when its method is idempotent (RFC 9110 §9.2.2) or it
carries an idempotency key — the caller's ``Idempotency-Key`` header, or one
iogate generates (``idempotency_key=True``, or ``idempotency_keys=True`` on
the upstream for every POST/PATCH) and sends unchanged on every attempt.
A retryable status (408, 409, 429, 5xx, ``x-should-retry``) is retried after
the server's delay (``retry-after-ms``, ``Retry-After``, rate-limit resets) or
the backoff. When attempts run out, :meth:`Upstream.request` **returns the
last response** (its ``attempts`` says how many were made): statuses are
answers, not errors, until :meth:`Response.raise_for_status`. A retryable call
whose server asks to wait longer than ``max_retry_after_s`` raises
:class:`~iogate.errors.RateLimitedError` with ``retry_after_s`` at once.
"""

from __future__ import annotations

import dataclasses
import json as stdlib_json
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final

import orjson
from multidict import CIMultiDict
from yarl import URL

from iogate.databases.stats import PoolStats
from iogate.errors import InvalidInputError, RateLimitedError, UpstreamHTTPError
from iogate.http._idempotency import IDEMPOTENCY_HEADER, new_idempotency_key
from iogate.http._retry_after import retry_after_s, should_retry
from iogate.http._transport import Transport
from iogate.http._urls import resolve_under
from iogate.http.auth import Auth
from iogate.http.batch import BatchProgress, UpstreamBatchItem, run_upstream_batch
from iogate.http.files import Download, download, upload
from iogate.http.headers import caller_headers, check_header, check_header_value
from iogate.http.limits import UpstreamLimits
from iogate.http.options import ConnectionOptions
from iogate.http.redact import Redactor
from iogate.http.response import Response
from iogate.http.response_cache import ResponseCache, cache_directives, canonical_key
from iogate.http.status import UpstreamStatusError, status_error
from iogate.http.streaming import StreamResponse
from iogate.lifecycle import AsyncResource, ResourceState
from iogate.observability._meters import UpstreamMeter
from iogate.policies.runner import CallRunner

if TYPE_CHECKING:
    from iogate.http.providers.base import Provider

__all__ = ["IDEMPOTENT_METHODS", "Response", "Upstream", "json_body"]

IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
_METHODS: Final = IDEMPOTENT_METHODS | {"POST", "PATCH"}
# Configured headers whose values are credentials whatever their origin.
_CREDENTIAL_NAME: Final = re.compile(
    r"auth|key|token|secret|passw|cookie|signature|credential|session", re.IGNORECASE
)
_UNSET: Final[Any] = object()
_URL_CACHE_SIZE: Final = 1024


class _Call:
    """One prepared call (a plain slotted class). A call with no per-call input
    (no params, headers or body) is prepared once per (method, path) and reused."""

    __slots__ = ("body", "check", "ctx", "headers", "idempotent", "url", "verb")

    def __init__(
        self,
        verb: str,
        url: URL,
        headers: CIMultiDict[str],
        body: Any,
        idempotent: bool,
        ctx: Mapping[str, Any],
        check: Callable[[Response], None],
    ) -> None:
        self.verb = verb
        self.url = url
        self.headers = headers  # never mutated: may be the upstream's shared defaults
        self.body = body  # bytes | str | None, or a zero-argument factory of a fresh body
        self.idempotent = idempotent
        self.ctx = ctx  # the error context of the verb
        self.check = check  # meters and judges an attempt's answer (Upstream._check_*)


class Upstream(AsyncResource):
    """A named external HTTP API.

    Args:
        name: resource name (``"openai"``).
        base_url: absolute ``http(s)://`` URL every path is resolved under.
        headers: default headers (masked in ``repr``).
        auth: credentials (:class:`~iogate.http.auth.BearerAuth`, ``ApiKeyHeader``,
            ``ApiKeyQuery``), masked in ``repr``.
        timeout_s: total seconds per attempt, connect included (streams: until headers).
        connect_timeout_s: seconds to establish a connection.
        read_timeout_s: longest silence between two reads of the body, seconds.
        max_connections: size of the connection pool (aiohttp ``limit``).
        options: per-host limit, keep-alive, DNS cache TTL, TLS verification / CA bundle.
        max_response_bytes: larger bodies raise UpstreamError.
        idempotency_keys: generate and send an ``Idempotency-Key`` on every POST/PATCH
            (making them retryable); only for servers that honour it.
        idempotency_header: the header's name.
        max_retry_after_s: a retryable answer asking for a longer wait raises
            RateLimitedError instead (seconds, default 120 as openai-python).
        limits: request / token rate limits (:class:`~iogate.http.limits.UpstreamLimits`),
            taken per attempt.
        cache: the response cache (:mod:`iogate.http.response_cache`), or ``None``.
        retry_hint: reads a retry delay (seconds) from an error answer whose headers
            give none (e.g. :meth:`HuggingFaceProvider.retry_hint`).
        runner: the resilience pipeline each call runs through.
        runner_timeout_s: the attempt timeout ``runner`` itself enforces, seconds
            (``None``: none). When it is no longer than ``timeout_s`` the
            transport arms no timer of its own (:func:`~iogate.http._factory.build_upstream`
            makes the pipeline's attempt timeout the upstream's ``timeout``).
        allowed_methods: egress allowlist of HTTP methods (``None``: every supported one).
        allowed_paths: egress allowlist of path prefixes under the base URL, each
            starting with ``/`` (``None``: any path); checked on the resolved path,
            segment-wise, before any I/O.
        secrets: more values :attr:`redactor` replaces (the gateway passes the
            header values its config interpolated from ``${ENV}``). Always
            included: the ``auth`` secret and the value of every configured
            header whose name says credential (``authorization``, ``cookie``, or
            holding ``key``, ``token``, ``secret``, ``auth``, ``passw``,
            ``signature``, ``credential``, ``session``), and the credentials
            part of an ``<scheme> <credentials>`` value; values shorter than
            :data:`~iogate.http.redact.MIN_SECRET_CHARS` characters never.
        health_path, health_status: what :meth:`probe` asks (``GET health_path``
            expecting ``health_status``; default: ``HEAD`` of the base URL, any
            answer below 500).

    Attributes:
        redactor: the :class:`~iogate.http.redact.Redactor` of those secrets
            (falsy when there are none), built once here.

    Raises:
        ValueError: a bound above is violated, ``base_url`` is not absolute http(s),
            or a configured header is not valid HTTP.

    Use ``async with Upstream(...) as api:`` or ``open()`` / ``close()``.
    """

    def __init__(
        self,
        name: str,
        *,
        base_url: str,
        headers: Mapping[str, str] | None = None,
        auth: Auth | None = None,
        timeout_s: float = 30.0,
        connect_timeout_s: float = 10.0,
        read_timeout_s: float | None = None,
        max_connections: int = 100,
        options: ConnectionOptions | None = None,
        max_response_bytes: int = 16 * 1024 * 1024,
        idempotency_keys: bool = False,
        idempotency_header: str = IDEMPOTENCY_HEADER,
        max_retry_after_s: float = 120.0,
        limits: UpstreamLimits | None = None,
        cache: ResponseCache | None = None,
        retry_hint: Callable[[Response], float | None] | None = None,
        runner: CallRunner | None = None,
        runner_timeout_s: float | None = None,
        allowed_methods: Sequence[str] | None = None,
        allowed_paths: Sequence[str] | None = None,
        secrets: Sequence[str] = (),
        health_path: str | None = None,
        health_status: int = 200,
    ) -> None:
        if max_retry_after_s < 0:
            raise ValueError(f"max_retry_after_s must be >= 0, got {max_retry_after_s}")
        super().__init__(name)
        self.base_url = URL(base_url)
        if self.base_url.scheme not in ("http", "https") or not self.base_url.host:
            raise ValueError("base_url must be an absolute http:// or https:// URL")
        self.auth = auth
        self._headers = CIMultiDict(headers or {})
        if auth is not None:
            self._headers.update(auth.headers())
        for key, value in self._headers.items():
            check_header(key, value)  # InvalidHeaderError is a ValueError
        self._auth_params = auth.params() if auth is not None else {}
        self._auth_names = frozenset(k.lower() for k in self._auth_params)
        self.redactor = Redactor(_secrets_of(self._headers, auth, secrets))
        # resolve_under is a pure function of (base, path): memoise the last paths;
        # a call without per-call input is prepared once per (method, path).
        self._urls: dict[str, URL] = {}
        self._plain: dict[tuple[str, str], _Call] = {}
        # A runner whose attempt timeout is no longer than timeout_s already
        # bounds every attempt (on its own timer wheel): the transport arms none.
        self._transport = Transport(
            name,
            attempt_bounded=runner is not None
            and runner_timeout_s is not None
            and runner_timeout_s <= timeout_s,
            timeout_s=timeout_s,
            connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s,
            max_connections=max_connections,
            options=options or ConnectionOptions(),
            max_response_bytes=max_response_bytes,
        )
        self.idempotency_keys = idempotency_keys
        self.idempotency_header = idempotency_header
        self.max_retry_after_s = max_retry_after_s
        self.limits = limits if limits is not None and limits.enabled else None
        self.cache = cache
        self.retry_hint = retry_hint
        self.provider: Provider | None = None  # set by iogate.http._factory for LLM APIs
        self.meter = UpstreamMeter()  # status classes and tokens, read by the metrics
        self._runner = runner
        self._ctx = {verb: {"resource": name, "operation": verb} for verb in _METHODS}
        self.health_path = health_path
        self.health_status = health_status
        self.allowed_methods = (
            None if allowed_methods is None else frozenset(m.upper() for m in allowed_methods)
        )
        self.allowed_paths = (
            None if allowed_paths is None else tuple(p.rstrip("/") for p in allowed_paths)
        )

    @property
    def max_response_bytes(self) -> int:
        """Largest body read whole, in bytes."""
        return self._transport.max_response_bytes

    def __repr__(self) -> str:
        masked = ", ".join(f"{k}: ***" for k in self._headers)
        return (
            f"<Upstream {self.name!r} {self.base_url} headers={{{masked}}} "
            f"auth={self.auth!r} {self.state.value}>"
        )

    @property
    def _what(self) -> str:
        return "upstream"

    async def _open(self) -> None:
        await self._transport.open()

    async def _close(self) -> None:
        await self._transport.close()

    def pool_stats(self) -> PoolStats:
        """The upstream's connection pool gauges (aiohttp's connector; see
        :meth:`~iogate.http._transport.Transport.pool_stats`)."""
        return self._transport.pool_stats(sum(self.meter.statuses))

    async def probe(self) -> None:
        """Is the upstream answering? One request through the upstream's own pool,
        with its configured headers and credentials, outside the resilience
        pipeline (an open breaker or a backoff never hides that it is back):
        ``GET <health_path>`` expecting ``health_status``, or, without a
        ``health_path``, ``HEAD`` of the base URL, where any answer below 500
        means up (a 404 or 405 still proves the server answers). The caller
        bounds it (readiness' deadline); the egress allowlists do not apply:
        the operator configured this request.

        Raises:
            UpstreamHTTPError: an unexpected status.
            UpstreamError, OperationTimeout: no answer.
            RuntimeError: not open.
        """
        self._require_open()
        verb = "HEAD" if self.health_path is None else "GET"
        url = self.base_url
        if self.health_path is not None:
            url = resolve_under(self.base_url, self.health_path)
        if self._auth_params:
            url = url.update_query(self._auth_params)
        answer = await self._transport.fetch(verb, url, self._headers, None, self._ctx[verb])
        status = answer.status
        if (status != self.health_status) if self.health_path is not None else status >= 500:
            raise UpstreamHTTPError(
                f"health check of upstream {self.name!r} answered {status}",
                status=status,
                resource=self.name,
                operation=verb,
            )

    async def ping(self) -> None:
        """Readiness of an upstream is not probed over the network (no I/O):
        raises RuntimeError only when it is not open."""
        self._require_open()

    def _prepare(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int | float] | None,
        headers: Mapping[str, str] | None,
        json: Any,
        data: Any,
        idempotent: bool | None,
        idempotency_key: str | bool | None,
    ) -> _Call:
        verb = method.upper()
        if verb not in _METHODS:
            raise InvalidInputError(f"unsupported HTTP method {method!r}")
        if self.allowed_methods is not None and verb not in self.allowed_methods:
            raise InvalidInputError(f"method {verb} is not allowed on upstream {self.name!r}")
        url = self._urls.get(path)
        if url is None:
            url = resolve_under(self.base_url, path)
            if len(self._urls) >= _URL_CACHE_SIZE:
                self._urls.clear()
            self._urls[path] = url
        if self.allowed_paths is not None:
            self._check_allowed_path(url)
        if params:
            url = url.update_query({k: str(v) for k, v in params.items()})
        if self._auth_params:
            if url.raw_query_string and any(k.lower() in self._auth_names for k in url.query):
                # A caller's parameter named like the credential, in any case,
                # neither replaces nor duplicates it.
                names = self._auth_names
                kept = [(k, v) for k, v in url.query.items() if k.lower() not in names]
                url = url.with_query(kept)
            url = url.update_query(self._auth_params)
        if headers or json is not _UNSET or idempotency_key is not None or self.idempotency_keys:
            send = CIMultiDict[str]()
            if headers:
                for key, value in caller_headers(headers, self._headers):
                    send[key] = value
            send.update(self._headers)
        else:
            send = self._headers  # shared, never mutated: nothing to add
        body = data
        if json is not _UNSET:
            if data is not None:
                raise InvalidInputError("pass either json or data, not both")
            body = json_body(json)
            send.setdefault("Content-Type", "application/json")
        if isinstance(idempotency_key, str):
            check_header_value(self.idempotency_header, idempotency_key)
            send[self.idempotency_header] = idempotency_key
        elif idempotency_key or (
            idempotency_key is None and self.idempotency_keys and verb in ("POST", "PATCH")
        ):
            send.setdefault(self.idempotency_header, new_idempotency_key())
        if idempotent is None:
            idempotent = verb in IDEMPOTENT_METHODS or self.idempotency_header in send
        check = self._check_retryable if idempotent else self._check_once
        return _Call(verb, url, send, body, idempotent, self._ctx[verb], check)

    def _prepare_plain(self, method: str, path: str) -> _Call:
        """:meth:`_prepare` of a call with no per-call input, memoised when nothing
        in it is fresh per call (a generated idempotency key is)."""
        call = self._prepare(
            method,
            path,
            params=None,
            headers=None,
            json=_UNSET,
            data=None,
            idempotent=None,
            idempotency_key=None,
        )
        if call.headers is self._headers:
            if len(self._plain) >= _URL_CACHE_SIZE:
                self._plain.clear()
            self._plain[method, path] = call
        return call

    def _check_allowed_path(self, url: URL) -> None:
        """Egress allowlist: the resolved path (relative to the base URL, still
        percent-encoded) must equal one prefix or continue it with ``/``."""
        assert self.allowed_paths is not None
        relative = url.raw_path[len(self.base_url.raw_path.rstrip("/")) :] or "/"
        for prefix in self.allowed_paths:
            if not prefix or relative == prefix or relative.startswith(prefix + "/"):
                return
        raise InvalidInputError(f"path is not allowed on upstream {self.name!r}")

    def _check_retryable(self, response: Response) -> None:
        """Meter an attempt's answer and judge it (a call that may be retried)."""
        status = response.status
        if 200 <= status < 300:
            self.meter.statuses[1] += 1  # UpstreamMeter.status, inlined for the common case
            return
        self.meter.status(status)
        if status >= 400:
            self._judge(response, True)

    def _check_once(self, response: Response) -> None:
        """Meter an attempt's answer and judge it (a call that is never retried)."""
        status = response.status
        if 200 <= status < 300:
            self.meter.statuses[1] += 1
            return
        self.meter.status(status)
        if status >= 400:
            self._judge(response, False)

    def _judge(self, response: Response, idempotent: bool) -> None:
        """Raise the error the pipeline retries / counts for an error status."""
        if response.status < 400:
            return
        retryable = should_retry(response.status, response.headers)
        delay = retry_after_s(response.status, response.headers) if retryable else None
        if retryable and delay is None and self.retry_hint is not None:
            delay = self.retry_hint(response)
        if idempotent and retryable and delay is not None and delay > self.max_retry_after_s:
            raise RateLimitedError(
                f"upstream {self.name!r} asks to wait {delay:g}s"
                f" (above {self.max_retry_after_s:g}s)",
                retry_after_s=delay,
                resource=self.name,
            )
        error = status_error(response, retryable=retryable, retry_after_s=delay)
        if error is not None:
            raise self.redactor.error(error)

    async def request(
        self,
        method: str,
        path: str = "",
        *,
        params: Mapping[str, str | int | float] | None = None,
        headers: Mapping[str, str] | None = None,
        json: Any = _UNSET,
        data: bytes | str | None = None,
        content: bytes | Callable[[], Any] | None = None,
        idempotent: bool | None = None,
        idempotency_key: str | bool | None = None,
        cache_ttl_s: float | None = None,
        tokens: int = 0,
    ) -> Response:
        """Send one request under the base URL and read the whole answer.

        Any status is returned as a :class:`Response` (after retries, the last
        one); call :meth:`Response.raise_for_status` to turn 4xx/5xx into an error.

        Args:
            method: HTTP method (GET, HEAD, OPTIONS, TRACE, PUT, DELETE, POST, PATCH).
            path: relative path, may carry a query string (``"/v1/items?x=1"``).
            params: query parameters added to the path's.
            headers: extra request headers, validated (:mod:`iogate.http.headers`);
                configured ones win, hop-by-hop ones are dropped.
            json: a body serialized as JSON (:func:`json_body`), with
                ``Content-Type: application/json``.
            data: a raw body (exclusive with ``json``).
            content: raw bytes, or a factory returning a fresh aiohttp body per attempt
                (e.g. a streamed multipart writer).
            idempotent: override whether the call may be retried (default: by method
                or an idempotency key).
            idempotency_key: a key to send, ``True`` to generate one, ``False`` for none
                (default: the upstream's ``idempotency_keys``).
            cache_ttl_s: seconds to cache a 2xx answer of a non-GET call under a hash of
                method, path and body (needs the upstream's ``cache``).
            tokens: estimated LLM tokens of the call, taken from ``limits`` up front.

        Raises:
            InvalidInputError: bad method, path outside the base URL, json and data both,
                a ``json`` value JSON cannot carry;
                :class:`~iogate.errors.InvalidHeaderError`: a header name or value
                (or ``idempotency_key``) is not valid HTTP.
            UpstreamConnectionError: the upstream could not be reached or dropped the connection.
            OperationTimeout: no complete answer within the timeout.
            RateLimitedError: the server asks to wait longer than ``max_retry_after_s``,
                or a local limit would make the call wait longer than its ``max_wait_s``.
            UpstreamError: the body exceeds ``max_response_bytes``.
        """
        if (
            params is None
            and headers is None
            and json is _UNSET
            and data is None
            and content is None
            and idempotent is None
            and idempotency_key is None
        ):
            call = self._plain.get((method, path)) or self._prepare_plain(method, path)
        else:
            call = self._prepare(
                method,
                path,
                params=params,
                headers=headers,
                json=json,
                data=data if content is None else content,
                idempotent=idempotent,
                idempotency_key=idempotency_key,
            )
        if self.state is not ResourceState.OPEN:
            self._require_open()
        if self.cache is not None or self.limits is not None or callable(call.body):
            return await self._run(call, cache_ttl_s=cache_ttl_s, tokens=tokens)
        # The hot path: no cache, no local limits, a fixed body. Each attempt is
        # Transport.fetch itself (its answer metered and judged by call.check).
        fetch = self._transport.fetch
        attempts = 1
        try:
            runner = self._runner
            if runner is None:
                return await fetch(
                    call.verb, call.url, call.headers, call.body, call.ctx, 1, call.check
                )
            attempts = 0

            def attempt() -> Awaitable[Response]:
                nonlocal attempts
                attempts += 1
                return fetch(
                    call.verb, call.url, call.headers, call.body, call.ctx, attempts, call.check
                )

            return await runner.run(attempt, operation=call.verb, idempotent=call.idempotent)
        except UpstreamStatusError as exc:
            return dataclasses.replace(exc.response, attempts=attempts)

    async def _run(self, call: _Call, *, cache_ttl_s: float | None, tokens: int) -> Response:
        cache = self.cache
        headers = call.headers
        digest = entry = None
        if cache is not None and not callable(call.body):
            conditional = call.verb in ("GET", "HEAD")
            if conditional or cache_ttl_s is not None:
                digest = canonical_key(call.verb, str(call.url), call.body)
                entry = cache.lookup(digest)
            if entry is not None:
                asked = cache_directives(headers.get("cache-control"))
                if cache.is_fresh(entry) and "no-cache" not in asked:
                    return cache.hit(entry)
                if conditional:
                    headers = headers.copy()
                    headers.update(cache.validators(entry))
        answer = await self._attempts(call, headers, tokens)
        if cache is not None and digest is not None:
            if call.verb not in ("GET", "HEAD"):
                if cache_ttl_s is not None:
                    cache.store_ttl(digest, answer, cache_ttl_s)
            elif answer.status == 304 and entry is not None:
                return cache.refresh(digest, entry, answer)
            else:
                cache.store_http(digest, answer, call.headers)
        return answer

    async def _attempts(self, call: _Call, headers: CIMultiDict[str], tokens: int) -> Response:
        attempts = 0
        transport = self._transport
        limits = self.limits

        async def attempt() -> Response:
            nonlocal attempts
            attempts += 1
            if limits is not None:
                await limits.acquire(tokens=tokens if attempts == 1 else 0)
            body = call.body() if callable(call.body) else call.body
            return await transport.fetch(
                call.verb, call.url, headers, body, call.ctx, attempts, call.check
            )

        try:
            if self._runner is None:
                return await attempt()
            return await self._runner.run(attempt, operation=call.verb, idempotent=call.idempotent)
        except UpstreamStatusError as exc:
            return dataclasses.replace(exc.response, attempts=attempts)

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        path: str = "",
        *,
        params: Mapping[str, str | int | float] | None = None,
        headers: Mapping[str, str] | None = None,
        json: Any = _UNSET,
        data: bytes | str | None = None,
        idempotent: bool | None = None,
        idempotency_key: str | bool | None = None,
        tokens: int = 0,
    ) -> AsyncIterator[StreamResponse]:
        """``async with api.stream("POST", "/v1/chat", json=...) as resp:`` — an
        answer whose body is read as the caller iterates (``resp.iter_chunks()``,
        ``resp.iter_lines()``, ``resp.iter_events()``), with backpressure.

        Everything up to the response headers runs through the pipeline (retried
        as :meth:`request`); an error status is read whole and yielded as a
        :class:`StreamResponse` too. The timeout bounds the wait for headers;
        ``read_timeout_s`` bounds each read of the body. Arguments and errors
        as :meth:`request`.
        """
        call = self._prepare(
            method,
            path,
            params=params,
            headers=headers,
            json=json,
            data=data,
            idempotent=idempotent,
            idempotency_key=idempotency_key,
        )
        self._require_open()
        attempts = 0
        ctx = {"resource": self.name, "operation": call.verb}

        limits = self.limits

        async def attempt() -> StreamResponse:
            nonlocal attempts
            attempts += 1
            if limits is not None:
                await limits.acquire(tokens=tokens if attempts == 1 else 0)
            raw = await self._transport.open_stream(call.verb, call.url, call.headers, call.body)
            answer = StreamResponse(raw, attempts=attempts, ctx=ctx)
            self.meter.status(raw.status)
            if raw.status >= 400:
                full = await answer.read_whole(self.max_response_bytes)
                self._judge(full, call.idempotent)
            return answer

        try:
            if self._runner is None:
                answer = await attempt()
            else:
                answer = await self._runner.run(
                    attempt, operation=call.verb, idempotent=call.idempotent
                )
        except UpstreamStatusError as exc:
            final = dataclasses.replace(exc.response, attempts=attempts)
            answer = StreamResponse.from_response(final)
        try:
            yield answer
        finally:
            answer.release()

    async def batch(
        self,
        requests: Sequence[UpstreamBatchItem],
        *,
        max_concurrent: int = 8,
        on_progress: Callable[[BatchProgress], object] | None = None,
    ) -> list[Response | Exception]:
        """Send ``requests`` with at most ``max_concurrent`` in flight; results in input
        order, each a :class:`Response` or the error of that item
        (:func:`iogate.http.batch.run_upstream_batch`)."""
        return await run_upstream_batch(
            self, requests, max_concurrent=max_concurrent, on_progress=on_progress
        )

    async def upload(self, path: str, file: str | os.PathLike[str], **kw: Any) -> Response:
        """Send a file as multipart/form-data, streamed from disk
        (:func:`iogate.http.files.upload`: ``field=``, ``filename=``, ``fields=``)."""
        return await upload(self, path, file, **kw)

    async def download(self, path: str, dest: str | os.PathLike[str], **kw: Any) -> Download:
        """GET into ``dest`` atomically (:func:`iogate.http.files.download`:
        ``max_bytes=``, ``sha256=``)."""
        return await download(self, path, dest, **kw)

    def get(self, path: str = "", **kw: Any) -> Coroutine[Any, Any, Response]:
        """``request("GET", path, ...)`` (its coroutine: one frame less per call)."""
        return self.request("GET", path, **kw)

    def post(self, path: str = "", **kw: Any) -> Coroutine[Any, Any, Response]:
        """``request("POST", path, ...)`` (its coroutine: one frame less per call)."""
        return self.request("POST", path, **kw)

    def put(self, path: str = "", **kw: Any) -> Coroutine[Any, Any, Response]:
        """``request("PUT", path, ...)`` (its coroutine: one frame less per call)."""
        return self.request("PUT", path, **kw)

    def patch(self, path: str = "", **kw: Any) -> Coroutine[Any, Any, Response]:
        """``request("PATCH", path, ...)`` (its coroutine: one frame less per call)."""
        return self.request("PATCH", path, **kw)

    def delete(self, path: str = "", **kw: Any) -> Coroutine[Any, Any, Response]:
        """``request("DELETE", path, ...)`` (its coroutine: one frame less per call)."""
        return self.request("DELETE", path, **kw)


def json_body(value: Any) -> bytes:
    """``value`` as a JSON request body (UTF-8): orjson's encoding, or, for
    what orjson refuses that JSON carries — integers beyond 64 bits, which
    RFC 8259 §6 allows and a client's JSON may hold — the standard library's
    (compact, non-ASCII kept), so a relayed body is sent as it came.

    Raises:
        InvalidInputError: ``value`` is not JSON (a type JSON has no form for,
            a lone surrogate, NaN or infinity, nesting beyond the recursion limit).
    """
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:  # beyond 64 bits, or not JSON: the standard library tells
        try:
            text = stdlib_json.dumps(
                value, ensure_ascii=False, separators=(",", ":"), allow_nan=False
            )
            return text.encode()
        except (TypeError, ValueError, RecursionError) as exc:
            raise InvalidInputError(f"the json body is not JSON: {exc}") from None


def _secrets_of(headers: CIMultiDict[str], auth: Auth | None, extra: Sequence[str]) -> list[str]:
    """The values an upstream's :class:`Redactor` replaces (see :class:`Upstream`)."""
    found = list(extra)
    if auth is not None:
        found.append(auth.secret)
    for name, value in headers.items():
        if _CREDENTIAL_NAME.search(name) is not None:
            found.append(value)
            _scheme, _, credentials = value.partition(" ")
            found.append(credentials.strip())
    return found
