"""Ingest against a real broker: durable landing, dedup by (location, seq), dead letters
with raw bytes and reason, and end-to-end acks that let agents trim their outbox."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import time

import pytest
from prometheus_client import CollectorRegistry

from edge_mqtt.agent import StoreAgent
from edge_mqtt.publisher import Publisher, PublisherConfig
from ingest.worker import IngestConfig, IngestWorker, until_landing
from lakehouse.contract import decode_event, encode_event, topic
from lakehouse.storage import s3_client, split_s3
from tests.clients import raw_client, wait_for
from tests.conftest import free_port


def landed_lines(root):
    lines = []
    for f in sorted((root / "landing" / "east").glob("b-*.jsonl")):
        lines += [json.loads(x) for x in f.read_text().splitlines()]
    return lines


def test_ingest_lands_once_dead_letters_bad_payloads_and_acks(tmp_path, brokers,
                                                              region_ports):
    port = region_ports["east"]
    root = tmp_path / "lake"
    worker = IngestWorker(IngestConfig(region="east", port=port, lakehouse=str(root)))
    worker.start()
    agent = StoreAgent("E-1", "east", tmp_path / "e1.sqlite")
    pub = Publisher(agent, PublisherConfig(port=port))
    pub.start()
    inject = raw_client(port, "inject")
    try:
        for i in range(200):
            agent.receive("MILK", 1 + i % 5, lot=f"L{i}", expires_on="2026-12-09",
                          supplier_ref="PO", unit_cost=1.0)
        wait_for("acks for 200 events", lambda: pub.acked_seq == 200, 30)
        wait_for("outbox trimmed", lambda: (pub.pump() or True) and agent.db.outbox_depth()
                 == 0, 10)
        # Re-send a few events as an agent would after a lost ack, plus garbage.
        first = encode_event(_event(tmp_path))
        inject.publish(topic("east", "E-1", "events"), b"\x00garbage", qos=2)
        inject.publish(topic("east", "E-1", "events"), first, qos=2)
        wait_for("worker saw 202 messages", lambda: worker.stats.received >= 202, 20)
        worker.flush()
    finally:
        inject.loop_stop()
        pub.stop()
        worker.stop()
        agent.close()

    lines = landed_lines(root)
    events = [decode_event(x["raw"].encode()) for x in lines if x["kind"] == "event"]
    assert sorted(e["seq"] for e in events) == list(range(1, 201))
    dead = [x for x in lines if x["kind"] == "dead"]
    assert len(dead) == 1
    assert base64.b64decode(dead[0]["raw_b64"]) == b"\x00garbage"
    assert "not UTF-8" in dead[0]["reason"] or "not JSON" in dead[0]["reason"]
    # The re-sent copy was dropped (a QoS 2 redelivery on a loaded machine may add one).
    assert worker.stats.duplicates >= 1
    assert not list((root / "landing" / "east").glob(".tmp-*")), "no half-written batches"


def _event(tmp_path):
    """Seq 1 of E-1 rebuilt from the agent's own database (a duplicate on the wire)."""
    twin = StoreAgent("E-1", "east", tmp_path / "twin.sqlite")
    ev = twin.receive("MILK", 1, lot="L0", expires_on="2026-12-09", supplier_ref="PO",
                      unit_cost=1.0)
    twin.close()
    return ev


def test_restarted_worker_still_drops_what_it_landed(tmp_path, brokers, region_ports):
    port = region_ports["east"]
    root = tmp_path / "lake"
    ev = _event(tmp_path)
    for attempt in range(2):
        worker = IngestWorker(IngestConfig(region="east", port=port, lakehouse=str(root),
                                           worker_id=f"w{attempt}"))
        worker.start()
        c = raw_client(port, f"inject-{attempt}")
        c.publish(topic("east", "E-1", "events"), encode_event(ev), qos=2)
        wait_for("message received", lambda w=worker: w.stats.received == 1, 20)
        worker.flush()
        c.loop_stop()
        worker.stop()
    assert len([x for x in landed_lines(root) if x["kind"] == "event"]) == 1


def test_mosquitto_drops_a_message_over_the_event_size_limit(tmp_path, brokers,
                                                             region_ports):
    from lakehouse.contract import MAX_EVENT_BYTES

    port, root = region_ports["east"], tmp_path / "lake"
    worker = IngestWorker(IngestConfig(region="east", port=port, lakehouse=str(root)),
                          registry=CollectorRegistry())
    worker.start()
    inject = raw_client(port, "inject")
    try:
        inject.publish(topic("east", "E-1", "events"), b"x" * (MAX_EVENT_BYTES + 1),
                       qos=2).wait_for_publish(10)
        inject.publish(topic("east", "E-1", "events"), encode_event(_event(tmp_path)),
                       qos=2).wait_for_publish(10)
        wait_for("the small event landed", lambda: worker.stats.landed == 1, 20)
        worker.flush()
        assert worker.stats.received == 1  # the broker never passed the big one on
    finally:
        inject.loop_stop()
        worker.stop()
    assert [x["kind"] for x in landed_lines(root)] == ["event"]


def test_ingest_dead_letters_an_oversized_message_without_decoding_it(tmp_path):
    """Behind a broker with no size limit, ingest refuses the message itself."""
    from ingest.brokers import require_mosquitto
    from ingest.worker import TOO_LARGE_KEEP
    from lakehouse.contract import MAX_EVENT_BYTES

    port = free_port()
    conf = tmp_path / "no-limit.conf"  # mosquitto's own default: no message_size_limit
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    broker = subprocess.Popen([require_mosquitto(), "-c", str(conf)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    root = tmp_path / "lake"
    try:
        wait_for("the broker listens", lambda: _accepts(port), 10)
        worker = IngestWorker(IngestConfig(region="east", port=port, lakehouse=str(root)),
                              registry=CollectorRegistry())
        worker.start()
        inject = raw_client(port, "inject")
        big = b"{" + b" " * (2 * MAX_EVENT_BYTES)  # would be valid-looking JSON if decoded
        try:
            inject.publish(topic("east", "E-1", "events"), big, qos=2).wait_for_publish(10)
            inject.publish(topic("east", "E-1", "events"), encode_event(_event(tmp_path)),
                           qos=2).wait_for_publish(10)
            wait_for("both handled", lambda: worker.stats.landed + worker.stats.dead_letters
                     == 2, 20)
        finally:
            inject.loop_stop()
            worker.stop()
    finally:
        broker.terminate()
        broker.wait(10)
    lines = landed_lines(root)
    [dead] = [x for x in lines if x["kind"] == "dead"]
    assert "message too large" in dead["reason"] and str(len(big)) in dead["reason"]
    assert base64.b64decode(dead["raw_b64"]) == big[:TOO_LARGE_KEEP]
    assert [x["kind"] for x in lines].count("event") == 1


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_on_s3_each_trigger_gets_one_batch_landed_just_before_it(tmp_path, brokers,
                                                                 region_ports, s3_lake,
                                                                 monkeypatch):
    """An S3 landing zone gets one object per stream trigger, PUT shortly before the
    trigger's whole second, rather than one every half second whenever: fewer requests,
    and no event waits in a landed object for a listing that is nearly a second away."""
    monkeypatch.setenv("SHELFLIFE_STATE_DIR", str(tmp_path / "state"))
    port = region_ports["east"]
    worker = IngestWorker(IngestConfig(region="east", port=port, lakehouse=s3_lake),
                          registry=CollectorRegistry())
    worker.start()
    bucket, prefix = split_s3(s3_lake)
    seen: dict[str, float] = {}
    agent = StoreAgent("E-1", "east", tmp_path / "e1.sqlite")
    pub = Publisher(agent, PublisherConfig(port=port))
    pub.start()
    try:
        began = time.time()
        while time.time() - began < 4.0:
            agent.receive("MILK", 1, lot=f"L{len(seen)}", expires_on="2026-12-09",
                          supplier_ref="PO", unit_cost=1.0)
            for item in s3_client().list_objects_v2(
                    Bucket=bucket, Prefix=f"{prefix}/landing/east/").get("Contents", ()):
                seen.setdefault(item["Key"], time.time())
            time.sleep(0.02)
        last_seq = agent.last_seq
        wait_for("every event acked", lambda: pub.acked_seq == last_seq, 10)
    finally:
        pub.stop()
        worker.stop()
        agent.close()
    assert worker.stats.landed == last_seq
    # About four seconds of trading: four or five objects, not eight or more.
    assert 3 <= len(seen) <= 6, sorted(seen.values())
    # Seen within the last 0.35 s before a whole second (PUT at 0.8 s, listed by 0.99 s),
    # on a loaded machine the most of them.
    phases = sorted((t % 1.0) for t in seen.values())
    assert sum(0.65 <= ph <= 1.0 for ph in phases) >= len(phases) - 1, phases


def test_the_landing_time_is_just_before_each_whole_trigger_period():
    assert until_landing(100.0, 1.0, 0.2) == pytest.approx(0.8)
    assert until_landing(100.79, 1.0, 0.2) == pytest.approx(0.01)
    assert until_landing(100.81, 1.0, 0.2) == pytest.approx(0.99)
    assert until_landing(100.0, 2.0, 0.25) == pytest.approx(1.75)
    # A local landing zone lands on its own short interval: the lead does not apply there.
    assert IngestConfig(region="east", trigger_s=0.1).land_ahead_s == 0.2
