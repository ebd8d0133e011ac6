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
MAX_MODEL_DAYS = 28
"""Longest horizon the reorders job simulates (days after now); a lot still selling later
is taken not to spoil, so its order is not capped at what it sells."""
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


def unit_values(price: float, unit_cost: float) -> tuple[float, float]:
    """(value of a sale, loss of a wasted unit) of one unit of a SKU: its margin and its
    cost; both its price when the unit cost is unknown (or not below the price), and one
    unit each when the price is unknown too."""
    if not (np.isfinite(price) and price >= 0):
        return 1.0, 1.0
    if not (np.isfinite(unit_cost) and 0 <= unit_cost < price):
        return price, price
    return price - unit_cost, unit_cost


def critical_ratio(price: float, unit_cost: float) -> float:
    """The newsvendor critical ratio ``margin / (margin + cost)``: ordering one more unit
    pays while the probability that it is wasted stays at most this (1/2 when a sale and
    a waste are valued alike, or the SKU has no price)."""
    sale, loss = unit_values(price, unit_cost)
    return sale / (sale + loss) if sale + loss > 0 else 0.5


def _normal_cdf(x: np.ndarray) -> np.ndarray:
    # erf's Abramowitz-Stegun 7.1.26 form (error below 1.5e-7): numpy has no erf.
    z = np.abs(x) / math.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * z)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027
                                                                          + t * 1.061405429))))
    erf = 1.0 - poly * np.exp(-z * z)
    return 0.5 * (1.0 + np.sign(x) * erf)


def expected_excess(quantity: np.ndarray, mean: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """E[max(quantity - C, 0)] for C normal (``mean``, ``sd``): the units of an order of
    ``quantity`` left unsold when the lot can sell C (``max(quantity - mean, 0)`` at sd 0;
    nothing when ``mean`` is infinite)."""
    quantity, mean, sd = np.broadcast_arrays(*(np.asarray(a, dtype=float)
                                               for a in (quantity, mean, sd)))
    out = np.maximum(quantity - np.where(np.isfinite(mean), mean, np.inf), 0.0)
    wide = np.isfinite(mean) & (sd > 0)
    if wide.any():
        d = np.clip((quantity[wide] - mean[wide]) / sd[wide], -40.0, 40.0)
        out[wide] = ((quantity[wide] - mean[wide]) * _normal_cdf(d)
                     + sd[wide] * np.exp(-0.5 * d * d) / math.sqrt(2 * math.pi))
    return out


def store_order(need: np.ndarray, sells: np.ndarray, sells_sd: np.ndarray, *,
                case: np.ndarray, cap_z: np.ndarray, sale: np.ndarray,
                loss: np.ndarray) -> np.ndarray:
    """The reorders job's rules for one order, on estimates rather than its own paths.

    ``need`` is what the service level asks for, ``sells`` (``sells_sd``) what the new
    lot can sell before it stops being sellable (infinite: not capped). The order is
    capped at the ``cap_z`` quantile of what it can sell (the critical ratio's), then a
    part case goes up or down to a whole case, whichever is worth more in margin of what
    it sells less the cost of what it wastes (down on a tie): as
    :func:`spark_jobs.decisions.reorders.suggest_reorders` decides it."""
    need = np.maximum(np.floor(np.asarray(need, dtype=float) + 0.5), 0.0)
    sells = np.asarray(sells, dtype=float)
    capped = np.isfinite(sells)
    cap = np.where(capped, np.maximum(np.floor(np.where(capped, sells, 0.0)
                                               + cap_z * sells_sd + 0.5), 0.0), np.inf)
    quantity = np.minimum(need, cap)
    down = np.floor(quantity / case) * case
    up = down + case
    gain = (sale * (up - down)
            - (sale + loss) * (expected_excess(up, sells, sells_sd)
                               - expected_excess(down, sells, sells_sd)))
    return np.where(quantity > down, np.where(gain > 0, up, down), quantity)


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
    ``lead`` days later as a fresh lot sellable for ``life`` days. On each path the lots
    the store holds then are sold first-expiry-first against the forecast (``cum``, the
    expected demand from now at the times ``grid``): what they sell before the order
    arrives, then what they cover of the ``review`` days after it. The order tops that up
    to ``target[:, k]`` (the window's forecast plus the service level's safety stock), is
    capped at what the new lot can sell before it stops being sellable once the older
    lots have sold (``sells_sd``; not capped where ``capped`` is False) and is rounded to
    whole cases by :func:`store_order`: the reorders job's rules, on expected demand
    rather than its own paths. Rows with ``active`` False order nothing (warehouses,
    series without a forecast)."""

    active: np.ndarray    # (rows,) bool
    lead: np.ndarray      # (rows,) days
    life: np.ndarray      # (rows,) days a fresh lot stays sellable
    target: np.ndarray    # (rows, orders) units wanted for the window after each arrival
    capped: np.ndarray    # (rows,) bool: the job caps the order at what the lot sells
    sells_sd: np.ndarray  # (rows, orders) sd of demand while the new lot is sellable
    case: np.ndarray      # (rows,) units per case
    cap_z: np.ndarray     # (rows,) standard deviations of the cap (the critical ratio's)
    sale: np.ndarray      # (rows,) value of a unit sold
    loss: np.ndarray      # (rows,) loss of a unit wasted
    grid: np.ndarray      # (points,) days after now
    cum: np.ndarray       # (rows, points) expected demand from now to each point
    review: float = 1.0

    def demand_to(self, rows: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Expected demand from now to ``t`` (rows, ...) of each row, linear within a day."""
        t = np.clip(np.asarray(t, dtype=float), self.grid[0], self.grid[-1])
        j = np.clip(np.searchsorted(self.grid, t, side="right") - 1, 0, len(self.grid) - 2)
        lo, hi = self.grid[j], self.grid[j + 1]
        c = self.cum[rows].reshape(rows.shape + (1,) * (t.ndim - 1) + (-1,))
        c = np.broadcast_to(c, t.shape + (c.shape[-1],))
        a = np.take_along_axis(c, j[..., None], -1)[..., 0]
        b = np.take_along_axis(c, j[..., None] + 1, -1)[..., 0]
        return a + (b - a) * (t - lo) / (hi - lo)

    def quantity(self, rows: np.ndarray, k: int, placed: float, at: np.ndarray,
                 stock: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
        """Order ``k`` of ``rows`` (placed at ``placed``, arriving at ``at``) on each path,
        given the lots' units now ``stock`` (lots, rows, paths) and their sellable
        windows ``start``/``end`` (rows, lots, in order of ``end``)."""
        left = np.array(stock, dtype=float)
        c_at = self.demand_to(rows, at)[:, None]
        # before it arrives: expected demand from now on, first-expiry-first
        reach = np.maximum(self.demand_to(rows, np.minimum(end, at[:, None]))
                           - self.demand_to(rows, np.maximum(start, placed)), 0.0)
        c_from = self.demand_to(rows, np.full(len(rows), placed))[:, None]
        upto = np.minimum(self.demand_to(rows, np.minimum(end, at[:, None])), c_at) - c_from
        served = np.zeros(left.shape[1:])
        for j in range(left.shape[0]):
            take = np.clip(np.minimum(np.minimum(left[j], reach[:, j, None]),
                                      upto[:, j, None] - served), 0.0, None)
            left[j] -= take
            served += take
        # The window after it arrives: lots that stop being sellable inside it cover its
        # first part on the forecast; what they leave keeps the window's uncertainty in
        # proportion, and the lots that last it count in full, as the job's quantile of
        # the unmet demand sees them.
        until = at + self.review
        mean_w = self.demand_to(rows, until)[:, None] - c_at
        safety = self.target[rows, k, None] - mean_w
        early = self._cover(rows, at, until, left, start, end, c_at, lasting=False)
        rest = np.maximum(mean_w - early, 0.0)
        share = np.divide(rest, mean_w, out=np.zeros_like(rest), where=mean_w > 0)
        lasts = ((end >= until[:, None]) & (start < until[:, None])).T[:, :, None]
        need = rest + safety * np.sqrt(share) - (left * lasts).sum(axis=0)
        life_end = at + self.life[rows]
        sells = np.where(self.capped[rows][:, None],
                         (self.demand_to(rows, life_end)[:, None] - c_at)
                         - self._cover(rows, at, life_end, left, start, end, c_at), np.inf)
        col = (slice(None), None)
        return store_order(need, sells,
                           self.sells_sd[rows, k, None], case=self.case[rows][col],
                           cap_z=self.cap_z[rows][col], sale=self.sale[rows][col],
                           loss=self.loss[rows][col])

    def _cover(self, rows: np.ndarray, at: np.ndarray, until: np.ndarray, left: np.ndarray,
               start: np.ndarray, end: np.ndarray, c_at: np.ndarray, *,
               lasting: bool = True) -> np.ndarray:
        """Units of ``left`` that sell in [at, until] first-expiry-first on the forecast: a
        lot that stops being sellable inside it sells at most the demand until then, less
        what older lots took. ``lasting=False`` leaves out the lots that last the span."""
        stop = np.minimum(end, until[:, None])
        upto = self.demand_to(rows, stop) - c_at  # demand to each lot's end in the span
        open_ = (end > at[:, None]) & (start < until[:, None])
        if not lasting:
            open_ &= end < until[:, None]
        served = np.zeros(left.shape[1:])
        for j in range(left.shape[0]):
            room = np.where(open_[:, j, None], upto[:, j, None] - served, 0.0)
            served += np.clip(np.minimum(left[j], room), 0.0, None)
        return served


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
                rem[slot[rws, k], rws] = reorders.quantity(
                    rws, k, float(edges[k]), arrive_s[rws, k], rem[:, rws], start[rws],
                    end[rws])
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
        self._plans: dict[tuple[int, int, float, float, float], np.ndarray] = {}
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
        for (the model's ``service_level``, as the reorders job is given it), capped at
        what the lot can sell and ordered in the SKU's cases, as the job orders."""
        s = self.series
        idx = np.asarray(rows, dtype=int)
        life = (s["shelf_life_days"].to_numpy(dtype=float)[idx]
                - s["sell_min_days"].to_numpy(dtype=float)[idx])
        item = self.items.set_index("sku")
        skus = s["sku"].iloc[idx]
        lead = skus.map(item["lead_time_days"]).to_numpy(dtype=float)
        active = ((s["kind"].to_numpy()[idx] == "store") & self.has_forecast[idx]
                  & np.isfinite(life) & (life > 0) & np.isfinite(lead))
        lead = np.where(active, lead, 0.0)
        life = np.where(active, life, 0.0)
        case = np.maximum(skus.map(item["case_size"]).fillna(1).to_numpy(dtype=float), 1.0)
        values = [unit_values(float(p), float(c)) for p, c in
                  zip(s["price"].to_numpy(dtype=float)[idx],
                      s["unit_cost"].to_numpy(dtype=float)[idx], strict=True)]
        sale = np.array([v[0] for v in values], dtype=float).reshape(len(idx))
        loss = np.array([v[1] for v in values], dtype=float).reshape(len(idx))
        cap_z = np.array([service_z(min(max(a / (a + b) if a + b > 0 else 0.5, 1e-6),
                                        1 - 1e-6)) for a, b in values],
                         dtype=float).reshape(len(idx))
        n_orders = len(edges) - 1
        reach = float(max(lead.max(initial=0.0) + life.max(initial=0.0),
                          lead.max(initial=0.0) + review_days)) + n_orders + 1
        grid = np.concatenate([self.edges, self.edges[-1]
                               + np.arange(1, math.ceil(max(reach - self.edges[-1], 0)) + 2)])
        plan = np.zeros((2, len(idx), n_orders))
        cum = np.zeros((len(idx), len(grid)))
        for j, row in enumerate(idx.tolist()):
            cum[j] = self.cumulative_demand(row, grid)
            if active[j]:
                plan[:, j] = self._order_plan(row, n_orders, float(lead[j]), float(life[j]),
                                              review_days)
        return Reorders(active, lead, life, plan[0], lead + life <= MAX_MODEL_DAYS, plan[1],
                        case, cap_z, sale, loss, grid, cum, float(review_days))

    def _order_plan(self, row: int, n_orders: int, lead: float, life: float,
                    review_days: float) -> np.ndarray:
        """(target, sd of demand while the new lot sells) of a series' first
        ``n_orders`` daily orders (:class:`Reorders`); the same for every scenario of the
        series, so kept for the next what-if."""
        key = (row, n_orders, lead, life, review_days)
        if key not in self._plans:
            placed = self.edges[:n_orders]
            plan = np.zeros((2, n_orders))
            z = service_z(service_level_of(self.service_level,
                                           self.series["category"].iat[row]))
            last = self.mean.shape[1] - 1
            for k in range(n_orders):
                arrive = placed[k] + lead
                day = min(max(int(np.searchsorted(self.edges, arrive, side="right")) - 1, 0),
                          last)
                sd = max(float(self.sd[row, day]), math.sqrt(float(self.mean[row, day])))
                plan[0, k] = self.expected_demand(row, arrive, arrive + review_days) + z * sd
                plan[1, k] = self.demand_sd(row, arrive, arrive + life)
            self._plans[key] = plan
        return self._plans[key]

    def cumulative_demand(self, row: int, times: np.ndarray) -> np.ndarray:
        """Forecast units of a series from now to each of ``times`` (days after now,
        ascending); past the horizon its last day repeats."""
        days = self.mean.shape[1]
        knots = np.concatenate([self.edges, [max(float(self.edges[-1]), float(times[-1]))]])
        rate = np.concatenate([self.mean[row], self.mean[row, days - 1:days]])
        at = np.concatenate([[0.0], np.cumsum(rate * np.diff(knots))])
        return np.interp(times, knots, at)

    def baseline(self) -> Outcome:
        """Every series with its current stock."""
        return self.run(list(enumerate(self.lots)))

    def expected_demand(self, row: int, start: float, end: float) -> float:
        """Forecast units of a series in [start, end] (days after now)."""
        edges = self.edges
        lo, hi = edges[:-1], np.append(edges[1:-1], max(edges[-1], end))
        overlap = np.clip(np.minimum(hi, end) - np.maximum(lo, start), 0, None)
        return float((self.mean[row, :len(lo)] * overlap).sum())

    def demand_sd(self, row: int, start: float, end: float) -> float:
        """Standard deviation of a series' demand in [start, end] (days after now): each
        day's sd (at least Poisson's) for the part of it inside, every pair of days
        correlated by :data:`ERROR_CORRELATION` (the paths share it between their least
        uncertain days, so this leans wide); a window past the horizon repeats its last
        day."""
        days = self.mean.shape[1]
        extra = max(int(math.ceil(end - self.edges[-1])), 0)
        lo = np.concatenate([self.edges[:-1], self.edges[-1] + np.arange(extra)])
        hi = np.concatenate([self.edges[1:], self.edges[-1] + np.arange(1, extra + 1)])
        col = np.minimum(np.arange(len(lo)), days - 1)
        overlap = np.clip(np.minimum(hi, end) - np.maximum(lo, start), 0, None)
        sd = np.maximum(self.sd[row, col], np.sqrt(self.mean[row, col])) * overlap
        rho = self.error_correlation
        return float(math.sqrt((1 - rho) * float((sd ** 2).sum()) + rho * float(sd.sum()) ** 2))

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
