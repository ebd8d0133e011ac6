"""Starting the regional brokers: config, mosquitto missing or failing, its offline backlog."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ingest import brokers
from ingest.brokers import (
    DEFAULT_PORTS,
    BrokerError,
    BrokerSpec,
    mosquitto_config,
    start_brokers,
    stop_brokers,
)
from lakehouse.contract import REGIONS, topic
from tests.clients import Client, persistent_backlog_round_trip, port_picker

pytestmark = pytest.mark.timeout(120)



@pytest.fixture
def free_port() -> Callable[[], int]:
    return port_picker()


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    opened: list[Client] = []
    yield opened
    for client in opened:
        client.close()


def _ports(free_port: Callable[[], int], regions: tuple[str, ...] = REGIONS) -> dict[str, int]:
    return {region: free_port() for region in regions}


def test_default_ports_cover_every_region() -> None:
    assert set(DEFAULT_PORTS) == set(REGIONS)
    assert len(set(DEFAULT_PORTS.values())) == len(REGIONS)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"region": "north", "port": 1883}, "region"),
    ({"region": "east", "port": 0}, "port"),
    ({"region": "east", "port": 70000}, "port"),
    ({"region": "east", "port": "1883"}, "port"),
    ({"region": "east", "port": 1883, "host": ""}, "host"),
])
def test_broker_spec_rejects_bad_values(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        BrokerSpec(**kwargs)


def test_mosquitto_config_keeps_a_deep_backlog(tmp_path: Path) -> None:
    conf = mosquitto_config(BrokerSpec("west", port=18833), tmp_path)
    lines = conf.splitlines()
    assert "listener 18833 127.0.0.1" in lines
    assert "allow_anonymous true" in lines
    assert "persistence true" in lines
    assert f"persistence_location {tmp_path.resolve() / 'west'}/" in lines
    assert "max_queued_bytes 0" in lines
    queued = next(int(x.split()[1]) for x in lines if x.startswith("max_queued_messages "))
    assert queued == 0 or queued >= 30_000
    assert any(x.startswith("log_dest file " + str(tmp_path.resolve())) for x in lines)


def test_brokers_serve_each_region(tmp_path: Path, free_port: Callable[[], int],
                                   clients: list[Client]) -> None:
    ports = _ports(free_port)
    brokers = start_brokers(tmp_path, ports=ports)
    try:
        assert [(b.spec.region, b.spec.port) for b in brokers] == [
            (r, ports[r]) for r in REGIONS]
        assert (tmp_path / "central" / "mosquitto.conf").exists()
        for b in brokers:
            sub = Client(b.spec.port, f"ingest-{b.spec.region}")
            pub = Client(b.spec.port, f"agent-{b.spec.region}")
            clients += [sub, pub]
            sub.connect().subscribe(f"shelflife/v1/{b.spec.region}/+/events")
            pub.connect().paho.publish(topic(b.spec.region, "s1", "events"), b"hi", qos=2)
            assert sub.wait_for(1, timeout=10) == [b"hi"]
            sub.close()
            pub.close()
    finally:
        stop_brokers(brokers)
    for b in brokers:
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", b.spec.port), timeout=1).close()


def test_missing_mosquitto_says_how_to_install_it(tmp_path: Path,
                                                  free_port: Callable[[], int],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(brokers, "_DEBIAN_MOSQUITTO", tmp_path / "no-mosquitto")
    with pytest.raises(BrokerError, match="apt-get install mosquitto"):
        start_brokers(tmp_path, ("east",), ports=_ports(free_port, ("east",)))


def test_mosquitto_port_in_use_names_region_and_port(tmp_path: Path,
                                                     free_port: Callable[[], int]) -> None:
    port = free_port()
    with socket.create_server(("127.0.0.1", port)), \
            pytest.raises(BrokerError, match=f"west.*{port}.*in use"):
        stop_brokers(start_brokers(tmp_path, ("west",), ports={"west": port}))


def test_mosquitto_that_exits_at_start_shows_its_log(
        tmp_path: Path, free_port: Callable[[], int], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(brokers, "mosquitto_config",
                        lambda spec, data_dir: f"listener {spec.port}\nno_such_option 1\n")
    with pytest.raises(BrokerError, match=r"(?s)east: mosquitto exited.*no_such_option"):
        stop_brokers(start_brokers(tmp_path, ("east",),
                                   ports=_ports(free_port, ("east",))))


def test_mosquitto_keeps_30000_messages_for_an_offline_subscriber(
        tmp_path: Path, free_port: Callable[[], int], clients: list[Client]) -> None:
    ports = _ports(free_port, ("east",))
    brokers = start_brokers(tmp_path, ("east",), ports=ports)
    try:
        persistent_backlog_round_trip(ports["east"], 30_000, clients)
    finally:
        stop_brokers(brokers)
