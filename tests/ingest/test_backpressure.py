"""Backpressure and quota against a real mosquitto: when the stream falls behind, ingest
stops taking messages, the broker keeps them, and after the backlog drains every event
lands exactly once."""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from edge_mqtt.agent import StoreAgent
from ingest.backpressure import IntakeGate
from ingest.brokers import start_brokers
from ingest.worker import IngestConfig, IngestWorker
from lakehouse.contract import encode_event, topic
from lakehouse.landing import LandingBacklog
from lakehouse.metrics import parse_metrics, serve_metrics
from lakehouse.ratelimit import TokenBucket
from tests.clients import raw_client, wait_for


def make_events(tmp_path: Path, per_location: int, locations: int = 3) -> list[dict]:
    """Valid events from real agents, interleaved across locations."""
    out: list[list[dict]] = []
    for i in range(locations):
        agent = StoreAgent(f"E{i:03d}", "east", tmp_path / f"agents/e{i}.sqlite")
        out.append([agent.receive("MILK", 1 + n % 5, lot=f"L{n}", expires_on="2026-12-09",
                                  supplier_ref="PO", unit_cost=1.0)
                    for n in range(per_location)])
        agent.close()
    return [ev for group in zip(*out, strict=True) for ev in group]


def publish(client, events: list[dict]) -> None:
    infos = [client.publish(topic("east", e["location_id"], "events"), encode_event(e), qos=2)
             for e in events]
    for info in infos:
        info.wait_for_publish(30)


def landed_keys(*folders: Path) -> list[tuple[str, int]]:
    keys = []
    for folder in folders:
        for f in sorted(folder.glob("b-*.jsonl")):
            for text in f.read_text().splitlines():
                line = json.loads(text)
                if line["kind"] == "event":
                    ev = json.loads(line["raw"])
                    keys.append((ev["location_id"], ev["seq"]))
    return keys


def backlog_events(folder: Path) -> int:
    return sum(len(f.read_text().splitlines()) for f in folder.glob("b-*.jsonl"))


def consume(landing: Path, consumed: Path) -> None:
    """What the stream does with landing files: take them away (kept here to check)."""
    consumed.mkdir(exist_ok=True)
    for f in landing.glob("b-*.jsonl"):
        shutil.move(str(f), consumed / f.name)


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return parse_metrics(resp.read().decode())


def test_full_landing_pauses_intake_and_the_broker_keeps_the_rest(tmp_path, brokers,
                                                                  region_ports):
    port = region_ports["east"]
    root = tmp_path / "lake"
    landing, consumed = root / "landing" / "east", tmp_path / "consumed"
    events = make_events(tmp_path, per_location=1100)  # 3,300 events
    registry = CollectorRegistry()
    worker = IngestWorker(IngestConfig(region="east", port=port, lakehouse=str(root),
                                       backlog_high_events=300, backlog_low_events=100),
                          registry=registry)
    server = serve_metrics(registry, 0)
    worker.start()
    pub = raw_client(port, "feeder")
    try:
        publish(pub, events[:300])
        wait_for("intake paused", lambda: worker.paused, 20)
        assert scrape(server.port)['shelflife_ingest_intake_paused{region="east"}'] == 1
        publish(pub, events[300:])  # the broker accepts them all (QoS 2 complete)
        time.sleep(2)
        # Ingest holds at most the broker's in-flight window; nothing more lands.
        assert backlog_events(landing) == 300
        assert worker.stats.received < 300 + 1000 + 50
        metrics = scrape(server.port)
        assert metrics['shelflife_ingest_landing_backlog_events{region="east"}'] == 300
        assert metrics['shelflife_ingest_messages_held{region="east"}'] > 0

        # The stream catches up: every event arrives, in order of need, none lost.
        deadline = time.monotonic() + 60
        while len(landed_keys(landing, consumed)) < len(events):
            assert time.monotonic() < deadline, "events still missing after 60 s"
            consume(landing, consumed)
            time.sleep(0.3)
        consume(landing, consumed)
        wait_for("intake resumed", lambda: not worker.paused, 10)
    finally:
        pub.loop_stop()
        worker.stop()
        server.stop()
    keys = landed_keys(landing, consumed)
    assert len(keys) == len(set(keys)) == len(events), "each event landed exactly once"
    assert set(keys) == {(e["location_id"], e["seq"]) for e in events}
    assert worker.gate.pauses >= 1


def test_quota_caps_the_intake_rate(tmp_path, brokers, region_ports):
    port = region_ports["east"]
    root = tmp_path / "lake"
    events = make_events(tmp_path, per_location=200)  # 600 events
    worker = IngestWorker(IngestConfig(region="east", port=port, lakehouse=str(root),
                                       max_events_per_s=200), registry=CollectorRegistry())
    worker.start()
    pub = raw_client(port, "feeder")
    try:
        started = time.monotonic()
        publish(pub, events)
        wait_for("600 events landed", lambda: worker.stats.landed == 600, 30)
        elapsed = time.monotonic() - started
    finally:
        pub.loop_stop()
        worker.stop()
    # A one-second burst, then 200/s: 600 events take about two seconds, not a fraction.
    assert elapsed >= 1.6, f"600 events landed in {elapsed:.2f} s despite a 200/s quota"
    keys = landed_keys(root / "landing" / "east")
    assert len(keys) == len(set(keys)) == 600


def test_acks_lost_with_the_broker_do_not_block_intake_after_it_returns(
        tmp_path, brokers, region_ports):
    """Held messages landed while the broker is down: their PUBCOMPs are lost, the
    restarted broker asks again, and ingest must answer or the window stays full."""
    port = region_ports["east"]
    root = tmp_path / "lake"
    landing, consumed = root / "landing" / "east", tmp_path / "consumed"
    events = make_events(tmp_path, per_location=700)  # 2,100 events
    worker = IngestWorker(IngestConfig(region="east", port=port, lakehouse=str(root),
                                       backlog_high_events=100, backlog_low_events=50),
                          registry=CollectorRegistry())
    worker.start()
    pub = raw_client(port, "feeder")
    restarted = []
    try:
        publish(pub, events[:100])
        wait_for("intake paused", lambda: worker.paused, 20)
        publish(pub, events[100:1300])
        wait_for("window held", lambda: worker.stats.held >= 900, 20)
        pub.loop_stop()
        east = next(b for b in brokers if b.spec.region == "east")
        east.stop()  # mosquitto saves its sessions, with the unanswered messages
        wait_for("worker sees the broker gone", lambda: not worker.connected.is_set(), 10)
        consume(landing, consumed)  # the stream catches up; held messages land
        wait_for("held messages landed", lambda: worker.stats.held == 0, 20)
        restarted = start_brokers(tmp_path / "brokers", ["east"],
                                  ports={"east": port})
        pub = raw_client(port, "feeder-2")
        publish(pub, events[1300:])
        deadline = time.monotonic() + 60
        while len(landed_keys(landing, consumed)) < len(events):
            assert time.monotonic() < deadline, (
                f"{len(events) - len(landed_keys(landing, consumed))} events never arrived")
            consume(landing, consumed)
            time.sleep(0.3)
    finally:
        pub.loop_stop()
        worker.stop()
        for b in restarted:
            b.stop()
    keys = landed_keys(landing, consumed)
    assert set(keys) == {(e["location_id"], e["seq"]) for e in events}
    assert len(keys) == len(set(keys))


# --- the small parts on their own ---------------------------------------------------------

def test_gate_pauses_at_high_water_and_resumes_below_low_water():
    gate = IntakeGate(high=100, low=40)
    assert [gate.update(n) for n in (10, 99, 100, 60, 40, 39, 80)] == \
        [False, False, True, True, True, False, False]
    with pytest.raises(ValueError, match="backlog_low_events"):
        IntakeGate(high=100, low=100)


def test_quota_allows_one_seconds_burst_then_its_rate():
    quota = TokenBucket(100)  # what ingest makes of --max-events-per-s 100
    assert quota.allowance() == 100
    quota.spend(100)
    time.sleep(0.2)
    assert 15 <= quota.allowance() <= 30
    assert TokenBucket(0).allowance() is None
    with pytest.raises(ValueError, match="max_events_per_s"):
        IngestConfig(region="east", max_events_per_s=-1)


def test_backlog_counts_waiting_files_and_their_lines(tmp_path):
    (tmp_path / "b-1.jsonl").write_text("a\nb\nc\n")
    (tmp_path / "b-2.jsonl").write_text("a\n")
    (tmp_path / ".tmp-3.jsonl").write_text("half\nwritten\n")
    scanner = LandingBacklog(tmp_path)
    first = scanner.scan()
    assert (first.files, first.events) == (2, 4)
    (tmp_path / "b-1.jsonl").unlink()
    second = scanner.scan()
    assert (second.files, second.events) == (1, 1)
