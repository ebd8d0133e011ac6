"""A store agent killed at any instant loses nothing and sends nothing twice into the lake.

The agent runs as its own process (``edge_mqtt.agent_process``) against a real mosquitto
and a real ingest worker. It is killed with SIGKILL dozens of times at random instants:
starting up, recording, publishing, waiting for acks; each time it starts again on the
same SQLite file. What landed must be exactly seqs 1..N, each once, identical to an
uninterrupted run of the same stream, and its fold must equal the agent's own stock.
"""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from edge_mqtt.agent import StoreAgent
from edge_mqtt.agent_process import record_next
from lakehouse import oracle
from lakehouse.contract import Heartbeat, decode_event, topic
from tests.clients import raw_client

if TYPE_CHECKING:
    from ingest.worker import IngestWorker

REPO = Path(__file__).resolve().parents[2]
EVENTS = 2000
KILLS = 50
SEED = 7
LOCATION = "E-KILL"


def start_ingest(port: int, root: Path, **settings: Any) -> IngestWorker:
    """East's ingest worker, started (``settings``: more of its ``IngestConfig``). Ingest
    needs the server extra, so it is imported only by the tests that run it (marked
    ``server``); the rest run with the agent alone."""
    from ingest.worker import IngestConfig, IngestWorker

    worker = IngestWorker(IngestConfig(region="east", port=port, lakehouse=str(root),
                                       **settings))
    worker.start()
    return worker


def landed_events(root: Path, region: str = "east") -> list[dict]:
    """Every accepted event in the region's landing files, in landing order."""
    out = []
    for f in sorted((root / "landing" / region).glob("b-*.jsonl")):
        for line in f.read_text().splitlines():
            row = json.loads(line)
            if row["kind"] == "event":
                out.append(decode_event(row["raw"].encode()))
    return out


def db_state(path: Path) -> tuple[int, int]:
    """(last recorded seq, last acked seq) read from outside the agent process."""
    conn = sqlite3.connect(path)
    try:
        meta = dict(conn.execute("SELECT key, value FROM meta"))
    except sqlite3.OperationalError:  # killed before the schema existed
        return 0, 0
    finally:
        conn.close()
    return int(json.loads(meta.get("next_seq", "1"))) - 1, int(meta.get("acked_seq", "0"))


def reference_stream(path: Path) -> list[dict]:
    """The same stream recorded without interruption."""
    agent = StoreAgent(LOCATION, "east", path)
    try:
        return [record_next(agent, SEED) for _ in range(EVENTS)]
    finally:
        agent.close()


def comparable(event: dict) -> dict:
    """What must not depend on kills: all but wall-clock time and connectivity."""
    return {k: v for k, v in event.items() if k not in ("occurred_at", "offline")}


@pytest.mark.server
def test_agent_killed_at_random_instants_lands_every_event_exactly_once(
        tmp_path, brokers, region_ports):
    port = region_ports["east"]
    root = tmp_path / "lake"
    db = tmp_path / "agent.sqlite"
    worker = start_ingest(port, root)
    heartbeats: list[Heartbeat] = []
    watcher = raw_client(port, "heartbeat-watcher")
    watcher.on_message = lambda _c, _u, msg: heartbeats.append(Heartbeat.from_json(msg.payload))
    watcher.subscribe(topic("east", LOCATION, "heartbeat"), qos=1)
    cmd = [sys.executable, "-m", "edge_mqtt.agent_process", "--db", str(db),
           "--location", LOCATION, "--region", "east", "--port", str(port),
           "--events", str(EVENTS), "--seed", str(SEED), "--rate", "200",
           "--replay-rate", "80", "--resend-after-s", "2", "--heartbeat-s", "1",
           "--timeout", "60"]
    rng = random.Random(20260101)
    kills = {"recording": 0, "publishing": 0}
    started = time.monotonic()
    try:
        while sum(kills.values()) < KILLS:
            proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE)
            time.sleep(rng.uniform(0.02, 0.9))
            if proc.poll() is not None:
                out, err = proc.communicate()
                raise AssertionError(f"agent finished (rc {proc.returncode}) before "
                                     f"{KILLS} kills: {out!r} {err[-2000:]!r}")
            proc.kill()
            proc.wait()
            last, _acked = db_state(db)
            kills["recording" if last < EVENTS else "publishing"] += 1
        recorded_when_killed = db_state(db)
        final = subprocess.run(cmd, cwd=REPO, capture_output=True, timeout=90)
        assert final.returncode == 0, final.stderr.decode()[-2000:]
        elapsed = time.monotonic() - started
        worker.flush()
    finally:
        watcher.loop_stop()
        watcher.disconnect()
        worker.stop()
    print(f"\n{KILLS} kills {kills}, state at last kill {recorded_when_killed}, "
          f"{elapsed:.1f} s, ingest duplicates {worker.stats.duplicates}")
    assert kills["recording"] >= 5 and kills["publishing"] >= 5, kills

    landed = [e for e in landed_events(root) if e["location_id"] == LOCATION]
    assert [e["seq"] for e in sorted(landed, key=lambda e: e["seq"])] == list(
        range(1, EVENTS + 1)), "every seq lands exactly once, none missing"
    reference = reference_stream(tmp_path / "reference.sqlite")
    got = {e["seq"]: comparable(e) for e in landed}
    assert [got[e["seq"]] for e in reference] == [comparable(e) for e in reference], \
        "a restarted agent carries on with the very event the killed one would have made"

    agent = StoreAgent(LOCATION, "east", db)
    try:
        cohorts = {(LOCATION, c["sku"], c["lot"]): c["quantity"] for c in agent.db.cohorts()}
        assert oracle.fold(landed) == cohorts, "the lake's fold is the agent's own stock"
        assert agent.last_seq == EVENTS and agent.acked_seq == EVENTS
        assert agent.db.outbox_depth() == 0, "the outbox is fully acked and trimmed"
    finally:
        agent.close()

    # The broker announced the killed agents through their will; the clean exit at the
    # end left a last heartbeat saying offline, with nothing left to send.
    wills = [h for h in heartbeats if not h.online and h.outbox_depth is None]
    assert wills, "a killed agent's will says it went offline"
    assert any(h.online and h.outbox_depth and h.outbox_depth > 0 for h in heartbeats)
    last = heartbeats[-1]
    assert (last.online, last.outbox_depth, last.last_acked_seq) == (False, 0, EVENTS)
