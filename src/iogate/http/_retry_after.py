"""When to retry an HTTP answer, and after how long — the rules the LLM SDKs settled on.

:func:`should_retry` follows openai-python / anthropic-sdk-python
(``BaseClient._should_retry``):

1. ``x-should-retry: true`` / ``false`` from the server overrides everything;
2. otherwise 408 Request Timeout, 409 Conflict (lock timeout), 429 Too Many
   Requests and every 5xx (Anthropic's 529 Overloaded included) are retried.

:func:`retry_after_s` reads the delay the server asks for, first match wins:

1. ``retry-after-ms``: milliseconds (OpenAI / Anthropic extension);
2. ``Retry-After``: delay-seconds or an HTTP-date (RFC 9110 §10.2.3);
3. on a 429 only, rate-limit reset headers of the exhausted limit — OpenAI's
   ``x-ratelimit-reset-{requests,tokens}`` (durations like ``"6m0s"``,
   ``"20ms"``) and Anthropic's ``anthropic-ratelimit-{requests,tokens,
   input-tokens,output-tokens}-reset`` (RFC 3339 instants) — a limit is
   exhausted when its ``...-remaining`` header is ``0``; with none marked
   exhausted, the longest reset is taken.

Delays are float seconds, never negative; unparsable values are ignored
(``None``: the caller's backoff applies).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Final

__all__ = ["RETRY_STATUSES", "parse_duration", "retry_after_s", "should_retry"]

RETRY_STATUSES: Final = frozenset({408, 409, 429})
"""Non-5xx statuses retried by default (every status >= 500 is retried too)."""

_DURATION: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_OPENAI_RESETS: Final = ("requests", "tokens")
_ANTHROPIC_RESETS: Final = ("requests", "tokens", "input-tokens", "output-tokens")


def should_retry(status: int, headers: Mapping[str, str]) -> bool:
    """Whether an answer with ``status`` and ``headers`` is worth another attempt."""
    override = headers.get("x-should-retry")
    if override is not None:
        flag = override.strip().lower()
        if flag == "true":
            return True
        if flag == "false":
            return False
    return status in RETRY_STATUSES or status >= 500


def parse_duration(text: str) -> float | None:
    """Seconds in an OpenAI rate-limit duration (``"1s"``, ``"6m0s"``, ``"1h2m3.5s"``,
    ``"20ms"``) or a bare number of seconds; ``None`` when unparsable."""
    text = text.strip()
    try:
        return max(float(text), 0.0)
    except ValueError:
        pass  # not a bare number: parse the "1h2m3.5s" form below
    pos = 0
    total = 0.0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            return None
        value, unit = float(match.group(1)), match.group(2)
        total += value * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[unit]
        pos = match.end()
    return total if pos == len(text) and pos > 0 else None


def _http_date_delay(text: str, now: datetime) -> float | None:
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT
        when = when.replace(tzinfo=UTC)
    return max((when - now).total_seconds(), 0.0)


def _instant_delay(text: str, now: datetime) -> float | None:
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - now).total_seconds(), 0.0)


def retry_after_s(
    status: int, headers: Mapping[str, str], *, now: datetime | None = None
) -> float | None:
    """The delay in seconds the server asks for before the next attempt, or ``None``.

    Args:
        status: the answer's status (reset headers count on a 429 only).
        headers: case-insensitive response headers.
        now: the wall-clock time (UTC) HTTP-dates are measured from; default now.
    """
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(float(ms) / 1000.0, 0.0)
        except ValueError:
            pass  # malformed: the SDKs then read Retry-After, as below
    now = now if now is not None else datetime.now(UTC)
    after = headers.get("retry-after")
    if after is not None:
        try:
            return max(float(after), 0.0)
        except ValueError:
            delay = _http_date_delay(after, now)
            if delay is not None:
                return delay
    if status != 429:
        return None
    exhausted: list[float] = []
    others: list[float] = []
    for kind in _OPENAI_RESETS:
        reset = headers.get(f"x-ratelimit-reset-{kind}")
        delay = parse_duration(reset) if reset is not None else None
        if delay is not None:
            left = headers.get(f"x-ratelimit-remaining-{kind}")
            (exhausted if left is not None and left.strip() == "0" else others).append(delay)
    for kind in _ANTHROPIC_RESETS:
        reset = headers.get(f"anthropic-ratelimit-{kind}-reset")
        delay = _instant_delay(reset, now) if reset is not None else None
        if delay is not None:
            left = headers.get(f"anthropic-ratelimit-{kind}-remaining")
            (exhausted if left is not None and left.strip() == "0" else others).append(delay)
    if exhausted:
        return max(exhausted)
    return max(others) if others else None
