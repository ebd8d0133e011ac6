"""The demand and waste model that transfers and reorders share: a Monte Carlo of FEFO sales.

Why a simulation: whether a cohort spoils depends on the order lots are sold in, on when
each stops being sellable and on how demand varies, and the decisions need probabilities
("p=0.93 this lot expires unsold"), not just a days-of-cover ratio.

**Expiry semantics.** A lot is usable until the END of its ``expires_on`` date (UTC): its
life left at time t is ``(expires_on + 1 day, 00:00 UTC) - t``, in days. A store sells it
while its life left is at least the SKU's ``min_sellable_days`` (``items``; 0 = sellable
through its expiry date) and then pulls it: what is left then is waste. A warehouse sells
nothing and pulls nothing early; its stock is waste when its life runs out. The shelf life
a transfer arrives with is the life left at ``now + transit_hours + handling_hours``.
Lot ``(none)`` without an expiry (negative or unknown stock) and non-positive quantities are
ignored; another lot without an expiry never spoils.

**Demand.** Each (location, SKU) gets ``paths`` daily demand paths from its forecast: mean
``forecast``, standard deviation ``(upper - lower) / (2 * 1.2816)`` (the 80% interval),
floored at ``sqrt(mean)`` so that it is never tighter than Poisson. Each path draws one
level for the whole horizon (gamma, mean 1: the forecast's error that days share, see
:data:`ERROR_CORRELATION`), and each day a gamma around ``mean * level`` whose spread keeps
the day's variance. Demand is spread evenly over a day; today counts only the part left
after ``now``. A day with no forecast row takes the nearest forecast day of its series (a
horizon past the last forecast repeats it); a series without forecasts has no demand.
Paths are seeded per ``(seed, location, sku)`` and drawn day by day, so every scenario of a
series, and every horizon, sees the same demand: what-if comparisons are not noise.

**Selling.** Time is cut at day boundaries and at every moment a lot starts (arrives) or
stops being sellable; in each piece the demand goes to the sellable lots in order of their
end of sale (FEFO), and what no lot covers is unmet demand (a lost sale, not a backorder).
A lot is *wasted* on a path when at least :data:`WASTE_EPS` of a unit is left when it stops
being sellable within the horizon (sales are fractional within a day; half a unit rounds
to one). Stock still sellable at the horizon is neither sold nor wasted (``left``).
"""

from __future__ import annotations

import math
import zlib
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

from lakehouse.naming import LOCATION_KINDS

Z80 = 1.2815515655446004
"""Standard normal quantile of 0.9: an 80% interval is mean +/- Z80 sd."""
SERVICE_LEVEL = 0.9
"""The service level of a category the caller gives none for."""

ServiceLevels = float | Mapping[str, float]
"""One service level for every SKU, or one per category (:data:`SERVICE_LEVEL` for a
category not named), as the outcome simulation tunes them. The reorders job orders to
it, and the stores' own orders in the transfer job's what-ifs aim at the same level."""
WASTE_EPS = 0.5
"""Units left at the end of sale that count as a wasted cohort on a path."""
NO_LOT = "(none)"
IN_TRANSIT_LOT = "(in transit)"
BATCH_CELLS = 400_000
"""Series x paths simulated per numpy batch (keeps the working set in a few tens of MB)."""
CACHE_BYTES = 128 << 20
"""Demand draws kept between what-if runs (the greedy transfer search revisits series)."""
ERROR_CORRELATION = 0.3
"""Correlation between one forecast's errors on different days of its horizon.

A forecast that is low on Monday is low on Tuesday too. On the outcome simulation's real
demand (100 stores, four weekly origins; ``bench/outcomes.py`` prints it as
``forecast_error_day_correlation``) the errors of two days of one forecast's first week,
each over the sd drawn here, correlate 0.31 on average at 10 selling units per data unit
and 0.27 at 3 (0.25-0.45 per pair of days). Days drawn independently made a week's total
about 1.5 times too certain: the transfer job saw waste and empty shelves as surer than
they were, and valued its proposals up to a third above what the simulation measured."""

COHORT_COLUMNS = ("region", "location_id", "sku", "lot", "expires_on", "quantity")
FORECAST_COLUMNS = ("location_id", "sku", "forecast_date", "forecast", "lower", "upper")
LOCATION_COLUMNS = ("location_id", "region", "kind")
ITEM_COLUMNS = ("sku", "category", "price", "shelf_life_days", "min_sellable_days")


def service_level_of(levels: ServiceLevels, category: object) -> float:
    """The service level that applies to a SKU of ``category``."""
    if isinstance(levels, Mapping):
        return float(levels.get(category, SERVICE_LEVEL)) if isinstance(category, str) \
            else SERVICE_LEVEL
    return float(levels)


def check_service_levels(levels: ServiceLevels) -> ServiceLevels:
    """``levels`` if every level is a number strictly between 0 and 1, else ValueError."""
    values = levels.values() if isinstance(levels, Mapping) else [levels]
    for v in values:
        if not (isinstance(v, int | float) and not isinstance(v, bool) and 0 < v < 1):
            raise ValueError(f"service_level: must be between 0 and 1 (got {v!r})")
    return levels


def service_z(level: float) -> float:
    """Standard normal quantile of ``level``: the order-up-to target's standard deviations of
    demand above the mean."""
    return NormalDist().inv_cdf(level)


def check_now(now: Any) -> datetime:
    """``now`` as an aware UTC datetime: naive times are refused, not guessed."""
    if not isinstance(now, datetime) or now.utcoffset() is None:
        raise ValueError(f"now: expected a timezone-aware datetime (got {now!r})")
    return now.astimezone(UTC)


def require_columns(frame: Any, columns: Sequence[str], name: str) -> pd.DataFrame:
    """Refuse a frame without the columns the decisions read (named, not a KeyError later)."""
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"{name}: expected a pandas DataFrame (got {type(frame).__name__})")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name}: missing columns {missing} (got {list(frame.columns)!r})")
    return frame


def as_date(value: Any) -> date | None:
    """A cohort's ``expires_on`` as a date (None for no expiry), whatever the reader gave."""
    if value is None or value is pd.NaT or (not isinstance(value, str | date)
                                            and pd.isna(value)):
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return pd.Timestamp(value).date()


def life_end_days(expires_on: date | None, now: datetime) -> float:
    """Days from ``now`` to the end of ``expires_on`` (UTC); inf for no expiry."""
    if expires_on is None:
        return math.inf
    end = datetime.combine(expires_on + timedelta(days=1), time(), UTC)
    return (end - now).total_seconds() / 86400.0


def life_left_days(expires_on: date | None, at: datetime) -> float:
    """Shelf life left at ``at``: negative once the lot has expired."""
    return life_end_days(expires_on, check_now(at))


def day_edges(now: datetime, horizon_days: float) -> np.ndarray:
    """Start of each calendar day from today, in days after ``now`` (the first is 0: today
    counts only from ``now``), then the end of the last day the horizon touches."""
    midnight = datetime.combine(now.date() + timedelta(days=1), time(), UTC)
    first = (midnight - now).total_seconds() / 86400.0
    days = 1 if horizon_days <= first else 1 + math.ceil(horizon_days - first - 1e-12)
    return np.concatenate([[0.0], first + np.arange(days)])


def series_seed(seed: int, location_id: str, sku: str) -> list[int]:
    """The seed of one series' paths: stable across runs, processes and scenarios."""
    return [int(seed), zlib.crc32(f"{location_id}\x1f{sku}".encode())]


def demand_spread(mean: Any, sd: Any) -> tuple[np.ndarray, np.ndarray]:
    """A forecast's daily means and sds as the paths use them: NaN as 0, no negative mean,
    and an sd never tighter than Poisson (``sqrt(mean)``)."""
    mean = np.maximum(np.nan_to_num(np.asarray(mean, dtype=float)), 0.0)
    return mean, np.maximum(np.nan_to_num(np.asarray(sd, dtype=float)), np.sqrt(mean))


def squared_cv(mean: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """(sd / mean)^2, capped at 1e6 (a mean near zero), 1 where the mean is not positive."""
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        ratio = np.where(mean > 0, sd / np.where(mean > 0, mean, 1.0), 1.0)
        return np.nan_to_num(np.minimum(ratio * ratio, 1e6), nan=1.0, posinf=1e6)


def demand_paths(mean: np.ndarray, sd: np.ndarray, *, paths: int,
                 seed: Sequence[int], level_cv: float = 0.0) -> np.ndarray:
    """Daily demand draws, shape (days, paths), with the given mean and sd per day.

    ``level_cv`` > 0 scales each path by one level drawn for the whole horizon (gamma, mean
    1, that coefficient of variation), the part of the forecast's error that days share;
    each day's own gamma noise is narrowed so that its sd stays ``sd`` (a day less
    uncertain than the level alone keeps the level's spread: :func:`level_cvs` never asks
    for that). Drawn level first, then day-major, so the first days are identical
    whatever the number of days."""
    mean, sd = demand_spread(mean, sd)
    positive = mean > 0
    shared = float(level_cv) ** 2 if level_cv > 0 else 0.0
    cv2 = np.where(positive, squared_cv(mean, sd), 1.0)
    # Var(L e) = m^2 (c_L^2 + (1 + c_L^2) c_e^2): keep the day's own sd, floored at 2 %.
    own = np.maximum((cv2 - shared) / (1.0 + shared), 4e-4)
    shape = np.where(positive, 1.0 / own, 1.0)
    scale = np.where(positive, mean * own, 0.0)
    rng = np.random.default_rng(list(seed))
    level = (rng.gamma(1.0 / shared, shared, size=paths) if shared > 0
             else np.ones(paths))
    return rng.gamma(shape[:, None], 1.0, size=(len(mean), paths)) * (
        scale[:, None] * level[None, :])


def level_cvs(mean: np.ndarray, sd: np.ndarray, correlation: float) -> np.ndarray:
    """Per series (rows of ``mean``/``sd``, days in columns): the coefficient of variation of
    the level its days share. Its square is ``correlation`` times the smallest squared CV of
    the series' days with demand, so no day's spread grows: the two least uncertain days
    correlate ``correlation``, a day more uncertain than them (a slow day, near Poisson)
    less, since most of its spread is its own."""
    mean, sd = demand_spread(mean, sd)
    positive = mean > 0
    cv2 = np.where(positive, squared_cv(mean, sd), 0.0)
    least = np.where(positive, cv2, np.inf).min(axis=1, initial=np.inf)
    least = np.where(np.isfinite(least), least, 0.0)
    return np.sqrt(max(float(correlation), 0.0) * least)


@dataclass(frozen=True)
class Lot:
    """One cohort as the simulation sees it: units and its sellable window, in days after
    ``now`` (``sellable_until`` inf = never stops)."""

    lot: str
    quantity: float
    sellable_from: float
    sellable_until: float
    expires_on: date | None = None


@dataclass
class Outcome:
    """Simulation results for a list of scenarios (rows); lots keep the scenario's order."""

    lots: list[tuple[Lot, ...]]
    sold: np.ndarray            # (rows, max lots) mean units sold, NaN padding
    waste: np.ndarray           # (rows, max lots) mean units wasted
    waste_prob: np.ndarray      # (rows, max lots) P(cohort wasted)
    left: np.ndarray            # (rows, max lots) mean units still sellable at the horizon
    waste_paths: np.ndarray     # (rows, paths) units wasted, all lots
    unmet_paths: np.ndarray     # (rows, paths) demand not covered (lost sales)
    times: np.ndarray           # (rows, cuts) cut times, padded with the horizon
    cum_unmet: np.ndarray       # (rows, cuts) mean unmet demand up to each cut
    checkpoint_unmet: np.ndarray | None  # (rows, K, paths) unmet up to each checkpoint
    checkpoint_stock: np.ndarray | None  # (rows, K, paths) units sellable at each checkpoint
    horizon: float

    @property
    def expected_unmet(self) -> np.ndarray:
        return self.unmet_paths.mean(axis=1)

    def unmet_between(self, row: int, start: float, end: float) -> float:
        """Mean unmet demand of a row in [start, end] (days after now, clipped to the
        horizon), interpolated between cuts."""
        start, end = max(start, 0.0), min(end, self.horizon)
        if end <= start:
            return 0.0
        t, c = self.times[row], self.cum_unmet[row]
        return float(np.interp(end, t, c) - np.interp(start, t, c))


@dataclass(frozen=True)
class Reorders:
    """The stores' own daily orders, for :func:`simulate_fefo` (arrays of its rows).

    Order ``k`` is placed at ``edges[k]`` (now, then each midnight) and is on the shelf
    ``lead`` days later as a fresh lot sellable for ``life`` days. On each path it brings
    the stock still sellable at its arrival up to ``target[:, k]`` after ``before[:, k]``
    units (the expected demand until it arrives) have sold: an order-up-to rule on the
    forecast, which is how a store's reorders answer the stock it holds. Rows with
    ``active`` False order nothing (warehouses, series without a forecast)."""

    active: np.ndarray   # (rows,) bool
    lead: np.ndarray     # (rows,) days
    life: np.ndarray     # (rows,) days a fresh lot stays sellable
    target: np.ndarray   # (rows, orders) units wanted on the shelf at each arrival
    before: np.ndarray   # (rows, orders) expected demand between ordering and arrival


def simulate_fefo(demand: np.ndarray, quantity: np.ndarray, start: np.ndarray,
                  end: np.ndarray, *, edges: np.ndarray, horizon: float,
                  checkpoints: np.ndarray | None = None,
                  reorders: Reorders | None = None) -> dict[str, np.ndarray]:
    """FEFO sales of a batch of series on shared demand paths.

    ``demand`` (days, rows, paths) are whole-day draws for the calendar days starting at
    ``edges``; ``quantity``/``start``/``end`` (rows, lots) the lots (zero-quantity padding
    is fine) and their sellable windows; ``checkpoints`` (rows, K) times at which unmet
    demand so far and sellable stock are recorded per path. Lots may come in any order.
    ``reorders`` adds the stores' own orders as lots after the given ones (their sales
    and waste count in the totals; the per-lot results keep only the given lots).
    """
    n_given = quantity.shape[1]
    if reorders is not None:
        n_orders = reorders.target.shape[1]
        placed = np.broadcast_to(edges[:n_orders], (len(quantity), n_orders))
        arrive = np.where(reorders.active[:, None], placed + reorders.lead[:, None], np.inf)
        quantity = np.concatenate([quantity, np.zeros_like(arrive)], axis=1)
        start = np.concatenate([start, arrive], axis=1)
        end = np.concatenate([end, arrive + reorders.life[:, None]], axis=1)
    n_days, rows, paths = demand.shape
    order = np.argsort(end, axis=1, kind="stable")
    quantity = np.take_along_axis(quantity, order, 1)
    start = np.take_along_axis(start, order, 1)
    end = np.take_along_axis(end, order, 1)
    n_lots = quantity.shape[1]
    ck = np.zeros((rows, 0)) if checkpoints is None else np.clip(checkpoints, 0, horizon)
    inner = edges[(edges > 0) & (edges < horizon)]
    cuts = np.sort(np.concatenate([
        np.zeros((rows, 1)), np.broadcast_to(inner, (rows, len(inner))),
        np.clip(start, 0, horizon), np.clip(np.where(np.isfinite(end), end, horizon), 0, horizon),
        ck, np.full((rows, 1), horizon)], axis=1), axis=1)
    n_seg = cuts.shape[1] - 1
    length = np.diff(cuts, axis=1)
    mid = (cuts[:, :-1] + cuts[:, 1:]) / 2
    seg_day = np.clip(np.searchsorted(edges, mid, side="right") - 1, 0, n_days - 1)
    sellable = ((start[:, None, :] <= mid[:, :, None]) & (mid[:, :, None] < end[:, None, :])
                & (length[:, :, None] > 0)).transpose(1, 2, 0)  # (seg, lot, row)
    gone = np.maximum(start, end)
    waste_at = np.where(gone <= horizon, (cuts[:, None, :] < gone[:, :, None]).sum(-1),
                        n_seg + 1)  # cut index at whose start the lot is thrown away
    ck_at = (cuts[:, None, :] < ck[:, :, None]).sum(-1)
    ck_lot = (start[:, None, :] <= ck[:, :, None]) & (ck[:, :, None] < end[:, None, :])

    rem = np.repeat(quantity.T[:, :, None].astype(float), paths, axis=2)  # (lot, row, path)
    sold = np.zeros_like(rem)
    wasted = np.zeros_like(rem)
    unmet = np.zeros((rows, paths))
    cum = np.zeros((rows, n_seg + 1))
    k_count = ck.shape[1]
    ck_unmet = np.zeros((rows, k_count, paths))
    ck_stock = np.zeros((rows, k_count, paths))
    row_ix = np.arange(rows)
    back = np.argsort(order, axis=1)  # each lot's place in the sorted order
    if reorders is not None:
        slot = back[:, n_given:]  # each order's lot
        arrive_s = np.take_along_axis(start, slot, 1)
        # the cut at which each order is placed (its row's first cut at or after edges[k])
        placed_at = (cuts[:, :, None] < edges[None, None, :n_orders]).sum(axis=1)
        placing = (np.isfinite(arrive_s) & (arrive_s < horizon))
    for i in range(n_seg + 1):
        if reorders is not None:
            for k in range(n_orders):
                hit = placing[:, k] & (placed_at[:, k] == i)
                if not hit.any():
                    continue
                rws = np.flatnonzero(hit)
                at = arrive_s[rws, k]
                keeps = (end[rws] > at[:, None]).T[:, :, None]  # (lot, hit rows, 1)
                position = (rem[:, rws] * keeps).sum(axis=0)
                want = (reorders.target[rws, k] + reorders.before[rws, k])[:, None]
                rem[slot[rws, k], rws] = np.maximum(np.round(want - position), 0.0)
        due = waste_at == i
        if due.any():
            for lot in np.flatnonzero(due.any(axis=0)):
                hit = due[:, lot]
                wasted[lot, hit] += rem[lot, hit]
                rem[lot, hit] = 0.0
        for k in range(k_count):
            hit = ck_at[:, k] == i
            if hit.any():
                ck_unmet[hit, k] = unmet[hit]
                ck_stock[hit, k] = np.einsum("lrp,rl->rp", rem[:, hit], ck_lot[hit, k])
        cum[:, i] = unmet.mean(axis=1)
        if i == n_seg:
            break
        if not length[:, i].any():
            continue
        need = demand[seg_day[:, i], row_ix] * length[:, i, None]
        for lot in range(n_lots):
            ok = sellable[i, lot]
            if not ok.any():
                continue
            take = np.minimum(rem[lot] if ok.all() else rem[lot] * ok[:, None], need)
            rem[lot] -= take
            sold[lot] += take
            need -= take
        unmet += need
    back = back[:, :n_given]

    def per_lot(values: np.ndarray) -> np.ndarray:
        return np.take_along_axis(values.T, back, 1)

    return {
        "sold": per_lot(sold.mean(axis=2)), "waste": per_lot(wasted.mean(axis=2)),
        "waste_prob": per_lot((wasted >= WASTE_EPS).mean(axis=2)),
        "left": per_lot(rem.mean(axis=2)),
        "waste_paths": wasted.sum(axis=0), "unmet_paths": unmet, "times": cuts, "cum": cum,
        "ck_unmet": ck_unmet, "ck_stock": ck_stock,
    }


class ShelfModel:
    """Stock, demand and selling rules of every (location, SKU), ready for what-ifs.

    ``series`` has one row per (location, SKU) with positive stock, a forecast or stock in
    transit; ``lots[i]`` are its cohorts, plus a lot for stock in transit to it, sellable
    from now. ``in_transit`` may give each row's ``expires_on`` (a transfer of a known
    lot); without one the units count as a new receipt of ``shelf_life_days`` (an order
    from the supplier). Scenarios are (series index, lots) pairs run on that series' paths.
    """

    def __init__(self, cohorts: pd.DataFrame, forecasts: pd.DataFrame,
                 locations: pd.DataFrame, items: pd.DataFrame, *,
                 in_transit: pd.DataFrame | None = None, now: datetime,
                 horizon_days: float = 7, paths: int = 1000, seed: int = 0,
                 error_correlation: float = ERROR_CORRELATION,
                 service_level: ServiceLevels = SERVICE_LEVEL) -> None:
        self.now = check_now(now)
        self.service_level = check_service_levels(service_level)
        if not 0 <= error_correlation < 1:
            raise ValueError(f"error_correlation: must be in [0, 1) (got {error_correlation!r})")
        self.error_correlation = float(error_correlation)
        if not horizon_days > 0:
            raise ValueError(f"horizon_days: must be > 0 (got {horizon_days!r})")
        if int(paths) < 1:
            raise ValueError(f"paths: must be >= 1 (got {paths!r})")
        self.horizon = float(horizon_days)
        self.paths, self.seed = int(paths), int(seed)
        self.edges = day_edges(self.now, self.horizon)
        self.items = clean_items(items)
        self._build(require_columns(cohorts, COHORT_COLUMNS, "cohorts"),
                    require_columns(forecasts, FORECAST_COLUMNS, "forecasts"),
                    clean_locations(locations), in_transit)

    # --- inputs ---------------------------------------------------------------------------

    def _build(self, cohorts: pd.DataFrame, forecasts: pd.DataFrame,
               locations: pd.DataFrame, in_transit: pd.DataFrame | None) -> None:
        stock = cohorts[pd.to_numeric(cohorts["quantity"], errors="coerce").fillna(0) > 0].copy()
        stock["expires_on"] = [as_date(v) for v in stock["expires_on"]]
        stock = stock[~((stock["lot"] == NO_LOT) & stock["expires_on"].isna())]
        moving = None
        if in_transit is not None and len(in_transit):
            moving = require_columns(in_transit, ("location_id", "sku", "quantity"),
                                     "in_transit")
            moving = moving[(pd.to_numeric(moving["quantity"], errors="coerce").fillna(0) > 0)
                            & moving["location_id"].notna() & moving["sku"].notna()]
            moving = moving.assign(expires_on=[as_date(v) for v in moving["expires_on"]]
                                   if "expires_on" in moving else None)
            moving = moving.groupby(["location_id", "sku", "expires_on"], as_index=False,
                                    dropna=False)["quantity"].sum()
        keys = [stock[["location_id", "sku"]], forecasts[["location_id", "sku"]]]
        if moving is not None:
            keys.append(moving[["location_id", "sku"]])
        series = pd.concat(keys, ignore_index=True).drop_duplicates().reset_index(drop=True)
        series = series.astype({"location_id": str, "sku": str})
        loc = locations.set_index("location_id")
        fallback_region = pd.concat([stock[["location_id", "region"]],
                                     forecasts[["location_id", "region"]]
                                     if "region" in forecasts else stock[[]]]
                                    ).drop_duplicates("location_id").set_index("location_id")
        region = series["location_id"].map(loc["region"])
        series["region"] = region.fillna(series["location_id"].map(
            fallback_region["region"] if len(fallback_region) else {})).fillna("")
        series["kind"] = series["location_id"].map(loc["kind"]).fillna("store")
        item = self.items.set_index("sku")
        for col in ("category", "price", "unit_cost", "shelf_life_days", "min_sellable_days"):
            series[col] = series["sku"].map(item[col]) if col in item else np.nan
        store_min = series["min_sellable_days"].fillna(0).astype(float)
        series["sell_min_days"] = np.where(series["kind"] == "store", store_min, 0.0)
        self.series = series
        self._seeds = [series_seed(self.seed, a, b)
                       for a, b in zip(series["location_id"], series["sku"], strict=True)]
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._plans: dict[tuple[int, int, float, float], tuple[np.ndarray, np.ndarray]] = {}
        self.index = {(r.location_id, r.sku): i
                      for i, r in enumerate(series[["location_id", "sku"]].itertuples())}
        self._forecast_arrays(forecasts)
        self.level_cv = level_cvs(self.mean, self.sd, self.error_correlation)
        lots: list[list[Lot]] = [[] for _ in range(len(series))]
        sell_min = series["sell_min_days"].to_numpy()
        for r in stock[["location_id", "sku", "lot", "expires_on", "quantity"]].itertuples(
                index=False):
            i = self.index[(str(r.location_id), str(r.sku))]
            end = life_end_days(r.expires_on, self.now) - sell_min[i]
            lots[i].append(Lot(str(r.lot), float(r.quantity), 0.0, end, r.expires_on))
        if moving is not None:
            life = series["shelf_life_days"].to_numpy(dtype=float)
            for r in moving.itertuples(index=False):
                i = self.index[(str(r.location_id), str(r.sku))]
                known = as_date(r.expires_on)
                end = (life_end_days(known, self.now) if known is not None
                       else life[i] if np.isfinite(life[i]) else math.inf)
                lots[i].append(Lot(IN_TRANSIT_LOT, float(r.quantity), 0.0,
                                   end - sell_min[i], known))
        self.lots = [tuple(sorted(lot_list, key=lambda x: (x.sellable_until, x.lot)))
                     for lot_list in lots]

    def _forecast_arrays(self, forecasts: pd.DataFrame) -> None:
        n, days = len(self.series), len(self.edges) - 1
        self.mean = np.zeros((n, days))
        self.sd = np.zeros((n, days))
        self.has_forecast = np.zeros(n, dtype=bool)
        if not len(forecasts):
            return
        fc = forecasts[list(FORECAST_COLUMNS)].copy()
        day = (pd.to_datetime(fc["forecast_date"]).dt.tz_localize(None).dt.normalize()
               - pd.Timestamp(self.now.date())).dt.days
        fc["j"] = day.clip(lower=-1, upper=days)
        fc["row"] = [self.index[(str(a), str(b))] for a, b in zip(fc["location_id"],
                                                                  fc["sku"], strict=True)]
        # Outside the horizon keep the nearest day on each side (latest before, first after).
        fc["_near"] = day.where(day < days, -day)
        fc = fc.sort_values("_near", kind="stable").drop_duplicates(["row", "j"], keep="last")
        for col in ("forecast", "lower", "upper"):
            fc[col] = pd.to_numeric(fc[col], errors="coerce")
        spread = (fc["upper"] - fc["lower"]) / (2 * Z80)
        fc["sd"] = spread.where(spread > 0, 0.0).fillna(0.0)
        fc["forecast"] = fc["forecast"].clip(lower=0).fillna(0.0)
        cols = np.arange(-1, days + 1)
        for col, out in (("forecast", self.mean), ("sd", self.sd)):
            grid = (fc.pivot(index="row", columns="j", values=col).reindex(columns=cols)
                    .ffill(axis=1).bfill(axis=1))
            out[grid.index.to_numpy()] = grid[list(range(days))].to_numpy()
        self.has_forecast[fc["row"].unique()] = True

    # --- simulation -----------------------------------------------------------------------

    def demand(self, row: int, days: int | None = None) -> np.ndarray:
        """Demand paths of one series, (days, paths); the same on every call (recent
        full-horizon draws are kept, in float32, for the next what-if)."""
        full = len(self.edges) - 1
        days = full if days is None else days
        if days == full and row in self._cache:
            self._cache.move_to_end(row)
            return self._cache[row]
        drawn = demand_paths(self.mean[row, :days], self.sd[row, :days], paths=self.paths,
                             seed=self._seeds[row],
                             level_cv=float(self.level_cv[row])).astype(np.float32)
        if days == full:
            self._cache[row] = drawn
            if len(self._cache) * drawn.size * 4 > CACHE_BYTES:
                self._cache.popitem(last=False)
        return drawn

    def run(self, scenarios: Sequence[tuple[int, Sequence[Lot]]], *,
            horizon: float | None = None,
            checkpoints: Sequence[Sequence[float]] | None = None,
            reorders: bool = False) -> Outcome:
        """Simulate each (series, lots) scenario on its series' paths (batched).

        ``reorders``: stores keep ordering as they do every day (:meth:`reorders_of`), so
        what a store runs short of after its next delivery is mostly covered, and what a
        scenario adds to its shelf displaces what it would have ordered."""
        horizon = self.horizon if horizon is None else min(float(horizon), self.horizon)
        edges = day_edges(self.now, horizon)
        days = len(edges) - 1
        n, k_count = len(scenarios), (len(checkpoints[0]) if checkpoints is not None
                                      and len(checkpoints) else 0)
        width = max([len(lots) for _, lots in scenarios] + [1])
        out = {name: np.full((n, width), np.nan) for name in ("sold", "waste", "waste_prob",
                                                              "left")}
        waste_paths = np.zeros((n, self.paths), dtype=np.float32)
        unmet_paths = np.zeros((n, self.paths), dtype=np.float32)
        max_cuts = days + 2 * (width + (days if reorders else 0)) + k_count + 2
        times = np.full((n, max_cuts), horizon)
        cum = np.zeros((n, max_cuts))
        ck_unmet = np.zeros((n, k_count, self.paths), dtype=np.float32) if k_count else None
        ck_stock = np.zeros((n, k_count, self.paths), dtype=np.float32) if k_count else None
        order = sorted(range(n), key=lambda r: (len(scenarios[r][1]), scenarios[r][0]))
        per_batch = max(1, BATCH_CELLS // self.paths)
        for b0 in range(0, n, per_batch):
            rows = order[b0:b0 + per_batch]
            lots_w = max([len(scenarios[r][1]) for r in rows] + [1])
            qty = np.zeros((len(rows), lots_w))
            start = np.zeros((len(rows), lots_w))
            end = np.full((len(rows), lots_w), np.inf)
            draws = np.empty((days, len(rows), self.paths))
            for j, r in enumerate(rows):
                series_row, lots = scenarios[r]
                draws[:, j] = self.demand(series_row, days)
                for m, lot in enumerate(lots):
                    qty[j, m] = max(lot.quantity, 0.0)
                    start[j, m] = lot.sellable_from
                    end[j, m] = lot.sellable_until
            ck = (np.asarray([checkpoints[r] for r in rows], dtype=float)
                  if k_count else None)
            res = simulate_fefo(draws, qty, start, end, edges=edges, horizon=horizon,
                                checkpoints=ck,
                                reorders=self.reorders_of([scenarios[r][0] for r in rows],
                                                          edges) if reorders else None)
            for j, r in enumerate(rows):
                m = len(scenarios[r][1])
                for name in out:
                    out[name][r, :m] = res[name][j, :m]
            idx = np.asarray(rows)
            waste_paths[idx] = res["waste_paths"]
            unmet_paths[idx] = res["unmet_paths"]
            width_cuts = res["times"].shape[1]
            times[idx, :width_cuts] = res["times"]
            cum[idx, :width_cuts] = res["cum"]
            cum[idx, width_cuts:] = res["cum"][:, -1:]
            if k_count:
                ck_unmet[idx] = res["ck_unmet"]
                ck_stock[idx] = res["ck_stock"]
        return Outcome([tuple(lots) for _, lots in scenarios], out["sold"], out["waste"],
                       out["waste_prob"], out["left"], waste_paths, unmet_paths, times, cum,
                       ck_unmet, ck_stock, horizon)

    def reorders_of(self, rows: Sequence[int], edges: np.ndarray,
                    review_days: float = 1.0) -> Reorders:
        """The daily orders of stores with a forecast and a shelf life, as
        :class:`Reorders`: placed now and at each midnight, arriving after the SKU's lead
        time, each wanting the forecast of the ``review_days`` until the next delivery
        plus the standard deviations of a day that the SKU's category's service level asks
        for (the model's ``service_level``, as the reorders job is given it), without the
        job's cases and its cap."""
        s = self.series
        idx = np.asarray(rows, dtype=int)
        life = (s["shelf_life_days"].to_numpy(dtype=float)[idx]
                - s["sell_min_days"].to_numpy(dtype=float)[idx])
        lead = (s["sku"].iloc[idx].map(self.items.set_index("sku")["lead_time_days"])
                .to_numpy(dtype=float))
        active = ((s["kind"].to_numpy()[idx] == "store") & self.has_forecast[idx]
                  & np.isfinite(life) & (life > 0) & np.isfinite(lead))
        lead = np.where(active, lead, 0.0)
        life = np.where(active, life, 0.0)
        n_orders = len(edges) - 1
        target = np.zeros((len(idx), n_orders))
        before = np.zeros((len(idx), n_orders))
        for j, row in enumerate(idx.tolist()):
            if active[j]:
                target[j], before[j] = self._order_plan(row, n_orders, float(lead[j]),
                                                        review_days)
        return Reorders(active, lead, life, target, before)

    def _order_plan(self, row: int, n_orders: int, lead: float,
                    review_days: float) -> tuple[np.ndarray, np.ndarray]:
        """(target, before) of a series' first ``n_orders`` daily orders; the same for
        every scenario of the series, so kept for the next what-if."""
        key = (row, n_orders, lead, review_days)
        if key not in self._plans:
            placed = self.edges[:n_orders]
            target, before = np.zeros(n_orders), np.zeros(n_orders)
            z = service_z(service_level_of(self.service_level,
                                           self.series["category"].iat[row]))
            last = self.mean.shape[1] - 1
            for k in range(n_orders):
                arrive = placed[k] + lead
                day = min(max(int(np.searchsorted(self.edges, arrive, side="right")) - 1, 0),
                          last)
                sd = max(float(self.sd[row, day]), math.sqrt(float(self.mean[row, day])))
                target[k] = self.expected_demand(row, arrive, arrive + review_days) + z * sd
                before[k] = self.expected_demand(row, placed[k], arrive)
            self._plans[key] = (target, before)
        return self._plans[key]

    def baseline(self) -> Outcome:
        """Every series with its current stock."""
        return self.run(list(enumerate(self.lots)))

    def expected_demand(self, row: int, start: float, end: float) -> float:
        """Forecast units of a series in [start, end] (days after now)."""
        edges = self.edges
        lo, hi = edges[:-1], np.append(edges[1:-1], max(edges[-1], end))
        overlap = np.clip(np.minimum(hi, end) - np.maximum(lo, start), 0, None)
        return float((self.mean[row, :len(lo)] * overlap).sum())

    # --- reports --------------------------------------------------------------------------

    def cohort_outlook(self, outcome: Outcome | None = None) -> pd.DataFrame:
        """Per cohort: expected sold and wasted units and the probability it is wasted."""
        outcome = outcome or self.baseline()
        rows = []
        for i, lots in enumerate(outcome.lots):
            s = self.series.iloc[i]
            for m, lot in enumerate(lots):
                rows.append({"region": s["region"], "location_id": s["location_id"],
                             "sku": s["sku"], "lot": lot.lot, "expires_on": lot.expires_on,
                             "quantity": lot.quantity, "sellable_until_days": lot.sellable_until,
                             "expected_sold": outcome.sold[i, m],
                             "expected_waste": outcome.waste[i, m],
                             "waste_prob": outcome.waste_prob[i, m]})
        return pd.DataFrame(rows, columns=["region", "location_id", "sku", "lot", "expires_on",
                                           "quantity", "sellable_until_days", "expected_sold",
                                           "expected_waste", "waste_prob"])

    def series_outlook(self, outcome: Outcome | None = None) -> pd.DataFrame:
        """Per (location, SKU): expected demand and lost sales over the horizon, and lost
        sales per calendar day from today (``expected_unmet_by_day``)."""
        outcome = outcome or self.baseline()
        edges = np.minimum(self.edges, self.horizon)
        by_day = [[outcome.unmet_between(i, a, b) for a, b in zip(edges[:-1], edges[1:],
                                                                  strict=True)]
                  for i in range(len(outcome.lots))]
        out = self.series[["region", "location_id", "sku", "kind"]].copy()
        out["expected_demand"] = [self.expected_demand(i, 0, self.horizon)
                                  for i in range(len(out))]
        out["expected_unmet"] = outcome.expected_unmet.astype(float)
        out["expected_unmet_by_day"] = by_day
        return out


def clean_locations(locations: pd.DataFrame) -> pd.DataFrame:
    """Locations with a known kind; a bad kind is refused with the location named."""
    locations = require_columns(locations, LOCATION_COLUMNS, "locations")
    bad = locations[~locations["kind"].isin(LOCATION_KINDS)]
    if len(bad):
        r = bad.iloc[0]
        raise ValueError(f"kind: expected one of {', '.join(LOCATION_KINDS)} for location "
                         f"{r['location_id']} (got {r['kind']!r})")
    return locations.astype({"location_id": str}).drop_duplicates("location_id", keep="last")


def clean_items(items: pd.DataFrame) -> pd.DataFrame:
    """Items with defaults filled (case_size 1, lead_time_days 1) and values checked."""
    items = require_columns(items, ITEM_COLUMNS, "items").copy()
    items["sku"] = items["sku"].astype(str)
    for col, default in (("case_size", 1), ("lead_time_days", 1), ("unit_cost", np.nan)):
        if col not in items:
            items[col] = default
        items[col] = pd.to_numeric(items[col], errors="coerce")
        if not np.isnan(default):
            items[col] = items[col].fillna(default)
    for col in ("price", "shelf_life_days", "min_sellable_days"):
        items[col] = pd.to_numeric(items[col], errors="coerce")
    checks = (("price", lambda v: v >= 0), ("shelf_life_days", lambda v: v > 0),
              ("min_sellable_days", lambda v: v >= 0), ("case_size", lambda v: v >= 1),
              ("lead_time_days", lambda v: v >= 0))
    for col, ok in checks:
        values = items[col]
        bad = values.notna() & ~ok(values)
        if bad.any():
            r = items[bad].iloc[0]
            raise ValueError(f"{col}: out of range for sku {r['sku']} (got {r[col]!r})")
    items["case_size"] = items["case_size"].astype(int)
    return items.drop_duplicates("sku", keep="last")
