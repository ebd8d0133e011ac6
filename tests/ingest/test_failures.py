"""Ingest when landing fails: a locked dedup database (another process holds its write
lock) stops nothing for good. Messages stay unacknowledged meanwhile, /health and the
metrics say what is wrong, and a process that cannot recover exits for its supervisor to
restart; every event still lands exactly once and the agents' outboxes drain."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from edge_mqtt.agent import StoreAgent
from edge_mqtt.publisher import Publisher, PublisherConfig
from ingest.dedup import SeqTracker
from ingest.worker import IngestConfig, IngestWorker, worker_health
from lakehouse.metrics import parse_metrics, serve_metrics
from tests.clients import wait_for
from tests.conftest import free_port

from .test_backpressure import landed_keys

pytestmark = pytest.mark.timeout(120)
REPO = Path(__file__).resolve().parents[2]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def record(agent: StoreAgent, n: int) -> None:
    for i in range(n):
        agent.receive("MILK", 1 + i % 3, lot=f"L{i}", expires_on="2026-12-09",
                      supplier_ref="PO", unit_cost=1.0)


def lock_dedup(root: Path) -> sqlite3.Connection:
    """Take the dedup database's write lock, as a stuck second process would."""
    path = root / "_ingest" / "east.sqlite"
    SeqTracker(path).close()  # exists, in WAL mode
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    return conn


def test_a_locked_dedup_database_holds_messages_until_it_is_free(tmp_path, brokers,
                                                                 region_ports):
    port, root = region_ports["east"], tmp_path / "lake"
    registry = CollectorRegistry()
    worker = IngestWorker(IngestConfig(region="east", port=port, lakehouse=str(root),
                                       give_up_after_s=600), registry=registry)
    server = serve_metrics(registry, 0, health=lambda: worker_health([worker]))
    base = f"http://127.0.0.1:{server.port}"
    agent = StoreAgent("E-1", "east", tmp_path / "e1.sqlite")
    pub = Publisher(agent, PublisherConfig(port=port, resend_after_s=2.0, heartbeat_s=0))
    lock = None
    try:
        worker.start()
        pub.start()
        record(agent, 50)
        wait_for("the first 50 acked", lambda: pub.acked_seq == 50, 20)
        assert get(f"{base}/health")[0] == 200

        lock = lock_dedup(root)
        record(agent, 50)
        wait_for("a failed turn", lambda: worker.stats.loop_errors >= 1, 20)
        record(agent, 50)  # these arrive while landing fails: held at the broker
        wait_for("new messages held", lambda: worker.stats.held > 0, 20)
        status, body = get(f"{base}/health")
        assert status == 503
        health = json.loads(body)
        assert health["status"] == "down" and "database is locked" in health["reason"]
        metrics = parse_metrics(get(f"{base}/metrics")[1])
        assert metrics['shelflife_ingest_loop_errors_total{region="east"}'] >= 1
        assert metrics['shelflife_ingest_worker_up{region="east"}'] == 0
        assert metrics['shelflife_ingest_messages_held{region="east"}'] > 0
        assert pub.acked_seq == 50 and agent.db.outbox_depth() == 100  # nothing acked

        lock.execute("ROLLBACK")
        wait_for("all 150 acked", lambda: pub.acked_seq == 150, 40)
        wait_for("outbox drained", lambda: (pub.pump() or True)
                 and agent.db.outbox_depth() == 0, 10)
        wait_for("healthy again", lambda: get(f"{base}/health")[0] == 200, 10)
        assert worker.stats.held == 0
        metrics = parse_metrics(get(f"{base}/metrics")[1])
        assert metrics['shelflife_ingest_worker_up{region="east"}'] == 1
    finally:
        if lock is not None:
            lock.close()
        pub.stop()
        worker.stop()
        server.stop()
        agent.close()
    keys = landed_keys(root / "landing" / "east")
    assert sorted(keys) == [("E-1", s) for s in range(1, 151)]
    assert not list((root / "landing" / "east").glob(".tmp-*"))


def _ingest(root: Path, port: int, metrics_port: int, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "apps.cli", "ingest", "--insecure", "--regions", "east",
         "--broker-ports", f"east={port}", "--lakehouse", str(root),
         "--metrics-port", str(metrics_port), *extra],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)


def test_ingest_that_cannot_land_exits_non_zero_and_a_restart_lands_everything(
        tmp_path, brokers, region_ports):
    port, root, metrics_port = region_ports["east"], tmp_path / "lake", free_port()
    agent = StoreAgent("E-1", "east", tmp_path / "e1.sqlite")
    pub = Publisher(agent, PublisherConfig(port=port, resend_after_s=1.0, heartbeat_s=0))
    lock = lock_dedup(root)
    first = _ingest(root, port, metrics_port, "--give-up-after-s", "12")
    second = None
    try:
        pub.start()
        record(agent, 30)
        seen: list[tuple[int, str]] = []

        def unhealthy() -> bool:
            try:
                seen.append(get(f"http://127.0.0.1:{metrics_port}/health"))
            except OSError:
                return False
            return seen[-1][0] == 503

        wait_for("/health says 503", unhealthy, 30)
        assert "database is locked" in json.loads(seen[-1][1])["reason"]
        out, _ = first.communicate(timeout=40)
        assert first.returncode == 1, out
        assert "exiting so the process is restarted" in out and "database is locked" in out
        assert pub.acked_seq == 0

        lock.execute("ROLLBACK")
        lock.close()
        second = _ingest(root, port, metrics_port)
        wait_for("all 30 acked after the restart", lambda: pub.acked_seq == 30, 40)
        wait_for("outbox drained", lambda: (pub.pump() or True)
                 and agent.db.outbox_depth() == 0, 10)
        assert get(f"http://127.0.0.1:{metrics_port}/health")[0] == 200
        second.terminate()
        assert second.wait(20) == 0
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        pub.stop()
        agent.close()
    keys = landed_keys(root / "landing" / "east")
    assert sorted(keys) == [("E-1", s) for s in range(1, 31)]


def test_a_restart_settles_batches_a_kill_interrupted(tmp_path):
    """What a SIGKILL can leave between writing a batch and marking it: the restarted
    worker counts a renamed batch as landed (its agent's re-send is then a duplicate) and
    drops one that never got its name (its agent re-sends it and it lands once)."""
    from lakehouse.contract import encode_event, topic
    from lakehouse.landing import LandedRecord, LandingWriter

    root = tmp_path / "lake"
    landing = root / "landing" / "east"
    agent = StoreAgent("E-1", "east", tmp_path / "e1.sqlite")
    events = [agent.receive("MILK", 1, lot=f"L{i}", expires_on="2026-12-09",
                            supplier_ref="PO", unit_cost=1.0) for i in range(4)]
    agent.close()

    def line(ev: dict) -> LandedRecord:
        return LandedRecord("event", topic("east", "E-1", "events"), "east",
                            "2026-12-01T00:00:00.000Z", encode_event(ev))

    writer = LandingWriter(landing, "w1")
    tracker = SeqTracker(root / "_ingest" / "east.sqlite")
    renamed = writer.prepare([line(events[0]), line(events[1])])
    tracker.intend(renamed.batch_id, {"E-1": [1, 2]})
    writer.publish(renamed)                       # killed before the mark
    unnamed = writer.prepare([line(events[2]), line(events[3])])
    tracker.intend(unnamed.batch_id, {"E-1": [3, 4]})  # killed before the rename
    writer.prepare([line(events[3])])             # killed before the intent
    tracker.close()

    worker = IngestWorker(IngestConfig(region="east", lakehouse=str(root)),
                          registry=CollectorRegistry())
    try:
        assert worker.tracker.contiguous["E-1"] == 2
        assert worker.tracker.pending() == {}
        assert not list(landing.glob(".tmp-*"))
        assert landed_keys(landing) == [("E-1", 1), ("E-1", 2)]
    finally:
        worker.tracker.close()
