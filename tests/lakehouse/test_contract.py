"""Contract v1: every event type validates, bad input names field and value, and the
Spark schema generated from the same table parses what the agent produces."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lakehouse.contract import (
    CATEGORY_OF,
    EVENT_TYPES,
    PAYLOAD_FIELDS,
    ContractError,
    build_event,
    decode_event,
    encode_event,
    parse_topic,
    payload_fields,
    topic,
)

LOTS = [{"lot": "L1", "expires_on": "2026-12-03", "quantity": 2},
        {"lot": "(none)", "expires_on": None, "quantity": 1}]
PAYLOADS = {
    "received": {"sku": "MILK", "lot": "L1", "quantity": 12, "expires_on": "2026-12-03",
                 "supplier_ref": "PO-9", "unit_cost": 0.8, "stock_before": 0},
    "sold": {"sku": "MILK", "quantity": 3, "unit_price": 1.5, "transaction_ref": "T1",
             "lots": LOTS, "stock_before": 12},
    "transfer_out": {"sku": "MILK", "quantity": 3, "destination": "S-2", "transfer_id": "X1",
                     "expected_transit_hours": 6.0, "lots": LOTS, "stock_before": 9},
    "transfer_in": {"sku": "MILK", "quantity": 3, "source": "S-1", "transfer_id": "X1",
                    "lots": LOTS, "stock_before": 0},
    "wasted": {"sku": "MILK", "quantity": 1, "lot": "L1", "expires_on": "2026-12-03",
               "reason_code": "expired", "disposal_method": "compost", "stock_before": 6},
    "adjusted": {"sku": "MILK", "lot": "L1", "counted_quantity": 4, "system_quantity": 5,
                 "delta": -1, "stock_before": 5, "expires_on": "2026-12-03"},
    "counted": {"items": [{"sku": "MILK", "lot": "L1", "expires_on": "2026-12-03",
                           "quantity": 4}]},
    "item_updated": {"sku": "MILK", "description": "Whole milk 1 l", "category": "dairy",
                     "price": 1.49, "shelf_life_days": 9, "min_sellable_days": 2},
}


def make(event_type: str, **changes):
    payload = {**PAYLOADS[event_type], **changes}
    cause = "S-1:4" if event_type == "transfer_in" else None
    return build_event(location_id="S-2", seq=7, event_type=event_type, payload=payload,
                       causation_id=cause, clock={"S-1": 4})


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_every_event_type_round_trips(event_type):
    event = make(event_type)
    assert event["category"] == CATEGORY_OF[event_type]
    assert decode_event(encode_event(event)) == event


@pytest.mark.parametrize(("event_type", "change", "field", "value"), [
    ("sold", {"quantity": 0}, "payload.quantity", "0"),
    ("sold", {"quantity": "3"}, "payload.quantity", "'3'"),
    ("received", {"expires_on": "2026-02-30"}, "payload.expires_on", "2026-02-30"),
    ("wasted", {"reason_code": "stolen"}, "payload.reason_code", "stolen"),
    ("adjusted", {"delta": 3}, "payload.delta", "3"),
    ("sold", {"lots": [{"lot": "L1", "expires_on": "2026-12-03", "quantity": 1}]},
     "payload.lots", "add up to 1"),
    ("received", {"quantiy": 3}, "payload.quantiy", "not a field"),
    ("item_updated", {"price": -1}, "payload.price", "-1"),
])
def test_bad_payload_names_field_and_value(event_type, change, field, value):
    with pytest.raises(ContractError) as info:
        make(event_type, **change)
    assert info.value.field == field
    assert value in str(info.value)


def test_envelope_errors_name_the_field():
    good = json.loads(encode_event(make("sold")))
    cases = {
        "event_id": "S-2:8", "seq": 0, "category": "operational", "offline": "no",
        "occurred_at": "2026-11-27 10:00", "schema_version": 2, "location_id": "a/b",
    }
    for field, value in cases.items():
        bad = {**good, field: value}
        with pytest.raises(ContractError) as info:
            decode_event(json.dumps(bad).encode())
        assert info.value.field == field, (field, str(info.value))
    with pytest.raises(ContractError, match="causation_id"):
        decode_event(json.dumps({**json.loads(encode_event(make("transfer_in"))),
                                 "causation_id": None}).encode())
    with pytest.raises(ContractError, match="not JSON"):
        decode_event(b"{oops")


def test_topics_round_trip_and_reject_strangers():
    t = topic("east", "S-2", "events")
    assert t == "shelflife/v1/east/S-2/events"
    assert parse_topic(t) == ("east", "S-2", "events")
    for bad in ("shelflife/v1/north/S-2/events", "shelflife/v2/east/S-2/events",
                "shelflife/v1/east/S-2/other"):
        with pytest.raises(ContractError):
            parse_topic(bad)


quantity = st.integers(min_value=1, max_value=10_000)


@settings(max_examples=60, deadline=None)
@given(event_type=st.sampled_from(EVENT_TYPES), q=quantity, seq=st.integers(1, 10**9))
def test_valid_events_stay_valid_after_encoding(event_type, q, seq):
    payload = dict(PAYLOADS[event_type])
    if "quantity" in payload:
        payload["quantity"] = q
        if "lots" in payload:
            payload["lots"] = [{"lot": "L1", "expires_on": "2026-12-03", "quantity": q}]
    cause = "S-1:4" if event_type == "transfer_in" else None
    ev = build_event(location_id="S-9", seq=seq, event_type=event_type, payload=payload,
                     causation_id=cause)
    assert decode_event(encode_event(ev))["seq"] == seq


@pytest.mark.spark
def test_spark_schema_parses_every_field_the_agent_writes(spark):
    """The two faces of the contract agree: nothing the validator accepts is lost by
    Spark's parser, and Spark knows no field the validator does not."""
    from pyspark.sql import functions as F

    from lakehouse.catalogue import EVENT_ENVELOPE
    from spark_jobs.schema import spark_schema

    schema = spark_schema(EVENT_ENVELOPE)
    payload_type = schema["payload"].dataType
    assert set(payload_type.fieldNames()) == set(PAYLOAD_FIELDS)
    for et in EVENT_TYPES:
        req, opt = payload_fields(et)
        assert set(req) | set(opt) <= set(payload_type.fieldNames())

    events = [make(et) for et in EVENT_TYPES]
    lines = [(encode_event(e).decode(),) for e in events]
    df = spark.createDataFrame(lines, "raw string").select(
        F.from_json("raw", schema).alias("e"))
    rows = [r["e"].asDict(recursive=True) for r in df.collect()]
    for original, parsed in zip(events, rows, strict=True):
        for key in original:
            if key == "payload":
                continue
            assert parsed[key] == original[key], key
        for key, value in original["payload"].items():
            assert parsed["payload"][key] == value, (original["event_type"], key)
