"""XFetch: probabilistic early recomputation against cache stampedes.

From Vattani, Chierichetti and Lowenstein, "Optimal Probabilistic Cache
Stampede Prevention", PVLDB 8(8), 2015, Algorithm 1: a reader of a value that
took ``delta`` seconds to compute and expires at ``expiry`` recomputes it early
when::

    now - delta * beta * ln(rand()) >= expiry        rand() uniform in (0, 1]

``-ln(rand())`` is exponentially distributed, so the probability of an early
refresh grows as expiry nears, faster for values that are slow to compute;
``beta`` > 1 favours earlier refreshes, < 1 later ones, 0 turns XFetch off.
The paper proves this schedule optimal among memoryless policies: one
recomputation per expiry in expectation, started about ``delta * beta`` before it.

Both the random source and the time are passed in, so tests are deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Callable

__all__ = ["XFETCH_HORIZON", "should_refresh_early", "should_refresh_early_at"]

XFETCH_HORIZON = 30.0
"""A hit more than ``30 * delta * beta`` seconds before expiry skips the draw: the
paper's probability there is ``exp(-30)`` < 1e-13, so skipping it changes
nothing measurable and saves a random number and a logarithm on most hits."""


def should_refresh_early(
    *, now: float, expires_at: float, delta_s: float, beta: float, rng: Callable[[], float]
) -> bool:
    """Whether a reader at ``now`` should recompute a value expiring at ``expires_at``.

    Args:
        now, expires_at: seconds on one clock.
        delta_s: how long the value took to compute, seconds (≥ 0).
        beta: the paper's β (≥ 0; 1.0 is the paper's recommended default).
        rng: uniform random numbers in [0, 1) (``random.random``); ``1 - rng()``
            is used so the logarithm's argument is in (0, 1].
    """
    if beta <= 0 or delta_s <= 0:
        return now >= expires_at
    return now - delta_s * beta * math.log(1.0 - rng()) >= expires_at


def should_refresh_early_at(
    now: float, expires_at: float, delta_s: float, beta: float, rng: Callable[[], float]
) -> bool:
    """:func:`should_refresh_early` with positional arguments, for the hit path
    (``delta_s`` > 0 and ``beta`` > 0 already checked by the caller)."""
    return now - delta_s * beta * math.log(1.0 - rng()) >= expires_at
