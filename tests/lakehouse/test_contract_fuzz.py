"""Fuzzing the contract: whatever bytes or values arrive, ``decode_event`` either returns
an event every table can hold or raises ``ContractError`` naming a field, never anything
else. A value the lakehouse cannot store (an int beyond int64, a date typed into a day
count, a lone surrogate) once stopped every region's stream; here it must be refused."""

from __future__ import annotations

import copy
import json
from datetime import date, timedelta
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lakehouse.contract import (
    EVENT_TYPES,
    MAX_DAYS,
    MAX_EVENT_BYTES,
    MAX_QUANTITY,
    MAX_SEQ,
    ContractError,
    decode_event,
    decode_json,
    encode_event,
    validate_event,
    validate_order,
)
from tests.lakehouse.test_contract import make

INT64 = 2**63 - 1

# Values an attacker or a broken till would try in any field.
HOSTILE = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([2**63 - 1, 2**63, -(2**63) - 1, 10**9, 10**30, 20261201, MAX_SEQ + 1,
                     MAX_QUANTITY + 1, MAX_DAYS + 1, 0, -1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=300),
    st.sampled_from(["\ud800", "a\x00b", "line\nbreak", "\x1b[31mred", "\u0085", " ",
                     "9999-12-31", "0001-01-01", "2026-02-30", "x" * 257, "１２",
                     "S-1:99999999999999999999", "S-1:١٢", "\ufffe"]),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5),
                                                         st.integers(), max_size=3),
)


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path into a nested event (dict keys and list indexes)."""
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


def _set(event: dict, path: tuple, value: Any) -> dict:
    target = event
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return event


def assert_lakehouse_can_hold(event: dict[str, Any]) -> None:
    """What the stream, Delta and the dashboards need of an accepted event."""
    raw = encode_event(event)
    assert len(raw) <= MAX_EVENT_BYTES
    stack: list[Any] = [event]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            stack += list(v.keys()) + list(v.values())
        elif isinstance(v, list):
            stack += v
        elif isinstance(v, bool) or v is None:
            continue
        elif isinstance(v, int):
            assert -INT64 <= v <= INT64, v
        elif isinstance(v, float):
            assert v == v and abs(v) != float("inf"), v
        elif isinstance(v, str):
            v.encode("utf-8")  # a lone surrogate raises here
            assert not any(ord(c) < 32 or 127 <= ord(c) < 160 for c in v), repr(v)
    pa.array([json.loads(raw)])  # Arrow takes it as one struct
    p = event["payload"]
    for name in ("shelf_life_days", "min_sellable_days"):
        if p.get(name) is not None:
            date(2026, 12, 1) + timedelta(days=p[name])  # no OverflowError in level rows
    for name in ("expires_on",):
        if p.get(name) is not None:
            date.fromisoformat(p[name]) + timedelta(days=MAX_DAYS)


@pytest.mark.parametrize("event_type", EVENT_TYPES)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), value=HOSTILE)
def test_any_field_replaced_by_a_hostile_value_is_refused_or_safe(event_type, data, value):
    event = make(event_type)
    paths = [p for p in _paths(event) if p]
    path = data.draw(st.sampled_from(paths))
    mutated = _set(copy.deepcopy(event), path, value)
    try:
        accepted = decode_event(json.dumps(mutated).encode("utf-8", "surrogatepass"))
    except ContractError as exc:
        assert exc.field  # names what was wrong
        return
    assert_lakehouse_can_hold(accepted)


@settings(max_examples=400, deadline=None)
@given(raw=st.one_of(st.binary(max_size=400),
                     st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
                     st.recursive(st.one_of(st.none(), st.booleans(), st.integers(),
                                            st.floats(), st.text(max_size=20)),
                                  lambda kids: st.one_of(
                                      st.lists(kids, max_size=4),
                                      st.dictionaries(st.text(max_size=12), kids, max_size=6)),
                                  max_leaves=30).map(lambda v: json.dumps(v).encode())))
def test_junk_bytes_only_ever_raise_contract_error(raw):
    try:
        accepted = decode_event(raw)
    except ContractError:
        return
    assert_lakehouse_can_hold(accepted)


@pytest.mark.parametrize("raw, field", [
    (b"1" * 5000, "payload bytes"),                        # past Python's digit limit
    (b"[" * 100_000 + b"]" * 100_000, "payload bytes"),    # nested too deep
    (b"{" + b" " * MAX_EVENT_BYTES + b"}", "payload bytes"),  # oversized
    (b"\xff\xfe", "payload bytes"),
])
def test_pathological_bytes_are_refused_by_name(raw, field):
    with pytest.raises(ContractError) as err:
        decode_json(raw)
    assert err.value.field == field


@pytest.mark.parametrize("change, field", [
    ({"seq": 2**63}, "seq"),
    ({"seq": MAX_SEQ + 1}, "seq"),
    ({"payload.min_sellable_days": 20261201}, "payload.min_sellable_days"),
    ({"payload.quantity": 2**63 - 1}, "payload.quantity"),
    ({"payload.stock_before": -(2**63)}, "payload.stock_before"),
    ({"payload.description": "milk\ud800"}, "payload.description"),
    ({"payload.description": "milk\x00"}, "payload.description"),
    ({"payload.price": 1e300}, "payload.price"),
    ({"occurred_at": "9999-12-31T00:00:00.000Z"}, "occurred_at"),
])
def test_values_the_lakehouse_cannot_hold_are_named(change, field):
    event = copy.deepcopy(make("item_updated", description="milk", price=1.0))
    (key, value), = change.items()
    if key.startswith("payload."):
        event["payload"][key.split(".", 1)[1]] = value
    elif key == "seq":
        event.update(seq=value, event_id=f"S-2:{value}")
        event["clock"]["S-2"] = value
    else:
        event[key] = value
    with pytest.raises(ContractError) as err:
        validate_event(event)
    assert err.value.field == field


def test_a_receipt_too_large_for_any_shelf_is_refused():
    with pytest.raises(ContractError, match="payload.quantity"):
        make("received", quantity=2**63 - 1)
    with pytest.raises(ContractError, match="lots"):
        make("sold", quantity=65, lots=[{"lot": f"L{i}", "expires_on": "2026-12-03",
                                          "quantity": 1} for i in range(65)])


def test_orders_are_bounded_like_events():
    order = {"order_id": "abc", "sku": "MILK", "lot": "L1", "quantity": 2**63,
             "destination": "S-2", "transit_hours": 6.0, "approved_by": "ana",
             "approved_at": "2026-12-01T10:00:00.000Z"}
    with pytest.raises(ContractError, match="quantity"):
        validate_order(order)
    with pytest.raises(ContractError, match="approved_by"):
        validate_order({**order, "quantity": 2, "approved_by": "ana\x07"})
