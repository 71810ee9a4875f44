"""The local broker's addresses: what it listens on, what it tells clients."""

from __future__ import annotations

import pytest

from cryptovol.devtools.broker import BrokerError, BrokerSettings, LocalBroker


def _config(broker: LocalBroker) -> dict[str, str]:
    try:
        lines = broker._write_config().read_text().splitlines()
    finally:
        broker.stop()  # removes its temporary data folder; nothing was started
    return dict(line.split("=", 1) for line in lines if "=" in line)


def test_by_default_it_listens_and_advertises_on_loopback_only():
    broker = LocalBroker(port=19092)
    assert broker.bootstrap == "127.0.0.1:19092"
    config = _config(broker)
    assert config["listeners"].startswith("PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:")
    assert config["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"


def test_it_can_serve_other_hosts(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("KAFKA_LISTEN_HOST", "0.0.0.0")
    monkeypatch.setenv("KAFKA_ADVERTISED_HOST", "host.docker.internal")
    monkeypatch.setenv("KAFKA_PORT", "19093")
    broker = LocalBroker.from_settings(BrokerSettings())
    assert broker.bootstrap == "host.docker.internal:19093"
    assert broker.local_host == "127.0.0.1"  # how this machine checks on it
    config = _config(broker)
    assert config["listeners"].startswith("PLAINTEXT://0.0.0.0:19093,CONTROLLER://127.0.0.1:")
    assert config["advertised.listeners"] == "PLAINTEXT://host.docker.internal:19093"


def test_a_specific_listen_address_is_also_the_advertised_one():
    broker = LocalBroker(port=19094, listen_host="10.1.2.3")
    assert (broker.bootstrap, broker.local_host) == ("10.1.2.3:19094", "10.1.2.3")
    broker.stop()


@pytest.mark.parametrize("wildcard", ["0.0.0.0", "::"])
def test_listening_on_every_interface_without_an_advertised_address_is_refused(wildcard):
    with pytest.raises(BrokerError, match="KAFKA_ADVERTISED_HOST"):
        LocalBroker(port=19095, listen_host=wildcard)
