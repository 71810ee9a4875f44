"""A cached, time-limited broker check for /health.

A background thread asks the broker for metadata every ``interval_s`` (each
attempt bounded by ``timeout_s``); /health reads the last answer and so stays
fast whatever the broker does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from cryptovol.runtime.kafka import broker_reachable
from cryptovol.runtime.logs import get_logger

log = get_logger(__name__)

Check = Callable[[str, float], bool]


class KafkaProbe:
    def __init__(
        self,
        bootstrap: str,
        interval_s: float = 15.0,
        timeout_s: float = 2.0,
        check: Check = broker_reachable,
    ) -> None:
        self.bootstrap = bootstrap
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._check = check
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._connected = False
        self._checked_at: float | None = None  # Unix time of the last finished check

    def snapshot(self) -> tuple[bool, float | None]:
        return self._connected, self._checked_at

    def check_once(self) -> bool:
        try:
            ok = bool(self._check(self.bootstrap, self.timeout_s))
        except Exception:  # a failing check means "not connected", never a crash
            log.exception("kafka check failed")
            ok = False
        if ok != self._connected or self._checked_at is None:
            log.info("kafka reachability", extra={"bootstrap": self.bootstrap, "connected": ok})
        self._connected, self._checked_at = ok, time.time()
        return ok

    def _run(self) -> None:
        while not self._stop.is_set():
            self.check_once()
            self._stop.wait(self.interval_s)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="kafka-probe", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout_s + 1.0)
            self._thread = None
