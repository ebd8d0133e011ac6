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
from datetime import UTC, date, datetime, timedelta
from typing import Any

from lakehouse.movements import movements

from .books import ItemsBook, TransitBook

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
    totals: dict[str, int] = field(default_factory=dict)
    """On hand per SKU (the sum of its cohorts), kept as cohorts change."""
    beyond: dict[int, dict[str, int]] = field(default_factory=dict)
    """Per-SKU quantity changes of events applied while a seq below them was missing:
    what an event's on-hand-before must leave out when a gap is filled late."""
    checks: dict[int, Check] = field(default_factory=dict)
    count_checks: dict[int, CountCheck] = field(default_factory=dict)
    counts_seen: set[int] = field(default_factory=set)
    """Seqs of the counts applied above ``contiguous`` (older ones are not needed)."""
    """Events whose ``stock_before`` can be judged only once the seqs below them are in."""

    def seen(self, seq: int) -> bool:
        return seq <= self.contiguous or seq in self.above

    def mark(self, seq: int) -> None:
        self.above.add(seq)
        while self.contiguous + 1 in self.above:
            self.contiguous += 1
            self.above.discard(self.contiguous)

    def add(self, sku: str, lot: str, expires_on: str | None, qty: int) -> None:
        self.skus.add(sku)
        self.totals[sku] = self.totals.get(sku, 0) + qty
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
        self.totals = {}
        for i in items:
            self.skus.add(i["sku"])
            if i["quantity"]:
                self.cohorts[(i["sku"], i["lot"])] = [i["quantity"], i["expires_on"]]
                self.totals[i["sku"]] = self.totals.get(i["sku"], 0) + i["quantity"]

    def missing(self) -> list[int]:
        """Seqs not yet seen below the highest one seen (the open gaps)."""
        if not self.above:
            return []
        return [q for q in range(self.contiguous + 1, max(self.above)) if q not in self.above]


@dataclass
class CountCheck:
    """A count whose variance waits for the events below it."""

    event_id: str
    occurred_at: str
    counted: dict[str, int]
    system: dict[str, int]
    """On hand per SKU just before the count, as far as the events seen allow."""


@dataclass
class Check:
    """A ``stock_before`` waiting for the events below it (see ``RegionState.apply``)."""

    sku: str
    stock_before: int
    before: int
    """The lakehouse's on hand before the event, as far as the events seen allow."""
    event_id: str
    occurred_at: str
    flagged: bool
    """Whether a review item was raised for it when it arrived."""


class RegionState:
    """Every location of one region; ``apply`` takes a batch of new events.

    Besides stock it keeps what the semantic tables need: review items for
    ``stock_before`` conflicts, seq gaps, count variances, and per-day movement totals
    for trends and business metrics. The catalogue and transfers in transit are
    network-wide books (``books``) shared by the regions.
    """

    def __init__(self, region: str = "", items: ItemsBook | None = None,
                 transit: TransitBook | None = None) -> None:
        self.region = region
        self.locations: dict[str, LocationState] = {}
        self.items = items if items is not None else ItemsBook()
        self.transit = transit if transit is not None else TransitBook()
        self.review: dict[tuple[str, int], dict[str, Any]] = {}
        """Review items by (location, seq): gold ``review_queue``."""
        self.conflict_log: list[dict[str, Any]] = []
        """Conflict findings not yet appended to silver ``quantity_conflicts``."""
        self.variance_log: list[dict[str, Any]] = []
        """Count variances not yet appended to silver ``count_variances``."""
        self.gaps: dict[tuple[str, int], dict[str, Any]] = {}
        """Seq gaps by (location, first missing seq): silver ``sequence_gaps``."""
        self.daily: dict[tuple[str, str, str], list[int]] = {}
        """(location, sku, day) -> [sold, received, wasted, transfer_in, transfer_out,
        hit_zero]: transactional movements only."""
        self.dirty: set[str] = set()
        """Which derived tables changed since they were last written."""
        self.dirty_days: set[str] = set()
        """Days whose movement totals changed since they were last written."""
        self._gapped: dict[str, set[tuple[str, int]]] = {}
        """Open gaps per location."""

    def location(self, loc: str) -> LocationState:
        state = self.locations.get(loc)
        if state is None:
            state = self.locations[loc] = LocationState()
        return state

    def apply(self, events: Iterable[dict[str, Any]],
              history: Callable[[str, int], list[dict[str, Any]]] | None = None, *,
              bookkeeping_only: bool = False,
              now: datetime | None = None) -> tuple[set[str], list[dict[str, Any]]]:
        """Apply a batch; returns the locations that changed and the events that were new.

        Events already applied (same location and seq) are dropped here: this is the
        lakehouse's deduplication, so it survives restarts with the state itself.

        ``history(location, after_seq)`` returns earlier-applied events of a location
        with a higher seq; it is needed only when a count arrives after events that
        followed it, which happens when a gap in seq is filled late.
        ``bookkeeping_only`` moves seqs and SKUs but not quantities: for a batch
        replayed after a crash whose cohorts were already written.
        """
        now = now or datetime.now(UTC).replace(tzinfo=None)
        touched: set[str] = set()
        fresh: list[dict[str, Any]] = []
        for e in sorted(events, key=lambda e: (e["location_id"], e["seq"])):
            loc = e["location_id"]
            st = self.location(loc)
            seq = e["seq"]
            if st.seen(seq):
                continue
            gap_below = seq > st.contiguous + 1
            fresh.append(e)
            et = e["event_type"]
            if et == "item_updated":
                st.skus.add(e["payload"]["sku"])
                if self.items.apply(e):
                    self.dirty.add("items")
            self.transit.apply(e)
            if bookkeeping_only:
                st.mark(seq)
                if et == "counted":
                    st.count_seq = max(st.count_seq, seq)
                    st.skus.update(i["sku"] for i in e["payload"]["items"])
                else:
                    st.skus.update(m[0] for m in movements(e))
            elif et == "counted":
                self._count(loc, st, e, history, now)
                st.mark(seq)
            else:
                # An event inside a later count leaves stock alone (the count has it) but
                # is still demand, and still fills the gap below pending judgements.
                self._movement(loc, st, e, gap_below, now, inside_count=seq < st.count_seq)
                st.mark(seq)
            self._settle(loc, st, now)
            st.last_seq = max(st.last_seq, seq)
            touched.add(loc)
        for loc in touched:
            self._track_gaps(loc, self.locations[loc], now)
        return touched, fresh

    # --- the rules behind apply ------------------------------------------------------

    def _before(self, st: LocationState, sku: str, seq: int) -> int:
        """On hand of ``sku`` just before ``seq``, from the events seen so far."""
        later = sum(d.get(sku, 0) for q, d in st.beyond.items() if q > seq)
        return st.totals.get(sku, 0) - later

    def _movement(self, loc: str, st: LocationState, e: dict[str, Any], gap_below: bool,
                  now: datetime, *, inside_count: bool = False) -> None:
        seq, p = e["seq"], e["payload"]
        sku = p.get("sku")
        before = self._before(st, sku, seq)
        deltas: dict[str, int] = {}
        for m in movements(e):
            if not inside_count:
                st.add(*m)
            else:
                st.skus.add(m[0])
            deltas[m[0]] = deltas.get(m[0], 0) + m[3]
        if seq < st.last_seq or gap_below:
            st.beyond[seq] = deltas
        for q, c in st.checks.items():  # this event was missing below them
            if q > seq and _no_count_between(st, seq, q):
                c.before += deltas.get(c.sku, 0)
        for q, cc in st.count_checks.items():
            if q > seq and _no_count_between(st, seq, q):
                for s_, d in deltas.items():
                    cc.system[s_] = cc.system.get(s_, 0) + d
        self._daily(loc, e, deltas)
        sb = p.get("stock_before")
        if sb is None or sku is None or inside_count:
            return
        differs = before != sb
        if differs:
            self._raise(loc, e, sku, sb, before, "missing event" if gap_below
                        else "entry error or shrinkage", now)
        if gap_below:
            st.checks[seq] = Check(sku, int(sb), before, e["event_id"], e["occurred_at"],
                                   differs)

    def _count(self, loc: str, st: LocationState, e: dict[str, Any],
               history: Callable[[str, int], list[dict[str, Any]]] | None,
               now: datetime) -> None:
        seq, items = e["seq"], e["payload"]["items"]
        counted: dict[str, int] = {}
        for i in items:
            counted[i["sku"]] = counted.get(i["sku"], 0) + int(i["quantity"])
            if int(i["quantity"]) <= 0:
                self._zero(loc, i["sku"], e["occurred_at"][:10])
        # Judgements above this count, waiting for it, now start from what it counted.
        for q, c in st.checks.items():
            if q > seq and _no_count_between(st, seq, q):
                c.before = counted.get(c.sku, 0) + sum(
                    d.get(c.sku, 0) for s, d in st.beyond.items() if seq < s < q)
        for q, cc in st.count_checks.items():
            if q > seq and _no_count_between(st, seq, q):
                cc.system = {sku: counted.get(sku, 0) + sum(
                    d.get(sku, 0) for s, d in st.beyond.items() if seq < s < q)
                    for sku in set(cc.system) | set(counted)}
        st.counts_seen.add(seq)
        if seq <= st.count_seq:
            # A later count already set the stock; this one's system quantities are gone
            # with it, so its variance is not known here.
            return
        system = {sku: self._before(st, sku, seq) for sku in set(st.totals) | set(counted)}
        pending = CountCheck(e["event_id"], e["occurred_at"], counted, system)
        if seq > st.contiguous + 1:
            st.count_checks[seq] = pending  # judged when the seqs below it are in
        else:
            self._variances(loc, seq, pending, now)
        for (iloc, q), item in self.review.items():
            if iloc == loc and q < seq and item["status"] in ("open", "waiting"):
                # The count set this location's stock after the event: the difference is
                # inside the count's variance now, whatever order the two arrived in.
                item.update(status="closed", updated_at=now,
                            note=f"the count at seq {seq} set the stock after this event")
                self._log(item, now)
                self.dirty.add("review_queue")
        for q in [q for q in st.checks if q < seq]:
            del st.checks[q]
        later = [] if st.last_seq < seq or history is None else history(loc, seq)
        st.reset(items)
        st.count_seq = seq
        for h in sorted(later, key=lambda h: h["seq"]):
            if h["event_type"] != "counted":
                for m in movements(h):
                    st.add(*m)

    def _settle(self, loc: str, st: LocationState, now: datetime) -> None:
        """Judge the checks whose lower seqs are all in; forget what no gap needs."""
        for q in sorted(q for q in st.checks if q <= st.contiguous):
            c = st.checks.pop(q)
            agree = c.before == c.stock_before
            item = self.review.get((loc, q))
            if item is not None and item["status"] == "waiting":
                item.update(lakehouse_before=c.before, difference=c.stock_before - c.before,
                            gap_closed_at=now, updated_at=now)
                if agree:
                    item.update(status="closed", note="the missing events arrived; "
                                "the numbers agree")
                else:
                    item.update(status="open", cause="entry error or shrinkage",
                                note="the missing events arrived; the numbers still differ")
                self._log(item, now)
                self.dirty.add("review_queue")
            elif not agree:
                self._raise(loc, {"seq": q, "event_id": c.event_id,
                                  "occurred_at": c.occurred_at},
                            c.sku, c.stock_before, c.before, "entry error or shrinkage", now)
        for q in sorted(q for q in st.count_checks if q <= st.contiguous):
            self._variances(loc, q, st.count_checks.pop(q), now)
        for q in [q for q in st.beyond if q <= st.contiguous]:
            del st.beyond[q]
        st.counts_seen = {c for c in st.counts_seen if c > st.contiguous}

    def _variances(self, loc: str, seq: int, cc: CountCheck, now: datetime) -> None:
        for sku in sorted(set(cc.system) | set(cc.counted)):
            system = cc.system.get(sku, 0)
            self.variance_log.append({
                "region": self.region, "location_id": loc, "seq": seq,
                "event_id": cc.event_id, "counted_at": cc.occurred_at, "sku": sku,
                "system_quantity": system, "counted_quantity": cc.counted.get(sku, 0),
                "variance": cc.counted.get(sku, 0) - system, "detected_at": now})
        self.dirty.add("count_variances")

    def _raise(self, loc: str, e: dict[str, Any], sku: str, stock_before: int, before: int,
               cause: str, now: datetime) -> None:
        waiting = cause == "missing event"
        item = {
            "item_id": f"{loc}:{e['seq']}", "region": self.region, "location_id": loc,
            "seq": e["seq"], "event_id": e["event_id"], "sku": sku,
            "occurred_at": e["occurred_at"], "store_before": int(stock_before),
            "lakehouse_before": int(before), "difference": int(stock_before) - int(before),
            "cause": cause, "status": "waiting" if waiting else "open",
            "note": ("seqs below this event are missing; judged again when they arrive"
                     if waiting else "no gap explains it"),
            "detected_at": now, "gap_closed_at": None, "updated_at": now,
        }
        self.review[(loc, e["seq"])] = item
        self._log(item, now)
        self.dirty.add("review_queue")

    def _log(self, item: dict[str, Any], now: datetime) -> None:
        self.conflict_log.append({k: item[k] for k in CONFLICT_FIELDS} | {"logged_at": now})
        self.dirty.add("quantity_conflicts")

    def _daily(self, loc: str, e: dict[str, Any], deltas: dict[str, int]) -> None:
        et = e["event_type"]
        slot = {"sold": 0, "received": 1, "wasted": 2, "transfer_in": 3,
                "transfer_out": 4}.get(et)
        day = e["occurred_at"][:10]
        if slot is not None:
            sku = e["payload"]["sku"]
            row = self.daily.setdefault((loc, sku, day), [0, 0, 0, 0, 0, 0])
            row[slot] += int(e["payload"]["quantity"])
            self.dirty.add("daily")
            self.dirty_days.add(day)
        sb = e["payload"].get("stock_before")
        if slot in (0, 2, 4) and sb is not None and sb - int(e["payload"]["quantity"]) <= 0:
            # The shelf went empty by the store's own numbers: a fact of the event, so
            # the same whatever order events reach the lakehouse in.
            self._zero(loc, e["payload"]["sku"], day)

    def _zero(self, loc: str, sku: str, day: str) -> None:
        row = self.daily.setdefault((loc, sku, day), [0, 0, 0, 0, 0, 0])
        if not row[5]:
            row[5] = 1
            self.dirty.add("daily")
            self.dirty_days.add(day)

    def _track_gaps(self, loc: str, st: LocationState, now: datetime) -> None:
        missing = set(st.missing())
        known: set[int] = set()
        if not missing and loc not in self._gapped:
            return
        for key in list(self._gapped.get(loc, ())):
            g = self.gaps[key]
            still = [q for q in g["missing"] if q in missing]
            known.update(g["missing"])
            if len(still) != len(g["missing"]):
                g["missing"] = still
                g["updated_at"] = now
                if not still:
                    g.update(status="closed", closed_at=now)
                    self._gapped[loc].discard(key)
                self.dirty.add("sequence_gaps")
        new = sorted(missing - known)
        for run in _runs(new):
            self.gaps[(loc, run[0])] = {
                "region": self.region, "location_id": loc, "first_missing": run[0],
                "last_missing": run[-1], "missing": list(run), "opened_at": now,
                "updated_at": now, "closed_at": None, "status": "open"}
            self._gapped.setdefault(loc, set()).add((loc, run[0]))
            self.dirty.add("sequence_gaps")
        if not self._gapped.get(loc):
            self._gapped.pop(loc, None)

    def restore(self, review: Iterable[dict[str, Any]], gaps: Iterable[dict[str, Any]],
                daily: Iterable[dict[str, Any]]) -> None:
        """Add back what the derived tables hold (after a restart)."""
        for r in review:
            item = dict(r)
            self.review[(item["location_id"], int(item["seq"]))] = item
            if item["status"] == "waiting":
                st = self.location(item["location_id"])
                st.checks[int(item["seq"])] = Check(
                    item["sku"], int(item["store_before"]), int(item["lakehouse_before"]),
                    item["event_id"], item["occurred_at"], True)
        for g in gaps:
            g = dict(g)
            self.gaps[(g["location_id"], int(g["first_missing"]))] = g
            if g["status"] == "open":
                self._gapped.setdefault(g["location_id"], set()).add(
                    (g["location_id"], int(g["first_missing"])))
        for d in daily:
            self.daily[(d["location_id"], d["sku"], str(d["day"]))] = [
                int(d["sold"]), int(d["received"]), int(d["wasted"]),
                int(d["transfer_in"]), int(d["transfer_out"]), int(d["hit_zero"])]

    def replay_daily(self, events: Iterable[dict[str, Any]]) -> None:
        """Add events' movements to the daily totals only (their stock is in gold)."""
        for e in events:
            if e["event_type"] not in ("counted", "adjusted", "item_updated"):
                self.location(e["location_id"])
                self._daily(e["location_id"], e, {})

    # --- gold rows -----------------------------------------------------------------------

    def cohort_rows(self, region: str) -> list[tuple]:
        rows = []
        for loc, st in self.locations.items():
            for (sku, lot), (qty, exp) in st.cohorts.items():
                rows.append((region, loc, sku, lot, _date(exp), int(qty), st.updated_at))
        return rows

    def level_rows(self, region: str, today: date | None = None) -> list[tuple]:
        """One row per location and SKU; sellable and expiring are judged against
        ``today`` (UTC) and each SKU's ``min_sellable_days`` from the catalogue."""
        today = today or datetime.now(UTC).date()
        outbound, inbound = self.transit.in_transit()
        soon = today + timedelta(days=2)
        rows = []
        for loc, st in self.locations.items():
            per_sku: dict[str, list[Any]] = {s: [0, 0, None, 0, 0, 0] for s in st.skus}
            for (sku, _lot), (qty, exp) in st.cohorts.items():
                agg = per_sku.setdefault(sku, [0, 0, None, 0, 0, 0])
                agg[0] += qty
                agg[1] += 1
                if qty <= 0:
                    continue
                day = _date(exp)
                if day is not None and (agg[2] is None or day < agg[2]):
                    agg[2] = day
                keep = int(self.items.get(sku, "min_sellable_days", 0) or 0)
                if day is None or day >= today + timedelta(days=keep):
                    agg[3] += qty
                if day is not None and today <= day < soon:
                    agg[4] += qty
                if day is not None and day < today:
                    agg[5] += qty
            for sku, (on_hand, n, earliest, sellable, expiring, expired) in per_sku.items():
                rows.append((region, loc, sku, int(on_hand), int(n), earliest,
                             int(sellable), int(expiring), int(expired),
                             int(inbound.get((loc, sku), 0)),
                             int(outbound.get((loc, sku), 0)),
                             st.last_seq, st.count_seq, st.contiguous, sorted(st.above),
                             st.updated_at))
        return rows

    @classmethod
    def from_gold(cls, cohorts: Iterable[dict[str, Any]],
                  levels: Iterable[dict[str, Any]], *, region: str = "",
                  items: ItemsBook | None = None,
                  transit: TransitBook | None = None) -> RegionState:
        """Rebuild stock and seq tracking from the region's gold rows (after a restart);
        ``restore`` adds the review items and gaps."""
        state = cls(region, items, transit)
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
            st = state.location(r["location_id"])
            st.cohorts[(r["sku"], r["lot"])] = [
                int(r["quantity"]), exp.isoformat() if isinstance(exp, date) else exp]
            st.totals[r["sku"]] = st.totals.get(r["sku"], 0) + int(r["quantity"])
        return state


CONFLICT_FIELDS = ("item_id", "region", "location_id", "seq", "event_id", "sku",
                   "occurred_at", "store_before", "lakehouse_before", "difference", "cause",
                   "status", "note", "detected_at", "gap_closed_at")


def _no_count_between(st: LocationState, low: int, high: int) -> bool:
    """Whether no applied count lies strictly between two seqs (a count there resets
    what the lower event could change for the higher one)."""
    return not any(low < c < high for c in st.counts_seen)


def _runs(seqs: list[int]) -> list[list[int]]:
    """Consecutive runs of sorted seqs: [3, 4, 7] -> [[3, 4], [7]]."""
    out: list[list[int]] = []
    for q in seqs:
        if out and q == out[-1][-1] + 1:
            out[-1].append(q)
        else:
            out.append([q])
    return out


def _date(value: str | date | None) -> date | None:
    if value is None or isinstance(value, date):
        return value
    return date.fromisoformat(value)
