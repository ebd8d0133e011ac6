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
    read_batches,
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


def test_the_stream_reads_a_batch_by_the_names_sparks_source_log_gives(tmp_path):
    # The stream reads a micro-batch's files itself, named as Spark's source log names
    # them (file: URLs), in batch order; a line is split on newlines only, so text
    # holding U+2028 (which JSON may carry unescaped) stays one event.
    folder = landing_dir("east", tmp_path)
    writer = LandingWriter(folder, "w1")
    odd = _event(2)
    odd["payload"]["supplier_ref"] = "PO\u2028line"
    paths = [writer.write([LandedRecord("event", topic("east", "S1", "events"), "east",
                                        now_ts(), encode_event(e))])[1]
             for e in (_event(1), odd)]
    urls = [p.resolve().as_uri() for p in reversed(paths)]
    lines = LandingLines.parse(read_batches(urls))
    assert [r[EVENT]["seq"] for r in lines.rows] == [1, 2]
    assert lines.rows[1][EVENT]["payload"]["supplier_ref"] == "PO\u2028line"
    assert lines.files() == {p.name for p in paths}
