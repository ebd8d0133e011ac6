"""Daily demand forecasts per SKU per location, and the batch job that writes them to gold.

One forecaster, :func:`forecast_demand`, serves the Spark job, the backtest
(``bench/forecast.py``) and anyone holding a pandas frame shaped like FreshRetailNet's
daily file. Per-series Prophet is too slow for a network (0.14-0.25 s a series: 17-32
minutes for 15,000 series on two cores) and reads empty shelves as low demand, so a pool
of series is forecast in three tiers:

* **pooled** (``prophet_pooled+gbm``): Prophet fits the weekly shape and the regressor
  effects (discount, holiday, promotion, weather) of a few aggregate series (the whole
  pool, each first-level category and each city, every series scaled to its own level),
  and one LightGBM model across all series learns each series' next days from its recent
  levels, its weekday pattern, the day's regressors and those Prophet curves. It is
  trained only on days with at most :data:`UNCENSORED_MAX_STOCKOUT_HOURS` stockout hours,
  where sales are close to demand, so empty shelves do not teach it that demand is low.
  Its 80% interval comes from its errors on the last week of history, forecast by a fit
  without that week. Each aggregate Prophet is fitted :data:`PROPHET_FITS` times, a week
  apart, and every training row reads the curves of a fit that ended by its origin: curves
  from one fit on all history had already seen the days the GBM learnt to predict, so it
  trusted them more than their extrapolation deserves and followed them into a low bias.
  Demand shifts the regressors do not explain stay unforecast: the backtest's last week
  rose 15% in cities going into heavy rain, but on the weeks before it rain moved city
  demand by about 0.3% a mm, and neither weather features relative to the recent week,
  trend ratios, recency weighting, linear trees nor a Tweedie objective recovered more of
  it without hurting the earlier weeks.
* **prophet**: a pool too small for a global model (fewer than :data:`MIN_POOL_SERIES`
  series) gets plain per-series Prophet with the regressors, censored days left out.
* **fallback_mean**: series too short or too sparse for either (under
  :data:`MIN_HISTORY_DAYS` days, or under :data:`MIN_SELLING_DAYS` days with a sale) get
  the mean of their recent uncensored days.

Only sales are demand: the Spark job sums ``sold`` events and never reads counts,
adjustments or waste as demand.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import pandas as pd
from delta.tables import DeltaTable as SparkDeltaTable
from pyspark.sql import Window
from pyspark.sql import functions as F

from lakehouse.catalogue import DEMAND_FORECASTS, EVENTS
from lakehouse.storage import spark_url

from ..schema import spark_schema

log = logging.getLogger(__name__)

UNCENSORED_MAX_STOCKOUT_HOURS = 2.0
"""Days with at most this many hours out of stock count as uncensored (sales ~ demand)."""
MIN_HISTORY_DAYS = 21
"""Shorter series get the fallback: too little history for weekly patterns."""
MIN_SELLING_DAYS = 7
"""Series with fewer days with a sale get the fallback: too sparse to learn from."""
MIN_POOL_SERIES = 30
"""Fewer eligible series than this: per-series Prophet instead of the pooled model."""
POOLED_GROUPINGS = ("first_category_id", "city_id")
"""Besides the whole pool, Prophet fits one aggregate per category and per city."""
MIN_GROUP_SERIES = 5
"""Smaller groups share the pool's aggregate instead of a noisy one of their own."""
REGRESSORS = ("discount", "holiday", "activity", "temp", "precpt")
"""FreshRetailNet's daily regressors; each is optional in the input."""
REGRESSOR_DEFAULTS = {"discount": 1.0, "holiday": 0.0, "activity": 0.0,
                      "temp": np.nan, "precpt": np.nan}
CATEGORY_COLUMNS = ("city_id", "first_category_id", "second_category_id", "third_category_id")
"""Optional per-series attributes the pooled model may use (any hashable values)."""
OUTPUT_COLUMNS = ("dt", "forecast", "lower", "upper", "model", "history_days", "trained_at")
INTERVAL = (0.1, 0.9)
"""Quantiles of the forecast interval (an 80% interval)."""

GBM_PARAMS: dict[str, Any] = {
    "objective": "regression", "learning_rate": 0.05, "num_leaves": 63,
    "feature_fraction": 0.8, "bagging_fraction": 0.8, "bagging_freq": 1, "lambda_l2": 1.0,
    "max_cat_to_onehot": 8, "cat_smooth": 50, "verbose": -1,
}
"""LightGBM settings of the pooled model (squared error on demand over the series' level,
weighted by that level, so that it is unbiased in units)."""
GBM_ROUNDS = 400
HORIZONS_PER_DAY = 2
"""Training rows per uncensored series-day, each seen from a random forecast origin."""
PROPHET_FITS = 8
"""Fits of each aggregate Prophet, a week apart and ending on the last day: a training row
reads the curves of the latest fit that ended by its origin, as the forecast will. One fit
on all history hands the GBM in-sample curves that have already seen the target day, so it
learns to trust them more than their extrapolation deserves (biased low on the backtest's
three weeks, and a worse WAPE)."""
PROPHET_MIN_FIT_DAYS = 28
"""Earlier fits than this many days of history are not made; earlier origins read the first."""

MODEL_POOLED = "prophet_pooled+gbm"
MODEL_PROPHET = "prophet"
MODEL_FALLBACK = "fallback_mean"

Progress = Callable[[str], None]


# --- public API ----------------------------------------------------------------------------

def forecast_demand(
    history: pd.DataFrame,
    horizon_days: int = 7,
    future: pd.DataFrame | None = None,
    *,
    keys: Sequence[str] | None = None,
    origin: date | str | None = None,
    threads: int = 2,
    seed: int = 0,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Forecast daily demand for the ``horizon_days`` days after ``origin``, per series.

    ``history`` has one row per series and day: the key columns (default ``store_id``,
    ``product_id``, or ``location_id``, ``sku`` when those are present), ``dt`` (date or
    ``YYYY-MM-DD``), ``sale`` (units sold), and optionally ``stockout_hours`` (0-24, hours
    the shelf was empty that day), the :data:`REGRESSORS` and the
    :data:`CATEGORY_COLUMNS`. A day missing after a series' first row counts as no sales
    and no stockout. ``future`` may give the regressors for the forecast days (keys, ``dt``
    and regressor columns); where it does not, each regressor repeats the same weekday of
    the last week. ``origin`` is the last day of history (default: the latest ``dt``).

    Returns one row per series and forecast day: the keys, ``dt`` (datetime64), ``forecast``
    (expected demand, units/day), ``lower``/``upper`` (80% interval), ``model``
    (``prophet_pooled+gbm``, ``prophet`` or ``fallback_mean``), ``history_days`` (days
    since the series' first row) and ``trained_at`` (UTC). Same input, same output: the
    random parts (tree bagging, Prophet's interval samples) are seeded by ``seed``.
    """
    if horizon_days < 1:
        raise ValueError(f"horizon_days: expected >= 1, got {horizon_days}")
    keys = _resolve_keys(history, keys)
    trained_at = pd.Timestamp(datetime.now(UTC))
    if history.empty:
        return pd.DataFrame(columns=[*keys, *OUTPUT_COLUMNS])
    panel = _build_panel(history, future, keys, horizon_days, origin)
    say = progress or (lambda _msg: None)
    n = panel.n_series
    forecast = np.zeros((n, horizon_days))
    lower = np.zeros((n, horizon_days))
    upper = np.zeros((n, horizon_days))
    model = np.full(n, MODEL_FALLBACK, dtype=object)

    eligible = panel.eligible()
    short = np.flatnonzero(~eligible)
    forecast[short], lower[short], upper[short] = _fallback(panel, short)
    rich = np.flatnonzero(eligible)
    say(f"{n} series: {len(rich)} with enough history, {len(short)} on the fallback")
    if len(rich) >= MIN_POOL_SERIES:
        out = _pooled(panel, rich, threads=threads, seed=seed, say=say)
        model[rich] = MODEL_POOLED
    elif len(rich):
        out = _per_series_prophet(panel, rich, seed)
        model[rich] = MODEL_PROPHET
    if len(rich):
        forecast[rich], lower[rich], upper[rich] = out
    say(f"{n}/{n} series forecast")
    return _output(panel, forecast, lower, upper, model, trained_at)


# --- the panel: every series on one daily grid ----------------------------------------------

@dataclass
class Panel:
    """Series x days arrays; columns ``[0, days)`` are history, the rest the horizon."""

    keys: pd.DataFrame
    categories: pd.DataFrame
    dates: pd.DatetimeIndex
    days: int
    horizon: int
    start: np.ndarray
    sale: np.ndarray
    stockout: np.ndarray
    regressors: dict[str, np.ndarray]

    @property
    def n_series(self) -> int:
        return len(self.keys)

    def eligible(self) -> np.ndarray:
        """Series long and dense enough for Prophet or the pooled model."""
        selling = np.nansum(self.sale[:, : self.days] > 0, axis=1)
        return ((self.days - self.start) >= MIN_HISTORY_DAYS) & (selling >= MIN_SELLING_DAYS)

    def uncensored(self) -> np.ndarray:
        """Sales where the shelf was (nearly) never empty, NaN elsewhere: demand seen."""
        ok = self.stockout <= UNCENSORED_MAX_STOCKOUT_HOURS
        return np.where(ok, self.sale, np.nan)


def _resolve_keys(history: pd.DataFrame, keys: Sequence[str] | None) -> list[str]:
    if keys is None:
        keys = ("location_id", "sku") if {"location_id", "sku"} <= set(history) else (
            "store_id", "product_id")
    missing = [c for c in (*keys, "dt", "sale") if c not in history]
    if missing:
        raise ValueError(f"history: missing column {missing[0]!r} "
                         f"(has {', '.join(map(str, history.columns))})")
    return list(keys)


def _build_panel(history: pd.DataFrame, future: pd.DataFrame | None, keys: list[str],
                 horizon: int, origin: date | str | None) -> Panel:
    frame = history.assign(dt=pd.to_datetime(history["dt"]).dt.normalize())
    last = pd.Timestamp(origin) if origin is not None else frame["dt"].max()
    frame = frame[frame["dt"] <= last]
    if frame.empty:
        raise ValueError(f"history: no rows on or before origin {last.date()}")
    first = frame["dt"].min()
    days = (last - first).days + 1
    dates = pd.date_range(first, periods=days + horizon, freq="D")
    width = days + horizon
    aggs: dict[str, Any] = {"sale": "sum"}
    if "stockout_hours" in frame:
        aggs["stockout_hours"] = "max"
    aggs.update({r: "mean" for r in REGRESSORS if r in frame})
    aggs.update({c: "first" for c in CATEGORY_COLUMNS if c in frame and c not in keys})
    daily = frame.groupby([*keys, "dt"], sort=True, dropna=False).agg(aggs).reset_index()
    grouped = daily.groupby(keys, sort=True, dropna=False)
    s_idx = grouped.ngroup().to_numpy()
    series = grouped.first().reset_index()
    n = len(series)
    d_idx = ((daily["dt"] - first).dt.days).to_numpy()
    start = np.full(n, days, dtype=np.int64)
    np.minimum.at(start, s_idx, d_idx)
    alive = np.arange(width)[None, :] >= start[:, None]
    hist = alive & (np.arange(width)[None, :] < days)

    def grid(values: np.ndarray, fill: float) -> np.ndarray:
        out = np.where(hist, fill, np.nan)
        out[s_idx, d_idx] = values
        return out

    sale = grid(daily["sale"].to_numpy(float).clip(min=0), 0.0)
    stock = daily["stockout_hours"].to_numpy(float) if "stockout_hours" in daily else (
        np.zeros(len(daily)))
    stockout = grid(np.nan_to_num(stock.clip(0, 24)), 0.0)
    regressors = {}
    fut = None
    if future is not None and not future.empty:
        fut = future.assign(dt=pd.to_datetime(future["dt"]).dt.normalize())
        fut = fut.merge(series[keys].assign(_s=np.arange(n)), on=keys, how="inner")
        fut = fut[(fut["dt"] > last) & (fut["dt"] < dates[-1] + pd.Timedelta(days=1))]
    for name in REGRESSORS:
        default = REGRESSOR_DEFAULTS[name]
        values = daily[name].to_numpy(float) if name in daily else np.full(len(daily), default)
        arr = grid(values, default)
        arr[hist & np.isnan(arr)] = default
        if fut is not None and name in fut:
            arr[fut["_s"].to_numpy(), (fut["dt"] - first).dt.days.to_numpy()] = (
                fut[name].to_numpy(float))
        for col in range(days, width):  # unknown future: same weekday last week
            gap = np.isnan(arr[:, col]) & alive[:, col]
            arr[gap, col] = arr[gap, col - 7] if col >= 7 else default
        regressors[name] = arr
    cats = pd.DataFrame({c: pd.factorize(series[c])[0] if c in series else np.full(n, -1)
                         for c in CATEGORY_COLUMNS})
    return Panel(keys=series[keys], categories=cats, dates=dates, days=days,
                 horizon=horizon, start=start, sale=sale, stockout=stockout,
                 regressors=regressors)


def _output(panel: Panel, forecast: np.ndarray, lower: np.ndarray, upper: np.ndarray,
            model: np.ndarray, trained_at: pd.Timestamp) -> pd.DataFrame:
    n, h = forecast.shape
    out = panel.keys.loc[np.repeat(np.arange(n), h)].reset_index(drop=True)
    out["dt"] = np.tile(panel.dates[panel.days:].to_numpy(), n)
    forecast = np.clip(forecast, 0, None)
    out["forecast"] = forecast.ravel()
    out["lower"] = np.clip(np.minimum(lower, forecast), 0, None).ravel()
    out["upper"] = np.maximum(upper, forecast).ravel()
    out["model"] = np.repeat(model, h)
    out["history_days"] = np.repeat(panel.days - panel.start, h).astype(np.int32)
    out["trained_at"] = trained_at
    return out


# --- fallback --------------------------------------------------------------------------------

def _fallback(panel: Panel, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean of the last 28 days, counting censored days at their sales scaled up to a full
    day (at most doubled) when no uncensored day is known."""
    h = panel.horizon
    if not len(rows):
        empty = np.zeros((0, h))
        return empty, empty, empty
    lo = max(0, panel.days - 28)
    sale = panel.sale[rows, lo:panel.days]
    stockout = panel.stockout[rows, lo:panel.days]
    seen = np.where(stockout <= UNCENSORED_MAX_STOCKOUT_HOURS, sale, np.nan)
    scaled = sale / np.clip(1 - stockout / 24, 0.5, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.where(np.isfinite(np.nanmean(seen, axis=1)), np.nanmean(seen, axis=1),
                        np.nanmean(scaled, axis=1))
        spread = np.nanstd(scaled, axis=1)
    mean = np.nan_to_num(mean)
    count = np.sum(np.isfinite(scaled), axis=1)
    spread = np.where(count >= 3, np.nan_to_num(spread), np.sqrt(mean))
    point = np.repeat(mean[:, None], h, axis=1)
    half = np.repeat(1.2816 * spread[:, None], h, axis=1)
    return point, point - half, point + half


# --- per-series Prophet (small pools) -----------------------------------------------------

def _quiet_prophet() -> type:
    """Prophet's class, with its per-fit INFO lines and plotting warning silenced."""
    names = ("cmdstanpy", "prophet", "prophet.plot", "prophet.models")
    for name in names:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    from cmdstanpy.utils.logging import get_logger  # its loggers are quieted first
    from prophet import Prophet  # seconds to load: only for a pool that uses it

    get_logger().setLevel(logging.WARNING)  # after its first call, which sets DEBUG
    return Prophet


def prophet_model(**kwargs: Any) -> Any:
    """A Prophet for daily retail series: weekly shape, no yearly/daily terms."""
    prophet_cls = _quiet_prophet()
    options = {"weekly_seasonality": True, "yearly_seasonality": False,
               "daily_seasonality": False, "interval_width": INTERVAL[1] - INTERVAL[0],
               "uncertainty_samples": 200}
    options.update(kwargs)
    return prophet_cls(**options)


def _prophet_frame(panel: Panel, regressors: dict[str, np.ndarray], y: np.ndarray | None,
                   cols: slice) -> pd.DataFrame:
    frame = pd.DataFrame({"ds": panel.dates[cols]})
    if y is not None:
        frame["y"] = y
    for name, values in regressors.items():
        frame[name] = values[cols]
    return frame


def _usable_regressors(regressors: dict[str, np.ndarray], days: int,
                       start: int = 0) -> dict[str, np.ndarray]:
    """Regressors Prophet can use: known on every day, not constant over the history."""
    return {k: v for k, v in regressors.items()
            if np.all(np.isfinite(v[start:])) and np.nanstd(v[start:days]) > 1e-9}


def _per_series_prophet(panel: Panel, rows: np.ndarray, seed: int
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Plain Prophet per series with the regressors; censored days are left out."""
    np.random.seed(seed)  # Prophet samples its intervals from numpy's global generator
    seen = panel.uncensored()
    out = np.zeros((3, len(rows), panel.horizon))
    for i, s in enumerate(rows):
        st = int(panel.start[s])
        regs = _usable_regressors({k: v[s] for k, v in panel.regressors.items()},
                                  panel.days, st)
        y = seen[s, st:panel.days]
        if np.sum(np.isfinite(y)) < 2:
            y = panel.sale[s, st:panel.days]
        model = prophet_model()
        for name in regs:
            model.add_regressor(name)
        model.fit(_prophet_frame(panel, regs, y, slice(st, panel.days)))
        pred = model.predict(_prophet_frame(panel, regs, None, slice(panel.days, None)))
        out[:, i] = pred[["yhat", "yhat_lower", "yhat_upper"]].to_numpy().T
    return out[0], out[1], out[2]


# --- the pooled model -----------------------------------------------------------------------

def _window_mean(values: np.ndarray, width: int) -> np.ndarray:
    """NaN-aware trailing mean over ``width`` days ending on each day (inclusive)."""
    finite = np.isfinite(values)
    csum = np.concatenate([np.zeros((len(values), 1)),
                           np.cumsum(np.where(finite, values, 0.0), axis=1)], axis=1)
    ccnt = np.concatenate([np.zeros((len(values), 1)), np.cumsum(finite, axis=1)], axis=1)
    hi = np.arange(1, values.shape[1] + 1)
    lo = np.maximum(hi - width, 0)
    total = csum[:, hi] - csum[:, lo]
    count = ccnt[:, hi] - ccnt[:, lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


@dataclass
class _Curves:
    """Aggregate Prophet curves over the whole grid, one set per fit (``values[fit, group,
    day]``); fit ``k`` saw history up to day ``cutoffs[k]`` (ascending)."""

    values: np.ndarray
    cutoffs: np.ndarray

    def fit_at(self, origin: np.ndarray) -> np.ndarray:
        """Index of the latest fit that ended by each origin (the first for earlier ones)."""
        return np.maximum(np.searchsorted(self.cutoffs, origin, side="right") - 1, 0)


def _pooled_prophet(panel: Panel, rows: np.ndarray, say: Progress
                    ) -> tuple[_Curves, dict[str, np.ndarray]]:
    """Prophet on aggregate series: the pool's, each first category's and each city's
    demand, every series scaled to its own mean first so that big series do not dominate.

    Returns each aggregate's fitted-and-forecast curve over the whole grid from each of up
    to :data:`PROPHET_FITS` fits a week apart, and for each grouping the index of every
    series' curve (0, the pool, where its group is too small).
    """
    seen = panel.uncensored()[rows, : panel.days]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        level = np.nanmean(seen, axis=1)
        level = np.where(np.isfinite(level) & (level > 0), level,
                         np.nanmean(panel.sale[rows, : panel.days], axis=1))
    scaled = seen / np.maximum(level, 1e-6)[:, None]
    groups = [np.arange(len(rows))]
    group_of = {}
    for column in POOLED_GROUPINGS:
        labels = panel.categories[column].to_numpy()[rows]
        group_of[column] = np.zeros(len(rows), dtype=np.int64)
        for label in np.unique(labels):
            members = np.flatnonzero(labels == label)
            if label >= 0 and MIN_GROUP_SERIES <= len(members) < len(rows):
                group_of[column][members] = len(groups)
                groups.append(members)
    last = panel.days - 1
    cutoffs = np.array([c for c in range(last - 7 * (PROPHET_FITS - 1), last + 1, 7)
                        if c >= PROPHET_MIN_FIT_DAYS - 1 or c == last])
    curves = np.ones((len(cutoffs), len(groups), len(panel.dates)))
    for g, members in enumerate(groups):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            y_all = np.nanmean(scaled[members], axis=0)
            regs_all = {k: np.nanmean(v[rows[members]], axis=0)
                        for k, v in panel.regressors.items()}
        for k, cut in enumerate(cutoffs):
            y = y_all[: cut + 1]
            regs = _usable_regressors(regs_all, cut + 1)
            if np.sum(np.isfinite(y)) < 14:
                continue
            model = prophet_model(uncertainty_samples=0)
            for name in regs:
                model.add_regressor(name)
            model.fit(_prophet_frame(panel, regs, y, slice(0, cut + 1)))
            curves[k, g] = np.clip(model.predict(_prophet_frame(panel, regs, None,
                                                                slice(None)))
                                   ["yhat"].to_numpy(), 0.05, None)
        if (g + 1) % 10 == 0 or g == len(groups) - 1:
            say(f"pooled prophet: {g + 1}/{len(groups)} aggregate series fitted "
                f"({len(cutoffs)} fits each)")
    return _Curves(values=curves, cutoffs=cutoffs), group_of


@dataclass
class _Origins:
    """Per-series, per-day statistics as seen at the end of each day (the origin)."""

    seen: np.ndarray
    scale: np.ndarray
    features: dict[str, np.ndarray]


def _origin_stats(panel: Panel, rows: np.ndarray) -> _Origins:
    days = panel.days
    width = len(panel.dates)
    sale = np.full((len(rows), width), np.nan)
    sale[:, :days] = panel.sale[rows, :days]
    seen = np.full_like(sale, np.nan)
    seen[:, :days] = panel.uncensored()[rows, :days]
    stockout = np.full_like(sale, np.nan)
    stockout[:, :days] = panel.stockout[rows, :days]
    activity = panel.regressors["activity"][rows]
    discount = panel.regressors["discount"][rows]
    raw28 = _window_mean(sale, 28)
    eps = 0.01 * max(float(np.nanmean(sale)), 1e-6)
    scale = np.nan_to_num(raw28) + eps
    promo = np.where(activity > 0, seen, np.nan)
    plain = np.where(activity > 0, np.nan, seen)
    # Sales scaled up to a full day on the shelf: a rough demand estimate for censored days
    # (at most x4, since shelves tend to empty late in the selling day).
    corrected = sale / np.clip(1 - stockout / 24, 0.25, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        feats = {
            "log_scale": np.log(scale),
            "corrected7": _window_mean(corrected, 7) / scale,
            "corrected28": _window_mean(corrected, 28) / scale,
            "seen7": _window_mean(seen, 7) / scale,
            "seen14": _window_mean(seen, 14) / scale,
            "seen28": _window_mean(seen, 28) / scale,
            "raw7": _window_mean(sale, 7) / scale,
            "raw3": _window_mean(sale, 3) / scale,
            "last": sale / scale,
            "stockout7": _window_mean(stockout, 7),
            "stockout28": _window_mean(stockout, 28),
            "zero28": _window_mean(np.where(np.isfinite(sale), sale <= 0, np.nan), 28),
            "promo_lift": _window_mean(promo, 56) / _window_mean(plain, 56),
            "activity28": _window_mean(activity, 28),
            "discount28": _window_mean(discount, 28),
            "temp28": _window_mean(panel.regressors["temp"][rows], 28),
            "precpt28": _window_mean(panel.regressors["precpt"][rows], 28),
            "age": np.minimum(np.arange(width)[None, :] - panel.start[rows][:, None] + 1, 90)
            .astype(float),
        }
    return _Origins(seen=seen, scale=scale, features=feats)


def _design(panel: Panel, rows: np.ndarray, origins: _Origins, curves: _Curves,
            group_of: dict[str, np.ndarray], s: np.ndarray, d: np.ndarray, h: np.ndarray
            ) -> pd.DataFrame:
    """Feature rows for (series index into ``rows``, target day, horizon)."""
    o = d - h
    seen = origins.seen
    x: dict[str, np.ndarray] = {"h": h.astype(float),
                                "dow": panel.dates[d].dayofweek.to_numpy().astype(float)}
    for name, values in panel.regressors.items():
        x[name] = values[rows[s], d]
    for name, values in origins.features.items():
        x[name] = values[s, o]
    sc = origins.scale[s, o]
    with np.errstate(invalid="ignore", divide="ignore"):
        x["discount_rel"] = x["discount"] / x.pop("discount28")
        weeks = (h + 6) // 7  # same weekday, the latest week already seen
        same = np.full((4, len(s)), np.nan)
        for j in range(4):
            back = d - 7 * (weeks + j)
            ok = back >= 0
            same[j, ok] = seen[s[ok], back[ok]]
        x["same_dow1"] = same[0] / sc
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            x["same_dow4"] = np.nanmean(same, axis=0) / sc
        values, k = curves.values, curves.fit_at(o)
        trailing = _window_mean(values.reshape(-1, values.shape[-1]), 7).reshape(values.shape)
        x["prophet_pool"] = values[k, 0, d] / trailing[k, 0, o]
        for column, index in group_of.items():
            g = index[s]
            x[f"prophet_{column}"] = values[k, g, d] / trailing[k, g, o]
            x[f"prophet_{column}_level"] = values[k, g, d]
        for name in ("temp", "precpt"):
            x[f"{name}_change"] = x[name] - x.pop(f"{name}28")

    frame = pd.DataFrame(x)
    for c in _category_features(panel, rows):
        frame[c] = panel.categories[c].to_numpy()[rows[s]]
    return frame


def _category_features(panel: Panel, rows: np.ndarray) -> list[str]:
    """Category columns that tell the pool's series apart (absent ones are all -1)."""
    return [c for c in CATEGORY_COLUMNS if len(np.unique(panel.categories[c].to_numpy()[rows]))
            > 1 and panel.categories[c].to_numpy()[rows].min() >= 0]


def _training_rows(panel: Panel, rows: np.ndarray, last_target: int, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(series, day, horizon) with an uncensored target on or before ``last_target`` and at
    least a week of history at the origin; a few random horizons per target day."""
    hz = panel.horizon
    s, d = np.nonzero(np.isfinite(panel.uncensored()[rows, : last_target + 1]))
    s, d = np.repeat(s, HORIZONS_PER_DAY), np.repeat(d, HORIZONS_PER_DAY)
    h = rng.integers(1, hz + 1, size=len(s))
    keep = (d - h) >= panel.start[rows][s] + 6
    return s[keep], d[keep], h[keep]


def _pooled(panel: Panel, rows: np.ndarray, *, threads: int, seed: int, say: Progress
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import lightgbm as lgb  # only for a pool large enough to train it

    began = time.monotonic()
    rng = np.random.default_rng(seed)
    curves, group_of = _pooled_prophet(panel, rows, say)
    origins = _origin_stats(panel, rows)
    hz, days = panel.horizon, panel.days
    if len(rows) < 1000:  # threads only pay off on big pools; idle ones spin on busy cores
        threads = 1
    params = {**GBM_PARAMS, "num_threads": threads, "seed": seed,
              "min_data_in_leaf": int(np.clip(len(rows) // 10, 20, 200))}
    seen = origins.seen

    def fit(last_target: int) -> Any:
        s, d, h = _training_rows(panel, rows, last_target, rng)
        x = _design(panel, rows, origins, curves, group_of, s, d, h)
        sc = origins.scale[s, d - h]
        data = lgb.Dataset(x, seen[s, d] / sc, weight=sc, params={"verbose": -1},
                           categorical_feature=_category_features(panel, rows))
        booster = lgb.train(params, data, num_boost_round=GBM_ROUNDS)
        say(f"pooled gbm: fitted on {len(s)} series-days of {len(rows)} series "
            f"({time.monotonic() - began:.0f} s)")
        return booster

    def predict(booster: Any, origin: int) -> np.ndarray:
        s = np.repeat(np.arange(len(rows)), hz)
        h = np.tile(np.arange(1, hz + 1), len(rows))
        d = origin + h
        x = _design(panel, rows, origins, curves, group_of, s, d, h)
        pred = booster.predict(x, num_threads=threads) * origins.scale[s, origin]
        return np.clip(pred, 0, None).reshape(len(rows), hz)

    # The last week of history, forecast by a model that has not seen it, sets the
    # interval width. Its level error is only reported: week-to-week swings in demand
    # do not persist, and correcting the next week by the last one's error made the
    # backtest worse on earlier weeks.
    lo_q, hi_q = -0.5, 0.5
    val_origin = days - 1 - hz
    if val_origin - 14 >= int(np.min(panel.start[rows])):
        pred = predict(fit(val_origin), val_origin)
        actual = seen[:, val_origin + 1: days]
        ok = np.isfinite(actual)
        if ok.sum() > 50 and actual[ok].sum() > 0:
            resid = (actual[ok] - pred[ok]) / origins.scale[np.nonzero(ok)[0], val_origin]
            lo_q, hi_q = np.quantile(resid, INTERVAL)
            say(f"validation week: bias {pred[ok].sum() / actual[ok].sum() - 1:+.3f}, "
                f"80% interval {lo_q:+.2f}..{hi_q:+.2f} x level")
    point = predict(fit(days - 1), days - 1)
    sc = origins.scale[:, days - 1][:, None]
    return point, point + lo_q * sc, point + hi_q * sc


# --- the Spark batch job ----------------------------------------------------------------------

SIGNED_EVENTS = {"received": 1, "transfer_in": 1, "sold": -1, "transfer_out": -1, "wasted": -1}
"""Transactional stock movements and their sign; on-hand after each is ``stock_before`` plus
this times ``quantity``. Counts and adjustments are left out: they never enter forecasts."""
LIVE_KEYS = ("region", "location_id", "sku")
SERIES_PER_TASK = 2000
"""Series per ``applyInPandas`` group: enough to pool, few enough to spread over cores."""
HISTORY_DAYS = 91
"""Days of silver events a run reads (13 weeks)."""


def daily_history(events: Any, through: date, history_days: int = HISTORY_DAYS) -> Any:
    """Silver ``events`` -> one row per (region, location_id, sku, dt) with the columns
    :func:`forecast_demand` reads.

    ``sale`` sums ``sold`` quantities only. ``stockout_hours`` are the hours the SKU spent
    at zero (or negative) on hand: after each stock movement the on-hand is its
    ``stock_before`` plus the movement, held until the location's next movement of that
    SKU (or the end of ``through``). ``discount`` is the day's mean selling price over the
    highest daily mean price of the series (1 = full price).
    """
    start = F.lit(through).cast("date") - F.expr(f"INTERVAL {history_days - 1} DAYS")
    end = F.to_timestamp(F.date_add(F.lit(through).cast("date"), 1))
    day = F.to_date("occurred_at")
    recent = events.where((day >= start) & (day <= F.lit(through).cast("date"))
                          & F.col("sku").isNotNull())

    sign = F.lit(0)
    for event_type, factor in SIGNED_EVENTS.items():
        sign = F.when(F.col("event_type") == event_type, F.lit(factor)).otherwise(sign)
    order = Window.partitionBy("location_id", "sku").orderBy("seq")
    moves = (recent.where(F.col("event_type").isin(list(SIGNED_EVENTS))
                          & F.col("quantity").isNotNull() & F.col("stock_before").isNotNull())
             .select("region", "location_id", "sku", "occurred_at",
                     (F.col("stock_before") + sign * F.col("quantity")).alias("after"),
                     F.coalesce(F.lead("occurred_at").over(order), end).alias("until")))
    empty = (moves.where((F.col("after") <= 0) & (F.col("until") > F.col("occurred_at")))
             .withColumn("dt", F.explode(F.sequence(F.to_date("occurred_at"),
                                                    F.to_date("until"))))
             .withColumn("seconds",
                         F.unix_timestamp(F.least(F.col("until"),
                                                  F.to_timestamp(F.date_add("dt", 1))))
                         - F.unix_timestamp(F.greatest(F.col("occurred_at"),
                                                       F.to_timestamp("dt"))))
             .where((F.col("seconds") > 0) & (F.col("dt") <= F.lit(through).cast("date")))
             .groupBy("region", "location_id", "sku", "dt")
             .agg(F.least(F.sum("seconds") / 3600.0, F.lit(24.0)).alias("stockout_hours")))
    sold = (recent.where(F.col("event_type") == "sold")
            .groupBy("region", "location_id", "sku", day.alias("dt"))
            .agg(F.sum("quantity").cast("double").alias("sale"),
                 F.avg(F.col("payload.unit_price")).alias("price")))
    series = Window.partitionBy("location_id", "sku")
    return (sold.join(empty, ["region", "location_id", "sku", "dt"], "full_outer")
            .select("region", "location_id", "sku", "dt",
                    F.coalesce("sale", F.lit(0.0)).alias("sale"),
                    F.coalesce("stockout_hours", F.lit(0.0)).alias("stockout_hours"),
                    F.coalesce(F.col("price") / F.max("price").over(series), F.lit(1.0))
                    .alias("discount"),
                    F.split("sku", "-").getItem(0).alias("first_category_id"),
                    F.col("region").alias("city_id")))


def _forecast_group(horizon_days: int, through: date) -> Callable[[pd.DataFrame],
                                                                   pd.DataFrame]:
    def run(group: pd.DataFrame) -> pd.DataFrame:
        began = time.monotonic()
        out = forecast_demand(group.drop(columns=["_bucket"]), horizon_days,
                              keys=LIVE_KEYS, origin=through, threads=1)
        out = out.rename(columns={"dt": "forecast_date"})
        out["forecast_date"] = out["forecast_date"].dt.date
        out["trained_at"] = out["trained_at"].dt.tz_convert("UTC").dt.tz_localize(None)
        out["fit_seconds"] = time.monotonic() - began
        return out[DEMAND_FORECASTS.schema.names]

    return run


FORECASTS_RETAIN_HOURS = 24
"""Files of forecasts replaced longer ago than this are deleted after each run: the
table is overwritten whole every run (half-hourly in the demo), so a week of Delta's
default retention would keep hundreds of dead copies; a day keeps time travel to
yesterday's forecasts."""
_RETENTION_CHECK = "spark.databricks.delta.retentionDurationCheck.enabled"


def vacuum_forecasts(spark: Any, target: str,
                     retain_hours: int = FORECASTS_RETAIN_HOURS) -> None:
    """Delete the forecast files replaced more than ``retain_hours`` ago, with Spark:
    the table's one committing engine (a single driver on S3), so ``shelflife maintain``
    leaves it to this job. A failure is logged; the forecasts are written already."""
    before = spark.conf.get(_RETENTION_CHECK, "true")
    spark.conf.set(_RETENTION_CHECK, "false")  # Delta refuses < 168 h without it
    try:
        SparkDeltaTable.forPath(spark, target).vacuum(float(retain_hours))
    except Exception:  # noqa: BLE001 - upkeep must not undo a finished forecast run
        log.exception("vacuum of %s failed; the next run tries again", target)
    finally:
        spark.conf.set(_RETENTION_CHECK, before)


def run_forecasts(spark: Any, lakehouse_root: Any, horizon_days: int = 7, *,
                  through: date | None = None, history_days: int = HISTORY_DAYS) -> int:
    """Forecast every (location, SKU) seen selling in silver ``events`` and replace gold
    ``demand_forecasts``; returns the number of rows written.

    History ends on ``through`` (default: the last day with a sale). Series are spread
    over ``groupBy(bucket).applyInPandas`` groups of about :data:`SERIES_PER_TASK`, each
    forecast by :func:`forecast_demand` on an executor core.
    """
    events = spark.read.format("delta").load(spark_url(EVENTS.uri(lakehouse_root)))
    if through is None:
        through = (events.where(F.col("event_type") == "sold")
                   .agg(F.max(F.to_date("occurred_at"))).first()[0])
    schema = spark_schema(DEMAND_FORECASTS)
    target = spark_url(DEMAND_FORECASTS.uri(lakehouse_root))
    count = 0
    if through is None:
        result = spark.createDataFrame([], schema)
    else:
        daily = daily_history(events, through, history_days).cache()
        sold_series = daily.where(F.col("sale") > 0).select(*LIVE_KEYS).distinct()
        history = daily.join(sold_series, list(LIVE_KEYS), "left_semi")
        count = sold_series.count()
        buckets = max(1, min(spark.sparkContext.defaultParallelism * 4,
                             -(-count // SERIES_PER_TASK)))
        result = (history
                  .withColumn("_bucket", F.pmod(F.xxhash64("location_id", "sku"),
                                                F.lit(buckets)))
                  .repartitionByRange(buckets, "_bucket")
                  .groupBy("_bucket")
                  .applyInPandas(_forecast_group(horizon_days, through), schema))
    (result.write.format("delta").mode("overwrite").option("overwriteSchema", "true")
     .partitionBy(*DEMAND_FORECASTS.partitions).save(target))
    vacuum_forecasts(spark, target)
    if through is not None:
        daily.unpersist()
    return count * horizon_days  # every series gets every day of the horizon
