"""The store-fleet simulator against a real mosquitto: valid, gap-free, causal, foldable."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from edge_mqtt.simulator import Fleet, FleetConfig
from edge_mqtt.store import StoreDB
from ingest.brokers import find_mosquitto
from lakehouse.contract import ContractError, decode_event
from lakehouse.mqtt import BrokerAddress, make_client
from lakehouse.oracle import fold
from tests.ports import free_port

MOSQUITTO = Path(find_mosquitto() or "/usr/sbin/mosquitto")
START = datetime(2026, 3, 2, 9, 0)


@pytest.fixture
def broker_port(tmp_path: Path) -> Iterator[int]:
    """A throwaway mosquitto with the stock settings on a free loopback port."""
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen([str(MOSQUITTO), "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"mosquitto did not start: {proc.stderr.read().decode()}")
            time.sleep(0.05)
    yield port
    proc.terminate()
    proc.wait(timeout=10)


class Subscriber:
    """Collects every event on the fleet's topics, decoded by the contract."""

    def __init__(self, port: int) -> None:
        self.events: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
        self.errors: list[str] = []
        self.ready = threading.Event()
        self.client = make_client(BrokerAddress("127.0.0.1", port), client_id="sim-test-sub")
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_a: self.ready.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.ready.wait(10), "subscriber did not subscribe"

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        client.subscribe("shelflife/v1/+/+/events", qos=2)

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        try:
            event = decode_event(msg.payload)
        except ContractError as exc:
            self.errors.append(f"{msg.topic}: {exc}")
            return
        if not msg.topic.endswith(f"/{event['location_id']}/events"):
            self.errors.append(f"{event['event_id']} arrived on {msg.topic}")
        self.events[event["location_id"]][event["seq"]] = event

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _config(tmp_path: Path, port: int, **overrides: Any) -> FleetConfig:
    settings: dict[str, Any] = dict(
        stores=6, regions=("east", "central"), ports={"east": port, "central": port},
        data_dir=tmp_path / "fleet", events_per_s=150.0, time_compression=3600.0,
        start=START, seed=11, duration_s=3.0, transfer_share=0.05, adjust_share=0.02,
        count_share=0.01, price_share=0.01, progress_every_s=1.0)
    settings.update(overrides)
    return FleetConfig(**settings)


def _outbox_events(db_path: Path) -> list[dict[str, Any]]:
    db = StoreDB(db_path)
    try:
        return [json.loads(body) for _seq, body in db.outbox_after(0, 1_000_000)]
    finally:
        db.close()


def _sqlite_cohorts(db_path: Path, location_id: str) -> dict[tuple[str, str, str], int]:
    db = StoreDB(db_path)
    try:
        return {(location_id, c["sku"], c["lot"]): c["quantity"] for c in db.cohorts()}
    finally:
        db.close()


def test_fleet_publishes_valid_gapless_causal_events(tmp_path: Path, broker_port: int) -> None:
    sub = Subscriber(broker_port)
    fleet = Fleet(_config(tmp_path, broker_port))
    recorded: list[dict[str, Any]] = []
    fleet.record_hook = recorded.append
    try:
        fleet.start()
        assert all(loc.agent.online for loc in fleet.locations)
        assert [loc.location_id for loc in fleet.locations] == [
            "WH-EAST-1", "EAST-S001", "EAST-S002", "EAST-S003",
            "WH-CENTRAL-1", "CENTRAL-S001", "CENTRAL-S002", "CENTRAL-S003"]
        forced = fleet.transfer("WH-EAST-1", "EAST-S002", "DAIRY-MILK-WH-1L", 5,
                                transit_hours=0)
        summary = fleet.run()
        assert summary.recorded == len(recorded)
        assert summary.rate > 100, summary
        last = {loc.location_id: loc.agent.last_seq for loc in fleet.locations}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(
                len(sub.events[loc]) < n for loc, n in last.items()):
            time.sleep(0.1)
    finally:
        fleet.stop()
        sub.close()

    assert not sub.errors, sub.errors[:5]
    for loc, n in last.items():
        assert n > 24, (loc, n)  # initial stock (24 SKUs) and trading since
        assert sorted(sub.events[loc]) == list(range(1, n + 1)), loc
    received = {e["event_id"]: e for evs in sub.events.values() for e in evs.values()}
    assert {e["event_id"] for e in recorded} == set(received)

    types = Counter(e["event_type"] for e in received.values())
    assert types["sold"] > 0.6 * len(received), types
    assert types["received"] >= 6 * 24, types
    for kind in ("transfer_out", "transfer_in", "adjusted"):
        assert types[kind] > 0, types

    ins = [e for e in received.values() if e["event_type"] == "transfer_in"]
    assert any(e["causation_id"] == forced["event_id"] for e in ins)
    for e in ins:
        out = received[e["causation_id"]]
        assert out["event_type"] == "transfer_out"
        assert out["payload"]["destination"] == e["location_id"]
        assert e["payload"]["source"] == out["location_id"]
        assert e["payload"]["transfer_id"] == out["payload"]["transfer_id"]
        assert e["payload"]["lots"] == out["payload"]["lots"]
        assert e["clock"][out["location_id"]] >= out["seq"]
        assert e["location_id"].split("-")[0] == out["location_id"].split("-")[1]
    for e in received.values():
        if e["event_type"] == "received":
            assert e["payload"]["lot"].startswith("L2026030"), e["payload"]["lot"]

    # The agent's stock in SQLite is the fold of its own events (its outbox: no acks here).
    agents = tmp_path / "fleet" / "agents"
    for loc in last:
        outbox = _outbox_events(agents / f"{loc}.sqlite")
        assert [e["seq"] for e in outbox] == list(range(1, last[loc] + 1))
        assert outbox == [received[f"{loc}:{s}"] for s in range(1, last[loc] + 1)]
        assert fold(outbox) == _sqlite_cohorts(agents / f"{loc}.sqlite", loc), loc


def test_same_seed_same_trading_and_restart_continues(tmp_path: Path,
                                                      broker_port: int) -> None:
    """A seed fixes what happens; a restarted fleet keeps each location's seq and stock."""

    def trade(folder: Path, steps: int) -> tuple[list[tuple[Any, ...]], Fleet]:
        fleet = Fleet(_config(folder, broker_port, stores=3, regions=("east", "central",
                                                                       "west"),
                              ports={r: broker_port for r in ("east", "central", "west")}))
        seen: list[dict[str, Any]] = []
        fleet.record_hook = seen.append
        fleet.start()
        for _ in range(steps):
            fleet.step()
        return [(e["event_id"], e["event_type"], e["causation_id"],
                 json.dumps(e["payload"], sort_keys=True)) for e in seen], fleet

    first, fleet_a = trade(tmp_path / "a", 400)
    fleet_a.stop()
    second, fleet_b = trade(tmp_path / "b", 400)
    fleet_b.stop()
    assert first == second
    assert len(first) == 6 * 24 + 400

    again = Fleet(_config(tmp_path / "a", broker_port, stores=3,
                          regions=("east", "central", "west"),
                          ports={r: broker_port for r in ("east", "central", "west")}))
    before = {loc.location_id: loc.last_seq for loc in again.locations}
    more: list[dict[str, Any]] = []
    again.record_hook = more.append
    try:
        again.start()
        for _ in range(100):
            again.step()
    finally:
        again.stop()
    assert sum(before.values()) == len(first)
    assert len(more) == 100  # no second initial stock
    old_lots = {json.loads(p).get("lot") for _i, t, _c, p in first if t == "received"}
    for e in more:
        assert e["seq"] > before[e["location_id"]]
        if e["event_type"] == "received":
            assert e["payload"]["lot"] not in old_lots
    agents = tmp_path / "a" / "fleet" / "agents"
    for loc in before:
        events = _outbox_events(agents / f"{loc}.sqlite")
        assert fold(events) == _sqlite_cohorts(agents / f"{loc}.sqlite", loc)


def test_config_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="region"):
        FleetConfig(regions=("north",))
    with pytest.raises(ValueError, match="events_per_s"):
        FleetConfig(events_per_s=0)
    with pytest.raises(ValueError, match="stores"):
        FleetConfig(stores=2)
    with pytest.raises(ValueError, match="ports"):
        FleetConfig(regions=("east",), ports={"west": 1883})


def _sales_only_fleet(tmp_path: Path, broker_port: int
                      ) -> tuple[Fleet, list[dict[str, Any]]]:
    """A fleet that only sells and receives (no transfers, counts, adjustments or price
    changes of its own), and the list its recorded events go to."""
    fleet = Fleet(_config(tmp_path, broker_port, transfer_share=0.0, adjust_share=0.0,
                          count_share=0.0, price_share=0.0))
    recorded: list[dict[str, Any]] = []
    fleet.record_hook = recorded.append
    return fleet, recorded


def test_a_store_ships_an_approved_transfer_and_the_destination_receives_it(
        tmp_path: Path, broker_port: int) -> None:
    """An order reaching a simulated warehouse is shipped from its lot at the next step and
    booked in at the destination after its transit (simulated) time."""
    fleet, recorded = _sales_only_fleet(tmp_path, broker_port)
    try:
        fleet.start()
        warehouse = fleet.by_id["WH-EAST-1"]
        row = warehouse.agent.stock()[0]
        lot = row["cohorts"][-1]  # the freshest lot, not the one FEFO would take
        warehouse.agent.accept_order({
            "order_id": "597b07709accd33f", "sku": row["sku"], "lot": lot["lot"],
            "quantity": 2, "destination": "EAST-S002", "transit_hours": 1.0,
            "approved_by": "ana", "approved_at": "2026-12-01T09:00:00.000Z"})
        [out] = fleet.step()
        assert out["event_type"] == "transfer_out"
        assert out["payload"]["transfer_id"] == "597b07709accd33f"
        assert out["payload"]["lots"] == [{**lot, "quantity": 2}]
        for _ in range(2000):
            fleet.step()
            arrived = [e for e in recorded if e["event_type"] == "transfer_in"
                       and e["payload"]["transfer_id"] == "597b07709accd33f"]
            if arrived:
                break
        assert arrived, "the transfer never arrived"
        assert arrived[0]["location_id"] == "EAST-S002"
        assert arrived[0]["causation_id"] == out["event_id"]
        assert fleet.orders_shipped == 1
        assert [o["status"] for o in warehouse.agent.orders()] == ["dispatched"]
    finally:
        fleet.stop()


def test_a_recalled_lot_is_pulled_off_the_shelf_and_never_sold(
        tmp_path: Path, broker_port: int) -> None:
    """A hold reaching a simulated store: its staff waste what is left of the lot with
    reason recall, and no later sale draws from it."""
    from datetime import UTC, datetime

    from lakehouse.contract import build_hold

    fleet, recorded = _sales_only_fleet(tmp_path, broker_port)
    try:
        fleet.start()
        store = fleet.by_id["EAST-S001"]
        row = next(r for r in store.agent.stock() if r["on_hand"] > 0)
        lot = row["cohorts"][0]  # the lot FEFO would sell first
        store.agent.accept_order(build_hold(sku=row["sku"], lot=lot["lot"], on_hold=True,
                                           reason="notice 114", by="ana",
                                           at=datetime.now(UTC)))
        [out] = fleet.step()
        assert out["event_type"] == "wasted" and out["payload"]["reason_code"] == "recall"
        assert (out["payload"]["lot"], out["payload"]["quantity"]) == (lot["lot"],
                                                                       lot["quantity"])
        for _ in range(300):
            fleet.step()
        sold = [lt["lot"] for e in recorded if e["event_type"] == "sold"
                and e["location_id"] == "EAST-S001" and e["payload"]["sku"] == row["sku"]
                for lt in e["payload"]["lots"]]
        assert lot["lot"] not in sold
    finally:
        fleet.stop()
