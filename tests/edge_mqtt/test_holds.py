"""A recalled lot at the store: never sold, never shipped, still wasted; a release lifts
it, and a replayed hold cannot undo the release."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge_mqtt.agent import StoreAgent
from lakehouse.contract import (
    UNALLOCATED_LOT,
    ContractError,
    build_hold,
    hold_id,
    validate_order,
)

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
ORDER = {"order_id": "O-1", "sku": "MILK", "lot": "L-OLD", "quantity": 2,
         "destination": "s2", "transit_hours": 5.5, "approved_by": "ana",
         "approved_at": "2026-12-01T08:00:00.000Z"}


def hold(on: bool, at: datetime = T0) -> dict:
    return build_hold(sku="MILK", lot="L-OLD", on_hold=on, reason="supplier notice 114",
                      by="ana", at=at)


@pytest.fixture
def agent(tmp_path: Path):
    a = StoreAgent("s1", "east", tmp_path / "s1.sqlite")
    a.receive("MILK", 5, lot="L-OLD", expires_on="2026-12-05", supplier_ref="PO-1",
              unit_cost=1.0)
    a.receive("MILK", 5, lot="L-NEW", expires_on="2026-12-09", supplier_ref="PO-2",
              unit_cost=1.0)
    yield a
    a.close()


def test_a_hold_names_its_lot_by_a_stable_id_and_refuses_another_lots_id() -> None:
    assert hold(True)["order_id"] == hold_id("MILK", "L-OLD") != hold_id("MILK", "L-NEW")
    with pytest.raises(ContractError, match="order_id"):
        validate_order({**hold(True), "order_id": hold_id("MILK", "L-NEW")})
    with pytest.raises(ContractError, match="on_hold"):
        validate_order({**hold(True), "on_hold": "yes"})
    with pytest.raises(ContractError, match="reason"):
        validate_order({**hold(True), "reason": "bad\x00text"})


def test_sales_skip_a_held_lot_and_a_transfer_naming_it_is_refused(agent: StoreAgent
                                                                   ) -> None:
    agent.accept_order(ORDER)
    assert agent.accept_order(hold(True))
    assert [o["status"] for o in agent.orders()] == ["cancelled"]  # would ship the lot
    sale = agent.sell("MILK", 3, unit_price=1.2, transaction_ref="T1")
    assert [(lot["lot"], lot["quantity"]) for lot in sale["payload"]["lots"]] == [("L-NEW", 3)]
    # More than the lots not on hold: still sold (a sale is never refused), from the
    # unallocated lot, not from the recalled one.
    sale = agent.sell("MILK", 4, unit_price=1.2, transaction_ref="T2")
    assert [lot["lot"] for lot in sale["payload"]["lots"]] == ["L-NEW", UNALLOCATED_LOT]
    with pytest.raises(ContractError, match="on hold"):
        agent._ship("MILK", 1, destination="s2", transfer_id="X", transit_hours=1.0,
                    lot="L-OLD", occurred_at=None)
    wasted = agent.waste("MILK", 5, lot="L-OLD", reason_code="recall",
                         disposal_method="returned to supplier")
    assert wasted["payload"]["lot"] == "L-OLD"
    assert agent.hold_ids() == [hold_id("MILK", "L-OLD")]


def test_a_release_lifts_the_hold_and_a_replayed_hold_does_not_bring_it_back(
        agent: StoreAgent, tmp_path: Path) -> None:
    first = hold(True)
    agent.accept_order(first)
    assert agent.accept_order(hold(False, T0 + timedelta(hours=2)))
    assert not agent.accept_order(first)  # older than the release: ignored
    assert agent.hold_ids() == []
    sale = agent.sell("MILK", 1, unit_price=1.2, transaction_ref="T1")
    assert sale["payload"]["lots"][0]["lot"] == "L-OLD"  # first expiring, free again
    # a hold decided again later does apply, and survives a restart of the agent
    assert agent.accept_order(hold(True, T0 + timedelta(hours=3)))
    agent.close()
    again = StoreAgent("s1", "east", tmp_path / "s1.sqlite")
    try:
        sale = again.sell("MILK", 1, unit_price=1.2, transaction_ref="T2")
        assert sale["payload"]["lots"][0]["lot"] == "L-NEW"
        assert [h["on_hold"] for h in again.holds()] == [True]
    finally:
        again.close()
