"""Metrics after a scripted sequence (fake clock): exactly what happened, in the
snapshot, the windows and the Prometheus exposition; histogram layout; fingerprints."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from iogate.errors import CircuitOpenError, OperationTimeout, TransientDatabaseError
from iogate.observability._histogram import (
    BUCKETS,
    EDGES,
    MAX_S,
    MIN_S,
    bucket_of,
    lower_bound,
    percentile,
    upper_bound,
)
from iogate.observability._meters import UpstreamMeter
from iogate.observability._prometheus import EXPORT_BOUNDS, render
from iogate.observability._statements import fingerprint
from iogate.observability.metrics import Metrics
from iogate.policies import CircuitBreaker, CircuitState, FakeClock, Pipeline, Timeout


def taking(
    clock: FakeClock, seconds: float, error: BaseException | None = None
) -> Callable[[], Awaitable[str]]:
    """A call that lasts ``seconds`` on the fake clock, then returns or raises."""

    async def call() -> str:
        clock.advance(seconds)
        if error is not None:
            raise error
        return "ok"

    return call


async def hang() -> str:
    await asyncio.Event().wait()
    return "never"


async def run_to_end(clock: FakeClock, coro: Awaitable[str]) -> BaseException | str:
    """Drive the fake clock until ``coro`` ends; its result or its error."""
    task = asyncio.ensure_future(coro)
    for _ in range(1000):
        for _ in range(5):
            await asyncio.sleep(0)
        if task.done():
            break
        clock.advance(0.25)
    try:
        return await task
    except Exception as exc:
        return exc


def families(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


async def test_scripted_sequence_is_counted_exactly() -> None:
    clock = FakeClock(start=1000.0)
    metrics = Metrics(clock=clock.monotonic, slow_s=0.5)
    breaker = CircuitBreaker(
        name="db",
        failure_rate_threshold=0.5,
        window_size=6,
        minimum_calls=6,
        wait_in_open_s=30.0,
        record_on=(TransientDatabaseError, OperationTimeout),
        clock=clock,
    )
    pipeline = Pipeline(
        resource="db",
        circuit_breaker=breaker,
        timeout=Timeout(1.0, clock=clock),
        recorder=metrics,
        clock=clock,
    )
    breaker.on_event = metrics.on_policy_event
    metrics.attach("db", kind="postgresql", pipeline=pipeline)

    for _ in range(3):  # three successes of 10 ms
        assert await pipeline.run(taking(clock, 0.010), operation="fetch") == "ok"
    for _ in range(2):  # two transient failures of 20 ms
        with pytest.raises(TransientDatabaseError):
            await pipeline.run(
                taking(clock, 0.020, TransientDatabaseError("lost")), operation="fetch"
            )
    outcome = await run_to_end(clock, pipeline.run(hang, operation="fetch"))  # one timeout
    assert isinstance(outcome, OperationTimeout)
    assert breaker.state is CircuitState.OPEN  # 3 failures of 6 calls: the breaker trips
    for _ in range(2):  # two calls refused by the open breaker
        with pytest.raises(CircuitOpenError):
            await pipeline.run(taking(clock, 0.0), operation="fetch")

    snap = metrics.stats()
    db = snap.resource("db")
    assert db is not None
    assert (db.kind, db.calls, db.errors, db.in_flight) == ("postgresql", 8, 5, 0)
    op = db.operation("fetch")
    assert op is not None
    assert op.outcomes == {
        "circuit_open": 2,
        "timeout": 1,
        "TransientDatabaseError": 2,
        "ok": 3,
    }
    assert op.errors_by_type == {
        "circuit_open": 2,
        "timeout": 1,
        "TransientDatabaseError": 2,
    }
    assert op.success_rate == pytest.approx(3 / 8)
    timeout_s = op.max_ms / 1000  # the timeout's duration: 1 s rounded up to its timer's tick
    assert 1.0 <= timeout_s <= 1.25
    assert op.mean_ms == pytest.approx((0.030 + 0.040 + timeout_s) / 8 * 1000)
    # p50 is the 4th of 8 sorted durations (0, 0, 10, 10, 10, 20, 20, timeout): 10 ms ± 12.5 %
    assert op.latency.p50_ms == pytest.approx(10.0, rel=0.125)
    assert op.latency.p90_ms == pytest.approx(timeout_s * 1000, rel=0.125)
    assert op.latency.max_ms == pytest.approx(timeout_s * 1000)
    assert op.last_minute.calls == 8
    assert op.last_minute.errors == 5
    assert op.last_5_minutes.calls == 8
    # breaker state and transitions, read from the pipeline and the events
    assert db.policies is not None
    assert db.policies.circuit_breaker is not None
    assert db.policies.circuit_breaker.state is CircuitState.OPEN
    assert db.policies.circuit_breaker.trips == 1
    assert db.policies.circuit_breaker.not_permitted_calls == 2
    assert db.transitions == {("closed", "open"): 1}
    # the timeout was slower than slow_s: kept, without a statement (no SQL call)
    assert [(s.resource, s.outcome, s.statement) for s in snap.slow] == [("db", "timeout", None)]
    # insights: success rate 3/8 < 95 % over the window (min 10 calls: not yet)
    assert snap.insights == ()
    metrics.insight_min_calls = 8
    insights = metrics.stats().insights
    assert [i.kind for i in insights] == ["slow", "unreliable"]  # p99 = the 1 s timeout
    assert insights[0].value == pytest.approx(timeout_s * 1000, rel=0.125)
    assert (insights[1].value, insights[1].threshold, insights[1].calls) == (0.375, 0.95, 8)

    # Prometheus: the same figures
    got = families(render(metrics).decode())
    ok = (("operation", "fetch"), ("outcome", "ok"), ("resource", "db"))
    assert got["iogate_operation_duration_seconds_count"][ok] == 3
    assert got["iogate_operation_duration_seconds_sum"][ok] == pytest.approx(0.030)
    buckets = {
        dict(k)["le"]: v
        for k, v in got["iogate_operation_duration_seconds_bucket"].items()
        if ("outcome", "ok") in k
    }
    for le, v in buckets.items():
        assert v == (3 if le == "+Inf" or float(le) > 0.010 else 0)
    refused = (("operation", "fetch"), ("outcome", "circuit_open"), ("resource", "db"))
    assert got["iogate_operation_duration_seconds_count"][refused] == 2
    state = got["iogate_circuit_breaker_state"]
    assert state[(("resource", "db"), ("state", "open"))] == 1
    assert state[(("resource", "db"), ("state", "closed"))] == 0
    transitions = got["iogate_circuit_breaker_transitions_total"]
    assert transitions[(("from_state", "closed"), ("resource", "db"), ("to_state", "open"))] == 1
    assert got["iogate_circuit_breaker_rejections_total"][(("resource", "db"),)] == 2
    assert got["iogate_operations_in_flight"][(("resource", "db"),)] == 0

    # six minutes later the windows are empty; since-start figures remain
    clock.advance(360.0)
    later = metrics.stats().resource("db")
    assert later is not None
    op = later.operation("fetch")
    assert op is not None
    assert (op.calls, op.last_minute.calls, op.last_5_minutes.calls) == (8, 0, 0)
    # the breaker waited 30 s: half-open, a trial call goes through
    assert await pipeline.run(taking(clock, 0.002), operation="fetch") == "ok"
    later = metrics.stats().resource("db")
    assert later is not None
    op = later.operation("fetch")
    assert op is not None
    assert (op.calls, op.last_minute.calls, op.outcomes["ok"]) == (9, 1, 4)
    assert op.last_minute.latency.max_ms == pytest.approx(2.0, rel=0.125)
    assert later.transitions[("open", "half_open")] == 1


async def test_windows_slide_and_in_flight_counts_running_calls() -> None:
    clock = FakeClock(start=0.0)
    metrics = Metrics(clock=clock.monotonic)
    pipeline = Pipeline(resource="r", recorder=metrics, clock=clock)
    metrics.attach("r", kind="sqlite", pipeline=pipeline)
    for second in range(0, 300, 10):  # one call every 10 s for 5 minutes
        clock.advance(10.0 if second else 0.0)
        await pipeline.run(taking(clock, 0.001), operation="q")
    op = metrics.stats().resource("r").operation("q")  # type: ignore[union-attr]
    assert op is not None
    assert op.calls == 30
    assert 6 <= op.last_minute.calls <= 7  # the intervals overlapping the last 60 s
    assert op.last_5_minutes.calls == 30
    release = asyncio.Event()

    async def held() -> str:
        await release.wait()
        return "done"

    task = asyncio.ensure_future(pipeline.run(held, operation="q"))
    await asyncio.sleep(0)
    assert metrics.stats().resource("r").in_flight == 1  # type: ignore[union-attr]
    release.set()
    assert await task == "done"
    assert metrics.stats().resource("r").in_flight == 0  # type: ignore[union-attr]


def test_upstream_meter_and_token_families() -> None:
    metrics = Metrics()
    meter = UpstreamMeter()
    for code in (200, 201, 404, 503, 503, 700):
        meter.status(code)
    meter.tokens("gpt-x", 12, 30)
    meter.tokens("gpt-x", 8, None)
    metrics.attach("llm", kind="upstream", meter=meter)
    r = metrics.stats().resource("llm")
    assert r is not None
    assert r.statuses == {"1xx": 0, "2xx": 2, "3xx": 0, "4xx": 1, "5xx": 2, "other": 1}
    assert [(t.model, t.input, t.output, t.calls) for t in r.tokens] == [("gpt-x", 20, 30, 2)]
    got = families(render(metrics).decode())
    assert (
        got["iogate_upstream_responses_total"][(("resource", "llm"), ("status_class", "5xx"))] == 2
    )
    tokens = got["iogate_llm_tokens_total"]
    assert tokens[(("direction", "input"), ("model", "gpt-x"), ("resource", "llm"))] == 20
    assert tokens[(("direction", "output"), ("model", "gpt-x"), ("resource", "llm"))] == 30


def test_histogram_layout_is_log_linear_and_exact_at_the_edges() -> None:
    assert len(EDGES) == BUCKETS - 1
    assert bucket_of(0.0) == 0
    assert bucket_of(MIN_S / 2) == 0
    assert bucket_of(MAX_S * 10) == BUCKETS - 1
    for i in range(1, BUCKETS - 1):
        lo, hi = lower_bound(i), upper_bound(i)
        assert bucket_of(lo) == i
        assert bucket_of(math.nextafter(hi, 0.0)) == i
        assert (hi - lo) / lo <= 0.125 + 1e-12  # relative width
    for d in (1e-6, 3.3e-5, 0.0042, 0.25, 7.0, 100.0):
        counts = [0] * BUCKETS
        counts[bucket_of(d)] = 1
        assert percentile(counts, 1, 0.99, d) == pytest.approx(d, rel=0.125)
    assert all(bucket_of(b) == bucket_of(b * 1.0000001) for b in EXPORT_BOUNDS)
    assert tuple(sorted(EXPORT_BOUNDS)) == EXPORT_BOUNDS


def test_metrics_bounds_are_checked() -> None:
    with pytest.raises(ValueError, match="slow_s"):
        Metrics(slow_s=0)
    with pytest.raises(ValueError, match="insight_success_rate"):
        Metrics(insight_success_rate=1.5)


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (
            "SELECT * FROM t WHERE id = 42 AND name = 'bob' AND x IN (1, 2, 3)",
            "SELECT * FROM t WHERE id = ? AND name = ? AND x IN (?)",
        ),
        (
            "select a::int from t where b = $1 and c = :name",
            "select a::int from t where b = ? and c = ?",
        ),
        ("UPDATE  t\n SET v = 'it''s'  WHERE k = %(k)s", "UPDATE t SET v = ? WHERE k = ?"),
        ("SELECT col2, -3.5e2 FROM t2", "SELECT col2, ? FROM t2"),
    ],
)
def test_fingerprint_strips_literals_and_placeholders(sql: str, expected: str) -> None:
    assert fingerprint(sql) == expected


def test_alerts_on_p99_fire_once_then_resolve_as_the_window_slides() -> None:
    from iogate.observability._alerts import Alerts
    from iogate.observability.config import AlertRuleConfig

    clock = FakeClock(start=0.0)
    metrics = Metrics(clock=clock.monotonic)
    alerts = Alerts(
        [AlertRuleConfig(resource="*", max_p99=0.1, window="1m", min_calls=5)], clock=lambda: 42.0
    )
    seen: list[tuple[str, str, str]] = []
    alerts.subscribe(lambda e: seen.append((e.resource, e.condition, e.state)))
    for _ in range(10):
        metrics.record("pg", "fetch", "ok", 0.250)  # every call 250 ms: p99 > 100 ms
    events = alerts.evaluate(metrics.stats())
    assert [(e.condition, e.state, e.calls, e.at) for e, _ in events] == [
        ("p99", "firing", 10, 42.0)
    ]
    assert events[0][0].value == pytest.approx(0.25, rel=0.125)
    assert alerts.evaluate(metrics.stats()) == []  # still firing: no repeat
    clock.advance(120.0)  # the slow calls leave the 1-minute window...
    for _ in range(10):
        metrics.record("pg", "fetch", "ok", 0.002)
    alerts.evaluate(metrics.stats())
    assert seen == [("pg", "p99", "firing"), ("pg", "p99", "resolved")]
    assert alerts.firing == frozenset()
