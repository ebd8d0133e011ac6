"""The store agent's recording API: the door POS and WMS systems call.

Recording never needs the network and never refuses a sale for lack of stock: a sale
beyond what the agent believes is on the shelf is drawn from the unallocated lot and
shows up as negative stock, a signal for review. Invalid input is refused before it
reaches the outbox, with the field and value named.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lakehouse.contract import (
    HOLD_KIND,
    MAX_HOLDS,
    UNALLOCATED_LOT,
    ContractError,
    build_event,
    check_id,
    check_region,
    encode_event,
    utc_now_ms,
    validate_order,
)

from .bounds import check_on_hand, check_values
from .group_commit import GroupCommit
from .store import DEFAULT_SYNCHRONOUS, StoreDB, Synchronous, warn_if_unsafe

AGENT_VERSION = "0.1.0"
Applier = Callable[[], None]
HeldLot = tuple[str, str | None, int]
"""One lot of a SKU as read for recording: (lot, expires_on, quantity)."""


class StoreAgent:
    """One location's local-first agent over its SQLite file."""

    def __init__(self, location_id: str, region: str, db_path: str | Path, *,
                 synchronous: Synchronous = DEFAULT_SYNCHRONOUS) -> None:
        """``synchronous="NORMAL"`` trades power-cut safety for speed (see ``store``)."""
        self.location_id = check_id("location_id", location_id)
        self.region = check_region(region)
        self.db = StoreDB(db_path, synchronous=synchronous)
        warn_if_unsafe(synchronous, db_path)
        known = self.db.get_meta("location_id")
        if known is not None and known != location_id:
            raise ContractError("location_id", location_id,
                                f"database {db_path} belongs to location {known!r}")
        if known is None:
            with self.db.transaction():
                self.db.set_meta("location_id", location_id)
                self.db.set_meta("region", region)
        self._lock = threading.RLock()
        self._commits = GroupCommit(self.db, self._lock)
        self.online = False
        """Set by the publisher; events recorded while False carry ``offline: true``."""
        self.on_record: Callable[[int], None] | None = None
        """Called with the new seq after each commit (the publisher wakes up on it)."""
        self.on_order: Callable[[dict[str, Any]], None] | None = None
        """Called with each transfer order the first time it arrives (or is cancelled)."""
        self._on_hold: dict[str, frozenset[str]] = self.db.lots_on_hold()
        """SKU -> lots on hold (recalls), kept in memory: every sale consults it."""

    # --- state ------------------------------------------------------------------------

    # Reads take the recording lock too: the connection is shared by every till thread,
    # and a read must not land in the middle of another thread's transaction.

    @property
    def last_seq(self) -> int:
        with self._lock:
            return self.db.last_seq()

    @property
    def acked_seq(self) -> int:
        with self._lock:
            return int(self.db.get_meta("acked_seq", 0))

    def stock(self, sku: str | None = None) -> list[dict[str, Any]]:
        """On-hand per SKU with its cohorts, straight from SQLite."""
        by_sku: dict[str, dict[str, Any]] = {}
        with self._lock:
            rows = self.db.cohorts(sku)
        for c in rows:
            entry = by_sku.setdefault(c["sku"], {"sku": c["sku"], "on_hand": 0, "cohorts": []})
            entry["on_hand"] += c["quantity"]
            entry["cohorts"].append({k: c[k] for k in ("lot", "expires_on", "quantity")})
        return list(by_sku.values())

    def on_hand(self, sku: str) -> int:
        with self._lock:
            return self.db.on_hand(sku)

    def outbox_depth(self) -> int:
        """Events recorded and not yet acked end to end."""
        with self._lock:
            return self.db.outbox_depth()

    @property
    def commit_stats(self) -> tuple[int, int]:
        """(transactions committed, events in them) since this agent was opened."""
        return self._commits.commits, self._commits.committed

    # --- recording --------------------------------------------------------------------

    def _record(self, event_type: str, make: Callable[[], tuple[dict[str, Any], Applier]], *,
                causation_id: str | Callable[[], str | None] | None = None,
                occurred_at: str | None = None,
                clock_merge: dict[str, int] | None = None) -> dict[str, Any]:
        """Build, validate and apply one event in a single SQLite transaction.

        ``make`` runs inside the transaction so stock_before and the FEFO lots are read
        from the same state the event is applied to, even with several tills at once.
        Tills recording at the same moment share the transaction and its fsync (see
        :mod:`edge_mqtt.group_commit`); each is answered only once it is committed.
        """
        def work() -> dict[str, Any]:
            cause = causation_id() if callable(causation_id) else causation_id
            seq, clock = self.db.seq_and_clock()
            for loc, s in (clock_merge or {}).items():
                clock[loc] = max(clock.get(loc, 0), s)
            payload, apply = make()
            try:
                event = build_event(location_id=self.location_id, seq=seq,
                                    event_type=event_type, payload=payload, clock=clock,
                                    occurred_at=occurred_at, causation_id=cause,
                                    offline=not self.online, agent_version=AGENT_VERSION)
            except ContractError:
                # The contract is stricter than the agent's own limits, so a value past
                # those is refused either way; the limits name it first, in their terms.
                check_values(payload, _payload_field)
                check_values({"occurred_at": occurred_at, "causation_id": cause})
                raise
            apply()
            self.db.append_outbox(seq, encode_event(event))
            self.db.advance(seq + 1, event["clock"])
            return event

        event = self._commits.submit(work)
        if self.on_record is not None:
            self.on_record(event["seq"])
        return event

    def _held(self, sku: Any) -> list[HeldLot]:
        """The SKU's lots first-expired-first, read once for stock_before and the draw."""
        return self.db.lots_of(sku) if isinstance(sku, str) else []

    def _move(self, sku: str, lots: list[dict[str, Any]], sign: int,
              held: Sequence[HeldLot] = ()) -> Callable[[], None]:
        """Apply ``lots`` to the SKU's cohorts; ``held`` (read in this transaction) spares
        each lot it lists a lookup."""
        def apply() -> None:
            known = {lot: quantity for lot, _expires, quantity in held}
            for lot in lots:
                self.db.add_to_cohort(sku, lot["lot"], lot["expires_on"],
                                      sign * lot["quantity"], held=known.get(lot["lot"]))
        return apply

    def receive(self, sku: str, quantity: int, *, lot: str, expires_on: str,
                supplier_ref: str, unit_cost: float, occurred_at: str | None = None
                ) -> dict[str, Any]:
        def make() -> tuple[dict[str, Any], Applier]:
            before = self._stock_before(sku)
            check_on_hand(sku, before, quantity, "payload.quantity", quantity)
            payload = {"sku": sku, "lot": lot, "quantity": quantity, "expires_on": expires_on,
                       "supplier_ref": supplier_ref, "unit_cost": unit_cost,
                       "stock_before": before}
            return payload, lambda: self.db.add_to_cohort(sku, lot, expires_on, quantity)
        return self._record("received", make, occurred_at=occurred_at)

    def sell(self, sku: str, quantity: int, *, unit_price: float, transaction_ref: str,
             occurred_at: str | None = None) -> dict[str, Any]:
        def make() -> tuple[dict[str, Any], Applier]:
            held = self._held(sku)
            before = sum(have for _lot, _expires, have in held)
            check_on_hand(sku, before, _negated(quantity), "payload.quantity", quantity)
            lots = _draw_fefo(sku, held, quantity, self._on_hold.get(sku, frozenset()))
            payload = {"sku": sku, "quantity": quantity, "unit_price": unit_price,
                       "transaction_ref": transaction_ref, "lots": lots,
                       "stock_before": before}
            return payload, self._move(sku, lots, -1, held)
        return self._record("sold", make, occurred_at=occurred_at)

    def transfer_out(self, sku: str, quantity: int, *, destination: str, transfer_id: str,
                     expected_transit_hours: float, occurred_at: str | None = None
                     ) -> dict[str, Any]:
        """Ship stock first-expired-first-out (an order ships its own lot instead: see
        :meth:`dispatch_order`)."""
        return self._ship(sku, quantity, destination=destination, transfer_id=transfer_id,
                          transit_hours=expected_transit_hours, lot=None,
                          occurred_at=occurred_at)

    def _ship(self, sku: str, quantity: int, *, destination: str, transfer_id: str,
              transit_hours: float, lot: str | None, occurred_at: str | None,
              order_id: str | None = None, recorded_by: str | None = None
              ) -> dict[str, Any]:
        def make() -> tuple[dict[str, Any], Applier]:
            held = self._held(sku)
            before = sum(have for _lot, _expires, have in held)
            check_on_hand(sku, before, _negated(quantity), "payload.quantity", quantity)
            on_hold = self._on_hold.get(sku, frozenset())
            lots = (_draw_fefo(sku, held, quantity, on_hold) if lot is None
                    else _draw_lot(sku, held, quantity, lot, on_hold))
            payload = {"sku": sku, "quantity": quantity, "destination": destination,
                       "transfer_id": transfer_id,
                       "expected_transit_hours": transit_hours,
                       "lots": lots, "stock_before": before}
            if recorded_by is not None:
                payload["recorded_by"] = recorded_by
            move = self._move(sku, lots, -1, held)

            def apply() -> None:
                move()
                if order_id is None:
                    return
                # Same transaction: shipped and marked, or neither. A second process on
                # this file (the CLI beside `agent serve`) that shipped it meanwhile wins.
                seq = int(self.db.get_meta("next_seq", 1))
                if not self.db.mark_dispatched(order_id, f"{self.location_id}:{seq}"):
                    raise ContractError("order_id", order_id, "order is no longer pending")
            return payload, apply
        return self._record("transfer_out", make, occurred_at=occurred_at)

    def transfer_in(self, sku: str, quantity: int, *, source: str, transfer_id: str,
                    lots: list[dict[str, Any]], causation_id: str,
                    occurred_at: str | None = None) -> dict[str, Any]:
        """Book goods from ``source``; ``causation_id`` is its transfer_out event id."""
        def make() -> tuple[dict[str, Any], Applier]:
            before = self._stock_before(sku)
            check_on_hand(sku, before, quantity, "payload.quantity", quantity)
            payload = {"sku": sku, "quantity": quantity, "source": source,
                       "transfer_id": transfer_id, "lots": lots,
                       "stock_before": before}
            return payload, self._move(sku, lots if isinstance(lots, list) else [], +1)
        merge = {}
        if isinstance(causation_id, str) and ":" in causation_id:
            loc, _, s = causation_id.rpartition(":")
            if s.isdigit():
                merge[loc] = int(s)
        return self._record("transfer_in", make, causation_id=causation_id,
                            clock_merge=merge, occurred_at=occurred_at)

    def waste(self, sku: str, quantity: int, *, lot: str, reason_code: str,
              disposal_method: str, occurred_at: str | None = None) -> dict[str, Any]:
        def make() -> tuple[dict[str, Any], Applier]:
            known = self.db.cohort(sku, lot) if isinstance(lot, str) else None
            expires_on = known["expires_on"] if known else None
            before = self._stock_before(sku)
            check_on_hand(sku, before, _negated(quantity), "payload.quantity", quantity)
            payload = {"sku": sku, "quantity": quantity, "lot": lot, "expires_on": expires_on,
                       "reason_code": reason_code, "disposal_method": disposal_method,
                       "stock_before": before}
            return payload, lambda: self.db.add_to_cohort(sku, lot, expires_on, -quantity)
        return self._record("wasted", make, occurred_at=occurred_at)

    def adjust(self, sku: str, *, lot: str, counted_quantity: int,
               expires_on: str | None = None, occurred_at: str | None = None,
               recorded_by: str | None = None) -> dict[str, Any]:
        """Correct one lot to what was counted; points at the last full count if any.
        ``recorded_by`` is the operator the caller authenticated (HTTP login, OS user)."""
        def make() -> tuple[dict[str, Any], Applier]:
            known = self.db.cohort(sku, lot) if isinstance(lot, str) else None
            system = known["quantity"] if known else 0
            expiry = (known["expires_on"] if known else None) or expires_on
            delta = counted_quantity - system if _is_int(counted_quantity) else 0
            if expiry is None and delta > 0 and lot != UNALLOCATED_LOT:
                # A lot with no expiry could never be sold by name (the contract allows
                # that only for the unallocated lot).
                raise ContractError("payload.expires_on", None,
                                    f"lot {lot!r} of {sku} has no expiry on record; "
                                    "give expires_on")
            before = self._stock_before(sku)
            check_on_hand(sku, before, delta, "payload.counted_quantity", counted_quantity)
            payload = {"sku": sku, "lot": lot, "expires_on": expiry,
                       "counted_quantity": counted_quantity, "system_quantity": system,
                       "delta": delta, "stock_before": before}
            if recorded_by is not None:
                payload["recorded_by"] = recorded_by
            return payload, lambda: self.db.add_to_cohort(sku, lot, expiry, delta)
        return self._record("adjusted", make,
                            causation_id=lambda: self.db.get_meta("last_count_id"),
                            occurred_at=occurred_at)

    def count(self, items: list[dict[str, Any]], *, occurred_at: str | None = None
              ) -> dict[str, Any]:
        """A full physical count: the snapshot replaces every cohort of the location."""
        def make() -> tuple[dict[str, Any], Applier]:
            _check_count_totals(items)

            def apply() -> None:
                self.db.replace_cohorts(items)
                self.db.set_meta("last_count_id", f"{self.location_id}:{self.last_seq + 1}")
            return {"items": items}, apply
        return self._record("counted", make, occurred_at=occurred_at)

    def update_item(self, sku: str, *, occurred_at: str | None = None, **fields: Any
                    ) -> dict[str, Any]:
        def make() -> tuple[dict[str, Any], Applier]:
            return {"sku": sku, **fields}, lambda: self.db.set_item(sku, fields)
        return self._record("item_updated", make, occurred_at=occurred_at)

    # --- transfer orders -----------------------------------------------------------

    def accept_order(self, order: Any) -> bool:
        """Keep an approved transfer (or its withdrawal), or a recall's hold or release of
        a lot, sent down by the lakehouse.

        Orders arrive again on every reconnect (they are retained on the broker), so a
        known one is ignored; returns True only when something changed.
        """
        order = check_values(validate_order(order))
        with self._lock, self.db.transaction():
            if order.get("kind") == HOLD_KIND:
                changed = self.db.set_hold(order)
                self._on_hold = self.db.lots_on_hold()
            elif order.get("cancelled"):
                changed = self.db.cancel_order(order["order_id"])
            else:
                changed = self.db.add_order(order, utc_now_ms())
        if changed and self.on_order is not None:
            self.on_order(order)
        return changed

    def holds(self) -> list[dict[str, Any]]:
        """Every recall hold this location has heard of, with its last state (``on_hold``
        false once released), newest first."""
        with self._lock:
            return self.db.holds()

    def hold_ids(self) -> list[str]:
        """The ids of the lots on hold here now, as the heartbeat reports them."""
        with self._lock:  # newest first, as many as a heartbeat carries
            held = [h["order_id"] for h in self.db.holds() if h["on_hold"]]
        return sorted(held[:MAX_HOLDS])

    def orders(self, status: str | None = None) -> list[dict[str, Any]]:
        """Transfer orders received, oldest first (``pending``, ``dispatched`` or
        ``cancelled``; None for all)."""
        with self._lock:
            return self.db.orders(status)

    def dispatch_order(self, order_id: str, *, occurred_at: str | None = None,
                       recorded_by: str | None = None) -> dict[str, Any]:
        """Ship a pending order: a ``transfer_out`` of its lot whose ``transfer_id`` is the
        order id, so the lakehouse can tell the order is on its way. The lot must still
        hold the ordered quantity; a short lot is refused with what it holds."""
        with self._lock:
            order = self.db.order(order_id) if isinstance(order_id, str) else None
        if order is None:
            raise ContractError("order_id", order_id, "no such transfer order")
        if order["status"] != "pending":
            raise ContractError("order_id", order_id, f"order is {order['status']}"
                                + (f" ({order['event_id']})" if order["event_id"] else ""))
        # Not under the lock: the shipping transaction may be led by another till's
        # thread. It marks the order shipped only if still pending (see _ship).
        return self._ship(order["sku"], order["quantity"],
                          destination=order["destination"], transfer_id=order_id,
                          transit_hours=order["transit_hours"], lot=order["lot"],
                          occurred_at=occurred_at, order_id=order_id,
                          recorded_by=recorded_by)

    def _stock_before(self, sku: Any) -> int:
        return self.db.on_hand(sku) if isinstance(sku, str) else 0

    def close(self) -> None:
        self.db.close()


def _draw_fefo(sku: Any, held: list[HeldLot], quantity: Any,
               on_hold: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """Lots to take from ``held``, first-expired-first-out, never a lot ``on_hold`` (a
    recall); the shortfall comes from UNALLOCATED_LOT.

    Lots with no expiry (a count may list one) are not drawn by name: the contract
    lets only UNALLOCATED_LOT go without one, and a sale must never be refused.
    """
    if not (isinstance(sku, str) and _is_posint(quantity)):
        return []
    lots, left = [], quantity
    for lot, expires_on, have in held:
        if have <= 0 or expires_on is None or lot == UNALLOCATED_LOT or lot in on_hold:
            continue
        take = min(left, have)
        lots.append({"lot": lot, "expires_on": expires_on, "quantity": take})
        left -= take
        if left == 0:
            return lots
    lots.append({"lot": UNALLOCATED_LOT, "expires_on": None, "quantity": left})
    return lots


def _draw_lot(sku: str, held: list[HeldLot], quantity: int, lot: str,
              on_hold: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """The one named lot of ``held`` to ship, refused when it holds less than ``quantity``
    or is on hold: a recalled lot leaves only as waste (reason ``recall``)."""
    if lot in on_hold:
        raise ContractError("lot", lot, f"{sku} lot {lot} is on hold (recall): it cannot be "
                                        "shipped; waste it with reason_code 'recall' or "
                                        "wait for its release")
    known = next((row for row in held if row[0] == lot), None)
    if known is None or known[2] < quantity:
        have = 0 if known is None else known[2]
        raise ContractError("lot", lot, f"holds {have} of {sku}, {quantity} to ship")
    return [{"lot": lot, "expires_on": known[1], "quantity": quantity}]


def _payload_field(key: str) -> str:
    return f"payload.{key}"


def _negated(quantity: Any) -> Any:
    return -quantity if _is_int(quantity) else quantity


def _check_count_totals(items: Any) -> None:
    """A count's lines per SKU must add up to an on-hand the agent can hold."""
    if not isinstance(items, list):
        return
    totals: dict[str, int] = {}
    for i, item in enumerate(items):
        if not (isinstance(item, dict) and isinstance(item.get("sku"), str)
                and _is_int(item.get("quantity"))):
            continue
        sku = item["sku"]
        check_on_hand(sku, totals.get(sku, 0), item["quantity"],
                      f"payload.items[{i}].quantity", item["quantity"])
        totals[sku] = totals.get(sku, 0) + item["quantity"]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_posint(value: Any) -> bool:
    return _is_int(value) and value > 0
