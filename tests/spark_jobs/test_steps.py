"""The steps of a stream batch that need no Spark, and the books a stream process owns:
a bad line never reaches the state but always reaches the spill, and two regions of one
process see one catalogue and one set of transfers in transit."""

from __future__ import annotations

import base64
import json
import pickle

from lakehouse.contract import build_event, encode_event, topic
from lakehouse.landing import LINE_FIELDS, LandingLines, parse_line
from spark_jobs.stream.books import NetworkBooks
from spark_jobs.stream.fold import RegionState
from spark_jobs.stream.steps import (
    MicroBatch,
    batch_files_logged,
    check_events,
    spill_lines,
)

SKU = "DAIRY-MILK-1L"


def received(loc: str, seq: int, quantity: int = 10) -> dict:
    return build_event(location_id=loc, seq=seq, event_type="received", payload={
        "sku": SKU, "lot": "L1", "quantity": quantity, "expires_on": "2026-12-30",
        "supplier_ref": "PO-1", "unit_cost": 1.0, "stock_before": 0})


def line(event: dict | str, loc: str, n: int) -> str:
    raw = event if isinstance(event, str) else encode_event(event).decode()
    return json.dumps({"kind": "event", "topic": topic("east", loc, "events"),
                       "region": "east", "received_at": "2026-12-01T10:00:00.000Z",
                       "batch_id": "b7", "line": n, "raw": raw})


def test_check_keeps_good_events_and_refuses_the_rest_with_why():
    good = received("E001", 1)
    stranger = received("E002", 1)  # landed on E001's topic
    bad = {**received("E001", 2), "seq": -5}
    lines = LandingLines.parse([line(good, "E001", 0), line(stranger, "E001", 1),
                                line(bad, "E001", 2), line("{truncated", "E001", 3),
                                "not json at all"])
    parsed, refused = check_events(lines)
    assert [e["event_id"] for _, e, _ in parsed] == ["E001:1"]
    assert parsed[0][0] == lines.texts[0]  # spilled later as the landing text itself
    reasons = [why for _, why in refused]
    assert len(reasons) == 2 and all(r.startswith("refused by the stream") for r in reasons)
    assert "location mismatch" in reasons[0] and "seq" in reasons[1]
    assert [r["_owned"] for r, _ in refused] == [False, True]
    assert lines.files() == {"b-b7.jsonl"}


def test_spill_holds_each_new_event_once_and_every_bad_line():
    good = received("E001", 1)
    texts = [line(good, "E001", 0), line(good, "E001", 1), line("{truncated", "E001", 2)]
    run = MicroBatch(3, 0.0, LandingLines.parse(texts))
    run.parsed, run.refused = check_events(run.lines)
    run.events = [good]  # the fold saw it new once
    run.refused.append((run.lines.rows[1], "the stream could not apply it"))
    keep, rows = spill_lines(run, "east")
    assert keep[0] == texts[0] and len(keep) == 3
    # What the bronze/silver writer takes from memory is what it would read back.
    assert [{k: v for k, v in r.items() if k != "_owned"} for r in rows] == [
        parse_line(k if isinstance(k, str) else json.dumps(k)) for k in keep]
    unreadable, dead = keep[1], keep[2]
    assert set(unreadable) == set(LINE_FIELDS) and unreadable["raw"] == "{truncated"
    assert dead["kind"] == "dead" and dead["source"] == "stream"
    assert base64.b64decode(dead["raw_b64"]).decode() == json.loads(texts[1])["raw"]


def test_regions_of_one_process_share_its_books_and_saves_leave_them_out():
    books = NetworkBooks()
    east, west = RegionState("east", books), RegionState("west", books)
    east.apply([build_event(location_id="E001", seq=1, event_type="item_updated",
                            payload={"sku": SKU, "min_sellable_days": 3})])
    west.apply([build_event(location_id="W001", seq=1, event_type="transfer_out", payload={
        "sku": SKU, "quantity": 4, "destination": "E001", "transfer_id": "TR-1",
        "expected_transit_hours": 6.0, "stock_before": 10,
        "lots": [{"lot": "L1", "expires_on": "2026-12-30", "quantity": 4}]})])
    assert not east.rejected and not west.rejected
    assert west.items.get(SKU, "min_sellable_days") == 3
    assert east.transit.in_transit()[1] == {("E001", SKU): 4}
    assert RegionState("east").items.get(SKU, "min_sellable_days") is None  # no globals

    back = pickle.loads(pickle.dumps(east))
    assert back.books is not books and back.items.get(SKU, "min_sellable_days") is None
    assert back.locations.keys() == east.locations.keys()


def test_a_file_source_checkpoints_batch_files_come_from_its_log_however_long_it_ran(tmp_path):
    # A checkpoint from before the landing source: Spark's file source names the files
    # of each log offset in sources/0/<offset>, and every hundredth offset in a compact
    # file listing every file ever read: a day of it is ~600,000 lines, of which the
    # stream needs the last offset's.
    query = tmp_path / "query"
    log = query / "sources" / "0"
    log.mkdir(parents=True)
    (query / "offsets").mkdir()

    def entry(batch: int, k: int) -> str:
        return json.dumps({"path": f"file:///l/b-{batch:06d}-{k}.jsonl", "timestamp": 1,
                           "batchId": batch}, separators=(",", ":"))

    def offsets(batch: int, log_offset: int) -> None:
        (query / "offsets" / str(batch)).write_text(
            'v1\n{"batchWatermarkMs":0,"batchTimestampMs":1}\n'
            + json.dumps({"logOffset": log_offset}))

    (log / "29999.compact").write_text("v1\n" + "\n".join(
        entry(b, k) for b in range(30000) for k in range(7)))
    (log / "30000").write_text("v1\n" + entry(30000, 0))
    (log / "0").write_text("v1\n" + "\n".join(entry(0, k) for k in range(3)))
    for batch in (0, 29998, 29999, 30000):
        offsets(batch, batch)
    assert batch_files_logged(query, 29999, "/l") == [
        f"file:///l/b-029999-{k}.jsonl" for k in range(7)]
    assert batch_files_logged(query, 30000, "/l") == ["file:///l/b-030000-0.jsonl"]
    assert len(batch_files_logged(query, 0, "/l")) == 3
    assert batch_files_logged(query, 5, "/l") is None  # not logged: Spark reads
    (log / "7").write_text("v2\n" + entry(7, 0))  # a format this reader does not know
    offsets(6, 6)
    offsets(7, 7)
    assert batch_files_logged(query, 7, "/l") is None


def test_a_batch_that_covers_two_log_offsets_reads_both(tmp_path):
    # A kill after the source logged offset 31 and before the query logged batch 31
    # leaves the source one ahead: batch 31 then covers offsets 31 and 32, and every
    # later batch N offset N + 1. The fault bench found it: the stream read offset 31's
    # files alone, Spark's cleanSource deleted offset 32's unread, and their events
    # never reached the lakehouse.
    query = tmp_path / "query"
    (query / "sources" / "0").mkdir(parents=True)
    (query / "offsets").mkdir()
    for log_offset in (30, 31, 32, 33):
        (query / "sources" / "0" / str(log_offset)).write_text("v1\n" + "\n".join(
            json.dumps({"path": f"file:///l/{log_offset}-{k}.jsonl", "timestamp": 1,
                        "batchId": log_offset}) for k in range(2)))
    for batch, log_offset in ((30, 30), (31, 32), (32, 33)):
        (query / "offsets" / str(batch)).write_text(
            'v1\n{"batchWatermarkMs":0}\n' + json.dumps({"logOffset": log_offset}))
    assert batch_files_logged(query, 31, "/l") == [
        "file:///l/31-0.jsonl", "file:///l/31-1.jsonl",
        "file:///l/32-0.jsonl", "file:///l/32-1.jsonl"]
    assert batch_files_logged(query, 32, "/l") == ["file:///l/33-0.jsonl", "file:///l/33-1.jsonl"]


def test_a_landing_source_batch_reads_the_files_its_offset_names(tmp_path):
    # The landing source logs a batch's file names as its end offset; they are joined to
    # the zone's URL, a folder or an S3 prefix. The previous batch's offset plays no
    # part: batch names are not in arrival order, so no range of names could stand in.
    query = tmp_path / "query"
    (query / "offsets").mkdir(parents=True)
    for batch, names in ((4, ["b-2.jsonl"]), (5, ["b-1.jsonl", "b-3.jsonl"])):
        (query / "offsets" / str(batch)).write_text(
            'v1\n{"batchWatermarkMs":0}\n' + json.dumps({"files": names}))
    assert batch_files_logged(query, 5, "/lake/landing/east") == [
        "/lake/landing/east/b-1.jsonl", "/lake/landing/east/b-3.jsonl"]
    assert batch_files_logged(query, 4, "s3://bucket/lake/landing/east") == [
        "s3://bucket/lake/landing/east/b-2.jsonl"]
    assert batch_files_logged(query, 6, "/lake/landing/east") is None  # Spark reads
