"""``shelflife agent ...`` records and shows stock from a shell, refuses bad input with
exit code 2 and the field named, and serves the HTTP API next to the publisher."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[2]


def agent_cli(*args: str, db: Path, env: dict[str, str] | None = None,
              location: str | None = "S-001") -> subprocess.CompletedProcess[str]:
    where = ["--db", str(db)] + (["--location", location, "--region", "east"]
                                 if location else [])
    return subprocess.run([sys.executable, "-m", "apps.cli", "agent", *args, *where],
                          cwd=REPO, capture_output=True, text=True, timeout=30,
                          env={**os.environ, **(env or {})})


def outbox_seqs(db: Path) -> list[int]:
    with sqlite3.connect(db) as conn:
        return [s for (s,) in conn.execute("SELECT seq FROM outbox ORDER BY seq")]


def test_record_and_stock_round_trip(tmp_path):
    db = tmp_path / "agent.sqlite"
    for lot, qty, expires in (("LATE", "10", "2026-12-09"), ("EARLY", "5", "2026-12-02")):
        done = agent_cli("record", "received", "--sku", "MILK", "--qty", qty, "--lot", lot,
                         "--expires-on", expires, "--supplier-ref", "PO-7", "--unit-cost",
                         "0.42", db=db)
        assert done.returncode == 0, done.stderr
    done = agent_cli("record", "sold", "--sku", "MILK", "--qty", "7", "--unit-price", "1.29",
                     "--transaction-ref", "T-88", "--json", db=db)
    assert done.returncode == 0, done.stderr
    sale = json.loads(done.stdout)
    assert sale["event_id"] == "S-001:3" and sale["payload"]["stock_before"] == 15
    assert [lot["lot"] for lot in sale["payload"]["lots"]] == ["EARLY", "LATE"]

    # Location and region now come from the database itself.
    done = agent_cli("stock", "--json", db=db, location=None)
    assert json.loads(done.stdout) == {"location_id": "S-001", "stock": [
        {"sku": "MILK", "on_hand": 8,
         "cohorts": [{"lot": "LATE", "expires_on": "2026-12-09", "quantity": 8}]}]}
    table = agent_cli("stock", db=db, location=None).stdout.splitlines()
    assert table[0].split() == ["SKU", "ON", "HAND", "LOT", "EXPIRES", "QTY"]
    assert table[1].split() == ["MILK", "8", "LATE", "2026-12-09", "8"]
    assert outbox_seqs(db) == [1, 2, 3]


def test_settings_come_from_the_environment(tmp_path):
    env = {"SHELFLIFE_AGENT_DB": str(tmp_path / "env.sqlite"), "SHELFLIFE_LOCATION": "S-042",
           "SHELFLIFE_REGION": "west"}
    done = subprocess.run([sys.executable, "-m", "apps.cli", "agent", "record", "item_updated",
                           "--sku", "MILK", "--price", "1.49", "--json"], cwd=REPO,
                          capture_output=True, text=True, timeout=30, env={**os.environ, **env})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["event_id"] == "S-042:1"
    assert outbox_seqs(tmp_path / "env.sqlite") == [1]


@pytest.mark.parametrize(("args", "message"), [
    (("record", "sold", "--sku", "MILK", "--qty", "0", "--unit-price", "1",
      "--transaction-ref", "T"), "error: payload.quantity: must be >= 1 (got 0)"),
    (("record", "sold", "--sku", "MILK", "--qty", "1", "--transaction-ref", "T"),
     "error: payload.unit_price: required for sold requests (got None) "
     "(set it with --unit-price)"),
    (("record", "sold", "--sku", "MILK", "--qty", "1", "--unit-price", "1",
      "--transaction-ref", "T", "--lot", "L1"), "error: --lot: does not apply to sold"),
    (("record", "wasted", "--sku", "MILK", "--qty", "1", "--lot", "L1", "--reason", "eaten",
      "--disposal", "bin"), "error: payload.reason_code: expected one of"),
    (("record", "stolen", "--sku", "MILK"), "invalid choice: 'stolen'"),
    (("record", "sold", "--sku", "MILK", "--qty", "two"), "argument --qty: invalid int"),
    (("record", "sold", "--sku", "MILK", "--qty", "9" * 30, "--unit-price", "1",
      "--transaction-ref", "T"), "error: payload.quantity: beyond the largest allowed"),
    (("record", "sold", "--sku", "MILK", "--qty", "1", "--unit-price", "nan",
      "--transaction-ref", "T"), "error: payload.unit_price: must be a finite number"),
    (("record", "sold", "--sku", "MILK", "--qty", "1", "--unit-price", "inf",
      "--transaction-ref", "T"), "error: payload.unit_price: must be a finite number"),
    (("record", "sold", "--sku", "MILK", "--qty", "1", "--unit-price", "1",
      "--transaction-ref", "T\x1b[2J"),
     "error: payload.transaction_ref: contains control character"),
    (("record", "counted", "--items",
      '[{"sku": "MILK", "lot": "L1", "expires_on": null, "quantity": 1e999}]'),
     "error: payload.items[0].quantity: must be a finite number"),
])
def test_refusals_exit_2_naming_the_field_and_record_nothing(tmp_path, args, message):
    db = tmp_path / "agent.sqlite"
    done = agent_cli(*args, db=db)
    assert done.returncode == 2
    assert message in done.stderr, done.stderr
    assert done.stdout == ""
    assert not db.exists() or outbox_seqs(db) == []


def test_a_refused_huge_receipt_leaves_the_sku_selling(tmp_path):
    db = tmp_path / "agent.sqlite"
    done = agent_cli("record", "received", "--sku", "MILK", "--qty", str(2**63 - 1),
                     "--lot", "L1", "--expires-on", "2026-12-02", "--supplier-ref", "PO",
                     "--unit-cost", "0.4", db=db)
    assert done.returncode == 2 and "error: payload.quantity:" in done.stderr, done.stderr
    done = agent_cli("record", "sold", "--sku", "MILK", "--qty", "1", "--unit-price", "1",
                     "--transaction-ref", "T-1", "--json", db=db)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["seq"] == 1 and outbox_seqs(db) == [1]


def test_synchronous_normal_only_when_asked_and_with_a_warning(tmp_path):
    db = tmp_path / "agent.sqlite"
    sale = ("record", "sold", "--sku", "MILK", "--qty", "1", "--unit-price", "1",
            "--transaction-ref", "T-1")
    done = agent_cli(*sale, db=db)
    assert done.returncode == 0 and "synchronous" not in done.stderr, done.stderr
    done = agent_cli(*sale, "--synchronous", "NORMAL", db=db)
    assert done.returncode == 0, done.stderr
    assert "synchronous=NORMAL: a power cut can roll back events" in done.stderr
    done = agent_cli(*sale, db=db, env={"SHELFLIFE_AGENT_SYNCHRONOUS": "NORMAL"})
    assert "synchronous=NORMAL" in done.stderr
    assert outbox_seqs(db) == [1, 2, 3]


def test_a_new_database_needs_a_location(tmp_path):
    done = agent_cli("stock", db=tmp_path / "new.sqlite", location=None)
    assert done.returncode == 2 and "error: location: pass --location" in done.stderr
    assert not (tmp_path / "new.sqlite").exists()


def test_selling_more_than_on_hand_is_accepted_and_shows_negative(tmp_path):
    db = tmp_path / "agent.sqlite"
    agent_cli("record", "received", "--sku", "MILK", "--qty", "2", "--lot", "L1",
              "--expires-on", "2026-12-02", "--supplier-ref", "PO", "--unit-cost", "0.4", db=db)
    done = agent_cli("record", "sold", "--sku", "MILK", "--qty", "5", "--unit-price", "1",
                     "--transaction-ref", "T-1", db=db)
    assert done.returncode == 0, done.stderr
    assert "(stock before 2)" in done.stdout and "(none)" in done.stdout
    stock = json.loads(agent_cli("stock", "--sku", "MILK", "--json", db=db).stdout)["stock"]
    assert stock[0]["on_hand"] == -3


def test_agent_commands_import_nothing_central(tmp_path):
    """Store hardware has no Spark, pandas or Streamlit installed."""
    code = ("import sys; from apps.cli import main; "
            f"main(['agent', 'stock', '--db', {str(tmp_path / 'a.sqlite')!r}, "
            "'--location', 'S-001', '--region', 'east']); "
            "import edge_mqtt.http_api, edge_mqtt.publisher; "
            "heavy = sorted({m.split('.')[0] for m in sys.modules} & "
            "{'pyspark', 'pandas', 'streamlit', 'numpy', 'pyarrow', 'deltalake'}); "
            "assert not heavy, heavy")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def test_serve_records_over_http_and_connects_to_the_region_broker(tmp_path, brokers,
                                                                   region_ports):
    db, port = tmp_path / "agent.sqlite", free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "apps.cli", "agent", "serve", "--db", str(db), "--location",
         "S-001", "--region", "east", "--port", str(port), "--broker-port",
         str(region_ports["east"])], cwd=REPO, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        assert "HTTP API on http://127.0.0.1:" in proc.stdout.readline()
        base = f"http://127.0.0.1:{port}"
        request = urllib.request.Request(
            f"{base}/events", method="POST", headers={"Content-Type": "application/json"},
            data=json.dumps({"event_type": "sold", "sku": "MILK", "quantity": 1,
                             "unit_price": 1.0, "transaction_ref": "T-1"}).encode())
        with urllib.request.urlopen(request, timeout=5) as resp:
            assert resp.status == 201
        deadline = time.monotonic() + 15
        while not (health := _get(f"{base}/health"))["online"]:
            assert time.monotonic() < deadline, health
            time.sleep(0.1)
        assert (health["last_seq"], health["outbox_depth"]) == (1, 1)  # no ingest, no ack
        assert _get(f"{base}/stock?sku=MILK")["stock"][0]["on_hand"] == -1
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err


def test_serve_records_sales_while_the_broker_is_down(tmp_path):
    db, port = tmp_path / "agent.sqlite", free_port()
    dead_broker = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "apps.cli", "agent", "serve", "--db", str(db), "--location",
         "S-001", "--region", "east", "--port", str(port), "--broker-port", str(dead_broker)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        proc.stdout.readline()
        base = f"http://127.0.0.1:{port}"
        started = time.monotonic()
        for i in range(20):
            request = urllib.request.Request(
                f"{base}/events", method="POST",
                headers={"Content-Type": "application/json"},
                data=json.dumps({"event_type": "sold", "sku": "MILK", "quantity": 1,
                                 "unit_price": 1.0, "transaction_ref": f"T-{i}"}).encode())
            with urllib.request.urlopen(request, timeout=5) as resp:
                assert resp.status == 201 and json.loads(resp.read())["offline"] is True
        assert time.monotonic() - started < 5
        health = _get(f"{base}/health")
        assert (health["online"], health["last_seq"], health["outbox_depth"]) == (False, 20, 20)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err


def test_a_warehouse_lists_and_ships_its_transfer_orders_from_a_shell(tmp_path):
    from edge_mqtt.agent import StoreAgent

    db = tmp_path / "wh.sqlite"
    agent = StoreAgent("WH-EAST-1", "east", db)
    agent.receive("MILK", 12, lot="L9", expires_on="2026-12-09", supplier_ref="PO-1",
                  unit_cost=0.4)
    agent.accept_order({"order_id": "597b07709accd33f", "sku": "MILK", "lot": "L9",
                        "quantity": 5, "destination": "EAST-S001", "transit_hours": 6.0,
                        "approved_by": "ana", "approved_at": "2026-12-01T09:00:00.000Z"})
    agent.close()
    table = agent_cli("orders", db=db, location=None).stdout.splitlines()
    assert table[1].split() == ["597b07709accd33f", "pending", "MILK", "L9", "5",
                                "EAST-S001", "6", "h", "ana"]
    done = agent_cli("ship", "597b07709accd33f", "--json", db=db, location=None)
    assert done.returncode == 0, done.stderr
    shipped = json.loads(done.stdout)
    assert (shipped["event_type"], shipped["payload"]["transfer_id"]) == (
        "transfer_out", "597b07709accd33f")
    again = agent_cli("ship", "597b07709accd33f", db=db, location=None)
    assert again.returncode == 2 and "dispatched" in again.stderr
    listed = json.loads(agent_cli("orders", "--status", "dispatched", "--json", db=db,
                                  location=None).stdout)
    assert [o["event_id"] for o in listed["orders"]] == [shipped["event_id"]]
    assert outbox_seqs(db) == [1, 2]


def test_operators_from_a_shell_and_cli_actions_record_the_os_user(tmp_path):
    import getpass

    db = tmp_path / "store.sqlite"
    assert agent_cli("record", "received", "--sku", "MILK", "--qty", "5", "--lot", "L1",
                     "--expires-on", "2026-12-20", "--supplier-ref", "PO-1",
                     "--unit-cost", "0.8", db=db, env={"SHELFLIFE_REGION": "east"}
                     ).returncode == 0
    listed = agent_cli("operators", "list", db=db)
    assert "no operators yet" in listed.stdout
    short = subprocess.run([sys.executable, "-m", "apps.cli", "agent", "operators", "add",
                            "ana", "--password-stdin", "--db", str(db)], input="short\n",
                           capture_output=True, text=True, timeout=60)
    assert short.returncode == 2 and "at least 12" in short.stderr
    added = subprocess.run([sys.executable, "-m", "apps.cli", "agent", "operators", "add",
                            "ana", "--password-stdin", "--db", str(db)],
                           input="a long enough secret\n", capture_output=True, text=True,
                           timeout=60)
    assert added.returncode == 0, added.stderr
    assert agent_cli("operators", "list", db=db).stdout.split() == ["ana"]
    adjusted = agent_cli("record", "adjusted", "--sku", "MILK", "--lot", "L1",
                         "--counted", "4", "--json", db=db)
    assert adjusted.returncode == 0, adjusted.stderr
    assert json.loads(adjusted.stdout)["payload"]["recorded_by"] == getpass.getuser()


@pytest.mark.server
@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_a_store_set_up_from_its_credentials_serves_over_tls_and_trims_on_signed_acks(
        tmp_path):
    """The README's store setup: `shelflife credentials <location>` as the agent's
    environment, `agent serve --tls-ca`, a secure TLS broker and ingest."""
    from prometheus_client import CollectorRegistry

    from ingest.brokers import TlsFiles, credentials_path, start_brokers, stop_brokers
    from ingest.worker import IngestConfig, IngestWorker

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    broker_port, http_port = free_port(), free_port()
    running = start_brokers(tmp_path / "b", ("east",),
                            ports={"east": broker_port}, locations={"east": ["S-001"]},
                            secure=True, tls=TlsFiles(cert, key))
    creds = credentials_path(tmp_path / "b")
    printed = subprocess.run([sys.executable, "-m", "apps.cli", "credentials", "S-001",
                              "--credentials", str(creds)], cwd=REPO, capture_output=True,
                             text=True, timeout=30)
    assert printed.returncode == 0, printed.stderr
    store_env = dict(line.split("=", 1) for line in printed.stdout.splitlines())
    assert set(store_env) == {"SHELFLIFE_LOCATION", "SHELFLIFE_REGION", "SHELFLIFE_BROKER_USER",
                              "SHELFLIFE_BROKER_PASSWORD", "SHELFLIFE_AGENT_KEY"}
    worker = IngestWorker(IngestConfig(region="east", port=broker_port,
                                       lakehouse=str(tmp_path / "lake"),
                                       credentials=str(creds), tls_ca=str(cert)),
                          registry=CollectorRegistry())
    worker.start()
    proc = subprocess.Popen(
        [sys.executable, "-m", "apps.cli", "agent", "serve", "--db",
         str(tmp_path / "s.sqlite"), "--port", str(http_port), "--broker-port",
         str(broker_port), "--tls-ca", str(cert)],
        cwd=REPO, env={**os.environ, **store_env}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        banner = proc.stdout.readline()
        assert "(tls)" in banner and "acks and orders must be signed" in banner, banner
        base = f"http://127.0.0.1:{http_port}"
        for i in range(3):
            request = urllib.request.Request(
                f"{base}/events", method="POST",
                headers={"Content-Type": "application/json"},
                data=json.dumps({"event_type": "sold", "sku": "MILK", "quantity": 1,
                                 "unit_price": 1.0, "transaction_ref": f"T-{i}"}).encode())
            with urllib.request.urlopen(request, timeout=5) as resp:
                assert resp.status == 201
        deadline = time.monotonic() + 20
        while (health := _get(f"{base}/health"))["outbox_depth"] != 0:
            assert time.monotonic() < deadline, health
            time.sleep(0.2)
        assert health["acked_seq"] == 3 and worker.stats.landed == 3
        assert health["refused_messages"] == {"ack": 0, "order": 0, "status": 0}
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
        worker.stop()
        stop_brokers(running)
    assert proc.returncode == 0, err
    assert "no signing key" not in err
