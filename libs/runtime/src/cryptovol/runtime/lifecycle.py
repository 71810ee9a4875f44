"""Process lifecycle of the services: shutdown on SIGTERM/SIGINT, and one GC tuning."""

from __future__ import annotations

import gc
import signal
import threading


class Shutdown:
    """Turns SIGTERM and SIGINT into an event the main loop can poll."""

    def __init__(self, install: bool = True) -> None:
        self._event = threading.Event()
        if install and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._event.set()

    def request(self) -> None:
        self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(timeout)


def tune_gc() -> None:
    """Fewer, cheaper garbage collections for a stream service: every record
    allocates short-lived objects and long-lived state holds many small ones; the
    default thresholds spend a large share of the CPU scanning them. Objects
    alive at start-up (modules, settings, a loaded model) are frozen out of the
    scans."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)
