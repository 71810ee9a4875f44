"""Tunable rules of the feature engine (windows themselves are fixed, see ``names``)."""

from __future__ import annotations

from dataclasses import dataclass

from cryptovol.features.names import LONGEST_WINDOW_S


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
        """How far back a restarted consumer must replay so that its state equals
        an uninterrupted run's (longest window, plus one gap, plus the grace)."""
        return LONGEST_WINDOW_S + self.gap_s + self.grace_s
