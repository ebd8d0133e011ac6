"""What a transfer recommendation really saved, measured in the outcome simulation.

The transfer job estimates ``expected_units_saved`` for each move with its own model
(:mod:`.transfers`: demand paths drawn from the forecast). The outcome simulation knows the
demand that then came, so it can say what each recommendation did: replay the two series it
touches (the source's and the destination's lots of that SKU) over the recommender's horizon
twice, once with the move and once without, on the demand that really came, and count the
same thing the estimate counts: the larger of the two reductions, units wasted and units of
demand unmet, over both places.

Everything else that reached or left those two series in the run (warehouse stock drawn
by the stores' orders, other transfers) is replayed as it happened in both arms. The two
stores' own orders are not: they answered the stock each store held, which the move
changed. The recommender's estimate lets both places keep ordering (an order-up-to on
the forecast at the job's service level), so the replay does too. From the decision day
on, both arms drop the run's orders of the two stores and ask the reorders job itself,
each day, what each store orders on the stock it holds in that arm (:func:`replay_ordering`; in the
simulation, :meth:`.outcomes.RealTime.replay_orders`). That is ``measured_units``.
``measured_frozen`` keeps every order as the run placed it, in both arms, and is reported
beside it. For a move that shipped it errs both ways: the stores' later orders counted
the move, so the arm without it runs short at the destination (crediting the move) and
holds both the lot and its replacement at the source (charging it). A move out of a
warehouse stays frozen: the destination's orders draw on that warehouse, the move's own
source.

Selling and spoiling are :func:`sell_fefo` and :func:`spoil`, the same functions the
simulation's own trading day calls.

Also not modelled: the recommender values each move as if the better-ranked moves of the
day were made, while the replay keeps only those that shipped; a recorded outflow that
finds its lot short in an arm takes what is there (:func:`take_lot`); a move that did
not ship is placed before the day's real moves, not at its rank; and an order placed
again arrives fresh from the supplier, where the run fills a store's order from its
warehouse's lots first.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np


@dataclass
class Lot:
    """Units of one cohort at one place; ``expires`` is the day index it is usable through."""

    lot: str
    expires: int
    quantity: int
    transferred: bool = False


def sell_fefo(lots: list[Lot], want: int, day: int, last_ok: int) -> int:
    """Sell up to ``want`` units first-expiry-first from lots still sellable on ``day``
    (at least ``last_ok`` days of life left); returns the demand left unmet."""
    left = want
    lots.sort(key=lambda x: x.expires)
    for lot in lots:
        if left <= 0:
            break
        if lot.quantity > 0 and lot.expires - last_ok >= day:
            take = min(lot.quantity, left)
            lot.quantity -= take
            left -= take
    return left


def spoil(lots: list[Lot], day: int, pull: int) -> list[Lot]:
    """Remove and return the lots that can no longer be sold after ``day`` (``pull`` days
    before expiry at a store, at expiry in a warehouse); empty lots go too."""
    gone = [lot for lot in lots if lot.quantity > 0 and lot.expires - pull <= day]
    lots[:] = [lot for lot in lots if lot.quantity > 0 and lot.expires - pull > day]
    return gone


def take_lot(lots: list[Lot], lot_id: str | None, quantity: int) -> list[Lot]:
    """Take up to ``quantity`` units of ``lot_id`` (or the oldest, when None) from
    ``lots``, oldest first; returns the pieces taken."""
    taken = []
    for lot in sorted(lots, key=lambda x: x.expires):
        if quantity <= 0:
            break
        if lot.quantity <= 0 or (lot_id is not None and lot.lot != lot_id):
            continue
        n = min(lot.quantity, quantity)
        lot.quantity -= n
        quantity -= n
        taken.append(Lot(lot.lot, lot.expires, n))
    return taken


@dataclass(frozen=True)
class Flow:
    """Units that reached (``quantity`` > 0) or left (< 0) a series on ``day``; ``tag`` is
    the recommendation a transfer's two flows belong to."""

    seq: int
    day: int
    lot: str
    expires: int
    quantity: int
    tag: int | None = None


@dataclass
class Recommendation:
    """One recommendation as the simulation saw it, with the stock it was made on."""

    tag: int
    day: int
    source: str
    destination: str
    sku: str
    lot: str
    quantity: int
    arrive: int
    estimated_units: float
    estimated_value: float
    shipped: bool = False
    start: dict[str, list[Lot]] = field(default_factory=dict)
    """Lots of the source and destination series when the day's transfers were decided."""
    moved: int = 0
    """Units the run moved (0 for a recommendation that did not ship)."""
    measured_units: float | None = None
    measured_frozen: float | None = None
    """What the replay measures with every order as the run placed it, in both arms (see
    :func:`measure`)."""
    replay_matches_run: bool | None = None
    """For a move that shipped: whether its replay with the move gave what the run did."""
    parts: dict[str, float] = field(default_factory=dict)
    """Where the measured units came from (source waste avoided, destination waste
    added, ...), summed by :func:`where_it_went`."""
    estimated_parts: dict[str, float] = field(default_factory=dict)
    """The same parts as the recommender estimated them (mean units over its paths)."""


class Trace:
    """The flows of every series in one policy's run, and its recommendations."""

    def __init__(self) -> None:
        self.flows: dict[tuple[str, str], list[Flow]] = defaultdict(list)
        self.recommendations: list[Recommendation] = []
        self.outcomes: dict[tuple[str, str], dict[int, tuple[int, int]]] = defaultdict(dict)
        """(units wasted, units unmet) per series and day, as the run had them: a replay of
        a move that shipped must give the same (:func:`measure` counts the matches)."""
        self._seq = 0

    def flow(self, location: str, sku: str, day: int, lot: Lot, quantity: int,
             tag: int | None = None) -> None:
        """Record ``quantity`` units of ``lot`` reaching (> 0) or leaving (< 0) a series."""
        self._seq += 1
        self.flows[(location, sku)].append(
            Flow(self._seq, day, lot.lot, lot.expires, quantity, tag))

    def outcome(self, location: str, sku: str, day: int, wasted: int, unmet: int) -> None:
        """Record what a series wasted and left unmet on ``day`` in the run."""
        if wasted or unmet:
            self.outcomes[(location, sku)][day] = (wasted, unmet)

    def ran(self, rec: Recommendation, horizon: int) -> tuple[float, float]:
        """(units wasted, units unmet) of ``rec``'s two series over its horizon in the run."""
        wasted = unmet = 0.0
        for loc in {rec.source, rec.destination}:
            days = self.outcomes.get((loc, rec.sku), {})
            for day in range(rec.day, rec.day + horizon):
                w, u = days.get(day, (0, 0))
                wasted, unmet = wasted + w, unmet + u
        return wasted, unmet

    def recommend(self, rec: Recommendation, lots: Mapping[tuple[str, str], list[Lot]]) -> None:
        """Keep ``rec`` with copies of its two series' lots as they are now."""
        for loc in (rec.source, rec.destination):
            rec.start[loc] = [replace(x) for x in lots.get((loc, rec.sku), ()) if x.quantity > 0]
        self.recommendations.append(rec)


@dataclass(frozen=True)
class OrderRequest:
    """A store's order to decide on one day of a replay (see :data:`DecideOrders`)."""

    key: str
    """The same in both arms of one recommendation, and unique within an arm's day."""
    location: str
    sku: str
    lots: tuple[Lot, ...]
    coming: tuple[tuple[int | None, int], ...]
    """(expires, units) on their way to it: its replayed orders (no expiry known, as for
    an order in the jobs) and the transfers due tomorrow (their lot's)."""


DecideOrders = Callable[[int, Sequence[OrderRequest]], Sequence[int]]
"""``(day, requests)`` -> the units each store orders that day (the reorders job, in the
outcome simulation); they arrive ``lead`` days later as a fresh lot."""


def replay_by_place(rec: Recommendation, trace: Trace, *, shipped: bool,
                    demand: Mapping[str, np.ndarray | None], last_ok: int,
                    horizon: int) -> dict[str, tuple[float, float]]:
    """(units wasted, units of demand unmet) per location of ``rec``'s source and
    destination, days ``rec.day`` to ``rec.day + horizon - 1``, with or without its move,
    every order as the run placed it; ``demand`` per location (None for a warehouse: it
    sells nothing and spoils at expiry)."""
    arm = _Arm(rec, trace, shipped=shipped, demand=demand, last_ok=last_ok, horizon=horizon)
    for day in range(rec.day, rec.day + horizon):
        arm.arrive(day)
        arm.trade(day)
    return arm.result()


class _Arm:
    """One arm of one recommendation's replay, a day at a time. With ``orders`` (the
    SKU's lead time and shelf life) the two stores' own orders from the decision day on
    are left out and placed again by :meth:`order`, as the reorders job decides them on
    the arm's stock; without, every order arrives as the run placed it."""

    def __init__(self, rec: Recommendation, trace: Trace, *, shipped: bool,
                 demand: Mapping[str, np.ndarray | None], last_ok: int, horizon: int,
                 orders: tuple[int, int] | None = None) -> None:
        self.rec, self.shipped, self.demand, self.last_ok = rec, shipped, demand, last_ok
        self.lead, self.life = orders if orders is not None else (0, 0)
        self.lots = {loc: [replace(x) for x in start] for loc, start in rec.start.items()}
        stores = {loc for loc in self.lots if demand.get(loc) is not None}
        flows: list[tuple[int, int, str, Flow]] = []
        for loc in self.lots:
            for f in trace.flows.get((loc, rec.sku), ()):
                if not rec.day <= f.day < rec.day + horizon:
                    continue
                if f.tag == rec.tag and not shipped:
                    continue  # the move as the run made it, left out of the arm without it
                if f.quantity > 0 and f.day == rec.day:
                    continue  # arrived before the decision: in the starting lots already
                if (orders is not None and loc in stores and f.tag is None
                        and f.quantity > 0 and f.day >= rec.day + self.lead):
                    continue  # the run's own order from the decision day on: placed again
                flows.append((f.day, f.seq, loc, f))
        if shipped and not rec.shipped:  # the move the run did not make, made here
            flows.append((rec.day, -1, rec.source,
                          Flow(-1, rec.day, rec.lot, 0, -rec.quantity)))
            flows.append((rec.arrive, -1, rec.destination,
                          Flow(-1, rec.arrive, rec.lot, 0, 0)))
        flows.sort(key=lambda x: (x[0], x[1]))
        self.flows, self.k = flows, 0
        self.moved: list[Lot] = []
        self.placed: list[tuple[int, str, Lot]] = []  # (arrival day, store, lot)
        self.out = {loc: [0.0, 0.0] for loc in self.lots}

    def arrive(self, day: int) -> None:
        """What reaches or leaves the two series at the start of ``day``."""
        while self.k < len(self.flows) and self.flows[self.k][0] == day:
            _, seq, loc, f = self.flows[self.k]
            self.k += 1
            if seq == -1 and f.quantity < 0:  # the move itself leaves the source
                self.moved = take_lot(self.lots[loc], f.lot, -f.quantity)
            elif seq == -1:  # ...and reaches the destination
                self.lots[loc] += [replace(x, transferred=True) for x in self.moved]
            elif f.quantity > 0:
                self.lots[loc].append(Lot(f.lot, f.expires, f.quantity))
            else:
                take_lot(self.lots[loc], f.lot, -f.quantity)
        for arrive, loc, lot in self.placed:
            if arrive == day:
                self.lots[loc].append(lot)

    def requests(self, day: int) -> list[OrderRequest]:
        """The stores' orders to decide today, after the day's arrivals and moves."""
        out = []
        for loc, held in self.lots.items():
            if self.demand.get(loc) is None:
                continue
            coming: list[tuple[int | None, int]] = [
                (None, lot.quantity) for arrive, at, lot in self.placed
                if at == loc and arrive > day]
            for d, seq, at, f in self.flows[self.k:]:
                if at != loc or f.quantity <= 0 or seq < 0:
                    continue
                if f.tag is None:  # an order the run placed before the decision day
                    coming.append((None, f.quantity))
                elif f.tag == self.rec.tag or d == day + 1:
                    # the move itself from the day it left; another transfer the day
                    # before it lands (in the simulation every transfer lands next day)
                    coming.append((f.expires, f.quantity))
            if (self.shipped and not self.rec.shipped and loc == self.rec.destination
                    and self.rec.day <= day < self.rec.arrive):  # the move made here
                coming += [(x.expires, x.quantity) for x in self.moved]
            out.append(OrderRequest(f"{self.rec.tag}:{loc}", loc, self.rec.sku,
                                    tuple(replace(x) for x in held if x.quantity > 0),
                                    tuple(coming)))
        return out

    def order(self, location: str, day: int, quantity: int) -> None:
        if quantity > 0:
            arrive = day + self.lead
            self.placed.append((arrive, location,
                                Lot(f"R{day}", arrive + self.life - 1, int(quantity))))

    def trade(self, day: int) -> None:
        """The day's sales (FEFO) and what stops being sellable."""
        for loc, held in self.lots.items():
            want = self.demand.get(loc)
            if want is not None:
                self.out[loc][1] += sell_fefo(held, int(want[day]), day, self.last_ok)
            pull = self.last_ok if want is not None else 0
            self.out[loc][0] += sum(x.quantity for x in spoil(held, day, pull))

    def result(self) -> dict[str, tuple[float, float]]:
        return {loc: (w, u) for loc, (w, u) in self.out.items()}


def replay_ordering(recs: Sequence[Recommendation], trace: Trace, *,
                    demand_of: Callable[[str, str], np.ndarray | None],
                    last_ok_of: Callable[[str], int], horizon: int,
                    reorder_of: Callable[[str], tuple[int, int]], decide: DecideOrders
                    ) -> dict[int, dict[bool, dict[str, tuple[float, float]]]]:
    """Both arms of every recommendation in ``recs``, with both stores ordering each day
    as ``decide`` (the reorders job) answers their stock in that arm: {tag: {arm: places}}.

    All replays advance together a day at a time, so each day's orders are one call per
    arm; a store keeps the same key in both arms, so the job draws the same demand paths
    for it in each."""
    arms = {(rec.tag, flag): _Arm(rec, trace, shipped=flag,
                                  demand={loc: demand_of(loc, rec.sku)
                                          for loc in (rec.source, rec.destination)},
                                  last_ok=last_ok_of(rec.sku), horizon=horizon,
                                  orders=reorder_of(rec.sku))
            for rec in recs for flag in (True, False)}
    if not arms:
        return {}
    first = min(rec.day for rec in recs)
    last = max(rec.day for rec in recs) + horizon
    for day in range(first, last):
        live = [a for a in arms.values() if a.rec.day <= day < a.rec.day + horizon]
        for a in live:
            a.arrive(day)
        for flag in (True, False):
            asked = [(a, r) for a in live if a.shipped == flag for r in a.requests(day)]
            if asked:
                got = decide(day, [r for _, r in asked])
                for (a, r), quantity in zip(asked, got, strict=True):
                    a.order(r.location, day, int(quantity))
        for a in live:
            a.trade(day)
    out: dict[int, dict[bool, dict[str, tuple[float, float]]]] = defaultdict(dict)
    for (tag, flag), a in arms.items():
        out[tag][flag] = a.result()
    return out


def measure(trace: Trace, demand_of: Callable[[str, str], np.ndarray | None],
            last_ok_of: Callable[[str], int], *, horizon: int, last_day: int,
            reorder_of: Callable[[str], tuple[int, int]] | None = None,
            decide: DecideOrders | None = None) -> list[Recommendation]:
    """Fill ``measured_units`` of every recommendation whose horizon ends by ``last_day``
    (the ones after it are left unmeasured); returns those measured.

    ``demand_of(location, sku)`` gives a store series' daily demand (None for a warehouse),
    ``last_ok_of(sku)`` its minimum sellable days. ``measured_frozen`` replays every order
    as the run placed it. With ``reorder_of(sku)`` (lead time, shelf life) and ``decide``
    (:data:`DecideOrders`), ``measured_units`` replays both stores ordering as the job
    answers each arm's stock (:func:`replay_ordering`); without, and for a move out of a
    warehouse, it is the frozen one."""
    done = []
    for rec in trace.recommendations:
        if rec.day + horizon - 1 > last_day:
            continue
        demand = {loc: demand_of(loc, rec.sku) for loc in (rec.source, rec.destination)}
        frozen = {arm: replay_by_place(rec, trace, shipped=arm, demand=demand,
                                       last_ok=last_ok_of(rec.sku), horizon=horizon)
                  for arm in (True, False)}
        rec.measured_frozen = rec.measured_units = _saved(frozen)
        rec.parts = _parts(rec, frozen)
        if rec.shipped:
            rec.replay_matches_run = _totals(frozen[True]) == trace.ran(rec, horizon)
        done.append(rec)
    # A store's order is filled from its warehouse first, so when the source is one the
    # orders decided again would draw on the source itself: such moves stay frozen.
    ordering = [rec for rec in done if demand_of(rec.source, rec.sku) is not None]
    if reorder_of is not None and decide is not None and ordering:
        replays = replay_ordering(ordering, trace, demand_of=demand_of,
                                  last_ok_of=last_ok_of, horizon=horizon,
                                  reorder_of=reorder_of, decide=decide)
        for rec in ordering:
            rec.measured_units = _saved(replays[rec.tag])
            rec.parts = _parts(rec, replays[rec.tag])
    return done


def _parts(rec: Recommendation, places: Mapping[bool, Mapping[str, tuple[float, float]]]
           ) -> dict[str, float]:
    """Where a replay's units saved came from, per place and kind."""
    src, dst = places[True][rec.source], places[True][rec.destination]
    src0, dst0 = places[False][rec.source], places[False][rec.destination]
    return {"source_waste_avoided": src0[0] - src[0],
            "destination_waste_added": dst[0] - dst0[0],
            "destination_unmet_avoided": dst0[1] - dst[1],
            "source_unmet_added": src[1] - src0[1]}


def _totals(places: Mapping[str, tuple[float, float]]) -> tuple[float, float]:
    """(units wasted, units unmet) over both places of one arm."""
    return (sum(w for w, _ in places.values()), sum(u for _, u in places.values()))


def _saved(places: Mapping[bool, Mapping[str, tuple[float, float]]]) -> float:
    """The larger of the two reductions, waste and unmet demand, from the arm without the
    move to the arm with it."""
    with_move, without = _totals(places[True]), _totals(places[False])
    return max(without[0] - with_move[0], without[1] - with_move[1])


def where_it_went(recs: Iterable[Recommendation]) -> dict[str, float]:
    """The measured parts summed over ``recs``, with the units moved and estimated, and
    each part as the recommender estimated it (``estimated_<part>``)."""
    recs = list(recs)
    out = {"units_moved": float(sum(r.moved if r.shipped else r.quantity for r in recs)),
           "estimated_units": round(sum(r.estimated_units for r in recs), 1)}
    for r in recs:
        for k, v in r.parts.items():
            out[k] = out.get(k, 0.0) + v
        for k, v in r.estimated_parts.items():
            out[f"estimated_{k}"] = round(out.get(f"estimated_{k}", 0.0) + v, 1)
    return out


def decile_errors(recs: Sequence[Recommendation], deciles: int = 10, *,
                  frozen: bool = False) -> list[dict[str, Any]]:
    """Per decile of estimated value (lowest first): how many, units estimated and
    measured, and the error (measured / estimated - 1); ``frozen`` takes the replay with
    every order as the run placed it."""
    ordered = sorted(recs, key=lambda r: r.estimated_value)
    out = []
    for d in range(deciles):
        part = ordered[len(ordered) * d // deciles: len(ordered) * (d + 1) // deciles]
        if not part:
            continue
        est = sum(r.estimated_units for r in part)
        got = sum((r.measured_frozen if frozen else r.measured_units) or 0.0 for r in part)
        out.append({"decile": d + 1, "recommendations": len(part),
                    "value_from": round(part[0].estimated_value, 2),
                    "value_to": round(part[-1].estimated_value, 2),
                    "estimated_units": round(est, 1), "measured_units": round(got, 1),
                    "error": round(got / est - 1, 4) if est else None})
    return out


def worst_error(rows: Iterable[Mapping[str, Any]]) -> float | None:
    """The decile error farthest from zero, signed; None without any."""
    errors = [r["error"] for r in rows if r["error"] is not None and math.isfinite(r["error"])]
    return max(errors, key=abs) if errors else None
