"""How good the decisions were, once the actuals are in: forecast accuracy per location
and SKU, and transfer efficiency (transferred units that sold within 48 hours).

Forecast accuracy compares each day's sales with the forecast made *before* that day:
``gold/forecast_history`` keeps, per series and date, the forecast of the last run whose
history ended before the date (a later run replaces the forecasts of dates it covers,
never those of dates it has seen). Sales come from gold ``daily_movements`` (``sold``
only: counts and adjustments are no demand, so they cannot look like forecast error).

Both tables feed ``business_metrics``: the streaming job's writer adds, per location,
category and day, the forecast units, the absolute error, ``forecast_wape`` and the
transfer columns (see :mod:`spark_jobs.stream.derived`).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd

from lakehouse.catalogue import FORECAST_ACCURACY, FORECAST_HISTORY

TRANSFER_WINDOW_HOURS = 48
"""A transferred unit counts as sold when the destination sells it this soon after arrival."""


def merge_history(history: pd.DataFrame | None, forecasts: pd.DataFrame,
                  through: date) -> pd.DataFrame:
    """The forecast history after a run whose history ended on ``through``: the run's
    forecasts replace those of the dates it covers; earlier dates keep theirs."""
    new = forecasts.assign(history_through=through)[FORECAST_HISTORY.schema.names]
    if history is None or history.empty:
        return new.reset_index(drop=True)
    keep = history[history["forecast_date"] <= through]
    return pd.concat([keep[FORECAST_HISTORY.schema.names], new], ignore_index=True)


def forecast_accuracy(history: pd.DataFrame, daily: pd.DataFrame, *, today: date,
                      now: datetime) -> pd.DataFrame:
    """One row per series and day up to ``today`` that had a forecast: forecast vs sales.

    ``daily`` is gold ``daily_movements`` (``region, location_id, sku, day, sold``). A day
    with a forecast and no movement row sold nothing. Today's row is ``complete=False``.
    """
    past = history[history["forecast_date"] <= today].rename(columns={"forecast_date": "day"})
    if past.empty:
        return FORECAST_ACCURACY.schema.empty_table().to_pandas()
    sold = daily[["region", "location_id", "sku", "day", "sold"]]
    out = past.merge(sold, on=["region", "location_id", "sku", "day"], how="left")
    out["actual"] = out["sold"].fillna(0).astype(float)
    out["abs_error"] = (out["actual"] - out["forecast"]).abs()
    out["within_interval"] = (out["actual"] >= out["lower"]) & (out["actual"] <= out["upper"])
    out["days_ahead"] = np.array([(d - t).days for d, t in zip(out["day"],
                                                              out["history_through"],
                                                              strict=True)], dtype=np.int32)
    out["complete"] = out["day"] < today
    out["updated_at"] = pd.Timestamp(now)
    return out[FORECAST_ACCURACY.schema.names].reset_index(drop=True)


def transfer_outcomes(events: Any, now: datetime, *, since: datetime | None = None) -> Any:
    """Silver ``events`` -> one row per ``transfer_in`` line (location, transfer, SKU):
    units booked in, and how many of those lots the destination sold within
    :data:`TRANSFER_WINDOW_HOURS` of booking them in (capped at the units booked in).
    Spark DataFrame in and out; ``complete`` once the window has passed."""
    from pyspark.sql import functions as F  # the pandas jobs import this module too

    arrivals = events.where(F.col("event_type") == "transfer_in")
    if since is not None:
        arrivals = arrivals.where(F.col("occurred_at") >= F.lit(since))
    arrived = (arrivals
               .select("region", "location_id", F.col("payload.source").alias("source"),
                       F.col("payload.transfer_id").alias("transfer_id"), "sku",
                       F.col("occurred_at").alias("arrived_at"),
                       F.explode("payload.lots").alias("lot"))
               .select("*", F.col("lot.lot").alias("lot_id"),
                       F.col("lot.quantity").cast("long").alias("lot_units"))
               .drop("lot"))
    sales = (events.where(F.col("event_type") == "sold")
             .join(arrived.select("location_id", "sku").distinct(), ["location_id", "sku"],
                   "left_semi")
             .select("location_id", "sku", F.col("occurred_at").alias("sold_at"),
                     F.explode("payload.lots").alias("lot"))
             .select("location_id", "sku", "sold_at", F.col("lot.lot").alias("lot_id"),
                     F.col("lot.quantity").cast("long").alias("sold_units")))
    window = F.expr(f"INTERVAL {TRANSFER_WINDOW_HOURS} HOURS")
    a, s = arrived.alias("a"), sales.alias("s")
    joined = a.join(s, (F.col("a.location_id") == F.col("s.location_id"))
                    & (F.col("a.sku") == F.col("s.sku"))
                    & (F.col("a.lot_id") == F.col("s.lot_id"))
                    & (F.col("s.sold_at") >= F.col("a.arrived_at"))
                    & (F.col("s.sold_at") < F.col("a.arrived_at") + window), "left"
                    ).select("a.*", "s.sold_units")
    per_lot = (joined.groupBy("region", "location_id", "source", "transfer_id", "sku",
                              "arrived_at", "lot_id", "lot_units")
               .agg(F.coalesce(F.sum("sold_units"), F.lit(0)).alias("sold"))
               .withColumn("sold", F.least("sold", "lot_units")))
    return (per_lot.groupBy("region", "location_id", "source", "transfer_id", "sku",
                            "arrived_at")
            .agg(F.sum("lot_units").alias("units_in"), F.sum("sold").alias("sold_48h"))
            .select("region", "location_id", "source", "transfer_id", "sku", "arrived_at",
                    F.to_date("arrived_at").alias("day"), "units_in", "sold_48h",
                    (F.col("sold_48h") / F.col("units_in")).alias("efficiency"),
                    (F.col("arrived_at") + window <= F.lit(now)).alias("complete"),
                    F.lit(now).cast("timestamp").alias("updated_at")))
