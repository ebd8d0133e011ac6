"""Rolling backtest of Shelflife's demand forecaster on real data (FreshRetailNet-50K,
CC BY 4.0).

Four weekly forecast origins (``--origins``): the data's last week, and the three before
it. At each origin every sampled series is trained on all days before it and forecasts
the 7 days after, so no week is scored with data from after its origin. The score counts
the test days with at most 2 stockout hours, where sales are close to demand (a day the
shelf was empty for hours says little about demand); the all-days score is printed too.
Figures, all from the same run and the same series:

* **Shelflife** - :func:`spark_jobs.decisions.forecast.forecast_demand` on every sampled
  series at once (default 15,000, drawn at random), timed per origin.
* **seasonal naive** - the same weekday of the last training week.
* **mean of the last 28 days**.
* per origin: WAPE and bias of each; then their means: ``mean_wape``, and
  ``mean_abs_bias``, the mean of each origin's |bias| (so weeks cannot cancel).
* **plain Prophet** - one Prophet per series with the data's regressors (discount,
  holiday, activity, temperature, precipitation), on a random sample of the series
  (default 300; 0.14-0.25 s a series) in two processes, at the last origin. Shelflife
  and the baselines are also scored on that sample, like for like.
* **bias by city** - each city's share of the last week's bias, and how far its sales and
  its forecast moved from the last training week.

Daily WAPE = sum |actual - forecast| / sum actual; bias = sum forecast / sum actual - 1.
Targets: mean WAPE <= 0.28, mean |bias| <= 0.03, 15,000 series per origin in <= 300 s on
two cores (``seconds_per_origin``). The last line printed is one JSON object.

    python bench/forecast.py                    # 15,000 series x 4 origins, Prophet on 300
    python bench/forecast.py --quick            # 1,000 series x 2 origins, Prophet on 40
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spark_jobs.decisions.forecast import (  # noqa: E402
    REGRESSORS,
    UNCENSORED_MAX_STOCKOUT_HOURS,
    forecast_demand,
    prophet_model,
)

DATA = Path(os.environ.get("SHELFLIFE_FRESHRETAIL",
                           ROOT.parent / "shared" / "data" / "freshretailnet_daily.parquet"))
KEYS = ["store_id", "product_id"]
TEST_DAYS = 7
TARGET_WAPE, TARGET_BIAS, TARGET_SECONDS = 0.28, 0.03, 300.0
BEGAN = time.monotonic()


def say(message: str) -> None:
    print(f"[{time.monotonic() - BEGAN:6.1f} s] {message}", flush=True)


def split(data: pd.DataFrame, series: int, seed: int, weeks_back: int = 0
          ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A random sample of series; train on all but each series' last TEST_DAYS days (after
    dropping ``weeks_back`` weeks from the end)."""
    keys = data[KEYS].drop_duplicates()
    if series < len(keys):
        keys = keys.sample(n=series, random_state=seed)
    sample = data.merge(keys, on=KEYS)
    dates = sorted(sample["dt"].unique())
    end, cut = dates[-1 - 7 * weeks_back], dates[-TEST_DAYS - 1 - 7 * weeks_back]
    return sample[sample["dt"] <= cut], sample[(sample["dt"] > cut) & (sample["dt"] <= end)]


def baselines(train: pd.DataFrame, test: pd.DataFrame) -> pd.DataFrame:
    """Seasonal naive (same weekday, last week) and mean of the last 28 days."""
    train = train.sort_values("dt")
    last = train.groupby(KEYS).tail(28)
    mean28 = last.groupby(KEYS)["sale"].mean().rename("mean28").reset_index()
    week = train.groupby(KEYS).tail(7)
    week = week.assign(dow=pd.to_datetime(week["dt"]).dt.dayofweek)
    snaive = week[[*KEYS, "dow", "sale"]].rename(columns={"sale": "snaive"})
    out = test.assign(dow=pd.to_datetime(test["dt"]).dt.dayofweek)
    return out.merge(mean28, on=KEYS).merge(snaive, on=[*KEYS, "dow"]).drop(columns="dow")


def _plain_prophet(series: pd.DataFrame) -> pd.DataFrame:
    """One series: Prophet with the regressors, fitted on its training days as they are."""
    train, test = series[series["_train"]], series[~series["_train"]]
    model = prophet_model()
    regs = [r for r in REGRESSORS if train[r].std() > 1e-9]
    for name in regs:
        model.add_regressor(name)
    frame = train.assign(ds=pd.to_datetime(train["dt"]), y=train["sale"])
    model.fit(frame[["ds", "y", *regs]])
    pred = model.predict(test.assign(ds=pd.to_datetime(test["dt"]))[["ds", *regs]])
    return test[[*KEYS, "dt"]].assign(prophet=np.clip(pred["yhat"].to_numpy(), 0, None))


def plain_prophet(train: pd.DataFrame, test: pd.DataFrame, workers: int) -> pd.DataFrame:
    both = pd.concat([train.assign(_train=True), test.assign(_train=False)])
    groups = [g for _, g in both.groupby(KEYS)]
    out = []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for i, result in enumerate(pool.map(_plain_prophet, groups, chunksize=4), start=1):
            out.append(result)
            if i % 50 == 0 or i == len(groups):
                say(f"plain prophet: {i}/{len(groups)} series")
    return pd.concat(out)


def origin(data: pd.DataFrame, series: int, seed: int, workers: int, back: int
           ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, float]:
    """One forecast origin ``back`` weeks before the data's last week: train on the days
    before it, forecast the 7 after; the scored test days (Shelflife and the baselines),
    the training days, the forecast and the forecaster's wall time."""
    train, test = split(data, series, seed, weeks_back=back)
    n = train[KEYS].drop_duplicates().shape[0]
    say(f"origin -{back} wk: {n:,} series, train {train['dt'].min()}..{train['dt'].max()}, "
        f"test {test['dt'].min()}..{test['dt'].max()}")
    started = time.monotonic()
    forecast = forecast_demand(train, TEST_DAYS, test.drop(columns=["sale", "stockout_hours"]),
                               threads=workers, seed=seed, progress=say)
    seconds = time.monotonic() - started
    say(f"origin -{back} wk: Shelflife forecaster {seconds:.1f} s for {n:,} series "
        f"({seconds / n * 1000:.1f} ms a series)")
    forecast["dt"] = forecast["dt"].dt.strftime("%Y-%m-%d")
    scored = baselines(train, test).merge(
        forecast[[*KEYS, "dt", "forecast", "lower", "upper", "model"]], on=[*KEYS, "dt"])
    return scored, train, forecast, seconds


def score(frame: pd.DataFrame, column: str) -> tuple[float, float]:
    total = frame["sale"].sum()
    wape = float((frame["sale"] - frame[column]).abs().sum() / total)
    return wape, float(frame[column].sum() / total - 1)


def report(title: str, frame: pd.DataFrame, columns: dict[str, str]) -> dict[str, float]:
    clean = frame[frame["stockout_hours"] <= UNCENSORED_MAX_STOCKOUT_HOURS]
    print(f"\n{title}: {frame[KEYS].drop_duplicates().shape[0]:,} series, "
          f"{len(clean):,} of {len(frame):,} test days with <= "
          f"{UNCENSORED_MAX_STOCKOUT_HOURS:g} stockout hours")
    print(f"  {'model':34s} {'WAPE':>7s} {'bias':>7s}   {'all days: WAPE':>14s} {'bias':>7s}")
    figures = {}
    for name, col in columns.items():
        wape, bias = score(clean, col)
        all_wape, all_bias = score(frame, col)
        figures[col] = wape
        figures[f"{col}_bias"] = bias
        print(f"  {name:34s} {wape:7.3f} {bias:+7.3f}   {all_wape:14.3f} {all_bias:+7.3f}")
    return figures


def by_city(train: pd.DataFrame, scored: pd.DataFrame, top: int = 6) -> list[dict[str, object]]:
    """Where the test week's bias sits: each city's share of it, and how far that city's
    sales (and its forecast) moved from the last training week. The move compares each
    series' mean uncensored day in the two weeks, summed over the series seen in both."""
    clean = scored[scored["stockout_hours"] <= UNCENSORED_MAX_STOCKOUT_HOURS]
    last = train[train["dt"] > sorted(train["dt"].unique())[-TEST_DAYS - 1]]
    last = last[last["stockout_hours"] <= UNCENSORED_MAX_STOCKOUT_HOURS]
    before = last.groupby(KEYS)["sale"].mean().rename("before")
    now = clean.groupby([*KEYS, "city_id"]).agg(after=("sale", "mean"),
                                                 forecast=("forecast", "mean"))
    moved = now.reset_index().merge(before.reset_index(), on=KEYS).groupby("city_id")[
        ["before", "after", "forecast"]].sum()
    total = clean["sale"].sum()
    cities = clean.groupby("city_id").agg(sale=("sale", "sum"), fc=("forecast", "sum"))
    cities["contribution"] = (cities["fc"] - cities["sale"]) / total
    rows = []
    print(f"\nTest-week bias by city (the {top} largest shares of {len(cities)} cities):")
    print(f"  {'city':>6s} {'sales share':>11s} {'bias':>7s} {'share of bias':>13s} "
          f"{'sales vs last week':>18s} {'forecast vs last week':>21s}")
    order = cities["contribution"].abs().sort_values(ascending=False).index
    for city, row in cities.reindex(order).head(top).iterrows():
        m = moved.loc[city] if city in moved.index else None
        fig = {"city_id": int(city), "share": round(row["sale"] / total, 3),
               "bias": round(row["fc"] / row["sale"] - 1, 3),
               "contribution": round(row["contribution"], 4),
               "actual_change": None if m is None else round(m["after"] / m["before"] - 1, 3),
               "forecast_change": None if m is None else round(
                   m["forecast"] / m["before"] - 1, 3)}
        rows.append(fig)
        change = ("" if m is None else f"{fig['actual_change']:+18.1%} "
                  f"{fig['forecast_change']:+21.1%}")
        print(f"  {city:>6} {fig['share']:11.1%} {fig['bias']:+7.3f} "
              f"{fig['contribution']:+13.3f} {change}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=int, default=15000, help="series per origin")
    parser.add_argument("--origins", type=int, default=4,
                        help="weekly forecast origins, the last week and the ones before it")
    parser.add_argument("--prophet-sample", type=int, default=300,
                        help="series for the plain per-series Prophet baseline (last origin)")
    parser.add_argument("--workers", type=int, default=2, help="processes/threads (<= 2 here)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--quick", action="store_true",
                        help="1,000 series, 2 origins, Prophet on 40")
    args = parser.parse_args()
    if args.quick:
        args.series, args.prophet_sample, args.origins = 1000, 40, 2

    data = pd.read_parquet(DATA)
    columns = {"Shelflife (prophet_pooled+gbm)": "forecast", "seasonal naive": "snaive",
               "mean of last 28 days": "mean28"}
    origins: list[dict[str, object]] = []
    last: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame] | None = None
    for back in range(args.origins):
        scored, train, forecast, seconds = origin(data, args.series, args.seed, args.workers,
                                                  back)
        n = scored[KEYS].drop_duplicates().shape[0]
        week = f"{scored['dt'].min()}..{scored['dt'].max()}"
        figures = report(f"Origin -{back} wk, test {week}", scored, columns)
        clean = scored[scored["stockout_hours"] <= UNCENSORED_MAX_STOCKOUT_HOURS]
        inside = ((clean["sale"] >= clean["lower"]) & (clean["sale"] <= clean["upper"])).mean()
        origins.append({
            "test": week, "series": n, "seconds": round(seconds, 1),
            "seconds_15k": round(seconds * 15000 / n, 1),
            "wape": round(figures["forecast"], 4), "bias": round(figures["forecast_bias"], 4),
            "wape_snaive": round(figures["snaive"], 4),
            "bias_snaive": round(figures["snaive_bias"], 4),
            "wape_mean28": round(figures["mean28"], 4),
            "bias_mean28": round(figures["mean28_bias"], 4),
            "interval_coverage": round(float(inside), 3)})
        if back == 0:
            last = (scored, train, forecast)
            print(f"  80% interval covers {inside:.1%} of those days; models used: "
                  f"{forecast.groupby('model').size().to_dict()}")
    assert last is not None
    scored, train, forecast = last
    cities = by_city(train, scored)

    test = data.merge(scored[[*KEYS, "dt"]].drop_duplicates(), on=[*KEYS, "dt"])
    rng = np.random.default_rng(args.seed)
    keys = scored[KEYS].drop_duplicates()
    pick = keys.iloc[rng.choice(len(keys), size=min(args.prophet_sample, len(keys)),
                                replace=False)]
    say(f"plain per-series Prophet with regressors on a sample of {len(pick)} series "
        "(last origin)")
    p_started = time.monotonic()
    prophet = plain_prophet(train.merge(pick, on=KEYS), test.merge(pick, on=KEYS),
                            args.workers)
    p_seconds = time.monotonic() - p_started
    per_series = p_seconds * args.workers / len(pick)
    say(f"plain prophet: {per_series:.3f} s a series per core, so about "
        f"{per_series * 15000 / args.workers / 60:.0f} min for 15,000 on {args.workers} cores")
    sample = scored.merge(prophet, on=[*KEYS, "dt"])
    sampled = report(f"Prophet sample ({len(pick)} series, last origin)", sample,
                     {**columns, "plain Prophet + regressors": "prophet"})

    def mean(key: str, absolute: bool = False) -> float:
        values = [abs(o[key]) if absolute else o[key] for o in origins]
        return float(np.mean(values))

    mean_wape, mean_abs_bias = mean("wape"), mean("bias", absolute=True)
    per_origin = mean("seconds_15k")
    print(f"\nRolling backtest, {len(origins)} weekly origins (test days with <= "
          f"{UNCENSORED_MAX_STOCKOUT_HOURS:g} stockout hours):")
    print(f"  {'test week':24s} {'WAPE':>7s} {'bias':>7s}   {'snaive':>7s} {'bias':>7s}   "
          f"{'mean-28':>7s} {'bias':>7s}   {'s/15k':>6s}")
    for o in origins:
        print(f"  {o['test']:24s} {o['wape']:7.3f} {o['bias']:+7.3f}   "
              f"{o['wape_snaive']:7.3f} {o['bias_snaive']:+7.3f}   "
              f"{o['wape_mean28']:7.3f} {o['bias_mean28']:+7.3f}   {o['seconds_15k']:6.0f}")
    print(f"  {'mean (|bias|)':24s} {mean_wape:7.3f} {mean_abs_bias:7.3f}   "
          f"{mean('wape_snaive'):7.3f} {mean('bias_snaive', True):7.3f}   "
          f"{mean('wape_mean28'):7.3f} {mean('bias_mean28', True):7.3f}   {per_origin:6.0f}")
    print(f"\ntargets: mean WAPE {mean_wape:.3f} <= {TARGET_WAPE} "
          f"{'met' if mean_wape <= TARGET_WAPE else 'MISSED'}; mean |bias| "
          f"{mean_abs_bias:.3f} <= {TARGET_BIAS} "
          f"{'met' if mean_abs_bias <= TARGET_BIAS else 'MISSED'}; 15k series per origin "
          f"{per_origin:.0f} s <= {TARGET_SECONDS:.0f} "
          f"{'met' if per_origin <= TARGET_SECONDS else 'MISSED'}"
          + ("" if args.series == 15000 else f" (scaled from {args.series:,} series)"))
    latest = origins[0]
    print(json.dumps({
        "mean_wape": round(mean_wape, 4), "mean_abs_bias": round(mean_abs_bias, 4),
        "seconds_per_origin": round(per_origin, 1),
        "mean_wape_snaive": round(mean("wape_snaive"), 4),
        "mean_wape_mean28": round(mean("wape_mean28"), 4),
        "origins": origins,
        "wape": latest["wape"], "bias": latest["bias"],
        "wape_prophet_plain": round(sampled["prophet"], 4),
        "bias_prophet_plain": round(sampled["prophet_bias"], 4),
        "wape_on_prophet_sample": round(sampled["forecast"], 4),
        "prophet_sample": len(pick), "series": args.series,
        "seconds_scaled": args.series != 15000, "test_days": TEST_DAYS,
        "workers": args.workers, "bias_by_city": cities,
    }))


if __name__ == "__main__":
    main()
