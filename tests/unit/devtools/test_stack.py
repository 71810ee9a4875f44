from __future__ import annotations

from pathlib import Path

import pytest

from cryptovol.devtools.stack import ServiceSpec, assign_ports, counter_total, discover

REPO = Path(__file__).resolve().parents[3]


def test_every_service_has_a_run_file_with_health_and_a_status_counter():
    specs = discover(REPO)
    assert [s.name for s in specs] == ["api", "featurizer", "consumer", "evaluator", "ingest"]
    for spec in specs:
        assert spec.health and spec.health.startswith("http://127.0.0.1:")
        assert spec.status["counter"].startswith("cryptovol_")
        metrics_doc = (REPO / "docs" / "metrics.md").read_text()
        assert f"`{spec.status['counter']}`" in metrics_doc


def test_a_new_service_plugs_in_with_a_run_file_alone(tmp_path):
    folder = tmp_path / "services" / "extra"
    folder.mkdir(parents=True)
    (folder / "run.toml").write_text(
        'name = "extra"\norder = 5\nmodule = "no_such_module_here"\ncommand = ["x"]\n')
    (spec,) = discover(tmp_path)
    assert isinstance(spec, ServiceSpec) and spec.order == 5
    assert not spec.available()


def test_status_counter_sums_samples_over_labels(tmp_path):
    page = tmp_path / "metrics"
    page.write_text(
        "# HELP cryptovol_x_total x\n# TYPE cryptovol_x_total counter\n"
        'cryptovol_x_total{product_id="BTC-USD"} 10.0\n'
        'cryptovol_x_total{product_id="ETH-USD"} 2.5\n'
        "cryptovol_x_created 1.7e9\n"
    )
    assert counter_total(page.as_uri(), "cryptovol_x_total") == 12.5
    assert counter_total("http://127.0.0.1:9/metrics", "cryptovol_x_total") is None


def test_named_ports_fill_every_run_file_and_can_all_be_free():
    specs = discover(REPO)
    usual = assign_ports(specs)
    assert usual == {"API_PORT": 8000, "FEATURIZER_METRICS_PORT": 9102,
                     "CONSUMER_METRICS_PORT": 9103, "INGEST_METRICS_PORT": 9101,
                     "EVALUATOR_METRICS_PORT": 9105}
    free = assign_ports(specs, free=True)
    assert set(free) == set(usual) and len(set(free.values())) == len(free)
    by_name = {s.name: s.resolved({**free, "source": "replay", "repo": REPO}) for s in specs}
    consumer = by_name["consumer"]
    assert consumer.env["API_URL"] == f"http://127.0.0.1:{free['API_PORT']}"
    assert consumer.env["METRICS_PORT"] == str(free["CONSUMER_METRICS_PORT"])
    assert consumer.health == f"http://127.0.0.1:{free['CONSUMER_METRICS_PORT']}/readyz"
    assert "replay" in by_name["ingest"].command
    assert by_name["api"].urls["predict"] == f"http://127.0.0.1:{free['API_PORT']}/predict"


def test_a_run_file_naming_an_unknown_port_or_a_taken_name_is_refused(tmp_path):
    spec = ServiceSpec("x", 1, ["x"], health="http://127.0.0.1:{NOPE}/health")
    with pytest.raises(ValueError, match="NOPE"):
        spec.resolved({})
    twice = [ServiceSpec("a", 1, ["a"], ports={"P": 1}), ServiceSpec("b", 2, ["b"], ports={"P": 2})]
    with pytest.raises(ValueError, match="two run files"):
        assign_ports(twice)
