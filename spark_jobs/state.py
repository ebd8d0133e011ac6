"""A region's live stock, kept by the streaming driver between micro-batches.

The state of a location is its latest count plus every later movement:
``cohorts = snapshot(C) + sum(movements with seq > C)``, where ``C`` is the seq of the
location's latest ``counted`` event (0 when it never counted). That rule equals the fold
of the location's events in seq order whatever order they arrive in: a movement older
than the latest count is already inside the count, and a newer one is a delta.

Why in the driver and not a Delta MERGE per batch: a region of a 300-store network
holds a few thousand cohorts, so rewriting its gold partition from this state costs one
small write, where MERGEs cost seconds per batch on a small machine. The state is
rebuilt from gold on restart (see ``streaming``), so it is a cache, never the record.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from lakehouse.movements import movements

Lot = tuple[str, str]  # (sku, lot)


@dataclass
class LocationState:
    """One location's cohorts and the seqs that explain them."""

    cohorts: dict[Lot, list[Any]] = field(default_factory=dict)  # -> [quantity, expires_on]
    last_seq: int = 0
    count_seq: int = 0
    contiguous: int = 0
    """Every seq up to here has been applied..."""
    above: set[int] = field(default_factory=set)
    """...and these beyond a gap, so a repeat of any of them is dropped."""
    skus: set[str] = field(default_factory=set)
    """Every SKU ever seen here, so a sold-out SKU still has a stock row (on hand 0)."""
    updated_at: datetime | None = None
    """When a batch last changed this location (set by the runner)."""

    def seen(self, seq: int) -> bool:
        return seq <= self.contiguous or seq in self.above

    def mark(self, seq: int) -> None:
        self.above.add(seq)
        while self.contiguous + 1 in self.above:
            self.contiguous += 1
            self.above.discard(self.contiguous)

    def add(self, sku: str, lot: str, expires_on: str | None, qty: int) -> None:
        self.skus.add(sku)
        entry = self.cohorts.get((sku, lot))
        if entry is None:
            self.cohorts[(sku, lot)] = [qty, expires_on]
        else:
            entry[0] += qty
            entry[1] = entry[1] or expires_on
            if entry[0] == 0:
                del self.cohorts[(sku, lot)]

    def reset(self, items: list[dict[str, Any]]) -> None:
        self.cohorts = {}
        for i in items:
            self.skus.add(i["sku"])
            if i["quantity"]:
                self.cohorts[(i["sku"], i["lot"])] = [i["quantity"], i["expires_on"]]


class RegionState:
    """Every location of one region; ``apply`` takes a batch of new events."""

    def __init__(self) -> None:
        self.locations: dict[str, LocationState] = {}

    def location(self, loc: str) -> LocationState:
        state = self.locations.get(loc)
        if state is None:
            state = self.locations[loc] = LocationState()
        return state

    def apply(self, events: Iterable[dict[str, Any]],
              history: Callable[[str, int], list[dict[str, Any]]] | None = None, *,
              bookkeeping_only: bool = False) -> tuple[set[str], list[dict[str, Any]]]:
        """Apply a batch; returns the locations that changed and the events that were new.

        Events already applied (same location and seq) are dropped here: this is the
        lakehouse's deduplication, so it survives restarts with the state itself.

        ``history(location, after_seq)`` returns earlier-applied events of a location
        with a higher seq; it is needed only when a count arrives after events that
        followed it, which happens when a gap in seq is filled late.
        ``bookkeeping_only`` moves seqs and SKUs but not quantities: for a batch
        replayed after a crash whose cohorts were already written.
        """
        touched: set[str] = set()
        fresh: list[dict[str, Any]] = []
        for e in sorted(events, key=lambda e: (e["location_id"], e["seq"])):
            loc = e["location_id"]
            st = self.location(loc)
            seq = e["seq"]
            if st.seen(seq):
                continue
            st.mark(seq)
            fresh.append(e)
            if e["event_type"] == "item_updated":
                st.skus.add(e["payload"]["sku"])
            if bookkeeping_only:
                if e["event_type"] == "counted":
                    st.count_seq = max(st.count_seq, seq)
                    st.skus.update(i["sku"] for i in e["payload"]["items"])
                else:
                    st.skus.update(m[0] for m in movements(e))
            elif e["event_type"] == "counted":
                if seq > st.count_seq:
                    later = [] if st.last_seq < seq or history is None else history(loc, seq)
                    st.reset(e["payload"]["items"])
                    st.count_seq = seq
                    for h in sorted(later, key=lambda h: h["seq"]):
                        if h["event_type"] != "counted":
                            for m in movements(h):
                                st.add(*m)
            elif seq > st.count_seq:
                for m in movements(e):
                    st.add(*m)
            st.last_seq = max(st.last_seq, seq)
            touched.add(loc)
        return touched, fresh

    # --- gold rows -----------------------------------------------------------------------

    def cohort_rows(self, region: str) -> list[tuple]:
        rows = []
        for loc, st in self.locations.items():
            for (sku, lot), (qty, exp) in st.cohorts.items():
                rows.append((region, loc, sku, lot, _date(exp), int(qty), st.updated_at))
        return rows

    def level_rows(self, region: str) -> list[tuple]:
        rows = []
        for loc, st in self.locations.items():
            per_sku: dict[str, list[Any]] = {s: [0, 0, None] for s in st.skus}
            for (sku, _lot), (qty, exp) in st.cohorts.items():
                agg = per_sku.setdefault(sku, [0, 0, None])
                agg[0] += qty
                agg[1] += 1
                if qty > 0 and exp is not None and (agg[2] is None or exp < agg[2]):
                    agg[2] = exp
            for sku, (on_hand, n, earliest) in per_sku.items():
                rows.append((region, loc, sku, int(on_hand), int(n), _date(earliest),
                             st.last_seq, st.count_seq, st.contiguous, sorted(st.above),
                             st.updated_at))
        return rows

    @classmethod
    def from_gold(cls, cohorts: Iterable[dict[str, Any]],
                  levels: Iterable[dict[str, Any]]) -> RegionState:
        """Rebuild from the region's gold rows (after a restart)."""
        state = cls()
        for r in levels:
            st = state.location(r["location_id"])
            st.skus.add(r["sku"])
            st.last_seq = max(st.last_seq, int(r["last_seq"] or 0))
            st.count_seq = max(st.count_seq, int(r["last_count_seq"] or 0))
            st.contiguous = max(st.contiguous, int(r["contiguous_seq"] or 0))
            st.above.update(int(x) for x in (r["seqs_after_gap"] or ()))
            if r["updated_at"] is not None and (st.updated_at is None
                                                or r["updated_at"] > st.updated_at):
                st.updated_at = r["updated_at"]
        for r in cohorts:
            exp = r["expires_on"]
            state.location(r["location_id"]).cohorts[(r["sku"], r["lot"])] = [
                int(r["quantity"]), exp.isoformat() if isinstance(exp, date) else exp]
        return state


def _date(value: str | None) -> date | None:
    return None if value is None else date.fromisoformat(value)
