"""Log-linear latency buckets: the layout, the bucket of a duration, percentiles.

Durations are counted in buckets that split every power of two into
:data:`SUB_BUCKETS` equal parts (the "log-linear" layout of HdrHistogram and
of OpenTelemetry's exponential histograms, here with a fixed base): the
relative width of a bucket is at most 1/8 (12.5 %), so a percentile read
from the buckets is within 12.5 % of the true value, whatever the scale.

The bucket of a duration is one ``bisect_right`` over the precomputed bucket
edges :data:`EDGES` (a C binary search of 8 float comparisons, measured
cheaper in CPython than computing it with ``math.frexp`` and ``int``), and
needs no clamping: durations below the first edge land in bucket 0, above
the last in the last bucket.

Range: :data:`MIN_S` (2**-20 s, about 0.95 µs) to :data:`MAX_S` (256 s);
shorter durations count in the first bucket, longer ones in the last (the
exact maximum is kept beside the buckets).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from typing import Final

__all__ = [
    "BUCKETS",
    "MAX_S",
    "MIN_S",
    "EDGES",
    "EXPORT_BUCKETS",
    "SUB_BUCKETS",
    "bucket_of",
    "cumulative_at",
    "lower_bound",
    "percentile",
    "upper_bound",
]

SUB_BUCKETS: Final = 8
"""Buckets per power of two."""
MIN_EXP: Final = -19
"""frexp exponent of the first octave: [2**-20, 2**-19) seconds."""
MAX_EXP: Final = 8
"""frexp exponent of the last octave: [2**7, 2**8) seconds."""
BUCKETS: Final = (MAX_EXP - MIN_EXP + 1) * SUB_BUCKETS
"""Number of buckets (224)."""
MIN_S: Final = 2.0**-20
MAX_S: Final = 2.0**MAX_EXP


def bucket_of(duration_s: float) -> int:
    """The bucket index (0..BUCKETS-1) of a duration in seconds (clamped at both ends)."""
    return bisect_right(EDGES, duration_s)


def lower_bound(i: int) -> float:
    """The smallest duration (seconds) counted in bucket ``i``."""
    e, k = divmod(i, SUB_BUCKETS)
    return (SUB_BUCKETS + k) / (2 * SUB_BUCKETS) * 2.0 ** (e + MIN_EXP)


def upper_bound(i: int) -> float:
    """The (exclusive) upper edge of bucket ``i``, seconds."""
    e, k = divmod(i, SUB_BUCKETS)
    return (SUB_BUCKETS + k + 1) / (2 * SUB_BUCKETS) * 2.0 ** (e + MIN_EXP)


def percentile(counts: Sequence[int], total: int, q: float, max_s: float) -> float:
    """The ``q`` quantile (0 < q <= 1) of the counted durations, seconds.

    Nearest rank (``ceil(q * total)``-th smallest), reported as the middle of
    its bucket, capped at the exact maximum ``max_s``; 0.0 when ``total`` is 0.
    """
    if total <= 0:
        return 0.0
    rank = max(1, math.ceil(q * total))
    seen = 0
    for i, n in enumerate(counts):
        if n:
            seen += n
            if seen >= rank:
                mid = (lower_bound(i) + upper_bound(i)) / 2
                return min(mid, max_s) if i < BUCKETS - 1 else max_s
    return max_s


EXPORT_BUCKETS: Final = tuple(range(3 * SUB_BUCKETS, 27 * SUB_BUCKETS, 2 * SUB_BUCKETS))
"""Bucket indices whose lower edges are the exported ``le`` bounds: powers of four
from 2**-17 s (7.6 µs) to 2**5 s (32 s), exact bucket edges."""

EDGES: Final = tuple(lower_bound(i) for i in range(1, BUCKETS))
"""Lower edges of buckets 1..BUCKETS-1, seconds: ``bisect_right(EDGES, d)`` is d's bucket."""


def cumulative_at(counts: Sequence[int], bounds: Sequence[int] = EXPORT_BUCKETS) -> list[int]:
    """Cumulative counts at bucket edges: for each ``b`` in ``bounds`` (ascending
    bucket indices), the number of durations in buckets ``< b`` — i.e. below
    ``lower_bound(b)`` — then the total of all :data:`BUCKETS` buckets (``+Inf``).
    Used for Prometheus ``le`` buckets placed on edges."""
    out: list[int] = []
    acc = 0
    start = 0
    for b in bounds:
        acc += sum(counts[start:b])
        start = b
        out.append(acc)
    out.append(acc + sum(counts[start:BUCKETS]))
    return out
