"""Transfer recommendations: move lots that will expire unsold to where they will sell.

Pure pandas/numpy on frames shaped like the gold tables; the batch runner reads and writes
the Delta tables. Every number comes from :mod:`spark_jobs.decisions.shelf`'s FEFO Monte Carlo, run
on the same demand paths before and after each move, so a before/after difference is the
move's effect, not sampling noise.

How a recommendation is found, greedily over the whole network:

* **Candidates.** A *source* lot has surplus: its expected waste when it stops being
  sellable within the horizon, or (a lot selling past the horizon) the units expected left
  at the horizon beyond what the source's last forecast day sells in the rest of the lot's
  life. A warehouse sells nothing, but its stores' reorders empty it: unless told
  otherwise (``warehouses_supply_reorders=False``), a warehouse without a forecast of its
  own drains at its share of its region's store forecasts (:func:`warehouse_outflow`), so
  only what those reorders will not draw before it expires is surplus. (Without this,
  every unit in a warehouse counted as doomed and nearly every unit moved out of one
  counted as saved; the outcome simulation, ``bench/outcomes.py``, measured the
  difference.) A *destination* is a store with expected unmet demand (stock in transit to
  it counts as cover); a warehouse running short is its supplier's business, not a lost
  sale. For each route in ``transit`` (a missing pair is no route) the source's lots are
  tried oldest first (FEFO), skipping any lot whose shelf life on the destination's shelf
  (after transit and handling) would be below the ``policy`` minimum for its category and
  the destination's kind: that rule is never broken. ``quantity`` = whole units of
  min(surplus, the destination's expected unmet demand within the lot's sellable window
  there, the lot's units); this shortfall is taken from the stock as it stands, without
  the destination's coming orders, because a moved unit that sells there takes the place
  of a unit it would otherwise order.
* **Value.** ``expected_units_saved`` is the mean, over the shared demand paths, of the
  larger of two network (source + destination) reductions: units wasted and units of demand
  unmet. A unit that would have spoiled at the source and now sells at the destination
  lowers both by one and counts once; a unit that only fills demand (fresh stock) or only
  escapes waste counts once too; losses (sales the source now misses, or destination stock
  pushed into waste) count against it. Both places keep placing their own daily orders in
  these runs (``ShelfModel.run(reorders=True)``: an order-up-to on the forecast, arriving
  after the SKU's lead time), so a destination's shortfall counts only until its own
  deliveries would have covered it, and a moved lot that sells there displaces what it
  would have ordered. Without the orders, the outcome simulation measured the destination's
  avoided shortfall at under half of what the estimates claimed (``bench/outcomes.py``,
  docs/outcomes.md). ``value_saved`` = units saved x price;
  ``transfer_cost`` = quantity x cost_per_unit. A move is recommended only when it saves at
  least one unit and is worth more than it costs.
* **Greedy.** The best net value (value_saved - transfer_cost) goes first. Accepted moves
  are applied (the lot leaves the source; it arrives at the destination at ``arrival_at``),
  both series are simulated again, and the candidates that touched them are found again,
  so no two recommendations spend the same units. A destination's need is also a budget:
  never more than its original expected shortfall in the window less what was already sent
  for an overlapping window, so the upper tail of demand does not draw a second, tiny
  delivery. A location that receives a SKU does not also send it, and vice versa. Series
  are independent, so the loop runs in rounds: each takes every best fresh candidate whose
  source and destination no better candidate of the round touched.

``arrival_at`` is when the units are on the destination's shelf (transit plus handling):
the moment ``shelf_life_at_arrival_days`` is measured at.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa

from lakehouse.catalogue import TRANSFER_RECOMMENDATIONS
from lakehouse.naming import LOCATION_KINDS

from .shelf import (
    IN_TRANSIT_LOT,
    SERVICE_LEVEL,
    Lot,
    Outcome,
    ServiceLevels,
    ShelfModel,
    check_now,
    life_end_days,
    require_columns,
)

DECISION_COLUMNS = ("decided_by", "decided_at")
"""Columns of gold ``transfer_recommendations`` the transfers job fills in, not this module."""
TRANSFERS_SCHEMA = pa.schema([f for f in TRANSFER_RECOMMENDATIONS.schema
                              if f.name not in DECISION_COLUMNS])
"""What :func:`recommend_transfers` returns: the table's columns less the decisions."""
COLUMNS = TRANSFERS_SCHEMA.names
TRANSIT_COLUMNS = ("source", "destination", "transit_hours", "cost_per_unit")
POLICY_COLUMNS = ("category", "destination_kind", "min_sellable_days", "handling_hours")
ESTIMATE_PARTS = ("source_waste_avoided", "destination_waste_added",
                  "destination_unmet_avoided", "source_unmet_added")
"""What an estimate is made of, in mean units over the demand paths; with ``explain=True``
each is a column ``estimated_<part>``, named as the outcome simulation names what it
measures, so the two can be set side by side."""
CANDIDATES_PER_LOCATION = 3
"""Routes per source (and per destination) kept for simulation, best first by a quick
estimate (units x (price - cost per unit)); the rest wait until a move changes the state."""


@dataclass(frozen=True)
class _Route:
    other: str
    hours: float
    cost: float


@dataclass
class _Candidate:
    src: int
    dst: int
    lot_ix: int
    quantity: int
    route_hours: float
    route_cost: float
    handling: float
    min_days: float
    arrive: float       # days after now, on the shelf
    life_at_arrival: float
    need: float
    versions: tuple[int, int]
    estimate: float
    metrics: dict[str, float] | None = None


def empty_transfers() -> pd.DataFrame:
    """A frame with the output columns and no rows."""
    return TRANSFERS_SCHEMA.empty_table().to_pandas()


def recommend_transfers(cohorts: pd.DataFrame, forecasts: pd.DataFrame,
                        locations: pd.DataFrame, transit: pd.DataFrame, policy: pd.DataFrame,
                        items: pd.DataFrame, *, in_transit: pd.DataFrame | None = None,
                        now: datetime, horizon_days: float = 7, paths: int = 1000,
                        seed: int = 0, warehouses_supply_reorders: bool = True,
                        explain: bool = False,
                        service_level: ServiceLevels = SERVICE_LEVEL) -> pd.DataFrame:
    """Lots to move between locations, best value first (columns :data:`TRANSFERS_SCHEMA`).

    Frames are shaped like gold ``stock_cohorts`` and ``demand_forecasts`` plus the reference
    tables; ``now`` is an aware datetime. Rows come in the order they were accepted.
    ``warehouses_supply_reorders``: warehouses are drained by their stores' reorders (see the
    module doc); False treats their stock as leaving by transfer only. ``explain`` adds the
    parts of each estimate (:data:`ESTIMATE_PARTS`) as columns. ``service_level`` is the
    reorders job's: the stores' own orders in each what-if aim for it.
    """
    now = check_now(now)
    if warehouses_supply_reorders:
        outflow = warehouse_outflow(forecasts, locations)
        if len(outflow):
            forecasts = pd.concat([forecasts, outflow[[c for c in outflow
                                                       if c in forecasts]]],
                                  ignore_index=True)
    routes = _routes(transit)
    rules = _policy(policy)
    model = ShelfModel(cohorts, forecasts, locations, items, in_transit=in_transit, now=now,
                       horizon_days=horizon_days, paths=paths, seed=seed,
                       service_level=service_level)
    if not len(model.series) or not routes:
        return empty_transfers()
    return _Greedy(model, routes, rules).run(explain=explain)


def warehouse_outflow(forecasts: pd.DataFrame, locations: pd.DataFrame) -> pd.DataFrame:
    """Forecast rows for each warehouse that has none of its own: per SKU and day, its share
    (split evenly between a region's warehouses) of the region's store forecasts - the
    reorders that will draw its stock."""
    cols = ["region", "location_id", "sku", "forecast_date", "forecast", "lower", "upper",
            "model"]
    kind = locations.astype({"location_id": str}).set_index("location_id")
    houses = kind[kind["kind"] == "warehouse"]
    own = set(forecasts["location_id"].astype(str))
    houses = houses[~houses.index.isin(own)]
    if houses.empty or forecasts.empty:
        return pd.DataFrame(columns=cols)
    region = forecasts["location_id"].astype(str).map(kind["region"])
    is_store = forecasts["location_id"].astype(str).map(kind["kind"]).fillna("store") == "store"
    stores = forecasts[is_store].assign(_region=region[is_store])
    total = stores.groupby(["_region", "sku", "forecast_date"], as_index=False)[
        ["forecast", "lower", "upper"]].sum()
    share = houses.groupby("region").size()
    out = total.merge(houses.reset_index()[["location_id", "region"]], left_on="_region",
                      right_on="region")
    for col in ("forecast", "lower", "upper"):
        out[col] = out[col] / out["region"].map(share)
    out["model"] = "warehouse_outflow"
    return out[cols]


def _routes(transit: pd.DataFrame) -> dict[str, list[_Route]]:
    transit = require_columns(transit, TRANSIT_COLUMNS, "transit")
    out: dict[str, dict[str, _Route]] = defaultdict(dict)
    for r in transit[list(TRANSIT_COLUMNS)].itertuples(index=False):
        for name in ("transit_hours", "cost_per_unit"):
            value = getattr(r, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name}: expected a finite number >= 0 for route "
                                 f"{r.source}->{r.destination} (got {value!r})")
        if str(r.source) != str(r.destination):
            out[str(r.source)][str(r.destination)] = _Route(
                str(r.destination), float(r.transit_hours), float(r.cost_per_unit))
    return {k: list(v.values()) for k, v in out.items()}


def _policy(policy: pd.DataFrame) -> dict[tuple[str, str], tuple[float, float]]:
    policy = require_columns(policy, POLICY_COLUMNS, "policy")
    rules = {}
    for r in policy[list(POLICY_COLUMNS)].itertuples(index=False):
        if r.destination_kind not in LOCATION_KINDS:
            raise ValueError(f"destination_kind: expected one of {', '.join(LOCATION_KINDS)} "
                             f"(got {r.destination_kind!r})")
        for name in ("min_sellable_days", "handling_hours"):
            value = getattr(r, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name}: expected a finite number >= 0 for "
                                 f"{r.category}/{r.destination_kind} (got {value!r})")
        rules[(str(r.category), str(r.destination_kind))] = (float(r.min_sellable_days),
                                                             float(r.handling_hours))
    return rules


class _Greedy:
    """Network state (each series' lots and latest simulation) and the candidate heap."""

    def __init__(self, model: ShelfModel, routes: dict[str, list[_Route]],
                 rules: dict[tuple[str, str], tuple[float, float]]) -> None:
        self.model, self.routes, self.rules = model, routes, rules
        s = model.series
        self.loc = s["location_id"].tolist()
        self.sku = s["sku"].tolist()
        self.kind = s["kind"].tolist()
        self.region = s["region"].tolist()
        self.category = s["category"].fillna("").astype(str).tolist()
        self.price = s["price"].to_numpy(dtype=float)
        self.sell_min = s["sell_min_days"].to_numpy(dtype=float)
        self.item_min = s["min_sellable_days"].fillna(0).to_numpy(dtype=float)
        self.is_store = (s["kind"] == "store").to_numpy()
        n = len(s)
        self.lots = list(model.lots)
        self.version = [0] * n
        self.sent = np.zeros(n, dtype=bool)
        self.received = np.zeros(n, dtype=bool)
        self.used: set[tuple[int, int, str]] = set()
        self.delivered: dict[int, list[tuple[float, float, int]]] = defaultdict(list)
        self.out_routes: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        base = model.baseline()
        # Values are weighed with the stores' own daily orders in the model (see the
        # module doc); candidates are sized on the stock as it stands.
        own = model.run(list(enumerate(model.lots)), reorders=True)
        self.valued: list[tuple[Outcome, int]] = [(own, i) for i in range(n)]
        self.horizon = base.horizon
        self.first_t, self.first_c = base.times.copy(), base.cum_unmet.copy()
        self.t, self.c = base.times.copy(), base.cum_unmet.copy()
        self.unmet = base.unmet_paths.mean(axis=1).astype(float)
        self.state: list[tuple[Outcome, int]] = [(base, i) for i in range(n)]
        self.spare = [self._surplus(i) for i in range(n)]
        self.heap: list[tuple[float, int, _Candidate]] = []
        self.counter = 0

    # --- state ----------------------------------------------------------------------------

    def _surplus(self, i: int) -> list[float]:
        """Per lot of series ``i``: units it will likely not sell (see the module doc)."""
        out, j = self.state[i]
        rate = float(self.model.mean[i, -1])
        spare = []
        for m, lot in enumerate(self.lots[i]):
            if lot.sellable_from > 0 or lot.lot == IN_TRANSIT_LOT or lot.quantity < 1:
                spare.append(0.0)
            elif lot.sellable_until <= out.horizon:
                spare.append(float(out.waste[j, m]))
            else:
                later = rate * (lot.sellable_until - out.horizon) if rate > 0 else 0.0
                spare.append(max(0.0, float(out.left[j, m]) - later))
        return spare

    def _set_state(self, i: int, out: Outcome, j: int) -> None:
        self.state[i] = (out, j)
        width = out.times.shape[1]
        if width > self.t.shape[1]:
            grow = width - self.t.shape[1]
            self.t = np.pad(self.t, ((0, 0), (0, grow)), mode="edge")
            self.c = np.pad(self.c, ((0, 0), (0, grow)), mode="edge")
            self.first_t = np.pad(self.first_t, ((0, 0), (0, grow)), mode="edge")
            self.first_c = np.pad(self.first_c, ((0, 0), (0, grow)), mode="edge")
        self.t[i, :width], self.t[i, width:] = out.times[j], out.times[j, -1]
        self.c[i, :width], self.c[i, width:] = out.cum_unmet[j], out.cum_unmet[j, -1]
        self.unmet[i] = float(out.unmet_paths[j].mean())
        self.version[i] += 1
        self.spare[i] = self._surplus(i)

    def need(self, dst: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
        """Expected unmet demand of each ``dst`` in [start, end]: as simulated now, and never
        more than the original shortfall less what was already sent for an overlapping
        window (a need filled once is not filled again by the upper tail of demand)."""
        start = np.clip(start, 0.0, self.horizon)
        end = np.clip(end, 0.0, self.horizon)
        now = _interp(self.t, self.c, dst, end) - _interp(self.t, self.c, dst, start)
        first = (_interp(self.first_t, self.first_c, dst, end)
                 - _interp(self.first_t, self.first_c, dst, start))
        sent = np.array([sum(q for a, b, q in self.delivered.get(d, ()) if a < e and s < b)
                         for d, s, e in zip(dst.tolist(), start.tolist(), end.tolist(),
                                            strict=True)]) if self.delivered else 0.0
        return np.where(end > start, np.maximum(0.0, np.minimum(now, first - sent)), 0.0)

    def rule(self, category: str, kind: str, sku_min: float) -> tuple[float, float]:
        """(min_sellable_days, handling_hours); without a policy row a store keeps the
        SKU's own minimum and handling counts as zero hours."""
        return self.rules.get((category, kind), (sku_min if kind == "store" else 0.0, 0.0))

    # --- candidates -----------------------------------------------------------------------

    def _routes_of(self, src: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if src not in self.out_routes:
            index, sku = self.model.index, self.sku[src]
            found = [(index[(r.other, sku)], r.hours, r.cost)
                     for r in self.routes.get(self.loc[src], ())
                     if (r.other, sku) in index]
            self.out_routes[src] = (np.array([f[0] for f in found], dtype=int),
                                    np.array([f[1] for f in found], dtype=float),
                                    np.array([f[2] for f in found], dtype=float))
        return self.out_routes[src]

    def candidates_from(self, src: int) -> list[_Candidate]:
        """Per route from ``src``: the oldest eligible lot the destination needs, sized;
        the best few of them by a quick estimate."""
        spare = self.spare[src]
        if self.received[src] or not np.isfinite(self.price[src]) or max(spare, default=0) < 1:
            return []
        dst, hours, cost = self._routes_of(src)
        keep = (~self.sent[dst]) & (self.unmet[dst] >= 1) & (dst != src) & self.is_store[dst]
        if not keep.any():
            return []
        dst, hours, cost = dst[keep], hours[keep], cost[keep]
        rules = {k: self.rule(self.category[src], k, float(self.item_min[src]))
                 for k in LOCATION_KINDS}
        store = self.is_store[dst]
        min_days = np.where(store, rules["store"][0], rules["warehouse"][0])
        handling = np.where(store, rules["store"][1], rules["warehouse"][1])
        arrive = (hours + handling) / 24.0
        chosen = np.full(len(dst), -1)
        quantity = np.zeros(len(dst), dtype=int)
        need = np.zeros(len(dst))
        for m, lot in enumerate(self.lots[src]):
            if spare[m] < 1:
                continue
            life_end = life_end_days(lot.expires_on, self.model.now)
            # The hard rule: never below the destination's minimum shelf life on arrival.
            ok = (chosen < 0) & (life_end - arrive >= min_days - 1e-9)
            if self.used:
                ok &= np.array([(src, d, lot.lot) not in self.used for d in dst.tolist()])
            idx = np.flatnonzero(ok)
            if not len(idx):
                continue
            wanted = self.need(dst[idx], arrive[idx], life_end - self.sell_min[dst[idx]])
            q = np.floor(np.minimum(np.minimum(wanted, spare[m]), lot.quantity) + 1e-9)
            good = q >= 1
            chosen[idx[good]], quantity[idx[good]] = m, q[good]
            need[idx[good]] = wanted[good]
        estimate = quantity * (float(self.price[src]) - cost)
        picks = [k for k in np.argsort(-estimate, kind="stable")[:CANDIDATES_PER_LOCATION]
                 if chosen[k] >= 0 and estimate[k] > 0]
        out = []
        for k in picks:
            lot = self.lots[src][chosen[k]]
            life = life_end_days(lot.expires_on, self.model.now) - arrive[k]
            d = int(dst[k])
            out.append(_Candidate(src, d, int(chosen[k]), int(quantity[k]), float(hours[k]),
                                  float(cost[k]), float(handling[k]), float(min_days[k]),
                                  float(arrive[k]), float(life), float(need[k]),
                                  (self.version[src], self.version[d]), float(estimate[k])))
        return out

    def evaluate(self, cands: list[_Candidate]) -> None:
        """Simulate each candidate's source and destination with the move applied; push the
        ones that qualify."""
        if not cands:
            return
        scenarios = []
        for c in cands:
            src_lots, dst_lots = self._moved(c)
            scenarios += [(c.src, src_lots), (c.dst, dst_lots)]
        out = self.model.run(scenarios, reorders=True)
        for n, c in enumerate(cands):
            before_s, js = self.valued[c.src]
            before_d, jd = self.valued[c.dst]
            # Lost sales happen at stores; a warehouse short of stock sends its stores'
            # orders to the supplier instead.
            lost = float(self.is_store[c.src])
            parts = (before_s.waste_paths[js] - out.waste_paths[2 * n],
                     out.waste_paths[2 * n + 1] - before_d.waste_paths[jd],
                     before_d.unmet_paths[jd] - out.unmet_paths[2 * n + 1],
                     lost * (out.unmet_paths[2 * n] - before_s.unmet_paths[js]))
            # per path, the larger of the two network reductions: waste and unmet demand
            saved = float(np.maximum(parts[0] - parts[1], parts[2] - parts[3]).mean())
            cost = c.quantity * c.route_cost
            value = saved * float(self.price[c.src])
            c.metrics = {
                "waste_prob_source_before": float(before_s.waste_prob[js, c.lot_ix]),
                "waste_prob_source_after": float(out.waste_prob[2 * n, c.lot_ix]),
                "waste_prob_destination": float(out.waste_prob[2 * n + 1,
                                                               len(self.lots[c.dst])]),
                "expected_units_saved": saved, "transfer_cost": cost, "value_saved": value,
                **{f"estimated_{k}": float(v.mean()) for k, v in zip(ESTIMATE_PARTS, parts,
                                                                    strict=True)},
            }
            if saved >= 1 and value > cost:
                self.counter += 1
                heapq.heappush(self.heap, (-(value - cost), self.counter, c))

    def _moved(self, c: _Candidate) -> tuple[tuple[Lot, ...], tuple[Lot, ...]]:
        lot = self.lots[c.src][c.lot_ix]
        src_lots = list(self.lots[c.src])
        src_lots[c.lot_ix] = replace(lot, quantity=lot.quantity - c.quantity)
        life_end = life_end_days(lot.expires_on, self.model.now)
        arriving = Lot(lot.lot, float(c.quantity), c.arrive, life_end - self.sell_min[c.dst],
                       lot.expires_on)
        return tuple(src_lots), (*self.lots[c.dst], arriving)

    # --- the greedy loop ------------------------------------------------------------------

    def run(self, *, explain: bool = False) -> pd.DataFrame:
        """Greedy in rounds: each round takes the best fresh candidates whose source and
        destination no better candidate of the round touched (series are independent, so
        this is the sequential greedy's choice), applies them together, and finds new
        candidates for the sources whose candidates went stale."""
        first = [c for i in range(len(self.lots)) for c in self.candidates_from(i)]
        by_dst: dict[int, list[_Candidate]] = defaultdict(list)
        for c in first:
            by_dst[c.dst].append(c)  # the best few per destination too
        self.evaluate([c for cs in by_dst.values() for c in _best(cs)])
        rows = []
        while self.heap:
            touched: set[int] = set()
            accepted, again = [], set()
            while self.heap:
                _, _, c = heapq.heappop(self.heap)
                if c.versions != (self.version[c.src], self.version[c.dst]):
                    if c.versions[0] == self.version[c.src]:
                        again.add(c.src)
                    continue
                if c.src in touched or c.dst in touched:
                    again.add(c.src)
                    continue
                accepted.append(c)
                touched |= {c.src, c.dst}
            rows += [self._row(c) for c in accepted]
            self._apply(accepted)
            again |= {c.src for c in accepted}
            self.evaluate([c for src in sorted(again) for c in self.candidates_from(src)])
        columns = COLUMNS + ([f"estimated_{k}" for k in ESTIMATE_PARTS] if explain else [])
        if not rows:
            return pd.DataFrame(columns=columns) if explain else empty_transfers()
        frame = pd.DataFrame(rows, columns=columns)
        frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True)
        frame["arrival_at"] = pd.to_datetime(frame["arrival_at"], utc=True)
        return frame.astype({"quantity": "int64"})

    def _apply(self, accepted: list[_Candidate]) -> None:
        scenarios = []
        for c in accepted:
            src_lots, dst_lots = self._moved(c)
            self.lots[c.src], self.lots[c.dst] = src_lots, dst_lots
            self.used.add((c.src, c.dst, src_lots[c.lot_ix].lot))
            self.delivered[c.dst].append((c.arrive, dst_lots[-1].sellable_until, c.quantity))
            self.sent[c.src] = self.received[c.dst] = True
            scenarios += [(c.src, src_lots), (c.dst, dst_lots)]
        if scenarios:
            out = self.model.run(scenarios)
            own = self.model.run(scenarios, reorders=True)
            for j, (i, _) in enumerate(scenarios):
                self._set_state(i, out, j)
                self.valued[i] = (own, j)

    def _row(self, c: _Candidate) -> dict[str, object]:
        now = self.model.now
        lot = self.lots[c.src][c.lot_ix]
        src, dst = self.loc[c.src], self.loc[c.dst]
        key = f"{src}|{dst}|{self.sku[c.src]}|{lot.lot}|{now.date().isoformat()}"
        metrics = c.metrics or {}
        horizon = self.state[c.dst][0].horizon
        window = min(life_end_days(lot.expires_on, now) - self.sell_min[c.dst], horizon)
        fate = "expire unsold" if lot.sellable_until <= horizon else "are more than it sells"
        reason = (f"{c.quantity} of lot {lot.lot} {fate} at {src} "
                  f"(waste p={metrics['waste_prob_source_before']:.2f}); {dst} runs short by "
                  f"{c.need:.0f} over the next {window:.1f} days; arrives with "
                  f"{c.life_at_arrival:.1f} days left (min {c.min_days:g})")
        return {
            "recommendation_id": hashlib.sha1(key.encode()).hexdigest()[:16],
            "created_at": now, "region": self.region[c.src], "sku": self.sku[c.src],
            "category": self.category[c.src] or None, "lot": lot.lot,
            "expires_on": lot.expires_on, "source_location": src,
            "source_kind": self.kind[c.src], "destination_location": dst,
            "destination_region": self.region[c.dst], "destination_kind": self.kind[c.dst],
            "quantity": c.quantity, "transit_hours": c.route_hours,
            "handling_hours": c.handling,
            "arrival_at": now + timedelta(days=c.arrive),
            "shelf_life_at_arrival_days": c.life_at_arrival, "min_sellable_days": c.min_days,
            **metrics, "status": "proposed", "reason": reason,
        }


def _interp(times: np.ndarray, cum: np.ndarray, rows: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Row-wise linear interpolation of cumulative unmet demand at times ``at``."""
    t, c = times[rows], cum[rows]
    k = np.clip((t < at[:, None]).sum(axis=1), 1, t.shape[1] - 1)
    ix = np.arange(len(rows))
    t0, t1, c0, c1 = t[ix, k - 1], t[ix, k], c[ix, k - 1], c[ix, k]
    w = np.clip(np.where(t1 > t0, (at - t0) / np.where(t1 > t0, t1 - t0, 1.0), 1.0), 0, 1)
    return c0 + w * (c1 - c0)


def _best(cands: list[_Candidate]) -> list[_Candidate]:
    """The few candidates worth simulating, by their quick estimate."""
    return sorted((c for c in cands if c.estimate > 0), key=lambda c: -c.estimate
                  )[:CANDIDATES_PER_LOCATION]
