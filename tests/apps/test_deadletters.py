"""``shelflife deadletters``: a refused event is listed with its reason, fixed by the
operator, re-published at QoS 2, and lands through a real ingest worker."""

from __future__ import annotations

import json
import time

import pyarrow as pa
import pytest
from deltalake import write_deltalake
from prometheus_client import CollectorRegistry

from apps.cli import main
from edge_mqtt.agent import StoreAgent
from ingest.worker import IngestConfig, IngestWorker
from lakehouse import catalogue
from lakehouse.contract import encode_event, topic
from spark_jobs.stream.record import dead_letter_rows
from tests.clients import raw_client, wait_for

from ..ingest.test_backpressure import landed_keys, publish


def record_dead_letters(root) -> None:
    """What the stream's record step does with landing lines: dead letters to silver."""
    lines = []
    for f in sorted((root / "landing" / "east").glob("b-*.jsonl")):
        lines += [(0, json.loads(t)) for t in f.read_text().splitlines()]
    rows = dead_letter_rows(lines, None)
    write_deltalake(str(catalogue.DEAD_LETTERS.path(root)),
                    pa.Table.from_pylist(rows, schema=catalogue.DEAD_LETTERS.schema),
                    mode="append", partition_by=list(catalogue.DEAD_LETTERS.partitions))


@pytest.fixture
def refused(tmp_path, brokers, region_ports):
    """A running east worker that has dead-lettered one broken sale of store E007."""
    port = region_ports["east"]
    root = tmp_path / "lake"
    agent = StoreAgent("E007", "east", tmp_path / "e7.sqlite")
    good = agent.receive("MILK", 10, lot="L1", expires_on="2026-12-09", supplier_ref="PO",
                         unit_cost=1.0)
    sale = agent.sell("MILK", 3, unit_price=1.29, transaction_ref="T-9")
    agent.close()
    broken = json.loads(json.dumps(sale))
    broken["payload"]["quantity"] = "3"  # a POS integration sent a string
    worker = IngestWorker(IngestConfig(region="east", port=port, lakehouse=str(root)),
                          registry=CollectorRegistry())
    worker.start()
    client = raw_client(port, "buggy-agent")
    publish(client, [good])
    client.publish(topic("east", "E007", "events"), encode_event(broken), qos=2) \
        .wait_for_publish(10)
    client.loop_stop()
    wait_for("dead letter landed", lambda: worker.stats.dead_letters == 1, 20)
    record_dead_letters(root)
    yield root, worker, sale, port
    worker.stop()


def test_list_shows_time_region_topic_reason_and_raw(refused, capsys):
    root = refused[0]
    assert main(["deadletters", "list", "--lakehouse", str(root)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["time", "region", "topic", "reason", "raw"]
    assert len(out) == 2
    row = out[1]
    assert "east" in row and "shelflife/v1/east/E007/events" in row
    assert "payload.quantity" in row and "expected an integer" in row
    assert '{"agent_version"' in row  # the first bytes of what arrived
    assert row.startswith(time.strftime("%Y-%m-%dT", time.gmtime()))

    assert main(["deadletters", "list", "--lakehouse", str(root), "--region", "west"]) == 0
    assert capsys.readouterr().out.strip() == "no dead letters in west"
    assert main(["deadletters", "list", "--lakehouse", str(root),
                 "--since", "2999-01-01T00:00:00Z"]) == 0
    assert "no dead letters" in capsys.readouterr().out


def test_fixed_event_is_redriven_and_lands(refused, capsys, tmp_path):
    root, worker, sale, port = refused
    assert main(["deadletters", "list", "--lakehouse", str(root), "--jsonl"]) == 0
    line = json.loads(capsys.readouterr().out.splitlines()[0])
    assert line["region"] == "east" and line["event"]["event_id"] == sale["event_id"]
    line["event"]["payload"]["quantity"] = 3  # the operator's fix
    fixed = tmp_path / "fixed.jsonl"
    fixed.write_text(json.dumps(line) + "\n")

    code = main(["deadletters", "redrive", "--insecure",
                 "--file", str(fixed), "--lakehouse", str(root),
                 "--broker-ports", f"east={port}"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"line 1: {sale['event_id']} (sold) -> shelflife/v1/east/E007/events" in out
    wait_for("fixed sale landed", lambda: (
        ("E007", sale["seq"]) in landed_keys(root / "landing" / "east")), 20)
    landed = [json.loads(json.loads(t)["raw"])
              for f in (root / "landing" / "east").glob("b-*.jsonl")
              for t in f.read_text().splitlines() if json.loads(t)["kind"] == "event"]
    assert [e for e in landed if e["seq"] == sale["seq"]] == [sale]


def test_bare_events_find_their_region_from_the_dead_letters(refused, capsys, tmp_path):
    root, worker, sale, port = refused
    fixed = tmp_path / "fixed.jsonl"
    fixed.write_text("\n" + json.dumps(sale) + "\n")
    assert main(["deadletters", "redrive", "--insecure",
                 "--file", str(fixed), "--lakehouse", str(root),
                 "--broker-ports", f"east={port}"]) == 0
    assert "line 2:" in capsys.readouterr().out
    wait_for("fixed sale landed", lambda: (
        ("E007", sale["seq"]) in landed_keys(root / "landing" / "east")), 20)


def test_an_invalid_fix_is_refused_and_nothing_is_sent(refused, capsys, tmp_path):
    root, worker, sale, port = refused
    still_bad = json.loads(json.dumps(sale))
    still_bad["payload"]["quantity"] = 0
    fixed = tmp_path / "fixed.jsonl"
    fixed.write_text(json.dumps(sale) + "\n" + json.dumps({"event": still_bad}) + "\n")
    received = worker.stats.received
    code = main(["deadletters", "redrive", "--insecure",
                 "--file", str(fixed), "--lakehouse", str(root),
                 "--broker-ports", f"east={port}"])
    err = capsys.readouterr().err
    assert code == 2
    assert "line 2: payload.quantity: must be >= 1 (got 0)" in err
    assert "nothing was sent" in err
    time.sleep(1)
    assert worker.stats.received == received, "the valid first line was not sent either"


def test_unreachable_broker_is_named(refused, capsys, tmp_path):
    import socket

    root, _, sale, _ = refused
    fixed = tmp_path / "fixed.jsonl"
    fixed.write_text(json.dumps(sale) + "\n")
    # Held bound but not listening: connecting is refused, and the port cannot become the
    # client's own source port (a TCP self-connect would "reach" a dead port).
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        dead_port = holder.getsockname()[1]
        code = main(["deadletters", "redrive", "--insecure",
                 "--file", str(fixed), "--region", "east",
                     "--lakehouse", str(root), "--broker-ports", f"east={dead_port}"])
    assert code == 1
    assert f"region east: cannot reach its broker at 127.0.0.1:{dead_port}" in \
        capsys.readouterr().err
