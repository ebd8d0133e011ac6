"""The README's commands, secure and over TLS: `shelflife broker`, `ingest` and `simulate`
as separate processes land every simulated store's events, and the stores trim their
outboxes on ingest's signed acks.

Real mosquitto with a TLS listener (a certificate made here with openssl), per-store
logins and ACLs; no Spark.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from apps.demo import demo_plan
from edge_mqtt.simulator import FleetConfig, fleet_layout
from edge_mqtt.store import StoreDB
from lakehouse.catalogue import STORE_HEARTBEATS
from lakehouse.credentials import Credentials
from lakehouse.landing import landing_dir
from lakehouse.readers import read_table
from tests.ports import free_port

pytestmark = pytest.mark.timeout(150)
REPO = Path(__file__).resolve().parents[2]


def _certificate(where: Path) -> tuple[Path, Path]:
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def _wait(what: str, check, timeout: float, procs: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        for p in procs:
            assert p.poll() is None, f"{p.args[3]} exited with {p.returncode} ({what})"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _landed(lake: Path) -> dict[str, set[int]]:
    seqs: dict[str, set[int]] = {}
    for path in landing_dir("east", lake).glob("b-*.jsonl"):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if row["kind"] == "event":
                event = json.loads(row["raw"])
                seqs.setdefault(event["location_id"], set()).add(event["seq"])
    return seqs


@pytest.mark.skipif(shutil.which("openssl") is None,
                    reason="needs the openssl command")
def test_simulated_stores_land_events_through_secure_tls_brokers(tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path)
    port = free_port()
    creds_file = tmp_path / "brokers" / "credentials.json"
    lake = tmp_path / "lake"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1",
           "SHELFLIFE_LAKEHOUSE": str(lake)}
    for name in ("SHELFLIFE_INSECURE", "SHELFLIFE_CREDENTIALS", "SHELFLIFE_TLS_CA"):
        env.pop(name, None)
    cli = [sys.executable, "-m", "apps.cli"]
    where = ["--regions", "east", "--broker-ports", f"east={port}"]
    client = ["--credentials", str(creds_file), "--tls-ca", str(cert)]
    procs: list[subprocess.Popen] = []
    logs = {name: (tmp_path / f"{name}.log").open("w") for name in ("broker", "ingest")}
    try:
        procs.append(subprocess.Popen(
            [*cli, "broker", "--data-dir", str(tmp_path / "brokers"), *where,
             "--tls-cert", str(cert), "--tls-key", str(key)],
            env=env, cwd=tmp_path, stdout=logs["broker"], stderr=subprocess.STDOUT))
        _wait("the broker", lambda: "credentials:" in (tmp_path / "broker.log").read_text(),
              30, procs)
        procs.append(subprocess.Popen(
            [*cli, "ingest", "--lakehouse", str(lake), "--metrics-port", "0", *where,
             *client], env=env, cwd=tmp_path, stdout=logs["ingest"],
            stderr=subprocess.STDOUT))
        fleet = subprocess.run(
            [*cli, "simulate", "--stores", "3", "--events-per-s", "15", "--duration-s", "20",
             "--data-dir", str(tmp_path / "fleet"), *where, *client],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=90)
        assert fleet.returncode == 0, fleet.stderr[-3000:]
        assert "no credentials (--insecure)" not in fleet.stderr

        layout = [loc for loc, _region, _kind in
                  fleet_layout(FleetConfig(stores=3, regions=("east",)))]
        assert layout == ["WH-EAST-1", "EAST-S001", "EAST-S002", "EAST-S003"]
        # The broker took up the logins the simulator issued, while running.
        assert "credentials: reloaded, east 4 locations" in (
            tmp_path / "broker.log").read_text()
        creds = Credentials.open(creds_file, create=False)
        assert creds.locations("east") == sorted(layout)

        acked: dict[str, int] = {}
        for loc in layout:
            db = StoreDB(tmp_path / "fleet" / "agents" / f"{loc}.sqlite")
            try:
                acked[loc] = int(db.get_meta("acked_seq", 0))
                last = int(db.get_meta("next_seq", 1)) - 1
            finally:
                db.close()
            assert last > 0, f"{loc} recorded nothing"
        landed = _landed(lake)
        # Every store's events landed, and its own signed acks trimmed its outbox.
        assert sorted(landed) == sorted(layout)
        for loc in layout:
            assert acked[loc] > 0, f"{loc}: no signed ack accepted"
            assert set(range(1, acked[loc] + 1)) <= landed[loc], f"{loc} acked unlanded"
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for fh in logs.values():
            fh.close()
    ingest_log = (tmp_path / "ingest.log").read_text()
    assert "Traceback" not in ingest_log and "no signing key" not in ingest_log
    # Ingest may read every store's heartbeat on the secure broker: all of them landed.
    beats = read_table(STORE_HEARTBEATS, lake)
    assert beats is not None and set(beats["location_id"]) == set(layout)


def test_the_demo_logs_every_component_in_unless_insecure(tmp_path: Path) -> None:
    plan = dict(demo_plan(lake=str(tmp_path / "lake"), var=tmp_path, port=8501, stores=6,
                          events_per_s=10, insecure=False))
    creds_file = tmp_path / "brokers" / "credentials.json"
    for name in ("ingest", "orders", "fleet"):
        cmd = plan[name]
        assert cmd[cmd.index("--credentials") + 1] == str(creds_file.resolve()), name
        assert "--insecure" not in cmd
    assert "--insecure" not in plan["broker"]
    # issued before the brokers start, so they accept the fleet from the first second
    creds = Credentials.open(creds_file, create=False)
    fleet = FleetConfig(stores=6)
    for loc, region, _kind in fleet_layout(fleet):
        assert creds.region_of(loc) == region
        assert len(creds.signing_key(loc)) == 32

    insecure = dict(demo_plan(lake=str(tmp_path / "lake2"), var=tmp_path / "v2", port=8501,
                              stores=6, events_per_s=10, insecure=True))
    for name in ("broker", "ingest", "orders", "fleet"):
        assert "--insecure" in insecure[name], name
    assert not (tmp_path / "v2" / "brokers" / "credentials.json").exists()
