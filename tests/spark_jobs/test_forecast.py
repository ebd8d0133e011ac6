"""Demand forecasts: levels and weekly shape recovered, short series on the fallback,
empty shelves not read as low demand, and counts or adjustments never moving a forecast."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from deltalake import DeltaTable

from spark_jobs.decisions.forecast import forecast_demand

WEEKLY = np.array([0.8, 0.9, 0.9, 1.0, 1.1, 1.4, 0.9])
"""Demand multiplier Monday..Sunday (mean 1.0): Saturday is the busiest day."""
START = date(2024, 3, 4)  # a Monday


def synthetic(levels: list[float], days: int = 70, seed: int = 1) -> pd.DataFrame:
    """Poisson sales around ``level x WEEKLY[weekday]``, one series per level."""
    rng = np.random.default_rng(seed)
    rows = []
    for s, level in enumerate(levels):
        for d in range(days):
            day = START + timedelta(days=d)
            rows.append({"store_id": s, "product_id": 7, "dt": day.isoformat(),
                         "sale": float(rng.poisson(level * WEEKLY[day.weekday()])),
                         "stockout_hours": 0})
    return pd.DataFrame(rows)


POOL_LEVELS = [float(v) for v in np.linspace(20, 60, 40)]


@pytest.fixture(scope="module")
def pooled() -> tuple[list[float], pd.DataFrame]:
    return POOL_LEVELS, forecast_demand(synthetic(POOL_LEVELS), horizon_days=7)


def test_pool_recovers_each_series_level_and_weekly_shape(pooled):
    levels, out = pooled
    assert set(out["model"]) == {"prophet_pooled+gbm"}
    assert len(out) == 40 * 7
    assert list(out["dt"].drop_duplicates()) == list(pd.date_range("2024-05-13", periods=7))
    error = out.groupby("store_id")["forecast"].mean().to_numpy() / levels - 1
    # Poisson noise alone puts a 4-week mean of these series 2-3% off on average.
    assert np.median(np.abs(error)) < 0.06 and np.abs(error).max() < 0.2
    assert out["forecast"].sum() / 7 == pytest.approx(sum(levels), rel=0.05)
    by_day = out.assign(ratio=out["forecast"] / np.repeat(levels, 7))
    shape = by_day.groupby(by_day["dt"].dt.dayofweek)["ratio"].mean()
    assert shape[5] > 1.25 and shape[0] < 0.9  # Saturday busy, Monday quiet
    assert (out["lower"] <= out["forecast"]).all() and (out["forecast"] <= out["upper"]).all()


def test_one_series_uses_prophet_and_recovers_its_level():
    out = forecast_demand(synthetic([20.0]), horizon_days=7)
    assert set(out["model"]) == {"prophet"}
    assert out["forecast"].mean() == pytest.approx(20.0, rel=0.12)
    saturday = out.loc[out["dt"].dt.dayofweek == 5, "forecast"].iloc[0]
    monday = out.loc[out["dt"].dt.dayofweek == 0, "forecast"].iloc[0]
    assert saturday > 1.3 * monday


def test_three_days_of_history_falls_back_to_their_mean():
    history = pd.DataFrame({"location_id": "EAST-S001", "sku": "DAIRY-YOG-500",
                            "dt": ["2024-06-01", "2024-06-02", "2024-06-03"],
                            "sale": [4.0, 6.0, 5.0]})
    out = forecast_demand(history, horizon_days=3)
    assert list(out["model"]) == ["fallback_mean"] * 3
    assert list(out["forecast"]) == pytest.approx([5.0] * 3)
    assert list(out["dt"].dt.strftime("%Y-%m-%d")) == ["2024-06-04", "2024-06-05",
                                                       "2024-06-06"]
    assert list(out["history_days"]) == [3, 3, 3]


def _censor(frame: pd.DataFrame, days: range, hours: float) -> pd.DataFrame:
    """Empty shelf from mid-morning on the given days: a fifth of the usual sales."""
    out = frame.copy()
    hit = out["dt"].isin([(START + timedelta(days=d)).isoformat() for d in days])
    out.loc[hit, "sale"] = np.floor(out.loc[hit, "sale"] * 0.2)
    out.loc[hit, "stockout_hours"] = hours
    return out


@pytest.mark.parametrize("levels", [[20.0], POOL_LEVELS], ids=["prophet", "pooled"])
def test_stockouts_raise_the_forecast_over_reading_them_as_low_demand(levels):
    base = synthetic(levels)
    censored_days = range(42, 70, 2)  # every other day of the last four weeks
    with_signal = forecast_demand(_censor(base, censored_days, 18.0))
    as_real = forecast_demand(_censor(base, censored_days, 0.0))
    true_level = float(np.mean(levels))
    assert with_signal["forecast"].mean() > 1.15 * as_real["forecast"].mean()
    assert with_signal["forecast"].mean() == pytest.approx(true_level, rel=0.15)


# --- the Spark job on silver events ---------------------------------------------------------

LOC, STEADY, SHORT = "EAST-S001", "DAIRY-YOG-500", "BAK-LOAF-WHT-800"
DAYS = 28
THROUGH = date(2024, 6, 2)


def store_events(with_operational: bool) -> list[dict]:
    """Four weeks at one store, built as its agent would: STEADY never runs out; SHORT gets
    6 loaves at 06:05 and sells out at noon on weekdays (12 h at zero, plus the 6 h 5 min
    before the delivery), 12 at weekends (sold out at 18:00). Optionally a nightly count
    and a shrinkage adjustment of STEADY, which change stock but are no demand."""
    from lakehouse.contract import build_event, format_ts

    stock = {STEADY: 0, SHORT: 0}
    events: list[dict] = []
    first = THROUGH - timedelta(days=DAYS - 1)

    def add(moment: datetime, event_type: str, payload: dict) -> None:
        events.append(build_event(location_id=LOC, seq=len(events) + 1,
                                  event_type=event_type, payload=payload,
                                  occurred_at=format_ts(moment.replace(tzinfo=UTC))))

    def move(moment: datetime, event_type: str, sku: str, qty: int) -> None:
        lot = f"L{moment:%m%d}"
        expiry = (moment.date() + timedelta(days=10)).isoformat()
        lots = [{"lot": lot, "expires_on": expiry, "quantity": qty}]
        payload = {"sku": sku, "quantity": qty, "stock_before": stock[sku]}
        if event_type == "received":
            payload.update(lot=lot, expires_on=expiry, supplier_ref="S1", unit_cost=0.5)
            stock[sku] += qty
        elif event_type == "sold":
            payload.update(unit_price=1.5, transaction_ref=f"T{len(events)}", lots=lots)
            stock[sku] -= qty
        else:  # wasted
            payload.update(lot=lot, reason_code="expired", disposal_method="compost")
            stock[sku] -= qty
        add(moment, event_type, payload)

    for d in range(DAYS):
        day = datetime.combine(first + timedelta(days=d), datetime.min.time())
        weekend = day.weekday() >= 5
        move(day.replace(hour=6), "received", STEADY, 12)
        move(day.replace(hour=6, minute=5), "received", SHORT, 12 if weekend else 6)
        for hour in (8, 10, 12, 14, 16, 18) if weekend else (8, 10, 12):
            move(day.replace(hour=hour), "sold", SHORT, 2)
        for hour in range(9, 9 + (5 if weekend else 3)):
            move(day.replace(hour=hour, minute=30), "sold", STEADY, 2)
        if d == 3:
            move(day.replace(hour=20), "wasted", STEADY, 2)
        if with_operational:
            add(day.replace(hour=22), "adjusted", {
                "sku": STEADY, "lot": "L0000", "counted_quantity": stock[STEADY] - 1,
                "system_quantity": stock[STEADY], "delta": -1, "stock_before": stock[STEADY]})
            stock[STEADY] -= 1
            add(day.replace(hour=23), "counted", {"items": [
                {"sku": sku, "lot": "L0000", "expires_on": None, "quantity": max(q, 0)}
                for sku, q in stock.items()]})
    return events


def write_silver(root, events: list[dict]) -> None:
    from .silver_events import write_silver_events

    write_silver_events(root, events, received_at="2024-06-03T00:00:00.000Z")


@pytest.mark.spark
def test_spark_job_forecasts_sales_only_and_ignores_counts_and_adjustments(spark, tmp_path):
    from lakehouse import catalogue
    from lakehouse.readers import read_table
    from spark_jobs.decisions.forecast import daily_history, run_forecasts, vacuum_forecasts

    write_silver(tmp_path, store_events(with_operational=False))
    events = spark.read.format("delta").load(str(catalogue.EVENTS.path(tmp_path)))
    daily = daily_history(events, THROUGH).toPandas().set_index(["sku", "dt"])
    monday = date(2024, 5, 27)
    assert daily.loc[(SHORT, monday), "sale"] == 6
    assert daily.loc[(SHORT, monday), "stockout_hours"] == pytest.approx(18 + 5 / 60)
    assert daily.loc[(SHORT, monday - timedelta(days=1)), "sale"] == 12
    assert daily.loc[(STEADY, monday), "sale"] == 6
    assert daily.loc[(STEADY, monday), "stockout_hours"] == 0
    waste_day = THROUGH - timedelta(days=DAYS - 1 - 3)
    assert daily.loc[(STEADY, waste_day), "sale"] == 6  # a Thursday: 2 wasted, not sold

    assert run_forecasts(spark, tmp_path, horizon_days=7) == 14
    plain = read_table(catalogue.DEMAND_FORECASTS, tmp_path).sort_values(["sku",
                                                                          "forecast_date"])
    assert set(plain["region"]) == {"east"} and set(plain["model"]) == {"prophet"}
    assert sorted(set(plain["forecast_date"])) == [THROUGH + timedelta(days=i)
                                                   for i in range(1, 8)]
    steady = plain[plain["sku"] == STEADY]
    assert steady["forecast"].sum() == pytest.approx(5 * 6 + 2 * 10, rel=0.1)

    write_silver(tmp_path, store_events(with_operational=True))
    assert run_forecasts(spark, tmp_path, horizon_days=7) == 14
    again = read_table(catalogue.DEMAND_FORECASTS, tmp_path).sort_values(["sku",
                                                                          "forecast_date"])
    columns = ["sku", "forecast_date", "forecast", "lower", "upper", "model"]
    pd.testing.assert_frame_equal(plain[columns].reset_index(drop=True),
                                  again[columns].reset_index(drop=True))

    # Each run replaces the whole table; the job vacuums what it replaced (after a day;
    # here at once), and the forecasts read the same afterwards.
    folder = catalogue.DEMAND_FORECASTS.path(tmp_path)
    live = len(DeltaTable(str(folder)).file_uris())
    assert len(list(folder.rglob("*.parquet"))) > live
    vacuum_forecasts(spark, str(folder), retain_hours=0)
    assert len(list(folder.rglob("*.parquet"))) == live
    kept = read_table(catalogue.DEMAND_FORECASTS, tmp_path).sort_values(["sku",
                                                                         "forecast_date"])
    pd.testing.assert_frame_equal(again[columns].reset_index(drop=True),
                                  kept[columns].reset_index(drop=True))
