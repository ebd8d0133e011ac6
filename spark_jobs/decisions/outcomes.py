"""Closed-loop outcome simulation: do Shelflife's decisions waste less and run out less than
a day-old batch system, on real demand?

Why a simulation: the transfer job's "units saved" is its own model's estimate; only
replaying real demand against the stock each policy actually holds shows what the
decisions achieve. Everything a policy decides comes back to it the next day as stock.

**Demand.** FreshRetailNet's daily ``sale`` (CC BY 4.0), times ``unit_scale`` and rounded
(seeded, the same draw for every policy) to whole units. About 60% of its days have
stockout hours, where sales understate demand, so demand is *recovered* on censored days
(more than :data:`UNCENSORED_MAX_STOCKOUT_HOURS` hours out of stock) by a rule that does not
use Shelflife's forecaster: at least the mean of the same series' uncensored days within a
week either side (:func:`recover_demand`). Forecasters read the recorded history (sales
and stockout hours as published) of days before the day they decide for, never the recovered demand.

**Network.** Stores are drawn by the seed among those that sell the paired categories; each
region (city) has one warehouse ``WH-<city>``. SKUs are named ``<PREFIX>-P<product>`` by
:data:`lakehouse.naming.PREFIX_CATEGORY`, so shelf life, store minimum sellable days, price,
case size and lead time come from :func:`reference.sku_attributes` and the arrival minimum
from :func:`reference.sellable_policy`, as in the jobs. A store's order arrives
``lead_time_days`` later at the start of the day, filled first from its warehouse's stock
(oldest lot with at least the store's arrival minimum) and the rest fresh from the
supplier. A warehouse holds :data:`WAREHOUSE_COVER_DAYS` of its stores' recent orders of each
SKU that lives long enough, reordered from the supplier :data:`SUPPLIER_LEAD_DAYS` ahead.
Transfers run inside a region: :data:`TRANSIT_HOURS` on the road plus the destination's
handling hours, decided at the start of a day and on the shelf at the start of the next.

**A day.** Arrivals; each policy decides (orders, transfers); customers buy the day's
demand FEFO from lots still sellable (life left at least the SKU's ``min_sellable_days``);
unmet demand is a lost sale; a store lot past its last sellable day, or a warehouse lot
past its expiry, is waste.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lakehouse.naming import PREFIX_CATEGORY

from . import reference
from .approval import auto_approve
from .counterfactual import (
    DecideOrders,
    Lot,
    OrderRequest,
    Recommendation,
    Trace,
    decile_errors,
    measure,
    sell_fefo,
    spoil,
    take_lot,
    where_it_went,
)
from .counterfactual import worst_error as worst_decile_error
from .forecast import UNCENSORED_MAX_STOCKOUT_HOURS, forecast_demand
from .reorders import SERVICE_LEVELS_ENV, suggest_reorders
from .shelf import ERROR_CORRELATION, SERVICE_LEVEL, Z80, ServiceLevels, demand_spread
from .transfers import ESTIMATE_PARTS, recommend_transfers

Say = Callable[[str], None]
SUPPLIER_LEAD_DAYS = 2
"""Days from a warehouse's order to its supplier until the lot is in the warehouse."""
WAREHOUSE_COVER_DAYS = 2.0
"""A warehouse keeps this many days of its stores' recent orders of a SKU..."""
WAREHOUSE_MIN_SHELF_LIFE = 5
"""...when the SKU's shelf life is at least this many days (shorter-lived go direct)."""
TRANSIT_HOURS = 16.0
"""Road time between two locations of a region: with a store's 8 handling hours, a transfer
decided at the start of a day is on the shelf at the start of the next."""
FORECAST_HORIZON_DAYS = 14
"""Shelflife's forecaster runs weekly (origin: the day before each simulated week), 14 days
ahead, so a decision on a week's last day still sees a forecast for its whole horizon."""
TRANSFER_HORIZON_DAYS = 7
"""The transfer recommender's horizon (the job's default), over which its estimate of units
saved is measured."""
TUNING_WEEKS = 2
BASELINE_WINDOWS = (7, 14)
"""Days of recent sales the day-old batch averages; tuned with its safety stock."""
BASELINE_SAFETY_DAYS = (-0.5, -0.25, 0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
"""Safety stock of the day-old batch, in days of its forecast, tuned per category."""
TUNED_SERVICE_LEVELS = (0.75, 0.8, 0.85, 0.9, 0.95)
"""Service levels of Shelflife's reorders, tuned per category on the same weeks and by the
same cost as the day-old batch's safety stock."""
RECOVERY_WINDOW_DAYS = 7
"""A censored day's demand is read from the series' uncensored days this close to it."""
CATEGORY_OF_PREFIX = {v: k for k, v in PREFIX_CATEGORY.items()}
POLICIES = ("day_old_batch", "quantity_only", "shelflife")


# --- the network and its demand ----------------------------------------------------------

@dataclass
class Network:
    """Stores, warehouses, SKUs, demand per store series and the recorded history."""

    dates: list[date]
    series: list[tuple[str, str]]           # (store, sku), index = row of demand
    demand: np.ndarray                      # (series, days) whole units, recovered
    sales: np.ndarray                       # (series, days) recorded units sold
    history: pd.DataFrame                   # forecaster input, keys location_id, sku
    locations: pd.DataFrame
    items: pd.DataFrame
    policy: pd.DataFrame
    transit: pd.DataFrame
    region: dict[str, str]
    start: int                              # first scored day
    days: int                               # scored days
    unit_scale: float
    item: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.item = self.items.set_index("sku").to_dict("index")
        arrival = self.policy.set_index(["category", "destination_kind"])["min_sellable_days"]
        for it in self.item.values():
            it["store_arrival_min"] = float(arrival[(it["category"], "store")])
            it["warehouse"] = int(it["shelf_life_days"]) >= WAREHOUSE_MIN_SHELF_LIFE

    @property
    def stores(self) -> list[str]:
        return sorted({s for s, _ in self.series})


def recover_demand(sale: np.ndarray, stockout_hours: np.ndarray) -> np.ndarray:
    """Daily demand behind censored sales (series x days), without any forecaster: on a day
    with more than :data:`UNCENSORED_MAX_STOCKOUT_HOURS` hours out of stock, the larger of
    its sales and the mean of the series' uncensored days within a week either side (else
    of all its uncensored days; a series never uncensored keeps its sales).

    Not sales over the stocked fraction of the day: stockout hours count the night, when
    nobody buys, so that ratio inflates demand by up to the cap chosen for it."""
    censored = stockout_hours > UNCENSORED_MAX_STOCKOUT_HOURS
    seen = np.where(censored, 0.0, sale)
    count = (~censored).astype(float)
    width = 2 * RECOVERY_WINDOW_DAYS + 1
    kernel = np.ones(width)

    def window_sum(values: np.ndarray) -> np.ndarray:
        padded = np.pad(values, ((0, 0), (RECOVERY_WINDOW_DAYS, RECOVERY_WINDOW_DAYS)))
        return np.apply_along_axis(lambda r: np.convolve(r, kernel, mode="valid"), 1, padded)

    near_sum, near_n = window_sum(seen), window_sum(count)
    all_n = count.sum(axis=1, keepdims=True)
    overall = np.where(all_n > 0, seen.sum(axis=1, keepdims=True) / np.maximum(all_n, 1), 0.0)
    local = np.where(near_n > 0, near_sum / np.maximum(near_n, 1), overall)
    return np.where(censored, np.maximum(sale, local), sale)


def build_network(data: pd.DataFrame, categories: Mapping[int, str], *, stores: int,
                  weeks: int, seed: int, unit_scale: float, root: Path) -> Network:
    """Draw ``stores`` stores by ``seed`` and lay out the last ``weeks`` weeks as scored.

    ``categories`` pairs FreshRetailNet ``first_category_id`` with Shelflife categories;
    series of other source categories are left out. ``root`` is an empty lakehouse root, so
    the reference functions give the catalogue defaults."""
    data = data[data["first_category_id"].isin(list(categories))]
    pool = np.sort(data["store_id"].unique())
    if len(pool) < stores:
        raise ValueError(f"stores: the demand file has {len(pool)} stores with paired "
                         f"categories (asked for {stores})")
    rng = np.random.default_rng(seed)
    chosen = set(rng.choice(pool, size=stores, replace=False).tolist())
    data = data[data["store_id"].isin(chosen)].copy()
    dates = sorted(pd.to_datetime(data["dt"]).dt.date.unique())
    n_days = len(dates)
    start = n_days - 7 * weeks
    if start - 7 * TUNING_WEEKS < 28:
        raise ValueError(f"weeks: {weeks} scored weeks leave {start} days of history; "
                         f"need {7 * TUNING_WEEKS + 28}")
    prefix = {c: CATEGORY_OF_PREFIX[c] for c in set(categories.values())}
    data["location_id"] = [f"C{c}-S{s}" for c, s in zip(data["city_id"], data["store_id"],
                                                         strict=True)]
    data["sku"] = [f"{prefix[categories[c]]}-P{p}" for c, p in
                   zip(data["first_category_id"], data["product_id"], strict=True)]
    data["dt"] = pd.to_datetime(data["dt"]).dt.date
    data["sale"] = data["sale"].astype(float) * unit_scale
    data = data.sort_values(["location_id", "sku", "dt"]).reset_index(drop=True)
    day_ix = {d: i for i, d in enumerate(dates)}
    keys = data[["location_id", "sku"]].drop_duplicates().reset_index(drop=True)
    row = {k: i for i, k in enumerate(zip(keys["location_id"], keys["sku"], strict=True))}
    r = np.array([row[k] for k in zip(data["location_id"], data["sku"], strict=True)])
    c = data["dt"].map(day_ix).to_numpy()
    sale = np.zeros((len(keys), n_days))
    hours = np.zeros((len(keys), n_days))
    sale[r, c] = data["sale"].to_numpy()
    hours[r, c] = data["stockout_hours"].to_numpy(dtype=float)
    recovered = recover_demand(sale, hours)
    demand = np.floor(recovered + rng.random(recovered.shape)).astype(np.int64)
    region = {loc: loc.split("-")[0] for loc in keys["location_id"]}
    locs = [{"location_id": s, "region": g, "kind": "store"} for s, g in sorted(region.items())]
    locs += [{"location_id": f"WH-{g}", "region": g, "kind": "warehouse"}
             for g in sorted(set(region.values()))]
    locations = pd.DataFrame(locs)
    items = reference.sku_attributes(set(keys["sku"]), root)
    policy = reference.sellable_policy(items["category"], root)
    transit = in_region_routes(locations)
    history = data.drop(columns=["store_id", "product_id"])
    return Network(dates, list(zip(keys["location_id"], keys["sku"], strict=True)), demand,
                   sale, history, locations, items, policy, transit, region, start,
                   7 * weeks, unit_scale)


def in_region_routes(locations: pd.DataFrame) -> pd.DataFrame:
    """Every ordered pair of locations of a region, :data:`TRANSIT_HOURS` and the reference's
    same-region cost per unit."""
    cost = reference.DEFAULT_TRANSIT["same_region"].cost_per_unit
    pairs = locations.merge(locations, on="region", suffixes=("_s", "_d"))
    pairs = pairs[pairs["location_id_s"] != pairs["location_id_d"]]
    return pd.DataFrame({"source": pairs["location_id_s"].to_numpy(),
                         "destination": pairs["location_id_d"].to_numpy(),
                         "transit_hours": TRANSIT_HOURS, "cost_per_unit": cost})


# --- stock ---------------------------------------------------------------------------------

@dataclass
class Shipment:
    arrive: int
    location: str
    sku: str
    lot: Lot
    from_supplier: bool
    tag: int | None = None
    """The recommendation a transfer ships (see :class:`Trace`)."""


@dataclass
class Books:
    """What one policy's run did, day by day (scored days only count in :meth:`summary`)."""

    sold: float = 0.0
    demand: float = 0.0
    waste: float = 0.0
    waste_value: float = 0.0
    lost: float = 0.0
    lost_value: float = 0.0
    incidents: int = 0
    transfers: int = 0
    transfer_units: int = 0
    transferred_waste: float = 0.0
    inventory_days: list[float] = field(default_factory=list)
    start_stock: float = 0.0
    receipts: float = 0.0
    end_stock: float = 0.0
    min_arrival_margin: float = math.inf
    """Smallest (life on arrival - destination minimum) of any transfer, in days."""
    transfer_log: list[dict[str, Any]] = field(default_factory=list)
    cost_by_category: dict[str, float] = field(default_factory=lambda: defaultdict(float))


class Stock:
    """Lots at every location, shipments on the way, and the books of one policy."""

    def __init__(self, net: Network, first: int, trace: Trace | None = None) -> None:
        self.net = net
        self.trace = trace
        """Records every flow in and out of each series, for :mod:`.counterfactual`."""
        self.lots: dict[tuple[str, str], list[Lot]] = defaultdict(list)
        self.moving: list[Shipment] = []
        self.orders: dict[tuple[str, str], list[float]] = defaultdict(list)
        self.placed: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
        """Each store order: (arrival day, units)."""
        self.books = Books()
        self._seed_stock(first)

    def _seed_stock(self, first: int) -> None:
        """Two days of the last week's mean demand per store series (half fresh, half at
        half life) and a day of the region's in each warehouse: the same for every policy."""
        net = self.net
        mean = net.demand[:, max(0, first - 7):first].mean(axis=1)
        region_day: dict[tuple[str, str], float] = defaultdict(float)
        for i, (loc, sku) in enumerate(net.series):
            life = int(net.item[sku]["shelf_life_days"])
            half = int(round(mean[i]))
            self.lots[(loc, sku)] += [Lot(f"S{first}a", first + (life + 1) // 2 - 1, half),
                                      Lot(f"S{first}b", first + life - 1, half)]
            region_day[(net.region[loc], sku)] += mean[i]
            self.orders[(loc, sku)] = [mean[i]] * 7
        for (g, sku), units in region_day.items():
            if net.item[sku]["warehouse"]:
                life = int(net.item[sku]["shelf_life_days"])
                self.lots[(f"WH-{g}", sku)].append(Lot(f"S{first}w", first + life - 2,
                                                       int(round(units))))
        self.books.start_stock = self.on_hand()

    def on_hand(self) -> float:
        return float(sum(lot.quantity for lots in self.lots.values() for lot in lots))

    def in_network_transit(self) -> float:
        return float(sum(s.lot.quantity for s in self.moving if not s.from_supplier))

    # --- moves ------------------------------------------------------------------------

    def receive(self, day: int) -> None:
        keep = []
        for s in self.moving:
            if s.arrive != day:
                keep.append(s)
                continue
            self.lots[(s.location, s.sku)].append(s.lot)
            if self.trace is not None:
                self.trace.flow(s.location, s.sku, day, s.lot, s.lot.quantity, s.tag)
            if s.from_supplier:
                self.books.receipts += s.lot.quantity
        self.moving = keep

    def order(self, day: int, store: str, sku: str, quantity: int) -> None:
        """A store's order: from its warehouse's oldest lots that arrive with enough life,
        the rest fresh from the supplier."""
        it = self.net.item[sku]
        self.orders[(store, sku)].append(float(quantity))
        if quantity <= 0:
            return
        arrive = day + int(it["lead_time_days"])
        self.placed[(store, sku)].append((arrive, quantity))
        house = f"WH-{self.net.region[store]}"
        for lot in sorted(self.lots.get((house, sku), []), key=lambda x: x.expires):
            if quantity <= 0:
                break
            if lot.quantity <= 0 or lot.expires + 1 - arrive < it["store_arrival_min"]:
                continue
            take = min(lot.quantity, quantity)
            lot.quantity -= take
            quantity -= take
            if self.trace is not None:
                self.trace.flow(house, sku, day, lot, -take)
            self.moving.append(Shipment(arrive, store, sku, Lot(lot.lot, lot.expires, take),
                                        False))
        if quantity > 0:
            life = int(it["shelf_life_days"])
            self.moving.append(Shipment(arrive, store, sku,
                                        Lot(f"O{day}", arrive + life - 1, quantity), True))

    def replenish_warehouses(self, day: int) -> None:
        """Each warehouse orders up to :data:`WAREHOUSE_COVER_DAYS` of its stores' orders of
        the last week (the same rule for every policy)."""
        want: dict[tuple[str, str], float] = defaultdict(float)
        for (store, sku), past in self.orders.items():
            if self.net.item[sku]["warehouse"]:
                want[(f"WH-{self.net.region[store]}", sku)] += float(np.mean(past[-7:]))
        coming: dict[tuple[str, str], int] = defaultdict(int)
        for s in self.moving:
            if s.location.startswith("WH-"):
                coming[(s.location, s.sku)] += s.lot.quantity
        for key, rate in want.items():
            have = sum(lot.quantity for lot in self.lots.get(key, ())) + coming[key]
            quantity = int(round(rate * WAREHOUSE_COVER_DAYS - have))
            if quantity > 0:
                arrive = day + SUPPLIER_LEAD_DAYS
                life = int(self.net.item[key[1]]["shelf_life_days"])
                self.moving.append(Shipment(arrive, key[0], key[1],
                                            Lot(f"W{day}", arrive + life - 1, quantity), True))

    def transfer(self, day: int, source: str, destination: str, sku: str, lot_id: str | None,
                 quantity: int, arrive: int, min_days: float, tag: int | None = None) -> int:
        """Move up to ``quantity`` units (of ``lot_id``, or oldest first) now; returns the
        units moved. ``tag`` names the recommendation in the trace."""
        moved = 0
        for piece in take_lot(self.lots.get((source, sku), []), lot_id, quantity):
            moved += piece.quantity
            if self.trace is not None:
                self.trace.flow(source, sku, day, piece, -piece.quantity, tag)
            self.moving.append(Shipment(arrive, destination, sku,
                                        replace(piece, transferred=True), False, tag))
            margin = piece.expires + 1 - arrive - min_days
            self.books.min_arrival_margin = min(self.books.min_arrival_margin, margin)
        if moved:
            self.books.transfers += 1
            self.books.transfer_units += moved
        return moved

    # --- the day's trade -------------------------------------------------------------------

    def trade(self, day: int, scored: bool) -> None:
        """Sell the day's demand FEFO, then throw away what can no longer be sold."""
        net, b = self.net, self.books
        for i, (loc, sku) in enumerate(net.series):
            it = net.item[sku]
            want = int(net.demand[i, day])
            left = sell_fefo(self.lots[(loc, sku)], want, day, int(it["min_sellable_days"]))
            if self.trace is not None:
                self.trace.outcome(loc, sku, day, 0, left)
            if scored:
                b.demand += want
                b.sold += want - left
                b.lost += left
                b.lost_value += left * float(it["price"])
                b.cost_by_category[it["category"]] += left * float(it["price"])
                b.incidents += int(left > 0)
        for (loc, sku), lots in self.lots.items():
            it = net.item[sku]
            pull = 0 if loc.startswith("WH-") else int(it["min_sellable_days"])
            gone = spoil(lots, day, pull)
            if self.trace is not None and gone:
                unmet = self.trace.outcomes[(loc, sku)].get(day, (0, 0))[1]
                self.trace.outcome(loc, sku, day, sum(x.quantity for x in gone), unmet)
            for lot in gone:
                if scored:
                    b.waste += lot.quantity
                    b.waste_value += lot.quantity * float(it["price"])
                    b.cost_by_category[it["category"]] += lot.quantity * float(it["price"])
                    b.transferred_waste += lot.quantity if lot.transferred else 0
                else:  # before the scored weeks, waste still leaves the books
                    b.start_stock -= lot.quantity
        if scored:
            b.inventory_days.append(self.on_hand())

    # --- frames for the decision functions -----------------------------------------------------

    def cohorts(self) -> pd.DataFrame:
        d0 = self.net.dates[0]
        rows = [(self.net.region[loc] if not loc.startswith("WH-") else loc[3:], loc, sku,
                 lot.lot, d0 + timedelta(days=lot.expires), lot.quantity)
                for (loc, sku), lots in self.lots.items() for lot in lots if lot.quantity > 0]
        return pd.DataFrame(rows, columns=["region", "location_id", "sku", "lot",
                                           "expires_on", "quantity"])

    def in_transit(self) -> pd.DataFrame:
        """Units on their way, as the jobs read them: a transfer with its lot's expiry
        (the approved recommendation names the lot), an order without one."""
        d0 = self.net.dates[0]
        rows = [(s.location, s.sku, d0 + timedelta(days=s.lot.expires) if s.lot.transferred
                 else None, s.lot.quantity) for s in self.moving]
        frame = pd.DataFrame(rows, columns=["location_id", "sku", "expires_on", "quantity"])
        return frame.groupby(["location_id", "sku", "expires_on"], as_index=False,
                             dropna=False)["quantity"].sum()


# --- policies --------------------------------------------------------------------------------

class Policy:
    name = ""

    def decide(self, stock: Stock, day: int) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class DayOldBatch(Policy):
    """Nightly batch on yesterday's snapshot: order up to the mean of the recent days'
    sales x (lead time + one day + safety days); no transfers."""

    name = "day_old_batch"

    def __init__(self, net: Network, window: dict[str, int], safety: dict[str, float]) -> None:
        self.net, self.window, self.safety = net, window, safety
        self.snapshot: dict[tuple[str, str], list[tuple[int, int]]] = {}

    def decide(self, stock: Stock, day: int) -> None:
        net = self.net
        old, self.snapshot = self.snapshot, {k: [(lot.expires, lot.quantity) for lot in v]
                                             for k, v in stock.lots.items()}
        if not old:
            old = self.snapshot
        # What it knows beyond the snapshot: its own orders arriving after it was taken
        # (today's arrivals included: they came in after the snapshot).
        pending: dict[tuple[str, str], int] = defaultdict(int)
        for key, placed in stock.placed.items():
            pending[key] = sum(q for arrive, q in placed if arrive >= day)
        for i, (loc, sku) in enumerate(net.series):
            it = net.item[sku]
            cat = it["category"]
            n = self.window[cat]
            f = float(net.sales[i, max(0, day - 1 - n):day - 1].mean()) if day > 1 else 0.0
            lead = int(it["lead_time_days"])
            arrive = day + lead
            last_ok = int(it["min_sellable_days"])
            usable = sum(q for e, q in old.get((loc, sku), ()) if e - last_ok >= arrive)
            position = usable + pending[(loc, sku)] - f * (lead + 1)
            target = f * (1 + self.safety[cat])
            want = target - position
            case = int(it["case_size"])
            quantity = int(round(want / case)) * case if want > 0 else 0
            stock.order(day, loc, sku, quantity)


class RealTime(Policy):
    """Today's stock, Shelflife's forecasts and reorder suggestions; transfers either by
    Shelflife's recommender (auto-approved by :func:`auto_approve`) or by quantity alone."""

    def __init__(self, net: Network, forecasts: Mapping[int, pd.DataFrame], *,
                 shelf_life_aware: bool, paths: int, seed: int,
                 service_level: ServiceLevels = SERVICE_LEVEL, transfers: bool = True) -> None:
        self.net, self.forecasts, self.paths, self.seed = net, forecasts, paths, seed
        self.aware, self.service_level, self.transfers = (shelf_life_aware, service_level,
                                                          transfers)
        self.name = "shelflife" if shelf_life_aware else "quantity_only"
        self.recommendations: list[pd.DataFrame] = []

    def decide(self, stock: Stock, day: int) -> None:
        net = self.net
        now = datetime.combine(net.dates[day], datetime.min.time(), UTC)
        fc = self._forecasts_for(day)
        if self.transfers and self.aware:
            self._shelflife_transfers(stock, day, now, fc)
        elif self.transfers:
            self._quantity_transfers(stock, day, fc)
        orders = suggest_reorders(stock.cohorts(), fc, net.locations, net.items,
                                  in_transit=stock.in_transit(), now=now, paths=self.paths,
                                  seed=self.seed + day, service_level=self.service_level)
        wanted = {(r.location_id, r.sku): int(r.order_quantity)
                  for r in orders.itertuples(index=False)}
        for loc, sku in net.series:
            stock.order(day, loc, sku, wanted.get((loc, sku), 0))

    def _forecasts_for(self, day: int) -> pd.DataFrame:
        """The latest weekly forecast made before ``day``, from ``day`` on."""
        fc = self.forecasts[max(o for o in self.forecasts if o < day)]
        return fc[fc["forecast_date"] >= self.net.dates[day]]

    def replay_orders(self, day: int, requests: Sequence[OrderRequest]) -> list[int]:
        """The reorders job's order for each store of an estimate replay
        (:data:`.counterfactual.DecideOrders`): the same call, forecasts, service levels
        and paths as this policy's own orders that day, on the replay's stock. Each
        request is a series of its own (``location|key``), so a store that two replays
        share is decided on each one's stock; its demand paths are seeded by that name,
        the same in both arms of a replay but not the run's own, so even on the run's
        stock an order can differ from the run's by the Monte Carlo's noise."""
        if not requests:
            return []
        net = self.net
        now = datetime.combine(net.dates[day], datetime.min.time(), UTC)
        fc = self._forecasts_for(day)
        d0 = net.dates[0]
        ids = [f"{r.location}|{r.key}" for r in requests]
        asked = pd.DataFrame({"location_id": ids, "store": [r.location for r in requests],
                              "sku": [r.sku for r in requests]})
        cohorts = pd.DataFrame(
            [(net.region[r.location], i, r.sku, lot.lot, d0 + timedelta(days=lot.expires),
              lot.quantity) for i, r in zip(ids, requests, strict=True) for lot in r.lots],
            columns=["region", "location_id", "sku", "lot", "expires_on", "quantity"])
        forecasts = (asked.merge(fc.rename(columns={"location_id": "store"}),
                                 on=["store", "sku"]).drop(columns="store"))
        locations = pd.DataFrame({"location_id": ids,
                                  "region": [net.region[r.location] for r in requests],
                                  "kind": "store"})
        moving = pd.DataFrame(
            [(i, r.sku, None if expires is None else d0 + timedelta(days=expires), units)
             for i, r in zip(ids, requests, strict=True) for expires, units in r.coming
             if units > 0], columns=["location_id", "sku", "expires_on", "quantity"])
        got = suggest_reorders(cohorts, forecasts, locations, net.items, in_transit=moving,
                               now=now, paths=self.paths, seed=self.seed + day,
                               service_level=self.service_level)
        qty = dict(zip(got["location_id"], got["order_quantity"], strict=True))
        return [int(qty.get(i, 0)) for i in ids]

    def _shelflife_transfers(self, stock: Stock, day: int, now: datetime,
                             fc: pd.DataFrame) -> None:
        net = self.net
        recs = recommend_transfers(stock.cohorts(), fc, net.locations, net.transit, net.policy,
                                   net.items, in_transit=stock.in_transit(), now=now,
                                   horizon_days=TRANSFER_HORIZON_DAYS,
                                   paths=self.paths, seed=self.seed + day, explain=True,
                                   service_level=self.service_level)
        if recs.empty:
            return
        recs = recs.assign(ship_it=auto_approve(recs).to_numpy())
        arrive_at = [day + math.ceil((r.transit_hours + r.handling_hours) / 24 - 1e-9)
                     for r in recs.itertuples(index=False)]
        seen: list[Recommendation | None] = [None] * len(recs)
        if stock.trace is not None:  # every recommendation, with its stock before any move
            for k, r in enumerate(recs.itertuples(index=False)):
                seen[k] = Recommendation(
                    len(stock.trace.recommendations), day, r.source_location,
                    r.destination_location, r.sku, r.lot, int(r.quantity), arrive_at[k],
                    float(r.expected_units_saved), float(r.value_saved),
                    estimated_parts={k: float(getattr(r, f"estimated_{k}"))
                                     for k in ESTIMATE_PARTS})
                stock.trace.recommend(seen[k], stock.lots)
        for k, r in enumerate(recs.itertuples(index=False)):
            if not r.ship_it:
                continue
            rec = seen[k]
            moved = stock.transfer(day, r.source_location, r.destination_location, r.sku,
                                   r.lot, int(r.quantity), arrive_at[k],
                                   float(r.min_sellable_days),
                                   tag=None if rec is None else rec.tag)
            if rec is not None:
                rec.shipped, rec.moved = moved > 0, moved
            if moved:
                stock.books.transfer_log.append({
                    "day": day, "source": r.source_location,
                    "destination": r.destination_location, "sku": r.sku, "lot": r.lot,
                    "quantity": moved, "expected_units_saved": float(r.expected_units_saved),
                    "value_saved": float(r.value_saved)})

    def _quantity_transfers(self, stock: Stock, day: int, fc: pd.DataFrame) -> None:
        """The first design: move units from where stock exceeds a week's forecast to where
        it falls short of two days', oldest lots first, whatever their life."""
        net = self.net
        d = net.dates[day]
        horizon = fc[fc["forecast_date"] < d + timedelta(days=7)]
        week = horizon.groupby(["location_id", "sku"])["forecast"].sum().to_dict()
        two = (horizon[horizon["forecast_date"] < d + timedelta(days=2)]
               .groupby(["location_id", "sku"])["forecast"].sum().to_dict())
        coming: dict[tuple[str, str], int] = defaultdict(int)
        for s in stock.moving:
            coming[(s.location, s.sku)] += s.lot.quantity
        spare: dict[tuple[str, str], list[tuple[float, str]]] = defaultdict(list)
        short: dict[tuple[str, str], list[tuple[float, str]]] = defaultdict(list)
        for (loc, sku), lots in stock.lots.items():
            have = sum(lot.quantity for lot in lots)
            g = loc[3:] if loc.startswith("WH-") else net.region[loc]
            extra = have if loc.startswith("WH-") else have - week.get((loc, sku), 0.0)
            if extra >= 1:
                spare[(g, sku)].append((extra, loc))
        for loc, sku in net.series:
            have = sum(lot.quantity for lot in stock.lots.get((loc, sku), ()))
            gap = two.get((loc, sku), 0.0) - have - coming[(loc, sku)]
            if gap >= 1:
                short[(net.region[loc], sku)].append((gap, loc))
        for key, needs in short.items():
            sources = sorted(spare.get(key, ()), reverse=True)
            needs = sorted(needs, reverse=True)
            givers = {loc for _, loc in sources}
            for gap, dst in needs:
                if dst in givers:
                    continue
                for k, (extra, src) in enumerate(sources):
                    q = int(min(extra, gap))
                    if q < 1:
                        continue
                    moved = stock.transfer(day, src, dst, key[1], None, q, day + 1, 0.0)
                    sources[k] = (extra - moved, src)
                    gap -= moved
                    if gap < 1:
                        break


# --- running ---------------------------------------------------------------------------------

def run_policy(net: Network, policy: Policy, first: int, last: int, *, scored_from: int,
               say: Say | None = None, trace: Trace | None = None) -> Books:
    """Days ``first``..``last - 1`` of one policy from the common starting stock; ``trace``
    records its flows and recommendations (see :func:`measure_estimates`)."""
    stock = Stock(net, first, trace)
    for day in range(first, last):
        scored = day >= scored_from
        stock.receive(day)
        if day == scored_from and scored_from > first:
            stock.books.start_stock = stock.on_hand() + stock.in_network_transit()
            stock.books.receipts = 0.0
        policy.decide(stock, day)
        stock.replenish_warehouses(day)
        stock.trade(day, scored)
        if say is not None:
            say(f"{policy.name}: {net.dates[day]} done ({day - first + 1}/{last - first} days)")
    b = stock.books
    b.end_stock = stock.on_hand() + stock.in_network_transit()
    return b


def measure_estimates(net: Network, trace: Trace,
                      decide: DecideOrders | None = None) -> dict[str, Any]:
    """Each recommendation's units saved as the simulation measures them (a paired replay
    of its two series, :mod:`.counterfactual`) against the job's own estimate, by decile of
    estimated value: over every recommendation (what the Transfers page shows) and over
    those that shipped, the latter also with every order frozen as the run placed it
    (``deciles_shipped_frozen``). Every shipped move's replay with the move must give what the run
    did (``shipped_replays_matching_run``): that checks the replay itself."""
    row = {s: i for i, s in enumerate(net.series)}

    def demand_of(location: str, sku: str) -> np.ndarray | None:
        i = row.get((location, sku))
        return None if i is None else net.demand[i]

    done = measure(trace, demand_of, lambda sku: int(net.item[sku]["min_sellable_days"]),
                   horizon=TRANSFER_HORIZON_DAYS, last_day=net.start + net.days - 1,
                   reorder_of=lambda sku: (int(net.item[sku]["lead_time_days"]),
                                           int(net.item[sku]["shelf_life_days"])),
                   decide=decide)
    every = decile_errors(done)
    shipped = decile_errors([r for r in done if r.shipped])
    frozen = decile_errors([r for r in done if r.shipped], frozen=True)
    return {"horizon_days": TRANSFER_HORIZON_DAYS, "recommendations": len(trace.recommendations),
            "measured": len(done), "shipped_measured": sum(r.shipped for r in done),
            "estimated_units": round(sum(r.estimated_units for r in done), 1),
            "measured_units": round(sum(r.measured_units or 0.0 for r in done), 1),
            "shipped_replays_matching_run": sum(bool(r.replay_matches_run) for r in done),
            "worst_decile_error": worst_decile_error(every),
            "worst_decile_error_shipped": worst_decile_error(shipped),
            "measured_units_frozen": round(sum(r.measured_frozen or 0.0 for r in done), 1),
            "worst_decile_error_shipped_frozen": worst_decile_error(frozen),
            "deciles_shipped_frozen": frozen,
            "where_it_went_shipped": where_it_went(r for r in done if r.shipped),
            "where_it_went_not_shipped": where_it_went(r for r in done if not r.shipped),
            "deciles": every, "deciles_shipped": shipped}


def error_day_correlation(net: Network, forecasts: Mapping[int, pd.DataFrame], *,
                          days: int = 7) -> float | None:
    """How much one forecast's errors on two days of its first week move together: the
    mean correlation, over pairs of days, of (demand - forecast) / sd per series and
    origin, with the sd the transfer model draws from (the interval's, at least the square
    root of the forecast). :data:`.shelf.ERROR_CORRELATION` is this figure, measured."""
    row = {s: i for i, s in enumerate(net.series)}
    day_of = {d: i for i, d in enumerate(net.dates)}
    frames = []
    for origin, fc in forecasts.items():
        key = list(zip(fc["location_id"], fc["sku"], strict=True))
        r = np.array([row.get(k, -1) for k in key])
        d = np.array([day_of.get(x, -1) for x in fc["forecast_date"]])
        keep = (r >= 0) & (d > origin) & (d <= origin + days)
        mean, sd = demand_spread(fc["forecast"].to_numpy(dtype=float)[keep],
                                 (fc["upper"] - fc["lower"]).to_numpy(dtype=float)[keep]
                                 / (2 * Z80))
        z = np.where(sd > 0, (net.demand[r[keep], d[keep]] - mean) / np.where(sd > 0, sd, 1),
                     np.nan)
        frames.append(pd.DataFrame({"key": r[keep] * 10_000 + origin,
                                    "h": d[keep] - origin, "z": z}))
    if not frames:
        return None
    table = pd.concat(frames).pivot_table(index="key", columns="h", values="z")
    corr = table.corr().to_numpy()
    n = corr.shape[0]
    if n < 2:
        return None
    off = corr[~np.eye(n, dtype=bool)]
    off = off[np.isfinite(off)]
    return round(float(off.mean()), 3) if len(off) else None


def tune_baseline(net: Network, say: Say) -> tuple[dict[str, int], dict[str, float]]:
    """The day-old batch's window and safety days per category with the lowest waste plus
    lost-sales value on the :data:`TUNING_WEEKS` weeks before the scored ones."""
    cats = sorted(set(net.items["category"]))
    best: dict[str, tuple[float, tuple[int, float]]] = {}
    for window in BASELINE_WINDOWS:
        for safety in BASELINE_SAFETY_DAYS:
            _keep_cheapest(best, net, DayOldBatch(net, dict.fromkeys(cats, window),
                                                  dict.fromkeys(cats, safety)),
                           (window, safety))
        say(f"day-old batch tuning: window {window} days done")
    return ({c: v[1][0] for c, v in best.items()}, {c: v[1][1] for c, v in best.items()})


def _keep_cheapest(best: dict[str, tuple[float, Any]], net: Network, policy: Policy,
                   setting: Any) -> None:
    """Run ``policy`` over the :data:`TUNING_WEEKS` weeks before the scored ones and keep
    ``setting`` in ``best`` for each category where its waste plus lost-sales value is
    lower than the cheapest so far (the first setting tried wins a tie)."""
    first = net.start - 7 * TUNING_WEEKS
    books = run_policy(net, policy, first, net.start, scored_from=first)
    for cat in sorted(set(net.items["category"])):
        cost = books.cost_by_category.get(cat, 0.0)
        if cat not in best or cost < best[cat][0]:
            best[cat] = (cost, setting)


def tune_shelflife(net: Network, forecasts: Mapping[int, pd.DataFrame], *, paths: int,
                   seed: int, say: Say) -> dict[str, float]:
    """Shelflife's reorder service level per category with the lowest waste plus
    lost-sales value on the :data:`TUNING_WEEKS` weeks before the scored ones: the weeks
    and the cost the day-old batch is tuned on, so neither side is tuned and the other
    not. Run with its reorders alone: recommending transfers costs about five times a
    day's reorders, and transfers move a few percent of the units."""
    best: dict[str, tuple[float, float]] = {}
    # The jobs' default first: a category where no level costs less keeps it.
    for level in sorted(TUNED_SERVICE_LEVELS, key=lambda v: v != SERVICE_LEVEL):
        _keep_cheapest(best, net, RealTime(net, forecasts, shelf_life_aware=True, paths=paths,
                                           seed=seed, service_level=level, transfers=False),
                       level)
        say(f"shelflife tuning: service level {level:.0%} done")
    return {c: v[1] for c, v in best.items()}


def weekly_forecasts(net: Network, *, seed: int, say: Say,
                     cache: Path | None = None) -> dict[int, pd.DataFrame]:
    """Shelflife's forecaster, run as the batch job runs it (history through the origin, no
    future regressors), once before each tuning and scored week; keyed by the origin's day
    index.

    ``cache`` (a folder) keeps each origin's forecast under a digest of its exact input, so
    a rerun on the same stores, seed and scale does not fit the same models again."""
    out = {}
    for origin in range(net.start - 7 * TUNING_WEEKS - 1, net.start + net.days - 1, 7):
        through = net.dates[origin]
        history = net.history[net.history["dt"] <= through]
        digest = hashlib.sha1(pd.util.hash_pandas_object(
            history[["location_id", "sku", "dt", "sale", "stockout_hours"]], index=False
        ).to_numpy().tobytes() + f"{seed}|{FORECAST_HORIZON_DAYS}".encode()).hexdigest()[:16]
        saved = cache / f"forecast-{through}-{digest}.parquet" if cache else None
        if saved is not None and saved.exists():
            say(f"forecasts: history through {through}: from the cache ({saved.name})")
            out[origin] = pd.read_parquet(saved)
            continue
        say(f"forecasts: history through {through}, {FORECAST_HORIZON_DAYS} days ahead")
        fc = forecast_demand(history, FORECAST_HORIZON_DAYS, keys=("location_id", "sku"),
                             origin=through, threads=2, seed=seed,
                             progress=lambda m: say(f"forecasts: {m}"))
        fc = fc.rename(columns={"dt": "forecast_date"})
        fc["forecast_date"] = fc["forecast_date"].dt.date
        fc["region"] = fc["location_id"].map(net.region)
        out[origin] = fc[["region", "location_id", "sku", "forecast_date", "forecast", "lower",
                          "upper", "model"]]
        if saved is not None:
            saved.parent.mkdir(parents=True, exist_ok=True)
            out[origin].to_parquet(saved, index=False)
    return out


def summarize(b: Books, *, stores: int, weeks: float) -> dict[str, Any]:
    """One policy's figures over the scored days."""
    balance_in = b.start_stock + b.receipts
    balance_out = b.sold + b.waste + b.end_stock
    return {
        "waste_units": round(b.waste), "waste_value": round(b.waste_value, 1),
        "lost_sales_units": round(b.lost), "lost_sales_value": round(b.lost_value, 1),
        "stockout_incidents": b.incidents,
        "service_level": round(b.sold / b.demand, 4) if b.demand else None,
        "demand_units": round(b.demand), "sold_units": round(b.sold),
        "transfers": b.transfers, "transfer_units": b.transfer_units,
        "transferred_waste_units": round(b.transferred_waste),
        "transferred_waste_share": (round(b.transferred_waste / b.transfer_units, 4)
                                    if b.transfer_units else None),
        "average_inventory_units": round(float(np.mean(b.inventory_days)), 1)
        if b.inventory_days else None,
        "transfers_per_store_week": round(b.transfers / stores / weeks, 3),
        "min_arrival_margin_days": (None if math.isinf(b.min_arrival_margin)
                                    else round(b.min_arrival_margin, 3)),
        "balance": {"start_stock": b.start_stock, "receipts": b.receipts, "sold": b.sold,
                    "waste": b.waste, "end_stock": b.end_stock,
                    "balanced": abs(balance_in - balance_out) < 1e-6},
    }


def _reduction(new: float | None, old: float | None) -> float | None:
    if new is None or not old:
        return None
    return round(1 - new / old, 4)


def simulate(data: pd.DataFrame, categories: Mapping[int, str], *, stores: int, weeks: int,
             seed: int, unit_scale: float, paths: int, root: Path, say: Say,
             cache: Path | None = None) -> dict[str, Any]:
    """Build the network, tune the baseline, forecast, run the three policies on the same
    demand and starting stock; the figures per policy and the headline comparisons."""
    net = build_network(data, categories, stores=stores, weeks=weeks, seed=seed,
                        unit_scale=unit_scale, root=root)
    say(f"network: {len(net.stores)} stores, {len(set(net.region.values()))} regions "
        f"(one warehouse each), {len(net.series)} store series, scored "
        f"{net.dates[net.start]}..{net.dates[net.start + net.days - 1]}")
    window, safety = tune_baseline(net, say)
    say(f"day-old batch tuned: window {window}, safety days {safety}")
    forecasts = weekly_forecasts(net, seed=seed, say=say, cache=cache)
    levels = tune_shelflife(net, forecasts, paths=paths, seed=seed, say=say)
    say(f"shelflife tuned: service level {levels}; the reorders job takes them as "
        f"{SERVICE_LEVELS_ENV}=" + ",".join(f"{c}={v:g}" for c, v in levels.items()))
    shelflife = RealTime(net, forecasts, shelf_life_aware=True, paths=paths, seed=seed,
                         service_level=levels)
    policies: list[Policy] = [
        DayOldBatch(net, window, safety),
        RealTime(net, forecasts, shelf_life_aware=False, paths=paths, seed=seed,
                 service_level=levels),
        shelflife]
    trace = Trace()
    books = {p.name: run_policy(net, p, net.start, net.start + net.days,
                                scored_from=net.start, say=say,
                                trace=trace if p.name == "shelflife" else None)
             for p in policies}
    estimates = measure_estimates(net, trace, decide=shelflife.replay_orders)
    correlation = error_day_correlation(
        net, {o: fc for o, fc in forecasts.items() if o >= net.start - 1})  # scored weeks
    say(f"forecast errors: two days of one forecast correlate {correlation} on this demand "
        f"(the transfer and reorder model draws its paths with {ERROR_CORRELATION})")
    say(f"estimates: {estimates['measured']} recommendations replayed with and without "
        f"their move; worst decile error {estimates['worst_decile_error_shipped']} over the "
        f"moves that shipped, {estimates['worst_decile_error']} over all")
    n, w = len(net.stores), net.days / 7
    per = {name: summarize(b, stores=n, weeks=w) for name, b in books.items()}
    base, qty, sl = per["day_old_batch"], per["quantity_only"], per["shelflife"]
    return {
        "policies": per, "baseline_tuning": {"window_days": window, "safety_days": safety},
        "shelflife_tuning": {"service_level": levels},
        "transfer_log": books["shelflife"].transfer_log,
        "waste_reduction": _reduction(sl["waste_units"], base["waste_units"]),
        "stockout_reduction": _reduction(sl["stockout_incidents"],
                                         base["stockout_incidents"]),
        "post_transfer_waste_reduction": _reduction(sl["transferred_waste_units"],
                                                    qty["transferred_waste_units"]),
        "inventory_change": (round(sl["average_inventory_units"]
                                   / base["average_inventory_units"] - 1, 4)
                             if base["average_inventory_units"] else None),
        "horizon_weeks": w, "stores": n, "series": len(net.series),
        "transfers_per_store_week": sl["transfers_per_store_week"],
        "estimates": estimates,
        "forecast_error_day_correlation": correlation,
        # The moves that shipped: what the network acted on. Every recommendation, and
        # the replay with every order frozen, are in "estimates" beside them.
        "estimate_error_worst_decile": estimates["worst_decile_error_shipped"],
    }
