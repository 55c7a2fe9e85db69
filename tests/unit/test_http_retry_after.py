from datetime import UTC, datetime

import pytest
from multidict import CIMultiDict

from iogate.http._retry_after import parse_duration, retry_after_s, should_retry

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def h(**kw: str) -> CIMultiDict[str]:
    return CIMultiDict({k.replace("_", "-"): v for k, v in kw.items()})


@pytest.mark.parametrize(
    ("status", "retry"),
    [
        (408, True),
        (409, True),
        (429, True),
        (500, True),
        (503, True),
        (529, True),
        (400, False),
        (401, False),
        (404, False),
        (422, False),
        (200, False),
    ],
)
def test_status_rules(status: int, retry: bool) -> None:
    assert should_retry(status, h()) is retry


def test_x_should_retry_wins_both_ways() -> None:
    assert should_retry(500, h(x_should_retry="false")) is False
    assert should_retry(400, h(x_should_retry="TRUE")) is True
    assert should_retry(500, h(x_should_retry="maybe")) is True


def test_retry_after_ms_first_then_seconds_then_date() -> None:
    assert retry_after_s(429, h(retry_after_ms="1500", retry_after="9"), now=NOW) == 1.5
    assert retry_after_s(503, h(retry_after="2.5"), now=NOW) == 2.5
    assert retry_after_s(503, h(retry_after="Thu, 01 Jan 2026 12:00:30 GMT"), now=NOW) == 30.0
    assert retry_after_s(503, h(retry_after="Thu, 01 Jan 2026 11:00:00 GMT"), now=NOW) == 0.0
    assert retry_after_s(503, h(retry_after="-3"), now=NOW) == 0.0
    assert retry_after_s(503, h(retry_after="soon"), now=NOW) is None
    assert retry_after_s(503, h(), now=NOW) is None


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("1h2m3.5s", 3723.5),
        ("7.25", 7.25),
        ("", None),
        ("3x", None),
        ("s1", None),
    ],
)
def test_openai_durations(text: str, seconds: float | None) -> None:
    assert parse_duration(text) == seconds


def test_rate_limit_resets_only_on_429_and_exhausted_limit_wins() -> None:
    headers = h(
        x_ratelimit_remaining_requests="0",
        x_ratelimit_reset_requests="2s",
        x_ratelimit_remaining_tokens="100",
        x_ratelimit_reset_tokens="1m",
    )
    assert retry_after_s(429, headers, now=NOW) == 2.0
    assert retry_after_s(503, headers, now=NOW) is None
    del headers["x-ratelimit-remaining-requests"]
    assert retry_after_s(429, headers, now=NOW) == 60.0  # none exhausted: the longest


def test_anthropic_reset_instants() -> None:
    headers = h(
        anthropic_ratelimit_tokens_remaining="0",
        anthropic_ratelimit_tokens_reset="2026-01-01T12:00:12Z",
        anthropic_ratelimit_requests_remaining="5",
        anthropic_ratelimit_requests_reset="2026-01-01T12:00:40Z",
    )
    assert retry_after_s(429, headers, now=NOW) == 12.0
