"""SIGKILL of ingest while events are in flight: real mosquitto, real store agents and
publishers, ingest as the ``shelflife ingest`` process. After restarts every event the
agents recorded is in the landing zone exactly once per (location_id, seq), every
outbox drains (the end-to-end acks arrived), and every junk payload a stranger published
meanwhile is a dead letter: none vanished with a killed worker, although no outbox holds
them. No Spark: the landing files are read."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from edge_mqtt.agent import StoreAgent
from edge_mqtt.publisher import Publisher, PublisherConfig
from lakehouse.contract import topic
from lakehouse.mqtt import BrokerAddress, make_client
from tests.clients import wait_for
from tests.conftest import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
REPO = Path(__file__).resolve().parents[2]
STORES = 6
KILLS = 3
EVENTS_PER_S = 300


def health(metrics_port: int) -> dict:
    """The east worker's entry of ingest's ``/health``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/health",
                                timeout=2) as resp:
        return json.loads(resp.read())["regions"][0]


def start_ingest(root: Path, port: int, metrics_port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "apps.cli", "ingest", "--insecure", "--regions", "east",
         "--broker-ports", f"east={port}", "--lakehouse", str(root),
         "--metrics-port", str(metrics_port)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def healthy() -> bool:
        try:
            return health(metrics_port)["connected"]
        except (OSError, urllib.error.HTTPError, ValueError):
            return False

    wait_for("ingest connected", healthy, 20)
    return proc


def landed_once(landing: Path) -> tuple[Counter, set[bytes]]:
    """How often each (location, seq) landed, and the payloads of the dead letters."""
    seen: Counter = Counter()
    dead: set[bytes] = set()
    for f in landing.glob("b-*.jsonl"):
        for text in f.read_text().splitlines():
            line = json.loads(text)
            if line["kind"] == "dead":
                dead.add(base64.b64decode(line["raw_b64"]))
                continue
            event = json.loads(line["raw"])
            seen[(event["location_id"], event["seq"])] += 1
    return seen, dead


def test_sigkill_of_ingest_loses_and_duplicates_nothing(tmp_path, brokers, region_ports):
    port, root, metrics_port = region_ports["east"], tmp_path / "lake", free_port()
    agents = [StoreAgent(f"E{i:03d}", "east", tmp_path / f"e{i}.sqlite")
              for i in range(STORES)]
    pubs = [Publisher(a, PublisherConfig(port=port, resend_after_s=1.0, resend_max_s=2.0,
                                         heartbeat_s=0)) for a in agents]
    ingest = start_ingest(root, port, metrics_port)
    stranger = make_client(BrokerAddress("127.0.0.1", port), client_id="stranger")
    stranger.connect("127.0.0.1", port)
    stranger.loop_start()
    junk: list[bytes] = []
    kills = held_at_kills = 0
    try:
        for p in pubs:
            p.start()
        n, started = 0, time.monotonic()
        next_kill = started + 1.5
        while kills < KILLS or time.monotonic() < next_kill:
            agent = agents[n % STORES]
            agent.sell("MILK", 1, unit_price=1.29, transaction_ref=f"T{n}")
            n += 1
            if n % 20 == 0:  # a stranger's junk: in no outbox, so only the broker has it
                junk.append(f"junk {len(junk)} \xff".encode("latin-1"))
                stranger.publish(topic("east", "E000", "events"), junk[-1], qos=2)
            now = time.monotonic()
            if now >= next_kill and kills < KILLS:
                assert ingest.poll() is None
                held_at_kills += health(metrics_port)["held"]
                ingest.send_signal(signal.SIGKILL)  # mid-stream: batches in every state
                ingest.wait(10)
                kills += 1
                ingest = start_ingest(root, port, metrics_port)
                next_kill = time.monotonic() + 1.0 + 0.37 * kills
            time.sleep(max(0.0, started + n / EVENTS_PER_S - time.monotonic()))
        recorded = {(a.location_id, s) for a in agents for s in range(1, a.last_seq + 1)}
        assert len(recorded) == n and n > 1000

        wait_for("every agent's last seq acked",
                 lambda: all(p.acked_seq == a.last_seq for a, p in zip(agents, pubs,
                                                                         strict=True)), 40)
        wait_for("every outbox drained", lambda: all(
            (p.pump() or True) and a.db.outbox_depth() == 0
            for a, p in zip(agents, pubs, strict=True)), 10)
        wait_for("every junk payload dead-lettered", lambda: set(junk) <= landed_once(
            root / "landing" / "east")[1], 30)
        ingest.send_signal(signal.SIGTERM)
        assert ingest.wait(20) == 0
    finally:
        stranger.loop_stop()
        stranger.disconnect()
        if ingest.poll() is None:
            ingest.kill()
            ingest.wait()
        for p in pubs:
            p.stop()
        for a in agents:
            a.close()
    landed, dead = landed_once(root / "landing" / "east")
    assert dead == set(junk) and len(junk) > 50
    assert set(landed) == recorded, (f"missing {len(recorded - set(landed))}, "
                                     f"unexpected {len(set(landed) - recorded)}")
    twice = {k: c for k, c in landed.items() if c > 1}
    assert not twice, f"{len(twice)} events landed more than once, e.g. {list(twice)[:5]}"
    assert kills == KILLS
    # The kills hit messages ingest held unacknowledged: the broker re-sent those.
    assert held_at_kills > 0
