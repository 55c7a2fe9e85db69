"""Cost of recording one call, and of one ``/metrics`` scrape: iogate vs prometheus-client.

Recording (µs per recorded call, best of N interleaved repeats, loop included):

* ``loop``                         the bare loop over 1,000 durations (what every subject pays)
* ``iogate.Metrics.record``        ``metrics.record("db", "fetch", "ok", d)``: log-linear
                                   histogram + 10-s window ring + max + slow check
* ``prometheus_client.observe``    ``histogram.labels("db", "fetch", "ok").observe(d)``
                                   (the peer: the label lookup is part of the call, as above)
* ``prometheus_client.child``      ``child.observe(d)`` on a pre-bound child (no label lookup)
* ``iogate.pipeline``              a bare :class:`~iogate.policies.Pipeline` call, no recorder
* ``iogate.pipeline+noop_recorder`` the same pipeline with a recorder that does nothing
* ``iogate.pipeline+metrics``      the same pipeline recording into :class:`Metrics`

Request id (µs per ASGI request into an app that answers at once):

* ``asgi.bare_app``                the app alone
* ``iogate.request_id``            through :class:`~iogate.server.request_id.RequestIdMiddleware`,
                                   id generated (16 hex digits) / ``.propagated`` (client's header)

Request log and server span (µs per ASGI request through
:class:`~iogate.server.request_id.RequestIdMiddleware`, :func:`request_subjects`;
a feature's cost is the difference with the same request without it):

* ``iogate.request_id.409_unlogged`` a 409 problem answer, the ``iogate.request``
                                   logger disabled (the baseline of the 409 rows)
* ``iogate.request_log.409``       the same 409, its JSON line written through what
                                   ``iogate serve`` installs (``configure_logging``'s
                                   handler on the root logger, to an in-memory stream
                                   whose ``write`` is C)
* ``iogate.request_log.409.own_handler``  the same through a handler of the user's own
                                   on ``iogate.request`` (the standard ``LogRecord`` path)
* ``iogate.access_log.200``        a 200 with ``access_log=True`` (vs ``iogate.request_id``)
* ``iogate.server_span``           a 200 in a SERVER span of the provider
                                   ``[observability.tracing]`` builds (its
                                   ``BatchSpanProcessor``, to an exporter that drops the
                                   spans): the span built finished (``DirectServerSpans``)
* ``iogate.server_span.sdk``       the same through a provider given to the gateway
                                   (``Tracer.start_span`` + ``end``, ``SdkServerSpans``);
                                   ``.simple_processor`` with a ``SimpleSpanProcessor``;
                                   ``.unsampled`` with the ``ALWAYS_OFF`` sampler
* ``otel.sdk_span``                the SDK calls of ``.sdk`` made from inside the app:
                                   the SDK's own part of ``iogate.server_span.sdk``
* ``logging.*``                    one such line alone through ``logging``: iogate's
                                   JsonFormatter, python-json-logger's and structlog's
                                   JSONRenderer when installed (the evaluation of issue 21)

``python -m benchmarks.metrics_instructions`` counts the instructions of the
same requests with callgrind (the repeatable figure on a shared machine).

Scrape (ms per ``/metrics`` body with 1,000 series of (resource, operation,
outcome), 50 resources each with a breaker, retry and limiter):

* ``iogate.render``                :func:`iogate.observability._prometheus.render` (with the
                                   label cache the server keeps between scrapes), the
                                   process, platform and GC collectors included
* ``iogate.render.no_process``     the same without those collectors
* ``prometheus_client.generate_latest``   a plain prometheus-client Histogram
                                   (default 15 buckets) with the same 1,000 label sets
"""

from __future__ import annotations

import io
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TextIO, cast

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from iogate.errors import TransientDatabaseError
from iogate.observability._logging import JsonFormatter, RequestIdFilter, configure_logging
from iogate.observability._prometheus import LabelCache, render
from iogate.observability._tracing import Tracing
from iogate.observability.metrics import Metrics
from iogate.policies import CircuitBreaker, Pipeline, RateLimiter, Retry
from iogate.server.request_id import RequestIdMiddleware

from .harness import Result, time_per_call

TITLE = "cost of recording a call (µs) and of a 1,000-series scrape (ms), lower is better"
BASELINE = "iogate.Metrics.record"
COMPARE = "prometheus_client.observe"

RECORD_TARGET_US = 1.0
SCRAPE_TARGET_MS = 25.0
LOG_SPAN_TARGET_US = 5.0
_N = 1000


def _durations() -> list[float]:
    rng = random.Random(7)
    return [rng.lognormvariate(-7.0, 1.5) for _ in range(_N)]  # ~1 ms median, long tail


def _best(subjects: dict[str, Callable[[], object]], *, repeats: int, per: int) -> dict[str, float]:
    """Best-of-``repeats`` seconds per call of each (sync) subject, interleaved."""
    best = dict.fromkeys(subjects, float("inf"))
    perf = time.perf_counter
    for _ in range(repeats):
        for name, fn in subjects.items():
            start = perf()
            fn()
            best[name] = min(best[name], (perf() - start) / per)
    return best


def _recording(repeats: int) -> list[Result]:
    durations = _durations()
    metrics = Metrics(slow_s=1e9)
    record = metrics.record
    registry = CollectorRegistry()
    hist = Histogram(
        "bench_duration_seconds", "d", ("resource", "operation", "outcome"), registry=registry
    )
    labels = hist.labels
    child = hist.labels("db", "fetch", "ok")
    observe = child.observe

    def loop() -> None:
        for _d in durations:
            pass

    def iogate_record() -> None:
        for d in durations:
            record("db", "fetch", "ok", d)

    def prom_observe() -> None:
        for d in durations:
            labels("db", "fetch", "ok").observe(d)

    def prom_child() -> None:
        for d in durations:
            observe(d)

    seconds = _best(
        {
            "loop": loop,
            "iogate.Metrics.record": iogate_record,
            "prometheus_client.observe": prom_observe,
            "prometheus_client.child": prom_child,
        },
        repeats=repeats,
        per=_N,
    )
    return [Result(name, "us_per_record", s * 1e6, "us") for name, s in seconds.items()]


async def _pipeline_cost(repeats: int) -> list[Result]:
    async def work() -> int:
        return 1

    class NoopRecorder:
        def record(
            self, resource: str, operation: str, outcome: str, duration_s: float, call: object, /
        ) -> None:
            pass

    bare = Pipeline(resource="db")
    noop = Pipeline(resource="db", recorder=NoopRecorder())
    recorded = Pipeline(resource="db", recorder=Metrics(slow_s=1e9))
    seconds = await time_per_call(
        {
            "iogate.pipeline": lambda: bare.run(work, operation="fetch"),
            "iogate.pipeline+noop_recorder": lambda: noop.run(work, operation="fetch"),
            "iogate.pipeline+metrics": lambda: recorded.run(work, operation="fetch"),
        },
        repeats=repeats,
    )
    return [Result(name, "us_per_call", s * 1e6, "us") for name, s in seconds.items()]


async def _request_id_cost(repeats: int) -> list[Result]:
    async def bare_app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(_: Any) -> None:
        return None

    base = [(b"host", b"127.0.0.1:8080"), (b"user-agent", b"wrk")]
    given = [*base, (b"x-request-id", b"client-id-0123456789")]

    def scope(headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
        return {"type": "http", "method": "GET", "path": "/health", "headers": headers}

    mw = RequestIdMiddleware(bare_app)
    seconds = await time_per_call(
        {
            "asgi.bare_app": lambda: bare_app(scope(base), receive, send),
            "iogate.request_id": lambda: mw(scope(base), receive, send),
            "iogate.request_id.propagated": lambda: mw(scope(given), receive, send),
        },
        repeats=repeats,
    )
    return [Result(name, "us_per_request", s * 1e6, "us") for name, s in seconds.items()]


def _scrape(repeats: int) -> list[Result]:
    durations = _durations()
    metrics = Metrics(slow_s=1e9)
    registry = CollectorRegistry()
    hist = Histogram(
        "bench_duration_seconds", "d", ("resource", "operation", "outcome"), registry=registry
    )
    for r in range(50):
        resource = f"res{r:02d}"
        pipeline = Pipeline(
            resource=resource,
            retry=Retry(retry_on=(TransientDatabaseError,)),
            circuit_breaker=CircuitBreaker(name=resource),
            rate_limiter=RateLimiter(rate=1e6),
            recorder=metrics,
        )
        metrics.attach(resource, kind="postgresql", pipeline=pipeline)
        for o in range(10):
            for outcome in ("ok", "TransientDatabaseError"):
                for d in durations[:20]:
                    metrics.record(resource, f"op{o}", outcome, d)
                    hist.labels(resource, f"op{o}", outcome).observe(d)
    series = sum(1 for _ in metrics.series())
    assert series == 1000, series
    body = render(metrics)
    assert body.count(b"iogate_operation_duration_seconds_count{") == 1000
    labels = LabelCache()  # the server keeps one per app
    seconds = _best(
        {
            "iogate.render": lambda: render(metrics, labels=labels),
            "iogate.render.no_process": lambda: render(metrics, labels=labels, process=False),
            "prometheus_client.generate_latest": lambda: generate_latest(registry),
        },
        repeats=repeats,
        per=1,
    )
    return [Result(name, "ms_per_scrape_1000_series", s * 1e3, "ms") for name, s in seconds.items()]


class _Sink:
    """An in-memory text stream that keeps its last line: ``write`` is a
    ``deque.append`` (C), so a line costs what the code writing it does, not
    a Python-level ``write`` (``sys.stderr``'s is C too, plus a system call
    that is the terminal's cost, not the line's)."""

    __slots__ = ("last", "write")

    def __init__(self) -> None:
        self.last: deque[str] = deque(maxlen=1)
        self.write = self.last.append

    def flush(self) -> None:
        return None


def _null_log(name: str, formatter: logging.Formatter) -> logging.Logger:
    """Logger ``name`` writing through ``formatter`` to a :class:`_Sink`."""
    handler = logging.StreamHandler(cast(TextIO, _Sink()))
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(formatter)
    logger = logging.getLogger(name)
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


def request_subjects() -> tuple[dict[str, Callable[[], Awaitable[object]]], Callable[[], None]]:
    """The per-request subjects of the request log and the server span, and
    the function that puts the logging setup back.

    The request log goes through what ``iogate serve`` installs
    (:func:`~iogate.observability._logging.configure_logging`, JSON, to an
    in-memory stream), and ``.own_handler`` through a handler of the user's
    own on ``iogate.request`` (the standard ``LogRecord`` path). Every 409
    subject sets the request logger's state, then answers (the same work for
    each, so their differences are the line's cost). Spans: the provider
    ``[observability.tracing]`` builds (its ``BatchSpanProcessor``) and, as
    ``.sdk``, a provider given to the gateway with a ``BatchSpanProcessor``
    or a ``SimpleSpanProcessor``, all to an exporter that drops the spans;
    ``.unsampled`` with the ``ALWAYS_OFF`` sampler; ``otel.sdk_span`` makes
    the SDK calls of ``.sdk`` from inside the app (no context attach, no
    header scan).
    """
    problem = b'{"type":"urn:iogate:problem:integrity-violation","status":409}'
    start_409 = {
        "type": "http.response.start",
        "status": 409,
        "headers": [(b"content-type", b"application/problem+json")],
    }

    async def conflict_app(scope: Any, receive: Any, send: Any) -> None:
        await send(dict(start_409))
        await send({"type": "http.response.body", "body": problem})

    async def ok_app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(_: Any) -> None:
        return None

    headers = [(b"host", b"127.0.0.1:8080"), (b"user-agent", b"wrk")]

    def scope() -> dict[str, Any]:
        return {"type": "http", "method": "POST", "path": "/v1/x", "headers": headers}

    root = logging.getLogger()
    saved = (root.handlers, root.level)
    handler = configure_logging(log_format="json", level="INFO")
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(cast(TextIO, _Sink()))
    own = logging.StreamHandler(cast(TextIO, _Sink()))
    own.addFilter(RequestIdFilter())
    own.setFormatter(JsonFormatter())
    request_log = logging.getLogger("iogate.request")
    logged = RequestIdMiddleware(conflict_app)
    plain = RequestIdMiddleware(ok_app)

    def conflict(*, disabled: bool, handlers: list[logging.Handler]) -> Any:
        async def call() -> None:
            request_log.disabled = disabled  # isEnabledFor is then False at once
            request_log.handlers = handlers
            request_log.propagate = not handlers
            try:
                await logged(scope(), receive, send)
            finally:
                request_log.disabled = False
                request_log.handlers = []
                request_log.propagate = True

        return call

    def ok(mw: RequestIdMiddleware) -> Callable[[], Awaitable[None]]:
        return lambda: mw(scope(), receive, send)

    def restore() -> None:
        root.handlers, root.level = saved

    subjects: dict[str, Callable[[], Awaitable[object]]] = {
        "iogate.request_id": ok(plain),
        "iogate.request_id.409_unlogged": conflict(disabled=True, handlers=[]),
        "iogate.request_log.409": conflict(disabled=False, handlers=[]),
        "iogate.request_log.409.own_handler": conflict(disabled=False, handlers=[own]),
        "iogate.access_log.200": ok(RequestIdMiddleware(ok_app, access_log=True)),
        **{name: ok(mw) for name, mw in _traced(ok_app).items()},
    }
    return subjects, restore


def _traced(ok_app: Any) -> dict[str, RequestIdMiddleware]:
    """The span subjects of :func:`request_subjects`: ``ok_app`` behind the
    middleware with each tracer provider, and the SDK's own calls."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SimpleSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
    from opentelemetry.trace import SpanKind

    from iogate.observability.config import TracingConfig

    class Drop(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    def provider(processor: Any, **options: Any) -> Any:
        made = TracerProvider(**options)
        made.add_span_processor(processor)
        return made

    def spans(processor: Any, **options: Any) -> Any:
        return Tracing(mode="on", tracer_provider=provider(processor, **options)).server_spans()

    sdk = provider(BatchSpanProcessor(Drop())).get_tracer("bench")
    server = SpanKind.SERVER

    async def sdk_span_app(scope: Any, receive: Any, send: Any) -> None:
        """The SDK's own part of a SERVER span, called as ServerSpans does."""
        span = sdk.start_span(
            "POST", kind=server, attributes={"http.request.method": "POST", "url.scheme": "http"}
        )
        await ok_app(scope, receive, send)
        span.update_name("POST /v1/x")
        span.set_attribute("http.route", "/v1/x")
        span.set_attribute("http.response.status_code", 200)
        span.end()

    table = Tracing(mode=TracingConfig(exporter="console"), span_exporter=Drop())
    return {
        "iogate.server_span": RequestIdMiddleware(ok_app, spans=table.server_spans()),
        "iogate.server_span.sdk": RequestIdMiddleware(
            ok_app, spans=spans(BatchSpanProcessor(Drop()))
        ),
        "otel.sdk_span": RequestIdMiddleware(sdk_span_app),
        "iogate.server_span.simple_processor": RequestIdMiddleware(
            ok_app, spans=spans(SimpleSpanProcessor(Drop()))
        ),
        "iogate.server_span.unsampled": RequestIdMiddleware(
            ok_app, spans=spans(SimpleSpanProcessor(Drop()), sampler=ALWAYS_OFF)
        ),
    }


async def _log_and_span_cost(repeats: int) -> list[Result]:
    subjects, restore = request_subjects()
    try:
        seconds = await time_per_call(subjects, repeats=repeats)
    finally:
        restore()
    results = [Result(name, "us_per_request", s * 1e6, "us") for name, s in seconds.items()]
    return results + _formatters(repeats)


def _formatters(repeats: int) -> list[Result]:
    """One request-log line through ``logging`` with each JSON formatter."""
    extra = {
        "method": "POST",
        "path": "/v1/databases/{name}/query",
        "status": 409,
        "problem_type": "urn:iogate:problem:integrity-violation",
        "duration_ms": 1.234,
        "key": "ops",
    }
    subjects: dict[str, Callable[[], object]] = {}
    formatters: dict[str, logging.Formatter] = {"logging.iogate_json": JsonFormatter()}
    try:
        from pythonjsonlogger.orjson import OrjsonFormatter

        fields = "{levelname}{name}{message}{request_id}"
        formatters["logging.python_json_logger_orjson"] = OrjsonFormatter(
            fields, style="{", timestamp=True
        )
    except ImportError:
        pass
    for name, formatter in formatters.items():
        logger = _null_log(f"bench.{name}", formatter)

        def line(log: logging.Logger = logger) -> None:
            for _ in range(100):
                log.info("%s %s %d", "POST", "/v1/databases/{name}/query", 409, extra=extra)

        subjects[name] = line
    try:
        import structlog

        sink = io.StringIO()
        structlog.configure(
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.JSONRenderer(),
            ],
            logger_factory=structlog.PrintLoggerFactory(sink),
            cache_logger_on_first_use=True,
        )
        slog = structlog.get_logger()

        def structlog_line() -> None:
            sink.seek(0)
            sink.truncate()
            for _ in range(100):
                slog.info("POST /v1/databases/{name}/query 409", **extra)

        subjects["logging.structlog_json"] = structlog_line
    except ImportError:
        pass
    seconds = _best(subjects, repeats=repeats * 4, per=100)
    return [Result(name, "us_per_line", s * 1e6, "us") for name, s in seconds.items()]


async def run(*, quick: bool = False) -> list[Result]:
    """Measure recording, the pipeline with and without it, the request log,
    the server span and a scrape."""
    results = _recording(5 if quick else 200)
    results += await _pipeline_cost(3 if quick else 25)
    results += await _request_id_cost(3 if quick else 25)
    results += await _log_and_span_cost(3 if quick else 25)
    results += _scrape(3 if quick else 15)
    return results


def summary(results: Sequence[Result]) -> list[str]:
    """Verdicts on the targets of issues 7 and 21."""
    by = {(r.subject, r.metric): r.value for r in results}
    record = by[("iogate.Metrics.record", "us_per_record")]
    loop = by[("loop", "us_per_record")]
    scrape = by[("iogate.render", "ms_per_scrape_1000_series")]
    noop = by[("iogate.pipeline+noop_recorder", "us_per_call")]
    rid = by[("iogate.request_id", "us_per_request")] - by[("asgi.bare_app", "us_per_request")]
    added = by[("iogate.pipeline+metrics", "us_per_call")] - noop
    unlogged = by[("iogate.request_id.409_unlogged", "us_per_request")]
    plain = by[("iogate.request_id", "us_per_request")]
    costs = {
        "error log line (409)": by[("iogate.request_log.409", "us_per_request")] - unlogged,
        "access log line (200)": by[("iogate.access_log.200", "us_per_request")] - plain,
        "server span": by[("iogate.server_span", "us_per_request")] - plain,
    }
    lines = [
        f"target {what} <= {LOG_SPAN_TARGET_US:g} us per request: {us:.2f} us"
        f" ({'met' if us <= LOG_SPAN_TARGET_US else 'MISSED'})"
        for what, us in costs.items()
    ]
    others = {
        "error log line through a handler of the user's own": "iogate.request_log.409.own_handler",
        "server span, a provider given to the gateway": "iogate.server_span.sdk",
        "server span, given provider, SimpleSpanProcessor": "iogate.server_span.simple_processor",
        "server span, sampled out": "iogate.server_span.unsampled",
    }
    base = {"iogate.request_log.409.own_handler": unlogged}
    lines += [
        f"{what}: {by[(subject, 'us_per_request')] - base.get(subject, plain):.2f} us per request"
        for what, subject in others.items()
    ]
    sdk = by[("otel.sdk_span", "us_per_request")] - plain
    lines.append(
        f"of the given provider's server span, the SDK's own calls (otel.sdk_span):"
        f" {sdk:.2f} us per request"
    )
    return [
        *lines,
        f"target record <= {RECORD_TARGET_US:g} us: {record:.3f} us, {record - loop:.3f} us"
        f" without the loop ({'met' if record <= RECORD_TARGET_US else 'MISSED'})",
        f"Metrics.record adds {added:.3f} us to a recorded pipeline call (vs a no-op recorder)",
        f"X-Request-ID middleware adds {rid:.3f} us per request",
        f"target scrape of 1,000 series < {SCRAPE_TARGET_MS:g} ms: {scrape:.1f} ms"
        f" ({'met' if scrape < SCRAPE_TARGET_MS else 'MISSED'})",
    ]
