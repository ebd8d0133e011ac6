"""Forecast accuracy and transfer efficiency: scored on what actually sold, and carried
into business_metrics by the streaming job's writer."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pandas as pd
import pytest

from spark_jobs.decisions.accuracy import forecast_accuracy, merge_history

KEYS = {"region": "east", "location_id": "EAST-S001", "sku": "DAIRY-YOG-500"}
T0 = pd.Timestamp("2026-11-20T02:00Z")


def _forecasts(through: date, values: list[float]) -> pd.DataFrame:
    return pd.DataFrame([{**KEYS, "forecast_date": through + timedelta(days=i + 1),
                          "forecast": v, "lower": v * 0.5, "upper": v * 1.5,
                          "model": "prophet", "trained_at": T0} for i, v in enumerate(values)])


def test_a_later_run_replaces_only_the_dates_it_has_not_seen():
    first = merge_history(None, _forecasts(date(2026, 11, 19), [10, 11, 12]),
                          date(2026, 11, 19))
    second = merge_history(first, _forecasts(date(2026, 11, 20), [20, 21, 22]),
                           date(2026, 11, 20))
    by_day = second.set_index("forecast_date")["forecast"].to_dict()
    # 11-20 was forecast before it began (from history through 11-19) and stays that way
    assert by_day == {date(2026, 11, 20): 10, date(2026, 11, 21): 20, date(2026, 11, 22): 21,
                      date(2026, 11, 23): 22}


def test_accuracy_compares_each_day_with_its_sales_and_a_day_without_sales_sold_nothing():
    history = merge_history(None, _forecasts(date(2026, 11, 19), [10, 10, 10]),
                            date(2026, 11, 19))
    daily = pd.DataFrame([{**KEYS, "day": date(2026, 11, 20), "sold": 14},
                          {**KEYS, "day": date(2026, 11, 22), "sold": 3}])
    now = datetime(2026, 11, 22, 15, tzinfo=UTC)
    scored = forecast_accuracy(history, daily, today=now.date(), now=now).set_index("day")
    assert scored.loc[date(2026, 11, 20), ["actual", "abs_error"]].tolist() == [14, 4]
    assert bool(scored.loc[date(2026, 11, 20), "within_interval"])  # 5..15
    assert scored.loc[date(2026, 11, 21), ["actual", "abs_error"]].tolist() == [0, 10]
    assert not scored.loc[date(2026, 11, 21), "within_interval"]
    assert scored["complete"].to_dict() == {date(2026, 11, 20): True,
                                            date(2026, 11, 21): True,
                                            date(2026, 11, 22): False}  # today, partial
    assert scored["days_ahead"].tolist() == [1, 2, 3]


def test_business_metrics_carry_forecast_error_and_transfer_efficiency():
    from spark_jobs.stream import derived
    from spark_jobs.stream.fold import RegionState

    state = RegionState("east")
    state.daily[("EAST-S001", "DAIRY-YOG-500", "2026-11-20")] = [14, 30, 0, 20, 0, 0]
    state.daily[("EAST-S001", "DAIRY-MILK-WH-1L", "2026-11-20")] = [6, 0, 0, 0, 0, 0]
    accuracy = [{"location_id": "EAST-S001", "sku": "DAIRY-YOG-500",
                 "day": date(2026, 11, 20), "forecast": 10.0, "actual": 14.0,
                 "abs_error": 4.0},
                {"location_id": "EAST-S001", "sku": "DAIRY-MILK-WH-1L",
                 "day": date(2026, 11, 20), "forecast": 8.0, "actual": 6.0,
                 "abs_error": 2.0}]
    transfers = [{"location_id": "EAST-S001", "sku": "DAIRY-YOG-500",
                  "day": date(2026, 11, 20), "units_in": 20, "sold_48h": 15}]
    book = derived.outcome_book(state, accuracy, transfers)
    rows = derived.business_rows(state, "2026-11-01", datetime(2026, 11, 21), book)
    assert len(rows) == 1  # both SKUs are dairy
    row = rows[0]
    assert row["sold_units"] == 20
    assert row["forecast_units"] == 18
    assert row["forecast_wape"] == pytest.approx((4 + 2) / (14 + 6))
    assert (row["transferred_in_units"], row["transferred_sold_48h"]) == (20, 15)
    assert row["transfer_efficiency"] == pytest.approx(0.75)
    plain = derived.business_rows(state, "2026-11-01", datetime(2026, 11, 21))
    assert plain[0]["forecast_wape"] is None and plain[0]["transfer_efficiency"] is None


@pytest.mark.spark
def test_transfer_efficiency_counts_the_lot_sold_within_48_hours_of_booking_in(spark,
                                                                             tmp_path):
    from lakehouse.contract import build_event, format_ts
    from spark_jobs.decisions.accuracy import transfer_outcomes

    from .silver_events import write_silver_events

    arrived = datetime(2026, 11, 20, 8, tzinfo=UTC)
    loc, sku = "EAST-S001", "DAIRY-YOG-500"
    lot = {"lot": "WH7", "expires_on": "2026-11-28", "quantity": 20}
    events = [build_event(location_id=loc, seq=1, event_type="transfer_in",
                          occurred_at=format_ts(arrived), causation_id="WH-EAST-1:40",
                          payload={"sku": sku, "quantity": 20, "source": "WH-EAST-1",
                                   "transfer_id": "TR-1", "lots": [lot], "stock_before": 0})]
    sales = [(timedelta(hours=2), "WH7", 6), (timedelta(hours=30), "WH7", 5),
             (timedelta(hours=40), "OTHER", 9),  # another lot: not the transfer's units
             (timedelta(hours=50), "WH7", 7)]  # after the 48 h window
    stock = 20
    for i, (after, lot_id, qty) in enumerate(sales, start=2):
        events.append(build_event(
            location_id=loc, seq=i, event_type="sold", occurred_at=format_ts(arrived + after),
            payload={"sku": sku, "quantity": qty, "unit_price": 1.69,
                     "transaction_ref": f"T{i}", "stock_before": stock,
                     "lots": [{"lot": lot_id, "expires_on": "2026-11-28", "quantity": qty}]}))
        stock -= qty
    path = write_silver_events(tmp_path, events, received_at="2026-11-22T00:00:00.000Z")
    silver_events = spark.read.format("delta").load(str(path))

    out = transfer_outcomes(silver_events, datetime(2026, 11, 23)).toPandas()
    assert len(out) == 1
    row = out.iloc[0]
    assert (row["transfer_id"], row["source"], row["units_in"]) == ("TR-1", "WH-EAST-1", 20)
    assert row["sold_48h"] == 6 + 5
    assert row["efficiency"] == pytest.approx(11 / 20)
    assert bool(row["complete"])
    early = transfer_outcomes(silver_events, datetime(2026, 11, 21)).toPandas()
    assert not bool(early.iloc[0]["complete"])


def test_the_stream_writer_picks_up_new_accuracy_and_marks_its_days(tmp_path):
    import threading

    from lakehouse.catalogue import FORECAST_ACCURACY, TRANSFER_OUTCOMES
    from spark_jobs.decisions.jobs import write_table
    from spark_jobs.stream import derived
    from spark_jobs.stream.fold import RegionState

    state = RegionState("east")
    paths = {t.name: str(t.path(tmp_path)) for t in (FORECAST_ACCURACY, TRANSFER_OUTCOMES)}
    writer = derived.DerivedWriter(state, threading.Lock(), paths, "app", lambda: [],
                                   lambda: 0)
    writer._load_outcomes()  # neither table exists yet: nothing to merge
    assert writer.outcomes == {} and not state.dirty_days

    now = datetime(2026, 11, 22, 12, tzinfo=UTC)
    history = merge_history(None, _forecasts(date(2026, 11, 19), [10, 10]),
                            date(2026, 11, 19))
    daily = pd.DataFrame([{**KEYS, "day": date(2026, 11, 20), "sold": 12}])
    scored = forecast_accuracy(history, daily, today=now.date(), now=now)
    write_table(FORECAST_ACCURACY, scored, tmp_path)
    writer._load_outcomes()
    # The same category name the sellable policy and the decision jobs use for the SKU,
    # so a dashboard filter on "dairy" finds both the metric and the transfer.
    key = ("EAST-S001", "dairy", "2026-11-20")
    assert writer.outcomes[key][:3] == [10.0, 12.0, 2.0]
    assert state.dirty_days == {"2026-11-20", "2026-11-21"}
    state.dirty_days.clear()
    writer._load_outcomes()  # same version: no re-read, nothing marked
    assert not state.dirty_days
