"""The store agent records locally, first-expired-first-out, and refuses bad input
before it reaches the outbox."""

from __future__ import annotations

import json
import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_mqtt.agent import StoreAgent
from lakehouse import oracle
from lakehouse.contract import UNALLOCATED_LOT, ContractError, decode_event


@pytest.fixture
def agent(tmp_path):
    a = StoreAgent("S-001", "east", tmp_path / "s.sqlite")
    yield a
    a.close()


def receive(agent, qty, lot, expires):
    return agent.receive("MILK", qty, lot=lot, expires_on=expires, supplier_ref="PO",
                         unit_cost=0.5)


def test_sales_draw_oldest_expiry_first_and_may_go_negative(agent):
    receive(agent, 10, "LATE", "2026-12-09")
    receive(agent, 5, "EARLY", "2026-12-02")
    sale = agent.sell("MILK", 7, unit_price=1.0, transaction_ref="T1")
    assert sale["payload"]["lots"] == [
        {"lot": "EARLY", "expires_on": "2026-12-02", "quantity": 5},
        {"lot": "LATE", "expires_on": "2026-12-09", "quantity": 2}]
    assert sale["payload"]["stock_before"] == 15
    big = agent.sell("MILK", 20, unit_price=1.0, transaction_ref="T2")
    assert big["payload"]["lots"][-1] == {"lot": UNALLOCATED_LOT, "expires_on": None,
                                          "quantity": 12}
    assert agent.on_hand("MILK") == -12


def test_event_stock_and_outbox_commit_together(agent, tmp_path):
    receive(agent, 4, "L1", "2026-12-02")
    agent.sell("MILK", 1, unit_price=1.0, transaction_ref="T1")
    # A second, independent reader sees both events and the stock they imply.
    conn = sqlite3.connect(tmp_path / "s.sqlite")
    bodies = [decode_event(b) for (b,) in conn.execute("SELECT body FROM outbox ORDER BY seq")]
    assert [e["seq"] for e in bodies] == [1, 2]
    assert conn.execute("SELECT quantity FROM cohorts").fetchall() == [(3,)]
    assert oracle.fold(bodies) == {("S-001", "MILK", "L1"): 3}


def test_invalid_input_is_refused_before_the_outbox(agent):
    with pytest.raises(ContractError) as info:
        agent.sell("MILK", -2, unit_price=1.0, transaction_ref="T1")
    assert info.value.field == "payload.quantity" and "-2" in str(info.value)
    with pytest.raises(ContractError, match="payload.reason_code"):
        agent.waste("MILK", 1, lot="L1", reason_code="eaten", disposal_method="bin")
    assert agent.db.outbox_depth() == 0 and agent.last_seq == 0
    assert agent.on_hand("MILK") == 0


def test_offline_events_are_flagged_and_counts_replace_stock(agent):
    receive(agent, 4, "L1", "2026-12-02")
    agent.online = True
    count = agent.count([{"sku": "MILK", "lot": "L1", "expires_on": "2026-12-02",
                          "quantity": 3}])
    adj = agent.adjust("MILK", lot="L1", counted_quantity=2)
    first = json.loads(agent.db.outbox_after(0, 1)[0][1])
    assert first["offline"] is True and count["offline"] is False
    assert adj["causation_id"] == count["event_id"]
    assert adj["payload"]["delta"] == -1 and agent.on_hand("MILK") == 2


def test_transfer_in_merges_the_source_clock(tmp_path):
    src = StoreAgent("S-A", "east", tmp_path / "a.sqlite")
    dst = StoreAgent("S-B", "east", tmp_path / "b.sqlite")
    src.receive("MILK", 5, lot="L1", expires_on="2026-12-02", supplier_ref="PO",
                unit_cost=1.0)
    out = src.transfer_out("MILK", 3, destination="S-B", transfer_id="X",
                           expected_transit_hours=2)
    inn = dst.transfer_in("MILK", 3, source="S-A", transfer_id="X",
                          lots=out["payload"]["lots"], causation_id=out["event_id"])
    assert inn["causation_id"] == "S-A:2" and inn["clock"] == {"S-A": 2, "S-B": 1}
    assert dst.stock("MILK")[0]["cohorts"] == [{"lot": "L1", "expires_on": "2026-12-02",
                                               "quantity": 3}]


@settings(max_examples=40, deadline=None)
@given(receipts=st.lists(st.tuples(st.integers(1, 20), st.integers(1, 28)), min_size=1,
                         max_size=6),
       sales=st.lists(st.integers(1, 15), max_size=8))
def test_fefo_never_takes_a_later_lot_while_an_earlier_one_has_stock(tmp_path_factory,
                                                                     receipts, sales):
    a = StoreAgent("S-P", "east", tmp_path_factory.mktemp("p") / "p.sqlite")
    for i, (qty, day) in enumerate(receipts):
        a.receive("MILK", qty, lot=f"L{i}", expires_on=f"2026-12-{day:02d}",
                  supplier_ref="PO", unit_cost=1.0)
    for q in sales:
        before = {c["lot"]: c for c in a.db.cohorts("MILK")}
        lots = a.sell("MILK", q, unit_price=1.0, transaction_ref="T")["payload"]["lots"]
        assert sum(x["quantity"] for x in lots) == q
        taken = [x for x in lots if x["lot"] != UNALLOCATED_LOT]
        for x in taken[:-1]:  # every lot but the last is emptied
            assert before[x["lot"]]["quantity"] == x["quantity"]
        if taken:
            latest = max(x["expires_on"] for x in taken)
            untouched = [c for lot, c in before.items() if c["quantity"] > 0 and
                         lot not in {x["lot"] for x in taken}]
            assert all(c["expires_on"] >= latest for c in untouched)
    a.close()


# --- transfer orders ------------------------------------------------------------------------

ORDER = {"order_id": "597b07709accd33f", "sku": "MILK", "lot": "FRESH", "quantity": 6,
         "destination": "S-002", "transit_hours": 5.5, "approved_by": "ana",
         "approved_at": "2026-12-01T09:00:00.000Z"}


def test_an_order_is_kept_once_and_ships_its_own_lot_not_the_oldest(agent):
    receive(agent, 10, "OLD", "2026-12-02")
    receive(agent, 10, "FRESH", "2026-12-09")
    assert agent.accept_order(ORDER) is True
    assert agent.accept_order(dict(ORDER)) is False  # redelivered on every reconnect
    [pending] = agent.orders("pending")
    assert pending["lot"] == "FRESH" and pending["status"] == "pending"

    out = agent.dispatch_order(ORDER["order_id"])
    assert out["event_type"] == "transfer_out"
    assert out["payload"]["transfer_id"] == ORDER["order_id"]
    assert out["payload"]["destination"] == "S-002"
    assert out["payload"]["expected_transit_hours"] == 5.5
    assert out["payload"]["lots"] == [{"lot": "FRESH", "expires_on": "2026-12-09",
                                       "quantity": 6}]
    cohorts = {c["lot"]: c["quantity"] for c in agent.stock("MILK")[0]["cohorts"]}
    assert cohorts == {"OLD": 10, "FRESH": 4}
    assert agent.orders("pending") == []
    [done] = agent.orders("dispatched")
    assert done["event_id"] == out["event_id"]
    with pytest.raises(ContractError, match="dispatched"):
        agent.dispatch_order(ORDER["order_id"])
    assert agent.last_seq == out["seq"]


def test_an_order_its_lot_cannot_fill_is_refused_and_stays_pending(agent):
    receive(agent, 4, "FRESH", "2026-12-09")
    agent.accept_order(ORDER)
    with pytest.raises(ContractError, match="holds 4 of MILK, 6 to ship"):
        agent.dispatch_order(ORDER["order_id"])
    assert agent.last_seq == 1  # nothing recorded
    assert [o["status"] for o in agent.orders()] == ["pending"]
    with pytest.raises(ContractError, match="no such transfer order"):
        agent.dispatch_order("nope")


def test_a_cancelled_order_cannot_ship_and_bad_orders_name_the_field(agent):
    receive(agent, 10, "FRESH", "2026-12-09")
    agent.accept_order(ORDER)
    assert agent.accept_order({"order_id": ORDER["order_id"], "cancelled": True}) is True
    with pytest.raises(ContractError, match="cancelled"):
        agent.dispatch_order(ORDER["order_id"])
    for field, value in (("quantity", 0), ("lot", ""), ("transit_hours", -1),
                         ("approved_at", "yesterday"), ("destination", "a b")):
        with pytest.raises(ContractError) as refused:
            agent.accept_order({**ORDER, "order_id": "other", field: value})
        assert refused.value.field == field
    assert [o["order_id"] for o in agent.orders()] == [ORDER["order_id"]]


def test_a_withdrawn_order_comes_back_only_when_approved_anew(agent):
    """Replaying the withdrawn approval (a copy anyone on an open broker could keep)
    does not make the order shippable again; a new approval does."""
    receive(agent, 10, "FRESH", "2026-12-09")
    agent.accept_order(ORDER)
    agent.accept_order({"order_id": ORDER["order_id"], "cancelled": True})
    assert agent.accept_order(ORDER) is False
    assert [o["status"] for o in agent.orders()] == ["cancelled"]
    later = {**ORDER, "approved_at": "2026-12-01T10:30:00.000Z"}
    assert ORDER["approved_at"] < later["approved_at"]
    assert agent.accept_order(later) is True
    assert [(o["status"], o["approved_at"]) for o in agent.orders()] == [
        ("pending", later["approved_at"])]
    assert agent.dispatch_order(ORDER["order_id"])["event_type"] == "transfer_out"


def test_an_order_shipped_by_another_process_on_the_file_is_not_shipped_again(agent,
                                                                              tmp_path):
    receive(agent, 10, "FRESH", "2026-12-09")
    agent.accept_order(ORDER)
    beside = StoreAgent("S-001", "east", tmp_path / "s.sqlite")  # e.g. the CLI next to serve
    try:
        shipped = beside.dispatch_order(ORDER["order_id"])
        with pytest.raises(ContractError, match="dispatched"):
            agent.dispatch_order(ORDER["order_id"])
    finally:
        beside.close()
    assert agent.last_seq == shipped["seq"]
    assert agent.stock("MILK")[0]["on_hand"] == 4


def test_two_processes_recording_on_one_file_take_turns_without_a_gap_or_a_repeat(
        agent, tmp_path):
    beside = StoreAgent("S-001", "east", tmp_path / "s.sqlite")  # e.g. the CLI next to serve
    try:
        receive(agent, 10, "L1", "2026-12-09")
        events = []
        for i in range(6):
            till = (agent, beside)[i % 3 == 2]
            events.append(till.sell("MILK", 1, unit_price=1.0, transaction_ref=f"T{i}"))
            if i == 3:
                with pytest.raises(ContractError, match="payload.quantity"):
                    till.sell("MILK", 0, unit_price=1.0, transaction_ref="T-bad")
    finally:
        beside.close()
    assert [e["seq"] for e in events] == [2, 3, 4, 5, 6, 7]
    assert [e["clock"] for e in events] == [{"S-001": s} for s in range(2, 8)]
    assert agent.db.get_meta("clock") == {"S-001": 7} and agent.last_seq == 7
    assert [e["payload"]["stock_before"] for e in events] == list(range(10, 4, -1))


def test_a_new_agent_is_power_safe_by_default(tmp_path, caplog):
    """synchronous=FULL (2): a commit is on disk before the caller hears about it."""
    agent = StoreAgent("S-001", "east", tmp_path / "s.sqlite")
    try:
        assert agent.db.conn.execute("PRAGMA synchronous").fetchone() == (2,)
        assert agent.db.conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        agent.close()
    with caplog.at_level("WARNING", logger="edge_mqtt.store"):
        fast = StoreAgent("S-001", "east", tmp_path / "s.sqlite", synchronous="NORMAL")
    try:
        assert fast.db.conn.execute("PRAGMA synchronous").fetchone() == (1,)
        assert "power cut can roll back events already answered" in caplog.text
    finally:
        fast.close()


def test_a_lot_counted_without_expiry_never_blocks_a_sale(agent):
    """Only the unallocated lot may go without expiry in a sale's lots, so such a lot is
    not drawn by name, and an adjustment cannot create one."""
    agent.count([{"sku": "MILK", "lot": "LOOSE", "expires_on": None, "quantity": 4}])
    sale = agent.sell("MILK", 1, unit_price=1.0, transaction_ref="T1")
    assert sale["payload"]["lots"] == [{"lot": UNALLOCATED_LOT, "expires_on": None,
                                        "quantity": 1}]
    with pytest.raises(ContractError) as info:
        agent.adjust("MILK", lot="NEW", counted_quantity=3)
    assert info.value.field == "payload.expires_on"
    adj = agent.adjust("MILK", lot="NEW", counted_quantity=3, expires_on="2026-12-09")
    assert adj["payload"]["delta"] == 3 and agent.last_seq == 3
