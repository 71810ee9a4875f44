"""Row parsing, the /predict client and the prediction sinks."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import pytest
from prometheus_client import REGISTRY

from cryptovol.core.schemas import FeatureRow, PredictionRecord
from cryptovol_consumer.client import ApiError, PredictClient
from cryptovol_consumer.rows import request_features
from cryptovol_consumer.sink import FileSink, KafkaSink

NOW = datetime(2025, 12, 6, 1, 0, tzinfo=UTC)


def feature_row(**overrides: object) -> FeatureRow:
    values: dict[str, object] = {
        "record_id": "BTC-USD:1:0", "product_id": "BTC-USD", "event_time": NOW,
        "receive_time": NOW, "warmup": False, "features": {"rv_60s": 0.001, "n": 12.0},
    }  # fmt: skip
    values.update(overrides)
    return FeatureRow(**values)  # type: ignore[arg-type]


# -- rows -------------------------------------------------------------------------


def test_non_finite_features_are_sent_as_null() -> None:
    row = feature_row(features={"a": float("nan"), "b": float("inf"), "c": 1.5, "d": None})
    assert request_features(row) == {"a": None, "b": None, "c": 1.5, "d": None}
    orjson.dumps(request_features(row))  # valid JSON


# -- client -----------------------------------------------------------------------


def _client(handler: object) -> PredictClient:
    return PredictClient("http://api.test", transport=httpx.MockTransport(handler))  # type: ignore[arg-type]


def test_client_sends_rows_and_event_times_and_parses_the_answer() -> None:
    seen: dict = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.update(json.loads(request.content))
        seen["content-type"] = request.headers["content-type"]
        return httpx.Response(
            200,
            json={"scores": [0.1, 0.9], "spikes": [False, True], "threshold": 0.5,
                  "model_variant": "ml", "version": "v1", "model_name": "rf", "ts": "x",
                  "imputed": [[], []], "ignored_fields": []},
        )  # fmt: skip

    result = _client(handler).predict([{"a": 1.0}, {"a": None}], ["t1", "t2"])
    assert seen == {
        "rows": [{"a": 1.0}, {"a": None}],
        "event_times": ["t1", "t2"],
        "content-type": "application/json",
    }
    assert result.scores == [0.1, 0.9] and result.spikes == [False, True]
    assert result.model_variant == "ml" and result.model_version == "v1"
    assert result.threshold == 0.5 and result.latency_ms >= 0


def test_client_keeps_the_valid_shadows_and_leaves_out_broken_ones() -> None:
    good = {"model_name": "rf", "model_variant": "ml", "version": "v-rf", "threshold": 0.3,
            "scores": [0.2, 0.4], "spikes": [False, True]}
    broken = [{**good, "scores": [0.2]}, {**good, "scores": [0.2, 1.7]},
              {**good, "model_variant": "champion"}, {"version": "v"}, "nonsense"]
    body = {"scores": [0.1, 0.9], "spikes": [False, True], "threshold": 0.5,
            "model_variant": "ml", "version": "v1", "shadows": [*broken, good]}
    result = _client(lambda request: httpx.Response(200, json=body)).predict(
        [{"a": 1.0}, {"a": 2.0}])
    (shadow,) = result.shadows
    assert (shadow.model_version, shadow.threshold, shadow.scores, shadow.spikes) == (
        "v-rf", 0.3, [0.2, 0.4], [False, True])
    assert result.scores == [0.1, 0.9]  # the answer itself is untouched


@pytest.mark.parametrize(
    ("response", "reason", "retryable"),
    [
        (httpx.Response(503, json={"error": "model_unavailable"}), "http_5xx", True),
        (httpx.Response(500, text="boom"), "http_5xx", True),
        (httpx.Response(422, json={"error": "validation"}), "http_4xx", False),
        (httpx.Response(413, json={"error": "too_many_rows"}), "http_4xx", False),
        (httpx.Response(429, text="slow down"), "http_4xx", True),
        (httpx.Response(404, json={"detail": "Not Found"}), "http_4xx", True),
        (httpx.Response(415, json={"error": "content_type"}), "http_4xx", True),
        (httpx.Response(200, text="not json"), "http_5xx", True),
        (httpx.Response(200, json={"scores": [0.1]}), "http_5xx", True),
        (httpx.Response(200, json={"scores": [0.1], "spikes": [False], "threshold": 0.5,
                                   "model_variant": "champion", "version": "v"}), "http_5xx", True),
        (httpx.Response(200, json={"scores": [None], "spikes": [False], "threshold": 0.5,
                                   "model_variant": "ml", "version": "v"}), "http_5xx", True),
        (httpx.Response(200, json={"scores": [1.5], "spikes": [True], "threshold": 0.5,
                                   "model_variant": "ml", "version": "v"}), "http_5xx", True),
        (httpx.Response(200, json={"scores": [], "spikes": [], "threshold": 0.5,
                                   "model_variant": "ml", "version": "v"}), "http_5xx", True),
    ],
)  # fmt: skip
def test_client_classifies_failures(response: httpx.Response, reason: str, retryable: bool) -> None:
    with pytest.raises(ApiError) as info:
        _client(lambda request: response).predict([{"a": 1.0}])
    assert info.value.reason == reason
    assert info.value.retryable is retryable


def test_client_timeout_and_refused_connection() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    with pytest.raises(ApiError) as info:
        _client(slow).predict([{"a": 1.0}])
    assert info.value.reason == "timeout" and info.value.retryable

    import socket

    with socket.socket() as s:  # a port that was free a moment ago: refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ApiError) as info:
        PredictClient(f"http://127.0.0.1:{port}", timeout_s=2).predict([{"a": 1.0}])
    assert info.value.reason == "connect" and info.value.retryable


# -- sinks ------------------------------------------------------------------------


def prediction(i: int = 0) -> PredictionRecord:
    return PredictionRecord(
        record_id=f"BTC-USD:{i}:0", product_id="BTC-USD", event_time=NOW, predicted_time=NOW,
        score=0.3, spike=False, threshold=0.5, model_variant="ml", model_version="v1",
        api_latency_ms=1.0, e2e_latency_ms=5.0,
    )  # fmt: skip


class Future:
    def __init__(self, error: Exception | None) -> None:
        self.error = error

    def get(self, timeout: float | None = None) -> object:
        if self.error:
            raise self.error
        return object()


class FakeProducer:
    def __init__(self, send_error: Exception | None = None, ack_error: Exception | None = None):
        self.send_error, self.ack_error = send_error, ack_error
        self.sent: list[tuple[str, bytes, bytes]] = []

    def send(self, topic: str, key: bytes | None = None, value: bytes = b"", headers=None):
        if self.send_error:
            raise self.send_error
        self.sent.append((topic, key, value))
        return Future(self.ack_error)

    def flush(self, timeout: float | None = None) -> None:
        return None


def _fallbacks() -> float:
    return REGISTRY.get_sample_value("cryptovol_consumer_prediction_log_fallback_total") or 0.0


def test_kafka_sink_keys_by_product(tmp_path: Path) -> None:
    producer = FakeProducer()
    sink = KafkaSink(producer, "predictions.log", FileSink(tmp_path))
    sink.write([prediction(1), prediction(2)])
    assert [(t, k) for t, k, _ in producer.sent] == [("predictions.log", b"BTC-USD")] * 2
    assert PredictionRecord.model_validate_json(producer.sent[0][2]) == prediction(1)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "producer",
    [FakeProducer(send_error=RuntimeError("no metadata")),
     FakeProducer(ack_error=RuntimeError("not acknowledged"))],
)  # fmt: skip
def test_kafka_failure_falls_back_to_files(tmp_path: Path, producer: FakeProducer) -> None:
    before = _fallbacks()
    sink = KafkaSink(producer, "predictions.log", FileSink(tmp_path / "logs" / "predictions"))
    sink.write([prediction(1), prediction(2)])
    files = list((tmp_path / "logs" / "predictions").glob("predictions-*.ndjson"))
    assert len(files) == 1
    lines = files[0].read_bytes().splitlines()
    assert [PredictionRecord.model_validate_json(x) for x in lines] == [
        prediction(1),
        prediction(2),
    ]
    assert _fallbacks() == before + 2
    sink.write([prediction(3)])  # appends
    assert len(files[0].read_bytes().splitlines()) == 3
