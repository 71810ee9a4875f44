from __future__ import annotations

from cryptovol.core.ticks import Tick


class CollectingSink:
    """Stands in for the publisher: keeps what it is offered."""

    def __init__(self, room: int | None = None) -> None:
        self.ticks: list[Tick] = []
        self.received: list[int] = []
        self.dead_letters: list[tuple[bytes, str]] = []
        self.room = room  # refuse offers when this many are held (backpressure)

    def offer_ticks(self, ticks: list[Tick], received_us: int) -> bool:
        if self.room is not None and len(self.ticks) >= self.room:
            return False
        self.ticks.extend(ticks)
        self.received.append(received_us)
        return True

    def offer_dead_letter(self, raw: bytes, reason: str, key: bytes | None = None) -> bool:
        self.dead_letters.append((raw, reason))
        return True
