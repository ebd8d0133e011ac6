"""Acks, orders and heartbeats: each built one way and read back one way."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from lakehouse.contract import (
    ContractError,
    Heartbeat,
    build_ack,
    build_order,
    cancel_order,
    encode_message,
    order_topic,
    read_ack,
    read_order,
    sign_order,
    utc_now_ms,
)

KEY = bytes(32)


def _order() -> dict:
    return build_order(order_id="O-1", sku="MILK", lot="L1", quantity=3, destination="S2",
                       transit_hours=4.0, approved_by="ana",
                       approved_at=datetime(2026, 12, 1, 7, tzinfo=UTC))


def test_an_order_round_trips_signed_and_its_topic_must_name_it():
    order = _order()
    assert order["approved_at"] == "2026-12-01T07:00:00.000Z"
    raw = encode_message(sign_order(order, "S1", KEY))
    assert read_order(raw, order_topic("east", "S1", "O-1"), "S1", key=KEY) == order
    with pytest.raises(ContractError, match="order_id"):
        read_order(raw, order_topic("east", "S1", "O-2"), "S1", key=KEY)
    with pytest.raises(ContractError, match="sig"):
        read_order(raw, order_topic("east", "S1", "O-1"), "S9", key=KEY)
    cancel = encode_message(sign_order(cancel_order("O-1"), "S1", KEY))
    assert read_order(cancel, order_topic("east", "S1", "O-1"), "S1", key=KEY)["cancelled"]
    with pytest.raises(ContractError, match="quantity"):
        build_order(**{**_order(), "quantity": 0,
                       "approved_at": datetime(2026, 12, 1, tzinfo=UTC)})


def test_an_ack_round_trips_and_junk_is_refused_by_name():
    raw = encode_message(build_ack("S1", 7, key=KEY))
    assert read_ack(raw, "S1", key=KEY)["acked_seq"] == 7
    for junk, field in ((b"\xff", "ack"), (b"[1]", "ack"), (b'{"acked_seq": -1}', "acked_seq")):
        with pytest.raises(ContractError, match=field):
            read_ack(junk, "S1")


def test_a_heartbeat_round_trips_and_a_bad_one_names_the_field():
    hb = Heartbeat(location_id="S1", region="east", agent_version="1", online=True,
                   local_time=utc_now_ms(), outbox_depth=2)
    assert Heartbeat.from_json(hb.to_json()) == hb
    with pytest.raises(ContractError, match="heartbeat"):
        Heartbeat.from_json(b"not json")
    with pytest.raises(ContractError, match="outbox_depth"):
        Heartbeat.from_json(hb.to_json().replace(b'"outbox_depth":2', b'"outbox_depth":-2'))
