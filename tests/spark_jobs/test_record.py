"""Bronze and silver as the stream records them: every accepted payload byte for byte,
one typed row per readable event, every refused line a dead letter; and Spark reads the
tables back with the same values, so analysts reading either way see one schema and one
meaning."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest

from edge_mqtt.agent import StoreAgent
from lakehouse.catalogue import DEAD_LETTERS, EVENTS, EVENTS_RAW
from lakehouse.contract import encode_event, parse_ts, topic
from spark_jobs.stream.record import RecordWriter, bronze_rows, dead_letter_rows, silver_rows

RECEIVED = datetime(2026, 11, 27, 10, 0, 0, 123000, tzinfo=UTC)


def landing_lines(tmp_path) -> list[dict]:
    agent = StoreAgent("E001", "east", tmp_path / "e.sqlite")
    events = [
        agent.receive("MILK", 12, lot="L1", expires_on="2026-12-03", supplier_ref="PO-1",
                      unit_cost=0.8),
        agent.sell("MILK", 5, unit_price=1.29, transaction_ref="T1"),
        agent.transfer_out("MILK", 2, destination="E002", transfer_id="TR1",
                           expected_transit_hours=3.5),
        agent.count([{"sku": "MILK", "lot": "L1", "expires_on": "2026-12-03",
                      "quantity": 4}]),
    ]
    t = topic("east", "E001", "events")
    lines = [{"kind": "event", "topic": t, "region": "east",
              "received_at": "2026-11-27T10:00:00.123Z", "batch_id": "b1", "line": i,
              "raw": encode_event(e).decode()} for i, e in enumerate(events)]
    lines.append({"kind": "dead", "topic": t, "region": "east",
                  "received_at": "2026-11-27T10:00:01.000Z", "batch_id": "b1", "line": 9,
                  "raw_b64": base64.b64encode(b"\xff{oops").decode(), "reason": "not UTF-8"})
    lines.append({"kind": "event", "topic": t, "region": "east",
                  "received_at": "2026-11-27T10:00:02.000Z", "batch_id": "b1", "line": 10,
                  "raw": "{truncated"})
    return lines


def normalise(rows, drop=()):
    """Comparable rows; absent and null struct fields are the same thing in Delta."""
    def fix(v):
        if isinstance(v, dict):
            return {k: fix(x) for k, x in sorted(v.items()) if x is not None}
        if isinstance(v, list):
            return [fix(x) for x in v]
        if isinstance(v, (bytes, bytearray)):
            return bytes(v)
        if isinstance(v, datetime):
            return v.replace(tzinfo=None) if v.tzinfo is None else \
                v.astimezone(UTC).replace(tzinfo=None)
        return v
    return sorted((fix({k: v for k, v in r.items() if k not in drop}) for r in rows),
                  key=lambda r: json.dumps(r, default=str, sort_keys=True))


def with_clock_dicts(rows: list[dict]) -> list[dict]:
    """Maps are written as key/value pairs, as Arrow takes them, and read back as dicts."""
    return [{**r, "clock": dict(r["clock"]) if r["clock"] is not None else None}
            for r in rows]


def test_silver_events_are_the_readable_events_typed(tmp_path):
    lines = landing_lines(tmp_path)
    ours = with_clock_dicts(silver_rows([(7, li) for li in lines], datetime.now(UTC)))
    assert len(ours) == 4, "the four readable events, not the dead or truncated lines"
    assert set(ours[0]) == set(EVENTS.schema.names)
    for row, line in zip(ours, lines, strict=False):
        ev = json.loads(line["raw"])
        assert {k: row[k] for k in ("event_id", "location_id", "seq", "event_type",
                                    "category", "offline", "causation_id", "clock",
                                    "agent_version", "payload")} == \
            {k: ev[k] for k in ("event_id", "location_id", "seq", "event_type", "category",
                                "offline", "causation_id", "clock", "agent_version",
                                "payload")}
        assert row["occurred_at"] == parse_ts(ev["occurred_at"])
        assert (row["sku"], row["quantity"], row["stock_before"]) == (
            ev["payload"].get("sku"), ev["payload"].get("quantity"),
            ev["payload"].get("stock_before"))
        assert (row["region"], row["topic"], row["received_at"], row["ingest_batch_id"]) == (
            "east", line["topic"], RECEIVED, "b1")
    counted = ours[3]
    assert counted["event_type"] == "counted" and counted["sku"] is None
    assert counted["payload"]["items"][0]["quantity"] == 4


def test_bronze_keeps_every_accepted_payload_and_dead_letters_every_refusal(tmp_path):
    lines = landing_lines(tmp_path)
    raw = bronze_rows([(7, li) for li in lines], datetime.now(UTC))
    accepted = [li for li in lines if li["kind"] == "event"]
    assert [r["payload"] for r in raw] == [li["raw"].encode("utf-8") for li in accepted]
    assert set(raw[0]) == set(EVENTS_RAW.schema.names)
    assert {(r["region"], r["topic"], r["ingest_batch_id"], r["stream_batch_id"])
            for r in raw} == {("east", accepted[0]["topic"], "b1", 7)}
    assert [r["line"] for r in raw] == [0, 1, 2, 3, 10]
    assert raw[0]["received_at"] == RECEIVED

    ours = dead_letter_rows([(7, li) for li in lines], datetime.now(UTC))
    assert set(ours[0]) == set(DEAD_LETTERS.schema.names)
    assert [d["raw"] for d in ours] == [b"\xff{oops", b"{truncated"]
    assert [(d["source"], d["reason"]) for d in ours] == [
        ("ingest", "not UTF-8"), ("stream", "the stream could not parse the event")]
    assert [(d["region"], d["ingest_batch_id"], d["line"]) for d in ours] == [
        ("east", "b1", 9), ("east", "b1", 10)]
    assert [d["received_at"] for d in ours] == [
        datetime(2026, 11, 27, 10, 0, 1, tzinfo=UTC), datetime(2026, 11, 27, 10, 0, 2,
                                                               tzinfo=UTC)]


@pytest.mark.spark
def test_spark_reads_back_what_the_record_writer_wrote(spark, tmp_path):
    from spark_jobs.stream.tables import ensure_tables

    root = tmp_path / "lake"
    ensure_tables(root)
    lines = landing_lines(tmp_path)
    paths = {t.name: str(t.path(root)) for t in (EVENTS_RAW, EVENTS, DEAD_LETTERS)}
    writer = RecordWriter("east", tmp_path / "spill", paths, "test")
    writer.spill(7, lines)
    assert writer.flush() == 1
    now = datetime.now(UTC)
    for table, shaped, drop in (
            (EVENTS_RAW, bronze_rows, ()),
            (EVENTS, silver_rows, ("processed_at",)),
            (DEAD_LETTERS, dead_letter_rows, ())):
        back = [r.asDict(recursive=True) for r in
                spark.read.format("delta").load(paths[table.name]).collect()]
        expected = shaped([(7, li) for li in lines], now)
        if table is EVENTS:
            expected = with_clock_dicts(expected)
        assert normalise(back, drop) == normalise(expected, drop), table


def test_a_spill_recorded_from_memory_matches_one_read_back_from_disk(tmp_path):
    # The live path hands its parsed lines to the writer; what lands in bronze, silver and
    # dead letters must not depend on whether the writer used them or read the file.
    import deltalake

    from lakehouse.landing import parse_line
    from spark_jobs.stream.tables import ensure_tables

    lines = landing_lines(tmp_path)
    tables = {}
    for name, rows in (("memory", [parse_line(json.dumps(li)) for li in lines]),
                       ("disk", None)):
        root = tmp_path / name
        ensure_tables(root)
        paths = {t.name: str(t.path(root)) for t in (EVENTS_RAW, EVENTS, DEAD_LETTERS)}
        writer = RecordWriter("east", tmp_path / f"spill-{name}", paths, "test")
        writer.spill(7, lines, rows=rows)
        assert writer.flush() == 1
        assert not writer.pending()
        tables[name] = {t: normalise(deltalake.DeltaTable(p).to_pyarrow_table().to_pylist(),
                                     ("processed_at",)) for t, p in paths.items()}
    assert tables["memory"] == tables["disk"]
    assert len(tables["memory"][EVENTS.name]) == 4 and len(tables["memory"][DEAD_LETTERS.name]) == 2
