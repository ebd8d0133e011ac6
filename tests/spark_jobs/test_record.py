"""Bronze and silver rows shaped on the driver equal what Spark's transforms make of the
same landing lines, so analysts reading either way see one schema and one meaning."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest

from edge_mqtt.agent import StoreAgent
from lakehouse.contract import encode_event, topic
from spark_jobs.stream import silver
from spark_jobs.stream.bronze import LANDING_SCHEMA, to_events_raw
from spark_jobs.stream.record import bronze_rows, dead_letter_rows, silver_rows

pytestmark = pytest.mark.spark


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


def spark_rows(spark, lines, fn):
    df = spark.createDataFrame([tuple(li.get(f.name) for f in LANDING_SCHEMA.fields)
                                for li in lines], LANDING_SCHEMA)
    out = fn(silver.with_parsed(df))
    return out.schema, [r.asDict(recursive=True) for r in out.collect()]


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


def test_silver_events_match_spark(spark, tmp_path):
    lines = landing_lines(tmp_path)
    schema, expected = spark_rows(spark, lines, silver.to_events)
    ours = silver_rows([(7, li) for li in lines], datetime.now(UTC))
    assert len(ours) == 4, "the four readable events, not the dead or truncated lines"
    for r in ours:  # maps arrive as key/value pairs, as Arrow takes them
        r["clock"] = dict(r["clock"]) if r["clock"] is not None else None
    assert set(ours[0]) == {f.name for f in schema.fields}
    assert normalise(ours, drop=("processed_at",)) == \
        normalise(expected, drop=("processed_at",))


def test_bronze_and_dead_letters_match_spark(spark, tmp_path):
    lines = landing_lines(tmp_path)
    _, raw_expected = spark_rows(spark, lines, lambda p: to_events_raw(p, 7))
    assert normalise(bronze_rows([(7, li) for li in lines], datetime.now(UTC))) == \
        normalise(raw_expected)
    _, dead_expected = spark_rows(spark, lines, silver.dead_letters)
    ours = dead_letter_rows([(7, li) for li in lines], datetime.now(UTC))
    assert [d["raw"] for d in ours] == [b"\xff{oops", b"{truncated"]
    drop = ("reason", "source")  # the stream names itself where Spark named itself
    assert normalise(ours, drop=drop) == normalise(dead_expected, drop=drop)
    assert ours[1]["reason"] == "the stream could not parse the event"
