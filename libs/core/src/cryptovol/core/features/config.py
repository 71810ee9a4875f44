"""Tunable rules of the feature engine (windows themselves are fixed, see ``names``)."""

from __future__ import annotations

from dataclasses import dataclass

from cryptovol.core.features.context import CONTEXT_S
from cryptovol.core.features.names import LONGEST_WINDOW_S, RET_WINDOW_S


@dataclass(frozen=True)
class FeatureConfig:
    """Gap, clock-jump and lateness rules, in seconds.

    - ``gap_s``: no tick of a product for more than this starts a new segment
      (the recordings have gaps of 15 s and more between files, at most 5.2 s
      inside one).
    - ``grace_s``: a tick older than the product's last event time by at most
      this is accepted with its time clamped to the last event time
      (out of order); older ticks are dropped as late.
    - ``jump_s``: a tick older than the last event time by more than this is a
      backwards clock jump: the product's state resets and a new segment starts.
    """

    gap_s: float = 10.0
    grace_s: float = 1.0
    jump_s: float = float(LONGEST_WINDOW_S)

    def __post_init__(self) -> None:
        if not self.gap_s > 0:
            raise ValueError("gap_s must be positive")
        if not 0 <= self.grace_s <= self.jump_s:
            raise ValueError("need 0 <= grace_s <= jump_s")

    @property
    def gap_us(self) -> int:
        return round(self.gap_s * 1_000_000)

    @property
    def grace_us(self) -> int:
        return round(self.grace_s * 1_000_000)

    @property
    def jump_us(self) -> int:
        return round(self.jump_s * 1_000_000)

    @property
    def rebuild_lookback_s(self) -> float:
        """How far back (in event time, before the first tick still to process)
        a fresh engine must start so that its rows equal an uninterrupted run's:
        the longest history a feature reads (the 30-minute context of RV_60
        values, each of which reads 60 s of ticks), two ticks before it (the
        reference price of the log return and the previous return of bipower
        variation, each at most one gap apart), and the grace of out-of-order
        ticks."""
        longest = max(LONGEST_WINDOW_S, CONTEXT_S + RET_WINDOW_S)
        return longest + 2 * self.gap_s + self.grace_s
