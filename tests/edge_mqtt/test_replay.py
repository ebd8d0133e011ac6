"""Catching up after an outage, against a real mosquitto and a real ingest worker.

Offline events go out in seq order with their original times at the replay rate; a
broker that loses its state costs nothing; a quiet store is not mistaken for a stall,
nor a paused lakehouse for lost messages; heartbeats say how the store is doing.
"""

from __future__ import annotations

import json
import shutil
import time

import pytest

from edge_mqtt.agent import StoreAgent
from edge_mqtt.publisher import Publisher, PublisherConfig
from ingest.brokers import start_brokers, stop_brokers
from lakehouse.contract import (
    Heartbeat,
    build_ingest_status,
    encode_message,
    ingest_status_topic,
    topic,
)
from tests.clients import raw_client, wait_for

from .test_kill import landed_events, start_ingest


def receive_many(agent: StoreAgent, n: int) -> list[dict]:
    return [agent.receive("MILK", 1 + i % 3, lot=f"L{agent.last_seq + 1}",
                          expires_on="2026-12-09", supplier_ref="PO", unit_cost=1.0)
            for i in range(n)]


@pytest.mark.server
def test_offline_backlog_replays_in_order_at_the_replay_rate(tmp_path, brokers, region_ports):
    port = region_ports["east"]
    root = tmp_path / "lake"
    agent = StoreAgent("E-R", "east", tmp_path / "r.sqlite")
    recorded = receive_many(agent, 400)  # no publisher yet: the store is offline
    assert all(e["offline"] for e in recorded)
    worker = start_ingest(port, root)
    pub = Publisher(agent, PublisherConfig(port=port, replay_rate=200, resend_after_s=30))
    try:
        started = time.monotonic()
        pub.start()
        wait_for("the backlog acked", lambda: pub.acked_seq == 400, 30)
        took = time.monotonic() - started
    finally:
        pub.stop()
        worker.stop()
        agent.close()
    # 400 events at 200/s with a 20-event burst: about two seconds, not instant.
    assert 1.7 <= took <= 6, took
    landed = landed_events(root)
    assert [e["seq"] for e in landed] == list(range(1, 401)), "in seq order, once each"
    assert landed == recorded, "byte for byte what was recorded: original times, offline"


def test_replay_rate_also_holds_when_one_thread_pumps(tmp_path, brokers, region_ports):
    """The fleet simulator pumps publishers itself (``pump_thread=False``)."""
    port = region_ports["east"]
    agent = StoreAgent("E-P", "east", tmp_path / "p.sqlite")
    receive_many(agent, 300)
    pub = Publisher(agent, PublisherConfig(port=port, replay_rate=100, resend_after_s=30))
    pub.start(pump_thread=False)
    try:
        wait_for("connected", pub.client.is_connected, 10)
        started = time.monotonic()
        while time.monotonic() - started < 1.0:
            if pub.pending:
                pub.pump()
            time.sleep(0.001)
        assert 80 <= pub.sent <= 125, pub.sent  # 1 s at 100/s plus one 10-event burst
    finally:
        pub.stop()
        agent.close()


@pytest.mark.server
def test_broker_losing_its_state_costs_no_event(tmp_path, brokers, region_ports):
    """Ingest is down, so nothing is acked and the broker holds the only copies in its
    queue for ingest's session; the broker then loses its whole persistence folder."""
    port = region_ports["east"]
    root = tmp_path / "lake"
    data_dir = tmp_path / "brokers"
    (east,) = [b for b in brokers if b.spec.region == "east"]
    first = start_ingest(port, root)  # leaves a persistent session the broker queues for
    first.stop()
    agent = StoreAgent("E-W", "east", tmp_path / "w.sqlite")
    pub = Publisher(agent, PublisherConfig(port=port, resend_after_s=1.0))
    pub.start()
    restarted = []
    worker = None
    try:
        wait_for("agent online", lambda: agent.online, 10)
        receive_many(agent, 300)
        wait_for("all 300 handed to the broker", lambda: pub.sent >= 300, 10)
        assert pub.acked_seq == 0
        east.stop()
        shutil.rmtree(data_dir / "east")
        wait_for("agent sees the broker gone", lambda: not agent.online, 10)
        offline = receive_many(agent, 50)
        assert all(e["offline"] for e in offline)
        restarted = start_brokers(data_dir, ["east"], ports={"east": port})
        wait_for("agent reconnects", lambda: agent.online, 30)
        receive_many(agent, 50)
        worker = start_ingest(port, root)
        wait_for("every event acked", lambda: pub.acked_seq == 400, 60)
        worker.flush()
    finally:
        pub.stop()
        if worker is not None:
            worker.stop()
        stop_brokers(restarted)
        agent.close()
    landed = landed_events(root)
    assert sorted(e["seq"] for e in landed) == list(range(1, 401)), "each event once"
    assert pub.resends >= 1


@pytest.mark.server
def test_quiet_store_is_not_taken_for_a_stall(tmp_path, brokers, region_ports):
    port = region_ports["east"]
    root = tmp_path / "lake"
    worker = start_ingest(port, root)
    agent = StoreAgent("E-Q", "east", tmp_path / "q.sqlite")
    pub = Publisher(agent, PublisherConfig(port=port, resend_after_s=0.5))
    pub.start()
    try:
        receive_many(agent, 5)
        wait_for("acked", lambda: pub.acked_seq == 5, 10)
        time.sleep(1.2)  # nothing to send for longer than resend_after_s
        for _ in range(20):  # a burst: several sends before the next ack arrives
            receive_many(agent, 1)
            time.sleep(0.005)
        wait_for("acked", lambda: pub.acked_seq == 25, 10)
    finally:
        pub.stop()
        worker.stop()
        agent.close()
    assert pub.resends == 0 and worker.stats.duplicates == 0


@pytest.mark.server
def test_heartbeat_reports_outbox_acks_and_clock_skew(tmp_path, brokers, region_ports):
    port = region_ports["east"]
    root = tmp_path / "lake"
    beats: list[tuple[bool, Heartbeat]] = []
    watcher = raw_client(port, "hb-watch")
    watcher.on_message = lambda _c, _u, m: beats.append((m.retain,
                                                         Heartbeat.from_json(m.payload)))
    watcher.subscribe(topic("east", "E-H", "heartbeat"), qos=1)
    agent = StoreAgent("E-H", "east", tmp_path / "h.sqlite")
    receive_many(agent, 30)
    # Ingest subscribes after the first sends: they reach nobody and go again after 1 s.
    pub = Publisher(agent, PublisherConfig(port=port, heartbeat_s=0.3, resend_after_s=1.0))
    pub.start()
    try:
        wait_for("hello heartbeat", lambda: beats, 10)
        hello = beats[0][1]
        assert hello.online and hello.last_seq == 30 and hello.outbox_depth == 30
        assert hello.last_acked_seq == 0 and hello.clock_skew_hint_s is None
        worker = start_ingest(port, root)
        try:
            wait_for("a heartbeat after the acks", lambda: beats[-1][1].outbox_depth == 0
                     and beats[-1][1].clock_skew_hint_s is not None, 10)
        finally:
            worker.stop()
        hb = beats[-1][1]
        assert (hb.last_seq, hb.last_acked_seq) == (30, 30)
        assert abs(hb.clock_skew_hint_s) < 2, "same machine: the clocks agree"
        assert hb.agent_version and hb.region == "east"
    finally:
        pub.stop()
        agent.close()
    wait_for("goodbye heartbeat", lambda: not beats[-1][1].online, 5)
    late = raw_client(port, "hb-late")  # a dashboard starting now sees the last word
    got: list[Heartbeat] = []
    late.on_message = lambda _c, _u, m: got.append(Heartbeat.from_json(m.payload))
    late.subscribe(topic("east", "E-H", "heartbeat"), qos=1)
    try:
        wait_for("retained heartbeat", lambda: got, 5)
    finally:
        for c in (watcher, late):
            c.loop_stop()
            c.disconnect()
    assert not got[0].online and got[0].outbox_depth == 0


@pytest.mark.server
def test_a_paused_ingest_is_late_not_lost_so_stores_do_not_resend(tmp_path, brokers,
                                                                   region_ports):
    """While the lakehouse is behind, ingest pauses intake and says so; its stores wait
    instead of re-sending everything unacked into the broker, and every event is landed
    once after the lakehouse catches up."""
    port = region_ports["east"]
    root = tmp_path / "lake"
    worker = start_ingest(port, root, backlog_high_events=20, backlog_check_s=0.05,
                          flush_interval_s=0.05)
    watcher = raw_client(port, "status-watch")
    statuses: list[dict] = []
    watcher.on_message = lambda _c, _u, m: statuses.append(json.loads(m.payload))
    watcher.subscribe(ingest_status_topic("east"), qos=1)
    agent = StoreAgent("E-P", "east", tmp_path / "p.sqlite")
    pub = Publisher(agent, PublisherConfig(port=port, resend_after_s=0.5))
    pub.start()
    try:
        wait_for("agent online", lambda: agent.online, 10)
        receive_many(agent, 25)  # lands, and the backlog of 25 pauses intake
        wait_for("intake paused", lambda: worker.gate.paused, 10)
        wait_for("the stores told", lambda: statuses and statuses[-1]["state"] == "paused",
                 10)
        receive_many(agent, 75)  # waits in the broker while intake is paused
        acked = pub.acked_seq
        time.sleep(3.0)  # six re-send periods with no ack moving
        assert pub.resends == 0, "a paused ingest is late, not lost"
        assert pub.acked_seq == acked < 100
        for f in (root / "landing" / "east").glob("b-*.jsonl"):
            f.unlink()  # the stream took them: the lakehouse caught up
        wait_for("every event acked", lambda: pub.acked_seq == 100, 30)
        said = [st["state"] for st in statuses]
        assert said[0] == "ok" and "ok" in said[said.index("paused"):]  # paused, resumed
    finally:
        pub.stop()
        worker.stop()
        watcher.loop_stop()
        watcher.disconnect()
        agent.close()
    assert pub.resends == 0 and worker.stats.duplicates == 0


@pytest.mark.server
def test_stalled_acks_are_resent_within_a_minute_once_ingest_stops_saying_paused(
        tmp_path, brokers, region_ports):
    """A "paused" is believed for a minute at most: a forged or stale one (or an ingest
    that died paused) cannot keep a store from re-sending for good; and one for another
    region is refused."""
    port = region_ports["east"]
    talker = raw_client(port, "status-talker")
    agent = StoreAgent("E-R", "east", tmp_path / "r.sqlite")
    pub = Publisher(agent, PublisherConfig(port=port, resend_after_s=0.3))
    pub.HOLD_S = 1.5
    pub.start()
    try:
        wait_for("agent online", lambda: agent.online, 10)
        west = build_ingest_status("west", "paused", 0)
        talker.publish(ingest_status_topic("east"), encode_message(west), qos=1
                       ).wait_for_publish(10)
        wait_for("a status for another region refused", lambda: pub.refused["status"] == 1,
                 10)
        paused = build_ingest_status("east", "paused", 5000)
        talker.publish(ingest_status_topic("east"), encode_message(paused), qos=1
                       ).wait_for_publish(10)
        time.sleep(0.3)
        receive_many(agent, 5)  # no ingest at all: nothing will ever ack these
        time.sleep(1.0)
        assert pub.resends == 0  # held
        wait_for("re-sent once the hold ran out", lambda: pub.resends >= 1, 10)
    finally:
        pub.stop()
        talker.loop_stop()
        talker.disconnect()
        agent.close()
