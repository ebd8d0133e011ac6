"""A region's live stock, kept by the streaming driver between micro-batches.

The state of a location is its latest count plus every later movement:
``cohorts = snapshot(C) + sum(movements with seq > C)``, where ``C`` is the seq of the
location's latest ``counted`` event (0 when it never counted). That rule equals the fold
of the location's events in seq order whatever order they arrive in: a movement older
than the latest count is already inside the count, and a newer one is a delta.

Why in the driver and not a Delta MERGE per batch: a region of a 300-store network
holds a few thousand cohorts, so rewriting its gold partition from this state costs one
small write, where MERGEs cost seconds per batch on a small machine. The state is
rebuilt from gold on restart (see ``runner``), so it is a cache, never the record.
"""

from __future__ import annotations

import copy
import functools
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from lakehouse.contract import MAX_SEQ, ContractError, check_timestamp
from lakehouse.movements import movements

from .books import ItemsBook, NetworkBooks, TransitBook

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
    dead: set[int] = field(default_factory=set)
    """Seqs the stream dead-lettered. They count as filled for the gap tracker, so the
    events above them are judged and nothing waits on them forever, but a corrected event
    for one of them is still applied (once)."""

    def seen(self, seq: int) -> bool:
        return (seq <= self.contiguous or seq in self.above) and seq not in self.dead

    def mark(self, seq: int) -> None:
        if seq in self.dead:  # a corrected event for a dead-lettered seq
            self.dead.discard(seq)
            if seq <= self.contiguous:
                return
        self.above.add(seq)
        while self.contiguous + 1 in self.above:
            self.contiguous += 1
            self.above.discard(self.contiguous)

    def mark_dead(self, seq: int) -> None:
        """A seq whose event was dead-lettered: filled for the gap tracker, open to a
        corrected event."""
        if self.seen(seq):
            return
        self.mark(seq)
        self.dead.add(seq)

    def copy(self) -> LocationState:
        """An independent copy, taken before a batch touches the location so a failing
        event can be rolled back (hand-written: ``deepcopy`` costs several times more)."""
        return LocationState(
            cohorts={k: list(v) for k, v in self.cohorts.items()}, last_seq=self.last_seq,
            count_seq=self.count_seq, contiguous=self.contiguous, above=set(self.above),
            skus=set(self.skus), updated_at=self.updated_at, totals=dict(self.totals),
            beyond={q: dict(d) for q, d in self.beyond.items()},
            checks={q: copy.copy(c) for q, c in self.checks.items()},
            count_checks={q: CountCheck(c.event_id, c.occurred_at, dict(c.counted),
                                        dict(c.system))
                          for q, c in self.count_checks.items()},
            counts_seen=set(self.counts_seen), dead=set(self.dead))

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

    def missing_runs(self) -> list[tuple[int, int]]:
        """Runs ``(first, last)`` of seqs not yet seen below the highest one seen (the open
        gaps). Runs, not lists: a store that jumps from seq 5 to 10**12 costs one run."""
        runs: list[tuple[int, int]] = []
        prev = self.contiguous
        for q in sorted(self.above):
            if q > prev + 1:
                runs.append((prev + 1, q - 1))
            prev = q
        return runs


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
    network-wide books (``books``) shared by the regions: the stream process passes its
    own; without them the state keeps books of its own.
    """

    def __init__(self, region: str = "", books: NetworkBooks | None = None) -> None:
        self.region = region
        self.locations: dict[str, LocationState] = {}
        self.books = books if books is not None else NetworkBooks()
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
        self.rejected: list[tuple[dict[str, Any], str]] = []
        """Events ``apply`` could not apply, with the reason: the caller dead-letters them
        and clears the list."""
        self._undo: _Undo | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Everything but the network-wide books (shared by the regions, rebuilt from
        bronze at start) and the undo record of a running apply."""
        saved = dict(self.__dict__)
        del saved["books"]
        saved.pop("_rows", None)
        saved["_undo"] = None
        return saved

    def __setstate__(self, saved: dict[str, Any]) -> None:
        self.__dict__.update(saved)
        self.books = NetworkBooks()

    @property
    def items(self) -> ItemsBook:
        """The network's catalogue."""
        return self.books.items

    @property
    def transit(self) -> TransitBook:
        """The network's transfers in transit."""
        return self.books.transit

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
        guarded = None if history is None else _guard(history)
        ordered = sorted(events, key=lambda e: (e["location_id"], e["seq"]))
        for loc, run in itertools.groupby(ordered, key=lambda e: e["location_id"]):
            group = list(run)
            applied = self._apply_isolated(loc, group, guarded, bookkeeping_only, now)
            if applied or any(r[0].get("location_id") == loc for r in self.rejected):
                touched.add(loc)
            fresh += applied
        for loc in touched:
            self._track_gaps(loc, self.location(loc), now)
        return touched, fresh

    def _apply_isolated(self, loc: str, group: list[dict[str, Any]],
                        history: Callable[[str, int], list[dict[str, Any]]] | None,
                        bookkeeping_only: bool, now: datetime) -> list[dict[str, Any]]:
        """Apply one location's events; an event that fails on its own is rolled back and
        rejected, and the others still apply.

        The location is copied first (a few microseconds a location, not a copy of the
        region); only after a failure are its events applied one at a time, each with
        its own copy, to find which fail alone. A failure of what the state reads
        (``history``) or of memory is not the event's fault and is raised.
        """
        self._undo = _Undo(self, loc)
        try:
            return [e for e in group if self._apply_one(loc, e, history, bookkeeping_only,
                                                         now)]
        except _NOT_THE_EVENTS_FAULT:
            self._undo.restore(self)
            raise
        except Exception:  # noqa: BLE001 - split below until the failing event is found
            self._undo.restore(self)
        finally:
            self._undo = None
        applied = []
        for e in group:
            self._undo = _Undo(self, loc)
            try:
                if self._apply_one(loc, e, history, bookkeeping_only, now):
                    applied.append(e)
            except _NOT_THE_EVENTS_FAULT:
                self._undo.restore(self)
                raise
            except Exception as exc:  # noqa: BLE001 - this event fails on its own
                self._undo.restore(self)
                self.reject(e, f"the stream could not apply it: {exc!r}"[:500], now)
            finally:
                self._undo = None
        return applied

    def _apply_one(self, loc: str, e: dict[str, Any],
                   history: Callable[[str, int], list[dict[str, Any]]] | None,
                   bookkeeping_only: bool, now: datetime) -> bool:
        """Apply one event; False when it was applied before."""
        st = self.location(loc)
        seq = e["seq"]
        if st.seen(seq):
            return False
        gap_below = seq > st.contiguous + 1
        redriven = seq in st.dead
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
        item = self.review.get((loc, seq)) if redriven else None
        if item is not None and item["cause"] == DEAD_LETTERED:
            self._save_review((loc, seq))
            item.update(status="closed", updated_at=now,
                        note="a corrected event was re-driven and applied")
            self.dirty.add("review_queue")
        return True

    def reject(self, e: dict[str, Any], reason: str, now: datetime | None = None) -> None:
        """Dead-letter an event the stream cannot apply: its seq counts as filled (so the
        events above it are judged) and a review item tells a person which event was
        refused and why; a corrected event for the same seq applies once."""
        now = now or datetime.now(UTC).replace(tzinfo=None)
        self.rejected.append((e, reason))
        loc, seq = e.get("location_id"), e.get("seq")
        if not (isinstance(loc, str) and isinstance(seq, int) and not isinstance(seq, bool)
                and 1 <= seq <= MAX_SEQ):
            return
        st = self.location(loc)
        if st.seen(seq):
            return
        st.mark_dead(seq)
        self._settle(loc, st, now)
        p = e.get("payload") if isinstance(e.get("payload"), dict) else {}
        sku = p.get("sku") if isinstance(p.get("sku"), str) else None
        try:
            occurred = check_timestamp("occurred_at", e.get("occurred_at"))
        except ContractError:
            occurred = None
        self._save_review((loc, seq))
        self.review[(loc, seq)] = {
            "item_id": f"{loc}:{seq}", "region": self.region, "location_id": loc,
            "seq": seq, "event_id": f"{loc}:{seq}", "sku": sku, "occurred_at": occurred,
            "store_before": None, "lakehouse_before": None, "difference": None,
            "cause": DEAD_LETTERED, "status": "open",
            "note": f"{reason}; fix and re-drive it (shelflife deadletters)"[:500],
            "detected_at": now, "gap_closed_at": None, "updated_at": now}
        self.dirty.add("review_queue")

    def _save_review(self, key: tuple[str, int]) -> None:
        if self._undo is not None and key not in self._undo.review:
            old = self.review.get(key)
            self._undo.review[key] = None if old is None else dict(old)

    def _save_daily(self, key: tuple[str, str, str]) -> None:
        if self._undo is not None and key not in self._undo.daily:
            old = self.daily.get(key)
            self._undo.daily[key] = None if old is None else list(old)

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
            if (iloc == loc and q < seq and item["status"] in ("open", "waiting")
                    and item["cause"] != DEAD_LETTERED):
                # The count set this location's stock after the event: the difference is
                # inside the count's variance now, whatever order the two arrived in.
                self._save_review((iloc, q))
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
                self._save_review((loc, q))
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
        self._save_review((loc, e["seq"]))
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
            self._save_daily((loc, sku, day))
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
        self._save_daily((loc, sku, day))
        row = self.daily.setdefault((loc, sku, day), [0, 0, 0, 0, 0, 0])
        if not row[5]:
            row[5] = 1
            self.dirty.add("daily")
            self.dirty_days.add(day)

    def _track_gaps(self, loc: str, st: LocationState, now: datetime) -> None:
        """Open, narrow and close the location's gap records from its missing runs.

        A record keeps the range it opened with; ``missing`` lists at most
        ``GAP_LIST_LIMIT`` of its still-missing seqs and ``missing_count`` counts them all.
        """
        runs = st.missing_runs()
        if not runs and loc not in self._gapped:
            return
        covered: list[tuple[int, int]] = []
        for key in list(self._gapped.get(loc, ())):
            g = self.gaps[key]
            lo, hi = int(g["first_missing"]), int(g["last_missing"])
            covered.append((lo, hi))
            parts = _clip(runs, lo, hi)
            listed, count = _listed(parts), sum(b - a + 1 for a, b in parts)
            if listed != list(g["missing"]) or count != g.get("missing_count", count):
                g.update(missing=listed, missing_count=count, updated_at=now)
                if not parts:
                    g.update(status="closed", closed_at=now)
                    self._gapped[loc].discard(key)
                self.dirty.add("sequence_gaps")
        for first, last in _subtract(runs, covered):
            self.gaps[(loc, first)] = {
                "region": self.region, "location_id": loc, "first_missing": first,
                "last_missing": last, "missing": _listed([(first, last)]),
                "missing_count": last - first + 1, "opened_at": now, "updated_at": now,
                "closed_at": None, "status": "open"}
            self._gapped.setdefault(loc, set()).add((loc, first))
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
        """One row per location, SKU and lot with units left (gold ``stock_cohorts``)."""
        rows: list[tuple] = []
        cache = self._row_cache()
        for loc, st in self.locations.items():
            key = ("cohorts", region, _fingerprint(st))
            hit = cache.get(("c", loc))
            if hit is None or hit[0] != key:
                hit = cache[("c", loc)] = (key, [
                    (region, loc, sku, lot, _date(exp), int(qty), st.updated_at)
                    for (sku, lot), (qty, exp) in st.cohorts.items()])
            rows += hit[1]
        return rows

    def level_rows(self, region: str, today: date | None = None) -> list[tuple]:
        """One row per location and SKU; sellable and expiring are judged against
        ``today`` (UTC) and each SKU's ``min_sellable_days`` from the catalogue.

        Rows are rebuilt only for a location whose state, day, catalogue or transfers in
        transit changed since the last call: a batch touches a few of a region's
        locations, and rebuilding every row every second was a fifth of the stream's
        CPU."""
        today = today or datetime.now(UTC).date()
        outbound, inbound = self.transit.in_transit()
        transit: dict[str, list[tuple]] = {}
        for way, book in (("out", outbound), ("in", inbound)):
            for (loc, sku), qty in book.items():
                transit.setdefault(loc, []).append((way, sku, qty))
        cache = self._row_cache()
        rows: list[tuple] = []
        for loc, st in self.locations.items():
            moving = tuple(sorted(transit.get(loc, ())))
            key = (region, today, self.items.version, moving, _fingerprint(st))
            hit = cache.get(("l", loc))
            if hit is None or hit[0] != key:
                hit = cache[("l", loc)] = (key, self._location_levels(
                    region, loc, st, today, outbound, inbound))
            rows += hit[1]
        return rows

    def _location_levels(self, region: str, loc: str, st: LocationState, today: date,
                         outbound: dict[tuple[str, str], int],
                         inbound: dict[tuple[str, str], int]) -> list[tuple]:
        soon = today + timedelta(days=2)
        sellable_from: dict[str, date] = {}  # per SKU: the first day still sellable today
        per_sku: dict[str, list[Any]] = {s: [0, 0, None, 0, 0, 0] for s in st.skus}
        for (sku, _lot), (qty, exp) in st.cohorts.items():
            agg = per_sku.get(sku)
            if agg is None:
                agg = per_sku[sku] = [0, 0, None, 0, 0, 0]
            agg[0] += qty
            agg[1] += 1
            if qty <= 0:
                continue
            day = _date(exp)
            if day is None:
                agg[3] += qty
                continue
            if agg[2] is None or day < agg[2]:
                agg[2] = day
            first = sellable_from.get(sku)
            if first is None:
                keep = int(self.items.get(sku, "min_sellable_days", 0) or 0)
                first = sellable_from[sku] = today + timedelta(days=keep)
            if day >= first:
                agg[3] += qty
            if today <= day < soon:
                agg[4] += qty
            elif day < today:
                agg[5] += qty
        above = sorted(st.above)
        return [(region, loc, sku, int(on_hand), int(n), earliest, int(sellable),
                 int(expiring), int(expired), int(inbound.get((loc, sku), 0)),
                 int(outbound.get((loc, sku), 0)), st.last_seq, st.count_seq,
                 st.contiguous, above, st.updated_at)
                for sku, (on_hand, n, earliest, sellable, expiring, expired)
                in per_sku.items()]

    def _row_cache(self) -> dict[tuple[str, str], tuple[tuple, list[tuple]]]:
        """Gold rows per location, with the fingerprint they were built from (not saved
        with the state: see ``__getstate__``)."""
        cache = self.__dict__.get("_rows")
        if cache is None:
            cache = self._rows = {}
        return cache

    @classmethod
    def from_gold(cls, cohorts: Iterable[dict[str, Any]],
                  levels: Iterable[dict[str, Any]], *, region: str = "",
                  books: NetworkBooks | None = None) -> RegionState:
        """Rebuild stock and seq tracking from the region's gold rows (after a restart);
        ``restore`` adds the review items and gaps."""
        state = cls(region, books)
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


def _fingerprint(st: LocationState) -> tuple:
    """What changes whenever a location's gold rows may: every event moves a seq mark (a
    new seq, a filled gap, a dead-lettered one), and the runner stamps ``updated_at`` on
    each location a batch touched; the sizes catch anything that adds or drops a lot or
    a SKU without either."""
    return (st.updated_at, st.last_seq, st.count_seq, st.contiguous, len(st.above),
            len(st.dead), len(st.cohorts), len(st.skus), sum(st.totals.values()))


def _no_count_between(st: LocationState, low: int, high: int) -> bool:
    """Whether no applied count lies strictly between two seqs (a count there resets
    what the lower event could change for the higher one)."""
    return not any(low < c < high for c in st.counts_seen)


DEAD_LETTERED = "dead-lettered event"
"""Review cause of an event the stream refused; it stays open until re-driven or
resolved (a later count fixes the stock, not the missing record)."""
GAP_LIST_LIMIT = 1000
"""Most missing seqs a gap record lists (its first and last seq bound the rest)."""


def _clip(runs: list[tuple[int, int]], lo: int, hi: int) -> list[tuple[int, int]]:
    """The parts of ``runs`` inside ``[lo, hi]``."""
    return [(max(a, lo), min(b, hi)) for a, b in runs if a <= hi and b >= lo]


def _subtract(runs: list[tuple[int, int]],
              covered: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of ``runs`` outside every ``covered`` range."""
    out = []
    for a, b in runs:
        pieces = [(a, b)]
        for lo, hi in covered:
            pieces = [p for x, y in pieces for p in ((x, min(y, lo - 1)), (max(x, hi + 1), y))
                      if p[0] <= p[1]]
        out += pieces
    return sorted(out)


def _listed(parts: list[tuple[int, int]]) -> list[int]:
    """The first ``GAP_LIST_LIMIT`` seqs of some runs."""
    out: list[int] = []
    for a, b in parts:
        out.extend(range(a, min(b, a + GAP_LIST_LIMIT - len(out) - 1) + 1))
        if len(out) >= GAP_LIST_LIMIT:
            break
    return out


class SourceError(RuntimeError):
    """What the state reads (a location's history from bronze) failed: infrastructure,
    never the event's fault, so the batch is retried rather than dead-lettered."""


_NOT_THE_EVENTS_FAULT = (SourceError, MemoryError)


def _guard(history: Callable[[str, int], list[dict[str, Any]]]
           ) -> Callable[[str, int], list[dict[str, Any]]]:
    def read(loc: str, after_seq: int) -> list[dict[str, Any]]:
        try:
            return history(loc, after_seq)
        except Exception as exc:
            raise SourceError(f"reading the history of {loc} failed: {exc!r}") from exc
    return read


class _Undo:
    """What one location's events may change, saved before they apply: the location
    itself, and (as they are first touched) its review items and daily totals; the
    conflict and variance logs are cut back to their length. The catalogue and transit
    books are left alone: applying an event to them twice changes nothing."""

    def __init__(self, state: RegionState, loc: str) -> None:
        self.loc = loc
        st = state.locations.get(loc)
        self.location = None if st is None else st.copy()
        self.review: dict[tuple[str, int], dict[str, Any] | None] = {}
        self.daily: dict[tuple[str, str, str], list[int] | None] = {}
        self.conflicts = len(state.conflict_log)
        self.variances = len(state.variance_log)
        self.rejected = len(state.rejected)

    def restore(self, state: RegionState) -> None:
        if self.location is None:
            state.locations.pop(self.loc, None)
        else:
            state.locations[self.loc] = self.location
        for key, item in self.review.items():
            if item is None:
                state.review.pop(key, None)
            else:
                state.review[key] = item
        for key, row in self.daily.items():
            if row is None:
                state.daily.pop(key, None)
            else:
                state.daily[key] = row
        del state.conflict_log[self.conflicts:]
        del state.variance_log[self.variances:]
        del state.rejected[self.rejected:]


def _date(value: str | date | None) -> date | None:
    if value is None or isinstance(value, date):
        return value
    return _iso_date(value)


@functools.lru_cache(maxsize=4096)
def _iso_date(value: str) -> date:
    """A lot's expiry date: a few hundred distinct days, parsed once each (gold rows parse
    every lot's every second)."""
    return date.fromisoformat(value)
