"""POS and WMS systems record over loopback HTTP; bad requests are refused with the field
and value named, and never reach the outbox."""

from __future__ import annotations

import base64
import http.client
import json
import threading
from typing import Any

import pytest

from edge_mqtt.agent import StoreAgent
from edge_mqtt.http_api import serve_agent
from edge_mqtt.operators import Operators
from edge_mqtt.recording import REQUEST_SHAPES
from lakehouse.contract import (
    EVENT_TYPES,
    MAX_EVENT_BYTES,
    MAX_QUANTITY,
    MAX_STOCK,
    UNALLOCATED_LOT,
    ContractError,
    decode_event,
)


@pytest.fixture
def agent(tmp_path):
    a = StoreAgent("S-001", "east", tmp_path / "s.sqlite")
    yield a
    a.close()


@pytest.fixture
def server(agent):
    s = serve_agent(agent, "127.0.0.1", 0)
    yield s
    s.shutdown()


def call(server, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, Any]:
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        sent = {"Content-Type": "application/json"} if data is not None else {}
        sent.update(headers or {})
        conn.request(method, path, body=data, headers=sent)
        resp = conn.getresponse()
        assert resp.getheader("Content-Type") == "application/json"
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


PASSWORD = "correct horse battery"


def login(agent, name: str, password: str = PASSWORD) -> dict[str, str]:
    """An operator of ``agent`` (added once) and the Basic header that proves it."""
    ops = Operators(agent.db.path)
    try:
        if name not in ops.names():
            ops.add(name, PASSWORD)
    finally:
        ops.close()
    token = base64.b64encode(f"{name}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def test_an_adjustment_needs_an_operator_and_records_who(server, agent):
    receive(server, "MILK", 10, "L1", "2026-12-02")
    body = {"event_type": "adjusted", "sku": "MILK", "lot": "L1", "counted_quantity": 7}
    status, error = call(server, "POST", "/events", body)
    assert (status, error["field"]) == (401, "authorization")
    status, error = call(server, "POST", "/events", body,
                         headers=login(agent, "ana", "not the password"))
    assert (status, error["value"]) == (401, "ana")
    status, error = call(server, "POST", "/events", body,
                         headers={"Authorization": "Basic !!!"})
    assert status == 401
    assert agent.on_hand("MILK") == 10 and agent.last_seq == 1, "nothing was recorded"
    status, error = call(server, "POST", "/events", {**body, "recorded_by": "mallory"},
                         headers=login(agent, "ana"))
    assert (status, error["field"]) == (422, "recorded_by"), "the name comes from the login"
    status, event = call(server, "POST", "/events", body, headers=login(agent, "ana"))
    assert status == 201, event
    assert event["payload"]["recorded_by"] == "ana" and agent.on_hand("MILK") == 7
    # A till's sale needs no login.
    status, _ = call(server, "POST", "/events", {"event_type": "sold", "sku": "MILK",
                                                 "quantity": 1, "unit_price": 1.0,
                                                 "transaction_ref": "T-1"})
    assert status == 201


def test_operators_are_hashed_and_no_default_exists(agent):
    ops = Operators(agent.db.path)
    try:
        assert ops.names() == []
        with pytest.raises(ContractError, match="at least 12"):
            ops.add("ana", "short")
        ops.add("ana", PASSWORD)
        assert ops.verify("ana", PASSWORD) and not ops.verify("ana", PASSWORD + "x")
        assert not ops.verify("bob", PASSWORD)
        stored = ops.conn.execute("SELECT hash FROM operators").fetchone()[0]
        assert PASSWORD.encode() not in stored and len(stored) == 32
    finally:
        ops.close()


def receive(server, sku: str, qty: int, lot: str, expires: str) -> dict[str, Any]:
    status, event = call(server, "POST", "/events", {
        "event_type": "received", "sku": sku, "quantity": qty, "lot": lot,
        "expires_on": expires, "supplier_ref": "PO-1", "unit_cost": 0.5})
    assert status == 201, event
    return event


def test_every_contract_event_type_has_a_request_shape():
    assert set(REQUEST_SHAPES) == set(EVENT_TYPES)


def test_a_sale_over_http_shows_in_stock_first_expired_first(server, agent):
    receive(server, "MILK", 10, "LATE", "2026-12-09")
    receive(server, "MILK", 5, "EARLY", "2026-12-02")
    receive(server, "BREAD", 3, "B1", "2026-12-01")
    status, sale = call(server, "POST", "/events", {
        "event_type": "sold", "sku": "MILK", "quantity": 7, "unit_price": 1.29,
        "transaction_ref": "T-88", "occurred_at": "2026-11-30T09:15:00.000Z"})
    assert status == 201
    assert sale["event_id"] == "S-001:4" and sale["occurred_at"] == "2026-11-30T09:15:00.000Z"
    assert sale["payload"]["lots"] == [
        {"lot": "EARLY", "expires_on": "2026-12-02", "quantity": 5},
        {"lot": "LATE", "expires_on": "2026-12-09", "quantity": 2}]

    status, body = call(server, "GET", "/stock?sku=MILK")
    assert status == 200
    assert body == {"location_id": "S-001", "stock": [
        {"sku": "MILK", "on_hand": 8,
         "cohorts": [{"lot": "LATE", "expires_on": "2026-12-09", "quantity": 8}]}]}
    status, body = call(server, "GET", "/stock")
    assert [(s["sku"], s["on_hand"]) for s in body["stock"]] == [("BREAD", 3), ("MILK", 8)]
    status, body = call(server, "GET", "/stock?sku=EGGS")
    assert body["stock"] == [{"sku": "EGGS", "on_hand": 0, "cohorts": []}]
    # What the HTTP client got back is exactly what waits in the outbox.
    (stored,) = [decode_event(b) for s, b in agent.db.outbox_after(3, 10)]
    assert stored == sale


def test_selling_more_than_on_hand_is_accepted_and_shows_negative(server):
    receive(server, "MILK", 2, "L1", "2026-12-02")
    status, sale = call(server, "POST", "/events", {
        "event_type": "sold", "sku": "MILK", "quantity": 5, "unit_price": 1.0,
        "transaction_ref": "T-1"})
    assert status == 201
    assert sale["payload"]["lots"][-1] == {"lot": UNALLOCATED_LOT, "expires_on": None,
                                           "quantity": 3}
    _, body = call(server, "GET", "/stock?sku=MILK")
    assert body["stock"][0]["on_hand"] == -3
    assert body["stock"][0]["cohorts"] == [
        {"lot": UNALLOCATED_LOT, "expires_on": None, "quantity": -3}]


SALE = {"event_type": "sold", "sku": "MILK", "quantity": 2, "unit_price": 1.29,
        "transaction_ref": "T-88"}


@pytest.mark.parametrize(("body", "status", "field", "value"), [
    ({**SALE, "event_type": "stolen"}, 422, "event_type", "stolen"),
    ({k: v for k, v in SALE.items() if k != "event_type"}, 422, "event_type", None),
    ({k: v for k, v in SALE.items() if k != "transaction_ref"}, 422,
     "payload.transaction_ref", None),
    ({**SALE, "colour": "blue"}, 422, "colour", "blue"),
    ({**SALE, "lots": []}, 422, "lots", []),  # the agent picks the lots of a sale
    ({**SALE, "quantity": "2"}, 422, "payload.quantity", "2"),
    ({**SALE, "quantity": 2.5}, 422, "payload.quantity", 2.5),
    ({**SALE, "quantity": True}, 422, "payload.quantity", True),
    ({**SALE, "quantity": 0}, 422, "payload.quantity", 0),
    ({**SALE, "sku": "MILK/1"}, 422, "payload.sku", "MILK/1"),
    ({**SALE, "unit_price": -1}, 422, "payload.unit_price", -1),
    ({**SALE, "occurred_at": "yesterday"}, 422, "occurred_at", "yesterday"),
    ({"event_type": "received", "sku": "MILK", "quantity": 1, "lot": "L1",
      "expires_on": "2026-13-01", "supplier_ref": "PO", "unit_cost": 0.5}, 422,
     "payload.expires_on", "2026-13-01"),
    ({"event_type": "wasted", "sku": "MILK", "quantity": 1, "lot": "L1",
      "reason_code": "eaten", "disposal_method": "bin"}, 422, "payload.reason_code", "eaten"),
    ({"event_type": "item_updated", "sku": "MILK"}, 422, "payload", {"sku": "MILK"}),
    ([SALE], 400, "body", [SALE]),
    # What the agent itself cannot hold: huge integers, non-finite numbers, control
    # characters and lone surrogates, strings past MAX_STR.
    ({**SALE, "quantity": 2**63 - 1}, 422, "payload.quantity", 2**63 - 1),
    ({**SALE, "quantity": 10**30}, 422, "payload.quantity", 10**30),
    ({**SALE, "quantity": MAX_QUANTITY + 1}, 422, "payload.quantity", MAX_QUANTITY + 1),
    ({**SALE, "unit_price": 1e400}, 422, "payload.unit_price", "inf"),
    ({**SALE, "transaction_ref": "T-88\n"}, 422, "payload.transaction_ref", "T-88\n"),
    ({**SALE, "transaction_ref": "T\x00"}, 422, "payload.transaction_ref", "T\x00"),
    ({**SALE, "transaction_ref": "T\ud800"}, 422, "payload.transaction_ref", "T\ud800"),
    ({**SALE, "transaction_ref": "T" * 257}, 422, "payload.transaction_ref", "T" * 257),
    ({**SALE, "sku": "MILK\n"}, 422, "payload.sku", "MILK\n"),
    ({**SALE, "occurred_at": "2026-12-01T09:00:00.000Z\n"}, 422, "occurred_at",
     "2026-12-01T09:00:00.000Z\n"),
    ({"event_type": "item_updated", "sku": "MILK", "shelf_life_days": 10**6}, 422,
     "payload.shelf_life_days", 10**6),
    ({"event_type": "transfer_in", "sku": "MILK", "quantity": 10**20, "source": "S-002",
      "transfer_id": "TR-1", "causation_id": "S-002:1",
      "lots": [{"lot": "L1", "expires_on": "2026-12-02", "quantity": 10**20}]}, 422,
     "payload.quantity", 10**20),
    ({"event_type": "counted", "items": [{"sku": "MILK", "lot": "L1",
                                          "expires_on": None, "quantity": 10**30}]},
     422, "payload.items[0].quantity", 10**30),
])
def test_refusals_name_the_field_and_value_and_record_nothing(server, agent, body, status,
                                                              field, value):
    got_status, error = call(server, "POST", "/events", body)
    assert (got_status, error["field"], error["value"]) == (status, field, value), error
    assert field in error["error"]
    assert agent.last_seq == 0 and agent.db.outbox_depth() == 0
    assert call(server, "GET", "/stock")[1]["stock"] == []


@pytest.mark.parametrize(("raw", "headers", "status", "field"), [
    (b'{"event_type": "sold", ', {}, 400, "body"),
    (b"\xff\xfe", {}, 400, "body"),
    (json.dumps(SALE).encode(), {"Content-Type": "text/plain"}, 415, "Content-Type"),
    (json.dumps(SALE).encode(), {"Content-Length": "20000000"}, 413, "Content-Length"),
    (b" " * (MAX_EVENT_BYTES + 1), {}, 413, "Content-Length"),
])
def test_unreadable_bodies_are_refused(server, agent, raw, headers, status, field):
    got_status, error = call(server, "POST", "/events", raw=raw, headers=headers)
    assert (got_status, error["field"]) == (status, field), error
    assert agent.db.outbox_depth() == 0


def test_a_huge_receipt_is_refused_and_the_sku_still_sells(server, agent):
    status, error = call(server, "POST", "/events", {
        "event_type": "received", "sku": "MILK", "quantity": 2**63 - 1, "lot": "L1",
        "expires_on": "2026-12-09", "supplier_ref": "PO-1", "unit_cost": 0.5})
    assert (status, error["field"]) == (422, "payload.quantity"), error
    assert "payload.quantity" in error["error"] and agent.db.outbox_depth() == 0
    status, event = call(server, "POST", "/events", SALE)
    assert status == 201, event
    assert event["payload"]["stock_before"] == 0 and event["seq"] == 1


def test_receipts_cannot_push_on_hand_beyond_max_stock(server, agent):
    """Each receipt is within bounds; the agent's own sum would not be."""
    for lot in range(MAX_STOCK // MAX_QUANTITY):  # quicker through the Python API
        agent.receive("MILK", MAX_QUANTITY, lot=f"L{lot}", expires_on="2026-12-09",
                      supplier_ref="PO-1", unit_cost=0.5)
    status, error = call(server, "POST", "/events", {
        "event_type": "received", "sku": "MILK", "quantity": 1, "lot": "L-MORE",
        "expires_on": "2026-12-09", "supplier_ref": "PO-1", "unit_cost": 0.5})
    assert (status, error["field"], error["value"]) == (422, "payload.quantity", 1), error
    assert "beyond" in error["error"] and f"{MAX_STOCK:,}" in error["error"]
    assert call(server, "GET", "/stock?sku=MILK")[1]["stock"][0]["on_hand"] == MAX_STOCK
    status, event = call(server, "POST", "/events", SALE)
    assert status == 201 and event["payload"]["stock_before"] == MAX_STOCK


def test_unknown_paths_methods_and_query_parameters(server):
    assert call(server, "GET", "/nope")[0] == 404
    assert call(server, "GET", "/events")[0] == 405
    assert call(server, "POST", "/stock", SALE)[0] == 405
    status, error = call(server, "GET", "/stock?location=S-002")
    assert (status, error["field"], error["value"]) == (400, "location", "S-002")
    status, error = call(server, "GET", "/stock?sku=a%20b")
    assert (status, error["field"], error["value"]) == (400, "sku", "a b")


def test_health_reports_sequence_ack_and_outbox(server, agent):
    assert call(server, "GET", "/health") == (200, {
        "location_id": "S-001", "region": "east", "online": False, "last_seq": 0,
        "acked_seq": 0, "outbox_depth": 0, "agent_version": "0.1.0"})
    receive(server, "MILK", 4, "L1", "2026-12-02")
    call(server, "POST", "/events", SALE)
    call(server, "POST", "/events", {**SALE, "quantity": 0})  # refused: not counted
    agent.db.apply_ack(1)  # what the publisher does when ingest's ack covers seq 1
    agent.online = True
    _, body = call(server, "GET", "/health")
    assert (body["online"], body["last_seq"], body["acked_seq"], body["outbox_depth"]) == (
        True, 2, 1, 1)


def test_concurrent_tills_each_get_their_own_seq(server, agent):
    receive(server, "MILK", 100, "L1", "2026-12-02")
    results: list[int] = []

    def till(n: int) -> None:
        for i in range(5):
            status, event = call(server, "POST", "/events",
                                 {**SALE, "quantity": 1, "transaction_ref": f"T{n}-{i}"})
            assert status == 201
            results.append(event["seq"])

    threads = [threading.Thread(target=till, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(2, 42))
    assert call(server, "GET", "/stock?sku=MILK")[1]["stock"][0]["on_hand"] == 60
    assert call(server, "GET", "/health")[1]["outbox_depth"] == 41


def test_a_refusal_among_tills_recording_at_once_costs_only_itself(server, agent):
    """Tills recording together share commits; a refused request rolls back alone."""
    receive(server, "MILK", 1000, "L1", "2026-12-02")
    answers: list[tuple[str, int, Any]] = []

    def till(n: int) -> None:
        for i in range(20):
            good = (n + i) % 3 != 0
            body = ({**SALE, "quantity": 1, "transaction_ref": f"T{n}-{i}"} if good
                    else {"event_type": "item_updated", "sku": "MILK"})  # no field: refused
            status, answer = call(server, "POST", "/events", body)
            answers.append(("good" if good else "bad", status, answer))

    threads = [threading.Thread(target=till, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    good = [a for kind, _, a in answers if kind == "good"]
    assert {s for kind, s, _ in answers if kind == "good"} == {201}
    assert {(s, a["field"]) for kind, s, a in answers if kind == "bad"} == {(422, "payload")}
    assert sorted(e["seq"] for e in good) == list(range(2, 2 + len(good)))
    assert agent.outbox_depth() == 1 + len(good) == agent.last_seq
    assert agent.on_hand("MILK") == 1000 - len(good)
    commits, events = agent.commit_stats
    assert events == 1 + len(good) and 1 <= commits <= events


def test_a_warehouse_lists_its_transfer_orders_and_ships_one_over_http(server, agent):
    receive(server, "MILK", 10, "L1", "2026-12-02")
    receive(server, "MILK", 10, "L2", "2026-12-09")
    agent.accept_order({"order_id": "597b07709accd33f", "sku": "MILK", "lot": "L2",
                        "quantity": 3, "destination": "S-002", "transit_hours": 6.0,
                        "approved_by": "ana", "approved_at": "2026-12-01T09:00:00.000Z"})
    status, body = call(server, "GET", "/orders?status=pending")
    assert status == 200 and [o["lot"] for o in body["orders"]] == ["L2"]
    status, error = call(server, "POST", "/orders/597b07709accd33f/dispatch")
    assert (status, error["field"]) == (401, "authorization"), "shipping needs a login"
    status, event = call(server, "POST", "/orders/597b07709accd33f/dispatch",
                         headers=login(agent, "wes"))
    assert status == 201, event
    assert event["payload"]["recorded_by"] == "wes"
    assert event["payload"]["lots"] == [{"lot": "L2", "expires_on": "2026-12-09",
                                         "quantity": 3}]
    status, error = call(server, "POST", "/orders/597b07709accd33f/dispatch",
                         headers=login(agent, "wes"))
    assert (status, error["field"]) == (422, "order_id") and "dispatched" in error["error"]
    assert call(server, "GET", "/orders?status=pending")[1]["orders"] == []
    status, error = call(server, "GET", "/orders?status=lost")
    assert (status, error["field"], error["value"]) == (400, "status", "lost")
    assert call(server, "POST", "/orders")[0] == 405
