"""The landing zone's one line format: what ingest writes, the stream reads back."""

from __future__ import annotations

import json

from lakehouse.contract import build_event, encode_event, topic
from lakehouse.landing import (
    EVENT,
    LINE_FIELDS,
    LandedRecord,
    LandingBacklog,
    LandingLines,
    LandingWriter,
    batch_files,
    dead_line,
    landing_dir,
    now_ts,
)


def _event(seq: int) -> dict:
    return build_event(location_id="S1", seq=seq, clock={"S1": seq}, event_type="received",
                       payload={"sku": "MILK", "quantity": 2, "lot": "L1",
                                "expires_on": "2026-12-09", "supplier_ref": "PO",
                                "unit_cost": 1.0, "stock_before": 0})


def test_a_written_batch_reads_back_line_for_line(tmp_path):
    folder = landing_dir("east", tmp_path)
    writer = LandingWriter(folder, "w1")
    records = [LandedRecord("event", topic("east", "S1", "events"), "east", now_ts(),
                            encode_event(_event(1))),
               LandedRecord("dead", topic("east", "S1", "events"), "east", now_ts(),
                            b"\xff not json", reason="not UTF-8")]
    batch_id, path = writer.write(records)
    assert batch_files(folder) == [path.name]
    lines = LandingLines.parse(path.read_text().splitlines())
    assert len(lines) == 2 and lines.files() == {path.name}
    event, dead = lines.rows
    assert set(event) - {EVENT} <= set(LINE_FIELDS) and event["batch_id"] == batch_id
    assert event[EVENT]["seq"] == 1 and dead[EVENT] is None
    # a dead letter travels on as a plain landing line, nothing parsed added to it
    assert lines.unreadable() == [{k: dead.get(k) for k in LINE_FIELDS}]


def test_unreadable_text_becomes_a_line_without_an_event(tmp_path):
    lines = LandingLines.parse(["not json", json.dumps({"kind": "event", "raw": "[1]"})])
    assert [r[EVENT] for r in lines.rows] == [None, None]
    refused = dead_line(lines.rows[0], "west", "bad")
    assert (refused["kind"], refused["region"], refused["reason"]) == ("dead", "west", "bad")


def test_files_a_reader_took_no_longer_wait(tmp_path):
    (tmp_path / "b-1.jsonl").write_text("a\nb\n")
    (tmp_path / "b-2.jsonl").write_text("a\n")
    backlog = LandingBacklog(tmp_path)
    assert (backlog.scan().files, backlog.scan().events) == (2, 3)
    backlog.taken({"b-1.jsonl"})
    assert (backlog.scan().files, backlog.scan().events) == (1, 1)
    (tmp_path / "b-1.jsonl").unlink()  # deleted by Spark later: forgotten
    assert (backlog.scan().files, backlog.scan().events) == (1, 1)
