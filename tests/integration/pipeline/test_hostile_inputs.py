"""Hostile input at every edge of the pipeline, on one real pipeline (broker,
fake exchange, ingest, featurizer, consumer, API as processes).

- exchange messages (injected between the recorded tickers of BTC-USD and
  ETH-USD): truncated JSON, garbage, wrong types, bad prices, timestamps far in
  the past or future, unknown products, huge messages;
- Kafka records on ``ticks.raw`` (between the good ticks of SOL-USD) and on
  ``ticks.features`` (between the rows of ADA-USD): garbage bytes, wrong
  ``schema_version``, wrong types, oversized;
- API requests: bodies, types, sizes and headers a client can get wrong.

Each is counted and dead-lettered (with its reason) or answered with a 4xx;
no service restarts, and the ledger balances: not one good record next to
them is lost.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest

from cryptovol.core.codec import encode_row, encode_tick
from cryptovol.core.features import FeatureEngine
from cryptovol.core.ticks import Tick
from cryptovol.core.timestamps import format_exchange
from cryptovol.devtools.fake_exchange import Faults, load_feed
from cryptovol.devtools.ledger import LedgerReport
from cryptovol.devtools.ledger.topics import end_offsets, prediction_files, read_lines, read_topic
from cryptovol.devtools.pipeline import LocalPipeline, PipelineConfig
from cryptovol.devtools.products import ProductFanOut
from cryptovol.devtools.stack import counter_total
from cryptovol.runtime.kafka import DEAD_LETTER_MAX_BYTES, make_producer
from cryptovol.runtime.recordings import open_recordings, read_ticks

REPO = Path(__file__).resolve().parents[3]
RECORDING = REPO / "data/coinbase-ticker/ticks_BTCUSD_20251201_164446_10min.ndjson.gz"
LIVE = ["BTC-USD", "ETH-USD"]  # through the fake exchange and the ingest
RAW_PRODUCT, ROW_PRODUCT = "SOL-USD", "ADA-USD"  # produced straight to Kafka
MB = 1024 * 1024


# -- the hostile inputs --------------------------------------------------------------------------
@dataclass(frozen=True)
class Hostile:
    name: str
    value: bytes | None
    expect: str  # the dead-letter reason's start, or "ignored", "accepted", "too_large"


def _envelope(**fields: object) -> bytes:
    doc = {"channel": "ticker", "client_id": "", "timestamp": "2025-12-01T16:50:00.000000000Z",
           "sequence_num": 0, "events": [{"type": "update", "tickers": []}]} | fields
    return orjson.dumps(doc)


def _ticker_message(stamp: str, **ticker: object) -> bytes:
    base = {"type": "ticker", "product_id": "BTC-USD", "price": "86000.01",
            "best_bid": "86000", "best_ask": "86000.02", "best_bid_quantity": "0.5",
            "best_ask_quantity": "0.25"}
    return _envelope(timestamp=stamp, events=[{"type": "update", "tickers": [base | ticker]}])


def exchange_inputs(stamp: str) -> list[Hostile]:
    """Messages from the exchange; ``stamp`` is an envelope time inside the feed."""
    rng = random.Random(11)
    return [
        Hostile("truncated JSON", b'{"channel": "ticker", "client_id": "", "timestamp": "2025-1',
                "invalid_json"),
        Hostile("not JSON", b"this is not JSON", "invalid_json"),
        Hostile("binary garbage", rng.randbytes(512), "invalid_json"),
        Hostile("a JSON array", b"[1, 2, 3]", "not_an_object"),
        Hostile("JSON null", b"null", "not_an_object"),
        Hostile("neither channel nor type", b'{"events": []}', "bad_envelope"),
        Hostile("channel is a number", _envelope(channel=7), "bad_envelope"),
        Hostile("timestamp is a number", _envelope(timestamp=1764607800), "bad_envelope"),
        Hostile("timestamp is garbage", _envelope(timestamp="yesterday"), "bad_envelope"),
        Hostile("sequence_num is a string", _envelope(sequence_num="12"), "bad_envelope"),
        Hostile("negative sequence_num", _envelope(sequence_num=-1), "bad_envelope"),
        Hostile("events is an object", _envelope(events={"type": "update"}), "bad_envelope"),
        Hostile("tickers is a string", _envelope(events=[{"type": "update", "tickers": "x"}]),
                "bad_event"),
        Hostile("unknown ticker event type",
                _envelope(events=[{"type": "delete", "tickers": []}]), "bad_event"),
        Hostile("ticker is a number", _envelope(events=[{"type": "update", "tickers": [42]}]),
                "bad_ticker"),
        Hostile("ticker without product", _ticker_message(stamp, product_id=None), "bad_ticker"),
        Hostile("price is a list", _ticker_message(stamp, price=[1, 2]), "bad_ticker"),
        Hostile("price is not a number", _ticker_message(stamp, price="abc"), "bad_ticker"),
        Hostile("negative price", _ticker_message(stamp, price="-5"), "bad_ticker"),
        Hostile("zero price", _ticker_message(stamp, price="0"), "bad_ticker"),
        Hostile("NaN price", _ticker_message(stamp, price="NaN"), "bad_ticker"),
        Hostile("infinite price", _ticker_message(stamp, price="Infinity"), "bad_ticker"),
        Hostile("price overflows a double", _ticker_message(stamp, price="1e400"), "bad_ticker"),
        Hostile("timestamp far in the future",
                _ticker_message("2999-01-01T00:00:00.000000000Z"), "bad_ticker"),
        Hostile("timestamp far in the past",
                _ticker_message("1970-01-01T00:00:01.000000000Z"), "bad_ticker"),
        Hostile("unknown product", _ticker_message(stamp, product_id="NOPE-USD"),
                "unknown_product"),
        Hostile("2 MB of garbage", b'{"channel": "ticker", "x": "' + b"y" * (2 * MB),
                "invalid_json"),
        Hostile("unknown channel", _envelope(channel="l2_data", events=[]), "ignored"),
        Hostile("unknown message type", b'{"type": "notice", "message": "hello"}', "ignored"),
        Hostile("9 MB message, over the client's limit", b'"' + b"z" * (9 * MB) + b'"',
                "too_large"),
    ]


def _raw(tick: Tick, **changes: object) -> bytes:
    doc = orjson.loads(encode_tick(tick)) | changes
    return orjson.dumps({k: v for k, v in doc.items() if v is not ...})


def raw_inputs(tick: Tick) -> list[Hostile]:
    """Records on ticks.raw; ``tick`` is a good SOL-USD tick to distort."""
    rng = random.Random(12)
    good = encode_tick(tick)
    rid = tick.record_id
    return [
        Hostile("garbage bytes", rng.randbytes(300), "invalid JSON"),
        Hostile("empty value", b"", "empty message"),
        Hostile("tombstone (no value)", None, "empty message"),
        Hostile("a JSON array", b"[]", "not a JSON object"),
        Hostile("truncated JSON", good[:40], "invalid JSON"),
        Hostile("wrong schema_version", _raw(tick, schema_version=2, record_id=rid + "v"),
                "invalid tick"),
        Hostile("schema_version is a word", _raw(tick, schema_version="two"), "invalid tick"),
        Hostile("no record_id", _raw(tick, record_id=...), "invalid tick"),
        Hostile("empty product_id", _raw(tick, product_id=""), "invalid tick"),
        Hostile("record_id is a number", _raw(tick, record_id=12345), "invalid tick"),
        Hostile("price is not a number", _raw(tick, price="abc"), "invalid tick"),
        Hostile("negative price", _raw(tick, price=-1.0, record_id=rid + "n"),
                "price is not a positive number"),
        Hostile("zero price", _raw(tick, price=0.0, record_id=rid + "z"),
                "price is not a positive number"),
        Hostile("NaN price", good.replace(b'"price":', b'"price":NaN,"x":'), "invalid JSON"),
        Hostile("price overflows a double", _raw(tick, price=...)[:-1] + b',"price":1e999}',
                "invalid JSON"),
        Hostile("event_time is garbage", _raw(tick, event_time="yesterday"), "invalid tick"),
        Hostile("event_time far in the future",
                _raw(tick, event_time="2999-01-01T00:00:00Z", record_id=rid + "f"),
                "invalid tick"),
        Hostile("event_time far in the past",
                _raw(tick, event_time="1970-01-01T00:00:01Z", record_id=rid + "p"),
                "invalid tick"),
        Hostile("no receive_time", _raw(tick, receive_time=...), "invalid tick"),
        Hostile("1 MB of garbage", rng.randbytes(MB - 4096), "invalid JSON"),
        Hostile("as large as the broker takes", rng.randbytes(MB - 200), "invalid JSON"),
    ]


def row_inputs(row: bytes) -> list[Hostile]:
    """Records on ticks.features; ``row`` is a good ADA-USD row to distort."""
    rng = random.Random(13)
    doc = orjson.loads(row)

    def changed(**changes: object) -> bytes:
        return orjson.dumps({k: v for k, v in (doc | changes).items() if v is not ...})

    return [
        Hostile("garbage bytes", rng.randbytes(300), "invalid JSON"),
        Hostile("empty value", b"", "empty message"),
        Hostile("tombstone (no value)", None, "empty message"),
        Hostile("truncated JSON", row[:50], "invalid JSON"),
        Hostile("wrong schema_version", changed(schema_version=2), "invalid feature row"),
        Hostile("no features", changed(features=...), "invalid feature row"),
        Hostile("empty features", changed(features={}), "feature row has no features"),
        Hostile("features is a list", changed(features=[1, 2]), "invalid feature row"),
        Hostile("a feature is a word", changed(features=doc["features"] | {"rv_60s": "high"}),
                "invalid feature row"),
        Hostile("no record_id", changed(record_id=...), "invalid feature row"),
        Hostile("event_time is garbage", changed(event_time="soon"), "invalid feature row"),
        Hostile("warmup is a word", changed(warmup="maybe"), "invalid feature row"),
        Hostile("1 MB of garbage", rng.randbytes(MB - 4096), "invalid JSON"),
    ]


API_INPUTS: list[tuple[str, dict[str, str], bytes, int]] = [
    ("truncated JSON", {}, b'{"rows": [{"n": 1', 422),
    ("not JSON", {}, b"rows=1", 422),
    ("empty body", {}, b"", 422),
    ("JSON null", {}, b"null", 422),
    ("rows is an object", {}, b'{"rows": {"n": 1}}', 422),
    ("rows is empty", {}, b'{"rows": []}', 422),
    ("a row is a number", {}, b'{"rows": [5]}', 422),
    ("a feature is a word", {}, b'{"rows": [{"rv_60s": "high"}]}', 422),
    ("a feature is NaN", {}, b'{"rows": [{"rv_60s": NaN}]}', 422),
    ("a feature overflows", {}, b'{"rows": [{"rv_60s": 1e999}]}', 422),
    ("event_times do not match the rows", {},
     b'{"rows": [{"n": 1}, {"n": 2}], "event_times": ["2025-01-01T00:00:00Z"]}', 422),
    ("an event time is garbage", {}, b'{"rows": [{"n": 1}], "event_times": ["soon"]}', 422),
    ("too many rows", {}, orjson.dumps({"rows": [{"n": 1}] * 1001}), 413),
    ("body too large", {}, b'{"rows": [' + b",".join([b'{"rv_60s": 1.0}'] * 80_000) + b"]}",
     413),
    ("invalid UTF-8", {}, b'{"rows": [{"\xff\xfe": 1}]}', 422),
    ("wrong content type", {"content-type": "text/plain"}, b'{"rows": [{"n": 1}]}', 415),
    ("form content type", {"content-type": "application/x-www-form-urlencoded"}, b"rows=1", 415),
]


# -- the run -------------------------------------------------------------------------------------
def live_feed() -> ProductFanOut:
    return ProductFanOut(load_feed([RECORDING]), LIVE)


def relabelled(product: str) -> list[Tick]:
    out = []
    for t in read_ticks(open_recordings([RECORDING])):
        rid = product + t.record_id[len(t.product_id):]
        out.append(t._replace(product_id=product, record_id=rid))
    return out


@dataclass
class HostileRun:
    pipeline: LocalPipeline
    exchange: list[Hostile]
    raw: list[Hostile]
    rows: list[Hostile]
    raw_offsets: dict[str, tuple[int, int]]  # hostile name -> (partition, offset)
    good_raw: int  # good SOL-USD ticks around them
    api_answers: list[tuple[str, int, dict]]
    api_ready_after_each: list[bool]
    ledger: LedgerReport


def _produce_raw(pipeline: LocalPipeline, ticks: list[Tick], hostile: list[Hostile],
                 every: int) -> dict[str, tuple[int, int]]:
    """Good ticks with one hostile record after every ``every`` of them, in one
    partition; returns where each hostile record landed."""
    producer = make_producer(pipeline.settings(), max_request_size=2 * MB, compression_type=None,
                             linger_ms=0)
    topic = pipeline.settings().topic_raw
    key = RAW_PRODUCT.encode()
    futures = {}
    try:
        queue = list(hostile)
        for i, tick in enumerate(ticks):
            producer.send(topic, key=key, value=encode_tick(tick))
            if i % every == every - 1 and queue:
                item = queue.pop(0)
                futures[item.name] = producer.send(topic, key=key, value=item.value)
                time.sleep(0.02)
        producer.flush(60)
        return {name: (f.get(10).partition, f.get(10).offset) for name, f in futures.items()}
    finally:
        producer.close(10)


def _produce_rows(pipeline: LocalPipeline, hostile: list[Hostile], stop: threading.Event) -> None:
    """Hostile rows on ticks.features, one every 50 ms, while the featurizer writes
    ADA-USD's good rows to the same partition."""
    producer = make_producer(pipeline.settings(), max_request_size=2 * MB, compression_type=None)
    try:
        for item in hostile:
            if stop.wait(0.05):
                break
            producer.send(pipeline.settings().topic_features, key=ROW_PRODUCT.encode(),
                          value=item.value)
        producer.flush(60)
    finally:
        producer.close(10)


def _call_api(base: str) -> tuple[list[tuple[str, int, dict]], list[bool]]:
    answers, ready = [], []
    with httpx.Client(base_url=base, timeout=30) as client:
        for name, headers, body, _status in API_INPUTS:
            response = client.post("/predict", content=body,
                                   headers={"content-type": "application/json", **headers})
            try:
                payload = response.json()
            except ValueError:
                payload = {"unparsable": response.text[:200]}
            answers.append((name, response.status_code, payload))
            ready.append(client.get("/readyz").status_code == 200)
    return answers, ready


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileRun]:
    feed = live_feed()
    at = [len(feed) * k // 12 for k in range(1, 11)]  # ten points along the feed
    stamp = format_exchange(feed[at[0] - 1].event_us + 1)
    exchange = exchange_inputs(stamp)
    inject: dict[int, list[bytes]] = {}
    for i, item in enumerate(exchange):
        inject.setdefault(at[i % len(at)], []).append(item.value or b"")
    sol = relabelled(RAW_PRODUCT)
    raw = raw_inputs(sol[100])
    ada = relabelled(ROW_PRODUCT)
    engine = FeatureEngine()
    good_row = next(encode_row(t, r) for t in ada if (r := engine.step(t)) is not None)
    rows = row_inputs(good_row)
    config = PipelineConfig(
        workdir=tmp_path_factory.mktemp("hostile"), repo=REPO, products=LIVE,
        files=[RECORDING], faults=Faults(inject=inject),
        # every row is scored, warm-up rows too: each good tick is followed to a prediction
        service_env={"ingest": {"STALL_TIMEOUT_S": "5"}, "consumer": {"PREDICT_WARMUP": "true"}})
    with LocalPipeline(config) as pipeline:
        stop = threading.Event()
        rows_thread = threading.Thread(target=_produce_rows, args=(pipeline, rows, stop))
        producer = make_producer(pipeline.settings())
        for tick in ada:  # ADA-USD's ticks: its rows are the neighbours of the hostile rows
            producer.send(pipeline.settings().topic_raw, key=ROW_PRODUCT.encode(),
                          value=encode_tick(tick))
        producer.flush(60)
        producer.close(10)
        rows_thread.start()
        raw_offsets = _produce_raw(pipeline, sol, raw, every=len(sol) // (len(raw) + 1))
        answers, ready = _call_api(pipeline.services["api"].base_url)
        rows_thread.join(120)
        stop.set()
        assert pipeline.wait_ingested(300), pipeline.services["ingest"].log_tail()
        report = pipeline.ledger()
        yield HostileRun(pipeline, exchange, raw, rows, raw_offsets, len(sol), answers, ready,
                         report)


def sample(metrics_url: str, name: str, **labels: str) -> float | None:
    """One labelled sample of a /metrics page."""
    want = "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
    for line in httpx.get(metrics_url, timeout=5).text.splitlines():
        if line.startswith(name + want):
            return float(line.rsplit(" ", 1)[1])
    return None


def dead_letters(pipeline: LocalPipeline, topic: str) -> list:
    ends = end_offsets(pipeline.bootstrap, [topic])[topic]
    return list(read_topic(pipeline.bootstrap, topic, ends))


# -- the checks ----------------------------------------------------------------------------------
def test_exchange_messages_are_dead_lettered_or_ignored_and_every_good_tick_published(
        run: HostileRun) -> None:
    pipeline = run.pipeline
    letters = [r for r in dead_letters(pipeline, "ticks.raw.dlq") if r.header("source_offset")
               is None]
    by_value = {}
    for letter in letters:
        by_value.setdefault((letter.value or b"")[:200], []).append(letter)
    wrong = {}
    for item in run.exchange:
        if item.expect in ("ignored", "too_large"):
            continue
        found = by_value.get((item.value or b"")[:200], [])
        reasons = [f.header("reason") or "" for f in found]
        if not any(r.startswith(item.expect) for r in reasons):
            wrong[item.name] = reasons
    assert not wrong, f"not dead-lettered with the expected reason: {wrong}"
    assert len(letters) == sum(i.expect not in ("ignored", "too_large") for i in run.exchange)
    ingest = pipeline.services["ingest"].base_url + "/metrics"
    assert counter_total(ingest, "cryptovol_ingest_unknown_messages_total") >= 2
    assert counter_total(ingest, "cryptovol_ingest_malformed_messages_total") >= len(letters)
    # the 9 MB message cost a reconnect (it was never read, so it cannot be dead-lettered)
    assert sample(ingest, "cryptovol_ingest_malformed_messages_total", reason="too_large") == 1
    assert sample(ingest, "cryptovol_ingest_reconnects_total", reason="too_large") == 1
    # every recorded ticker the exchange sent reached ticks.raw
    raw = dead_letters(pipeline, "ticks.raw")
    published = {orjson.loads(r.value)["record_id"] for r in raw
                 if r.key and r.key.decode() in LIVE}
    assert pipeline.exchange is not None
    missing = set(pipeline.exchange.exchange.sent_ids) - published
    assert not missing, sorted(missing)[:5]


def test_bad_records_on_ticks_raw_are_dead_lettered_with_their_offset(run: HostileRun) -> None:
    letters = {r.header("source_offset"): r for r in dead_letters(run.pipeline, "ticks.raw.dlq")
               if r.header("source_offset")}
    wrong = {}
    for item in run.raw:
        partition, offset = run.raw_offsets[item.name]
        letter = letters.get(f"{partition}:{offset}")
        reason = letter.header("reason") if letter else None
        if reason is None or not reason.startswith(item.expect):
            wrong[item.name] = reason
    assert not wrong, f"not dead-lettered with the expected reason: {wrong}"
    sol = run.ledger.products[RAW_PRODUCT]
    assert sol.raw_dead_lettered == len(run.raw)
    assert sol.missing == 0 and sol.featured == run.good_raw


def test_bad_feature_rows_are_dead_lettered_and_their_neighbours_predicted(
        run: HostileRun) -> None:
    letters = [r for r in dead_letters(run.pipeline, "ticks.features.dlq")
               if r.key == ROW_PRODUCT.encode() or r.key is None]
    by_value = {(r.value or b""): r.header("reason") or "" for r in letters}

    def reason(item: Hostile) -> str:  # a dead letter keeps the start of its record
        return by_value.get((item.value or b"")[:DEAD_LETTER_MAX_BYTES]) or ""

    wrong = {item.name: reason(item) for item in run.rows if not reason(item).startswith(
        item.expect)}
    assert not wrong, f"not dead-lettered with the expected reason: {wrong}"
    ada = run.ledger.products[ROW_PRODUCT]
    assert ada.predicted > 0 and ada.missing == 0


def test_bad_api_requests_get_a_precise_4xx_and_the_api_stays_ready(run: HostileRun) -> None:
    wrong = {}
    for (name, _h, _b, status), (_n, got, payload) in zip(API_INPUTS, run.api_answers,
                                                          strict=True):
        if got != status or not payload.get("error") or not payload.get("detail"):
            wrong[name] = (got, payload)
    assert not wrong, wrong
    assert all(run.api_ready_after_each)
    good = httpx.post(run.pipeline.services["api"].base_url + "/predict",
                      json={"rows": [{"ret_mean": 0.05, "ret_std": 0.01, "n": 50}]}, timeout=30)
    assert good.status_code == 200, good.text


def test_the_ledger_balances_and_no_service_restarted_or_degraded(run: HostileRun) -> None:
    report = run.ledger
    assert report.balanced, (report.problems, report.examples)
    assert set(report.products) == {*LIVE, RAW_PRODUCT, ROW_PRODUCT}
    assert all(a.predicted > 0 for a in report.products.values())
    assert report.exchange_dead_letters == sum(
        i.expect not in ("ignored", "too_large") for i in run.exchange)
    assert run.pipeline.unhealthy() == {}
    assert {name: s.starts for name, s in run.pipeline.services.items()} == {
        name: 1 for name in run.pipeline.services}


def test_the_ledger_turns_red_when_records_are_lost(run: HostileRun) -> None:
    """The same run, made lossy: the first predictions of one partition deleted
    from predictions.log. (Runs last: it changes the topic.)"""
    from kafka import KafkaAdminClient
    from kafka.structs import TopicPartition

    topic = run.pipeline.settings().topic_predictions
    ends = end_offsets(run.pipeline.bootstrap, [topic])[topic]
    partition = max(ends, key=lambda p: ends[p])
    ids = [(r.partition, r.offset, orjson.loads(r.value)["record_id"])
           for r in read_topic(run.pipeline.bootstrap, topic, ends)]
    deleted = {rid for p, offset, rid in ids if p == partition and offset < 25}
    admin = KafkaAdminClient(bootstrap_servers=run.pipeline.bootstrap)
    try:
        admin.delete_records({TopicPartition(topic, partition): 25})
    finally:
        admin.close()
    report = run.pipeline.ledger(wait_s=5)
    # at-least-once: a deleted prediction may have another copy, in the topic (written
    # before or since) or in the consumer's fallback files
    ends = end_offsets(run.pipeline.bootstrap, [topic])[topic]
    kept = {orjson.loads(r.value)["record_id"]
            for r in read_topic(run.pipeline.bootstrap, topic, ends)}
    kept |= {orjson.loads(line)["record_id"]
             for path in prediction_files(run.pipeline.prediction_dir)
             for line in read_lines(path)}
    lost = deleted - kept
    assert lost
    assert not report.balanced
    # red, and every id it calls missing was deleted (the missing count is a lower bound)
    assert 0 < report.problems["missing_predictions"] <= len(lost)
    assert set(report.examples["missing_predictions"]) <= lost
    assert report.totals.missing == report.problems["missing_predictions"]
