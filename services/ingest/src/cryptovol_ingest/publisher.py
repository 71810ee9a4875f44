"""The Kafka side of ingest: one thread that takes ticks from the bounded queue,
appends them to the spool and sends the spool to ``ticks.raw`` in order.

Every tick goes through the spool (a write-ahead log), so there is one code path
for good and bad times:

* Kafka healthy: records are appended, handed to the idempotent producer right away
  and committed in the spool as acknowledgements arrive.
* Kafka unavailable (the oldest unacknowledged send is older than
  ``KAFKA_ACK_TIMEOUT_S``, or ``send`` fails): sending pauses; the exchange reader is
  unaffected and the spool grows. Records already handed to the producer stay with it:
  it retries them itself (under the same producer id and sequence numbers, so the
  broker discards copies it already has) and they are never handed over twice.
* Kafka back (those records are acknowledged, or a probe finds the broker): sending
  resumes from the first unsent spool record, in order.

A record is handed to the producer exactly once per process, and per product key all
records go to one partition in spool order, so ``ticks.raw`` gets every tick once, in
order. The exception is a restart: records handed over but not yet committed when the
process stopped are sent again by the next run (at least once; ``record_id`` lets the
featurizer drop the copies). A graceful stop waits ``SHUTDOWN_GRACE_S`` for them.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from kafka.errors import KafkaError, KafkaTimeoutError

from cryptovol.core.codec import encode_tick
from cryptovol.core.ticks import Tick
from cryptovol.core.timestamps import MICROS_PER_SECOND
from cryptovol.runtime.kafka import DeadLetter, broker_reachable, ensure_topics
from cryptovol.runtime.logs import get_logger
from cryptovol_ingest.metrics import IngestMetrics
from cryptovol_ingest.settings import IngestSettings
from cryptovol_ingest.spool import Spool, SpoolRecord

log = get_logger(__name__)

TICKS = 0
DEAD_LETTER = 1
BATCH = 2000  # queue items taken per loop turn
DEAD_LETTER_BUFFER = 10_000

AckHook = Callable[[SpoolRecord, float], None]


class _Sent:
    __slots__ = ("acked_at", "done", "error", "record", "sent_at")

    def __init__(self, record: SpoolRecord, sent_at: float) -> None:
        self.record = record
        self.sent_at = sent_at
        self.acked_at = 0.0
        self.error: BaseException | None = None
        self.done = False

    def ok(self, _metadata: object) -> None:  # runs on the producer's I/O thread
        self.acked_at = time.time()
        self.done = True

    def failed(self, exc: BaseException) -> None:
        self.error = exc
        self.done = True


class Publisher:
    def __init__(
        self,
        settings: IngestSettings,
        spool: Spool,
        metrics: IngestMetrics,
        *,
        producer_factory: Callable[[], Any],
        probe: Callable[[], bool] | None = None,
        ensure: Callable[[], object] | None = None,
        on_ack: AckHook | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.topic = settings.topic_raw
        self.spool = spool
        self.metrics = metrics
        self.queue: queue.Queue[tuple] = queue.Queue(maxsize=settings.queue_size)
        self._producer_factory = producer_factory
        self._probe = probe or self._default_probe
        self._ensure = ensure or (lambda: ensure_topics(settings, [self.topic]))
        self._on_ack = on_ack
        self._clock = clock
        self.producer: Any = None
        self.ready_at: float | None = None  # wall time the producer first connected
        self._dead_letters: deque[tuple[bytes, str, bytes | None]] = deque()
        self._pending: deque[_Sent] = deque()
        self._retry: deque[SpoolRecord] = deque()
        self._paused = True  # until a producer exists
        self._paused_at = clock()
        self._acked_since_pause = False
        self._reachable = threading.Event()
        self._topics_ready = False
        self._prober: threading.Thread | None = None
        self._stop = threading.Event()
        self._stop_deadline: float | None = None
        self._thread: threading.Thread | None = None
        self._last_drop_log = 0.0
        self._dropped_since_log = 0
        # counters for health and tests
        self.outages = 0
        self.max_spool_depth = 0
        self.dropped = 0
        self.sent = 0
        self.acked = 0

    # -- the reader's side ----------------------------------------------------------------------

    def offer(self, item: tuple) -> bool:
        try:
            self.queue.put_nowait(item)
            return True
        except queue.Full:
            return False

    def offer_ticks(self, ticks: list[Tick], received_us: int) -> bool:
        return self.offer((TICKS, received_us, ticks))

    def offer_dead_letter(self, raw: bytes, reason: str, key: bytes | None = None) -> bool:
        return self.offer((DEAD_LETTER, raw, reason, key))

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> Publisher:
        self._thread = threading.Thread(target=self._run_guarded, name="publisher", daemon=True)
        self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def paused(self) -> bool:
        return self._paused

    def idle(self) -> bool:
        """True when everything received so far is acknowledged by Kafka."""
        return self.queue.unfinished_tasks == 0 and self.spool.unacked == 0 and not self._retry

    def wait_idle(self, timeout: float | None = None,
                  cancel: Callable[[], bool] = lambda: False) -> bool:
        deadline = None if timeout is None else self._clock() + timeout
        while not self.idle():
            if cancel() or not self.alive or (deadline is not None and self._clock() > deadline):
                return False
            time.sleep(0.02)
        return True

    def stop(self, grace_s: float | None = None) -> None:
        """Stop after the queue is spooled and in-flight records are acknowledged (or the
        grace period ends); unacknowledged records stay in the spool for the next run."""
        grace = self.settings.shutdown_grace_s if grace_s is None else grace_s
        self._stop_deadline = self._clock() + grace
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    # -- the writer thread ----------------------------------------------------------------------

    def _run_guarded(self) -> None:
        try:
            self._run()
        except Exception:
            log.exception("publisher failed; ticks received from now on are not published")
            raise
        finally:
            self._close()

    def _run(self) -> None:
        self._try_connect()
        while True:
            busy = not self._paused and (self.spool.unsent or self._retry) and (
                len(self._pending) < self.settings.max_in_flight_ticks)
            self._accept(0.0 if busy else 0.05)
            self._reap()
            if self._paused:
                self._maybe_resume()
            else:
                self._check_acks()
            if not self._paused:
                self._send_some()
                self._send_dead_letters()
            depth = self.spool.unacked
            self.metrics.spool_depth.set(depth)
            self.max_spool_depth = max(self.max_spool_depth, depth)
            if self._stop.is_set() and self.queue.empty():
                done = not self._pending and (self.spool.unacked == 0 or self._paused)
                if done or self._clock() > (self._stop_deadline or 0):
                    return

    def _accept(self, timeout: float) -> None:
        try:
            items = [self.queue.get(timeout=timeout) if timeout else self.queue.get_nowait()]
        except queue.Empty:
            return
        try:
            while len(items) < BATCH:
                items.append(self.queue.get_nowait())
        except queue.Empty:
            pass
        records: list[tuple[float, bytes, bytes]] = []
        for item in items:
            if item[0] == TICKS:
                received = item[1] / MICROS_PER_SECOND  # the spool keeps wall seconds
                records.extend((received, t.product_id.encode(), encode_tick(t)) for t in item[2])
            else:
                self._buffer_dead_letter(item[1], item[2], item[3])
        if records:
            accepted = self.spool.append(records)
            self.spool.flush()
            if accepted < len(records):
                self._count_drops(len(records) - accepted)
        for _ in items:
            self.queue.task_done()

    def _count_drops(self, n: int) -> None:
        self.dropped += n
        self._dropped_since_log += n
        self.metrics.spool_dropped.inc(n)
        now = self._clock()
        if now - self._last_drop_log >= 10 or self._last_drop_log == 0:
            log.error("spool is full: dropping new ticks until Kafka drains it",
                      extra={"dropped": self._dropped_since_log, "dropped_total": self.dropped,
                             "spool_bytes": self.spool.bytes_on_disk,
                             "spool_max_bytes": self.spool.max_bytes})
            self._last_drop_log, self._dropped_since_log = now, 0

    def _send_some(self) -> None:
        budget = self.settings.max_in_flight_ticks - len(self._pending)
        if budget <= 0:
            return
        records: list[SpoolRecord] = []
        while self._retry and len(records) < budget:
            records.append(self._retry.popleft())
        if len(records) < budget:
            records.extend(self.spool.read(min(budget - len(records), BATCH)))
        now = self._clock()
        send = self.producer.send
        for i, record in enumerate(records):
            try:
                future = send(self.topic, key=record.key, value=record.value)
            except (KafkaError, OSError) as exc:
                self._retry.extendleft(reversed(records[i:]))
                self._pause(f"send failed: {exc!r}")
                return
            entry = _Sent(record, now)
            self._pending.append(entry)
            future.add_callback(entry.ok)
            future.add_errback(entry.failed)
        self.sent += len(records)

    def _reap(self) -> None:
        pending = self._pending
        if not pending or not pending[0].done:
            return
        committed = 0
        last_end = None
        latency = self.metrics.publish_latency
        while pending and pending[0].done:
            entry = pending.popleft()
            record = entry.record
            if entry.error is not None:
                if self._failed(entry):  # settled for good (dead-lettered)
                    committed += 1
                    last_end = record.end if last_end is None else max(last_end, record.end)
                continue
            committed += 1
            last_end = record.end if last_end is None else max(last_end, record.end)
            latency.observe(max(0.0, entry.acked_at - record.received))
            self.metrics.published(record.key.decode()).inc()
            if self._on_ack is not None:
                self._on_ack(record, entry.acked_at)
        if committed:
            self.acked += committed
            self._acked_since_pause = True
            self.spool.commit(last_end, committed)  # type: ignore[arg-type]

    def _failed(self, entry: _Sent) -> bool:
        """Handle a record the producer gave up on; True when it is settled for good."""
        exc = entry.error
        if isinstance(exc, KafkaTimeoutError) or getattr(exc, "retriable", False):
            # the producer gave up after its delivery timeout: send again (at least once)
            self._retry.append(entry.record)
            self._pause(f"delivery failed: {exc!r}")
            return False
        else:
            log.error("Kafka rejected a tick; dead-lettering it",
                      extra={"error": repr(exc), "key": entry.record.key.decode()})
            self._buffer_dead_letter(entry.record.value, f"kafka rejected: {exc!r}",
                                     entry.record.key)
            return True

    def _check_acks(self) -> None:
        if self._pending:
            age = self._clock() - self._pending[0].sent_at
            if age > self.settings.kafka_ack_timeout_s:
                self._pause(f"no acknowledgement for {age:.1f}s")

    # -- outage handling ------------------------------------------------------------------------

    def _pause(self, reason: str) -> None:
        if self._paused:
            return
        self._paused = True
        self._paused_at = self._clock()
        self._acked_since_pause = False
        self._reachable.clear()
        self.outages += 1
        log.warning("Kafka unavailable: spooling ticks to disk",
                    extra={"reason": reason, "in_flight": len(self._pending),
                           "spool_depth": self.spool.unacked,
                           "spool_dir": str(self.spool.directory)})
        self._start_prober()

    def _maybe_resume(self) -> None:
        if self._pending:
            return
        if self.producer is None:
            if self._reachable.is_set():
                self._try_connect()
            return
        if self._acked_since_pause or self._reachable.is_set():
            self._paused = False
            log.info("Kafka available again: draining the spool",
                     extra={"spool_depth": self.spool.unacked,
                            "paused_s": round(self._clock() - self._paused_at, 1)})

    def _try_connect(self) -> None:
        try:
            if not self._probe():
                raise OSError(f"no broker answered at {self.settings.bootstrap}")
            if not self._topics_ready:
                self._ensure()
                self._topics_ready = True
            self.producer = self._producer_factory()
            self.ready_at = self.ready_at or time.time()
        except (KafkaError, OSError) as exc:
            if self.outages == 0:
                self.outages = 1
            log.warning("Kafka not reachable yet; spooling until it is", extra={"error": repr(exc)})
            self._paused = True
            self._reachable.clear()
            self._start_prober()
            return
        self._paused = False

    def _default_probe(self) -> bool:
        return broker_reachable(self.settings.bootstrap, timeout_s=2.0)

    def _start_prober(self) -> None:
        if self._prober is not None and self._prober.is_alive():
            return

        def probe_until_reachable() -> None:
            while self._paused and not self._stop.is_set():
                try:
                    if self._probe():
                        self._reachable.set()
                        return
                except Exception as exc:  # a failing probe is an unreachable broker
                    log.debug("probe failed", extra={"error": repr(exc)})
                self._stop.wait(self.settings.kafka_probe_interval_s)

        self._prober = threading.Thread(target=probe_until_reachable, name="kafka-probe",
                                        daemon=True)
        self._prober.start()

    # -- dead letters (best effort: buffered in memory while Kafka is away) ---------------------

    def _buffer_dead_letter(self, raw: bytes, reason: str, key: bytes | None) -> None:
        if len(self._dead_letters) >= DEAD_LETTER_BUFFER:
            self._dead_letters.popleft()
            log.warning("dead-letter buffer full; discarding the oldest")
        self._dead_letters.append((raw, reason, key))

    def _send_dead_letters(self) -> None:
        if not self._dead_letters or self.producer is None:
            return
        dead_letter = DeadLetter(self.producer)
        while self._dead_letters:
            raw, reason, key = self._dead_letters[0]
            try:
                dead_letter.send(self.topic, raw, reason, key=key)
            except (KafkaError, OSError) as exc:
                log.warning("dead letter not sent; will retry", extra={"error": repr(exc)})
                return
            self._dead_letters.popleft()

    def _close(self) -> None:
        unacked = self.spool.unacked
        if self.producer is not None:
            try:
                self.producer.close(timeout=2)
            except Exception as exc:
                log.warning("producer close failed", extra={"error": repr(exc)})
        self._reap()
        self.spool.close()
        if self.spool.unacked:
            log.warning("stopping with ticks not yet acknowledged; they stay in the spool and "
                        "are sent first on the next start (possibly a second time)",
                        extra={"ticks": self.spool.unacked, "spool_dir": str(self.spool.directory)})
        elif unacked:
            log.info("all ticks acknowledged before stopping")
