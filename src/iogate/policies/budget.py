"""Retry budget: retries allowed up to a ratio of recent calls, plus a floor per second.

The design of Finagle's ``RetryBudget`` (Twitter, 2016) and tower's ``TpsBudget``,
which gRPC's retry throttling (proposal A6) pursues with a token bucket: every
call *deposits*; every retry or hedge *withdraws*; deposits expire after ``ttl_s``
seconds. A withdrawal succeeds while::

    min_per_s * ttl_s + ratio * deposits(last ttl_s) - withdrawals(last ttl_s) >= 1

so a dependency that fails every call can be retried at most ``ratio`` times per
call (plus the small floor), never ``max_attempts - 1`` times: no retry storm.
One budget is shared by every :class:`~iogate.policies.Retry` and
:class:`~iogate.policies.Hedge` of a resource.

The window is kept in ``slots`` buckets of ``ttl_s / slots`` seconds, so
``deposit`` and ``try_withdraw`` are O(1) amortised and allocate nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from .clock import Clock, SystemClock

__all__ = ["RetryBudget", "RetryBudgetSnapshot"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryBudgetSnapshot:
    """Counters of a :class:`RetryBudget` (deposits and withdrawals over the live window)."""

    ratio: float
    min_per_s: float
    ttl_s: float
    deposits_in_window: int
    withdrawals_in_window: int
    balance: float
    withdrawals: int
    rejections: int


class RetryBudget:
    """A shared allowance of retries (Finagle ``RetryBudget`` semantics).

    Args:
        ratio: retries allowed per call in the window (0.2 = one retry per five calls; 0..1000).
        min_per_s: retries per second always allowed, whatever the traffic (>= 0).
        ttl_s: seconds a deposit counts for (1..60, as in Finagle).
        slots: number of buckets the window is kept in (1..1000).
        clock: time source.

    Raises:
        ValueError: a bound above is violated.
    """

    __slots__ = (
        "_clock",
        "_cur_dep",
        "_cur_wd",
        "_dep_sum",
        "_deps",
        "_head",
        "_now",
        "_rejections",
        "_reserve",
        "_slot_end",
        "_slot_width",
        "_wd_sum",
        "_wds",
        "_withdrawals",
        "min_per_s",
        "ratio",
        "ttl_s",
    )

    def __init__(
        self,
        *,
        ratio: float = 0.2,
        min_per_s: float = 10.0,
        ttl_s: float = 10.0,
        slots: int = 10,
        clock: Clock | None = None,
    ) -> None:
        if not 0 <= ratio <= 1000:
            raise ValueError(f"ratio must be in [0, 1000], got {ratio!r}")
        if min_per_s < 0:
            raise ValueError(f"min_per_s must be >= 0, got {min_per_s!r}")
        if not 1 <= ttl_s <= 60:
            raise ValueError(f"ttl_s must be in [1, 60] seconds, got {ttl_s!r}")
        if not 1 <= slots <= 1000:
            raise ValueError(f"slots must be in [1, 1000], got {slots!r}")
        self.ratio = ratio
        self.min_per_s = min_per_s
        self.ttl_s = ttl_s
        self._clock = clock if clock is not None else SystemClock()
        self._now = self._clock.monotonic
        self._reserve = min_per_s * ttl_s
        self._slot_width = ttl_s / slots
        self._deps = [0] * slots  # closed slots, ring
        self._wds = [0] * slots
        self._head = 0
        self._dep_sum = 0  # sum over closed slots
        self._wd_sum = 0
        self._cur_dep = 0  # the open slot
        self._cur_wd = 0
        self._slot_end = self._now() + self._slot_width
        self._withdrawals = 0
        self._rejections = 0

    @property
    def withdrawals(self) -> int:
        """Retries and hedges the budget allowed, since creation."""
        return self._withdrawals

    @property
    def rejections(self) -> int:
        """Withdrawals refused (budget overdrawn), since creation."""
        return self._rejections

    def _roll(self, now: float) -> None:
        n = len(self._deps)
        width = self._slot_width
        steps = int((now - self._slot_end) // width) + 1
        for _ in range(min(steps, n + 1)):
            # Close the open slot into the ring, evicting the oldest.
            h = self._head
            self._dep_sum += self._cur_dep - self._deps[h]
            self._wd_sum += self._cur_wd - self._wds[h]
            self._deps[h] = self._cur_dep
            self._wds[h] = self._cur_wd
            self._head = (h + 1) % n
            self._cur_dep = 0
            self._cur_wd = 0
        self._slot_end += steps * width

    def deposit(self, now: float | None = None) -> None:
        """Record one call; synchronous, O(1) amortised.

        Args:
            now: the clock's reading, seconds, if the caller has it (the pipeline does).
        """
        if now is None:
            now = self._now()
        if now >= self._slot_end:
            self._roll(now)
        self._cur_dep += 1

    def balance(self, now: float | None = None) -> float:
        """Retries currently allowed (may be fractional; a withdrawal needs >= 1)."""
        if now is None:
            now = self._now()
        if now >= self._slot_end:
            self._roll(now)
        deposits = self._dep_sum + self._cur_dep
        withdrawals = self._wd_sum + self._cur_wd
        return self._reserve + self.ratio * deposits - withdrawals

    def try_withdraw(self, now: float | None = None) -> bool:
        """Take one retry from the budget; ``False`` (and count a rejection) if overdrawn."""
        if self.balance(now) >= 1.0:
            self._cur_wd += 1
            self._withdrawals += 1
            return True
        self._rejections += 1
        return False

    def stats(self) -> RetryBudgetSnapshot:
        """Frozen counters of the current window."""
        bal = self.balance()
        return RetryBudgetSnapshot(
            ratio=self.ratio,
            min_per_s=self.min_per_s,
            ttl_s=self.ttl_s,
            deposits_in_window=self._dep_sum + self._cur_dep,
            withdrawals_in_window=self._wd_sum + self._cur_wd,
            balance=bal,
            withdrawals=self._withdrawals,
            rejections=self._rejections,
        )

    def __repr__(self) -> str:
        return (
            f"RetryBudget(ratio={self.ratio}, min_per_s={self.min_per_s}, ttl_s={self.ttl_s}, "
            f"balance={self.balance():.1f})"
        )
