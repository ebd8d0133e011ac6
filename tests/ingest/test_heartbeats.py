"""Store heartbeats reach silver ``store_heartbeats`` through a real mosquitto and the real
ingest worker: the stores page reads who is online, their outbox and agent version there."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from deltalake import DeltaTable
from prometheus_client import CollectorRegistry

from edge_mqtt.agent import AGENT_VERSION, StoreAgent
from edge_mqtt.publisher import Publisher, PublisherConfig
from ingest.broker_health import sys_value
from ingest.heartbeats import HeartbeatLog, heartbeat_row
from ingest.worker import IngestConfig, IngestWorker
from lakehouse.catalogue import BROKER_HEALTH, STORE_HEARTBEATS
from lakehouse.contract import ContractError, Heartbeat, topic
from lakehouse.maintenance import maintain
from tests.clients import raw_client, wait_for
from tests.lakehouse.test_catalogue import assert_on_disk


def _rows(root, table=STORE_HEARTBEATS) -> list[dict]:
    path = table.path(root)
    if not (path / "_delta_log").exists():
        return []
    return DeltaTable(str(path)).to_pyarrow_table().to_pylist()


def test_heartbeats_published_by_stores_land_in_the_heartbeat_table(tmp_path, brokers,
                                                                    region_ports):
    port = region_ports["east"]
    root = tmp_path / "lake"
    worker = IngestWorker(IngestConfig(region="east", port=port, lakehouse=str(root)),
                          registry=CollectorRegistry())
    worker.start()
    agent = StoreAgent("E-7", "east", tmp_path / "e7.sqlite")
    pub = Publisher(agent, PublisherConfig(port=port, heartbeat_s=1.0))
    inject = raw_client(port, "inject")
    try:
        for i in range(3):
            agent.receive("MILK", 4, lot=f"L{i}", expires_on="2026-12-09",
                          supplier_ref="PO", unit_cost=1.0)
        pub.start()
        wait_for("the store's events acked", lambda: pub.acked_seq == 3, 30)
        # A heartbeat that names another store than its topic is refused, not written.
        forged = Heartbeat("E-8", "east", "9.9", True, "2026-12-06T12:00:00.000Z")
        inject.publish(topic("east", "E-7", "heartbeat"), forged.to_json(), qos=1)
        wait_for("an online heartbeat with everything acked in the table",
                 lambda: any(r["online"] and r["last_acked_seq"] == 3
                             for r in _rows(root)), 60)
        pub.stop()  # a clean shutdown says so in its last heartbeat
        wait_for("the offline heartbeat in the table",
                 lambda: any(not r["online"] for r in _rows(root)), 60)
    finally:
        inject.loop_stop()
        pub.stop()
        worker.stop()
        agent.close()

    rows = _rows(root)
    assert {(r["region"], r["location_id"]) for r in rows} == {("east", "E-7")}
    assert {r["agent_version"] for r in rows} == {AGENT_VERSION}
    latest = max(rows, key=lambda r: r["received_at"])
    assert latest["online"] is False and latest["last_seq"] == 3
    assert latest["outbox_depth"] == 0
    assert all(r["received_at"] <= datetime.now(UTC) for r in rows)
    assert worker.heartbeats.refused == 1
    assert_on_disk(STORE_HEARTBEATS, root)


def test_maintenance_compacts_the_log_and_keeps_every_heartbeat(tmp_path):
    beats = HeartbeatLog("east", tmp_path, flush_every_s=60)
    try:
        for seq in range(1, 7):  # six commits of one heartbeat each
            beat = Heartbeat("E-7", "east", "0.1.0", True, "2026-12-06T12:00:00.000Z",
                             last_seq=seq)
            beats.add(topic("east", "E-7", "heartbeat"), beat.to_json())
            assert beats.flush() == 1
        assert len(DeltaTable(str(STORE_HEARTBEATS.path(tmp_path))).file_uris()) == 6
        maintain(tmp_path, tables=[STORE_HEARTBEATS], say=lambda _line: None)
    finally:
        beats.close()
    table = DeltaTable(str(STORE_HEARTBEATS.path(tmp_path)))
    assert sorted(r["last_seq"] for r in _rows(tmp_path)) == [1, 2, 3, 4, 5, 6]
    assert len(table.file_uris()) == 1  # six appends, merged into one file


def test_a_heartbeat_for_another_store_than_its_topic_is_refused():
    beat = Heartbeat("E-8", "east", "0.1.0", True, "2026-12-06T12:00:00.000Z")
    with pytest.raises(ContractError, match="does not match its topic"):
        heartbeat_row(topic("east", "E-7", "heartbeat"), beat.to_json(), datetime.now(UTC))
    row = heartbeat_row(topic("east", "E-8", "heartbeat"), beat.to_json(), datetime.now(UTC))
    assert row["location_id"] == "E-8" and row["local_time"].tzinfo is not None


def test_the_brokers_own_figures_land_in_broker_health(tmp_path, brokers, region_ports):
    # The pipeline page shows each broker's connected clients and the messages it holds
    # over time: a queue that only grows is a subscriber that stopped taking them.
    port = region_ports["east"]
    root = tmp_path / "lake"
    worker = IngestWorker(IngestConfig(region="east", port=port, lakehouse=str(root),
                                       broker_health_every_s=1.0),
                          registry=CollectorRegistry())
    worker.start()
    others = [raw_client(port, f"watcher-{i}") for i in range(3)]
    try:
        wait_for("a broker_health row counting ingest and three more clients",
                 lambda: any((r["connected_clients"] or 0) >= 4
                             for r in _rows(root, BROKER_HEALTH)), 40)
    finally:
        for c in others:
            c.loop_stop()
        worker.stop()
    rows = _rows(root, BROKER_HEALTH)
    assert {r["region"] for r in rows} == {"east"}
    latest = max(rows, key=lambda r: r["at"])
    assert latest["uptime_s"] > 0 and latest["stored_messages"] >= 0
    assert latest["at"] <= datetime.now(UTC)
    assert_on_disk(BROKER_HEALTH, root)


def test_sys_payloads_are_read_as_numbers():
    assert sys_value("uptime_s", b"3600 seconds") == 3600
    assert sys_value("received_per_min", b"12.57") == 12.57
    assert sys_value("connected_clients", b"301") == 301
    assert sys_value("connected_clients", b"\xff") is None


def test_a_heartbeat_log_written_before_holds_existed_takes_the_new_column(tmp_path):
    """A lakehouse from before recalls: its heartbeat table has no ``holds``; the first
    heartbeat with one adds the column, older rows read null, nothing is refused."""
    import pyarrow as pa
    from deltalake import write_deltalake

    old = pa.schema([f for f in STORE_HEARTBEATS.schema if f.name != "holds"])
    write_deltalake(str(STORE_HEARTBEATS.path(tmp_path)), pa.Table.from_pylist([{
        "region": "east", "location_id": "E-7", "agent_version": "0.0.9", "online": True,
        "local_time": datetime.now(UTC), "received_at": datetime.now(UTC),
        "heartbeat_version": 1}], schema=old), partition_by=["region"])
    beats = HeartbeatLog("east", tmp_path, flush_every_s=60)
    try:
        beat = Heartbeat("E-7", "east", "0.1.0", True, "2026-12-06T12:00:00.000Z",
                         holds=["hold-0123456789abcdef01234567"])
        beats.add(topic("east", "E-7", "heartbeat"), beat.to_json())
        assert beats.flush() == 1
    finally:
        beats.close()
    rows = sorted(_rows(tmp_path), key=lambda r: r["agent_version"])
    assert [r["holds"] for r in rows] == [None, "hold-0123456789abcdef01234567"]
