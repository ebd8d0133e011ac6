"""Shaping gold for the network and expiry pages: KPIs per day, and stock at risk.

Plain DataFrame -> DataFrame functions, tested without Streamlit. Rates are ratios of
sums (units wasted over units received across the group), never means of per-store
rates, so a small store does not weigh as much as a large one.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

import numpy as np
import pandas as pd

from apps.streamlit.views import EXPIRING_WINDOW, days_until, require_columns

Split = Literal["network", "region", "category"]
KPI_COLUMNS = ("region", "category", "day", "received_units", "sold_units", "wasted_units",
               "skus_active", "skus_stocked_out")
KPIS = {"waste_rate": "Waste rate", "stockout_rate": "Stockout rate",
        "sell_through": "Sell-through"}
"""The rates the network page charts, with the words it shows for them."""


def daily_kpis(metrics: pd.DataFrame, split: Split = "network") -> pd.DataFrame:
    """Per day (and region or category): waste rate (wasted / received), stockout rate
    (SKU-locations out / active) and sell-through (sold / received), oldest day first."""
    require_columns(metrics, KPI_COLUMNS, "gold/business_metrics")
    keys = ["day"] if split == "network" else ["day", split]
    sums = metrics.groupby(keys, as_index=False)[list(KPI_COLUMNS[3:])].sum()
    received = sums["received_units"].where(sums["received_units"] > 0)
    sums["waste_rate"] = sums["wasted_units"] / received
    sums["sell_through"] = sums["sold_units"] / received
    sums["stockout_rate"] = sums["skus_stocked_out"] / sums["skus_active"].where(
        sums["skus_active"] > 0)
    sums["day"] = pd.to_datetime(sums["day"])
    return sums.sort_values(keys).reset_index(drop=True)


def day_over_day(kpis: pd.DataFrame, column: str) -> tuple[float | None, float | None]:
    """The network's figure for the latest day and for the day before (None if absent)."""
    values = kpis.sort_values("day")[column].tolist()
    latest = values[-1] if values else None
    before = values[-2] if len(values) > 1 else None
    return (None if latest is None or pd.isna(latest) else float(latest),
            None if before is None or pd.isna(before) else float(before))


def expiring_lots(cohorts: pd.DataFrame, items: pd.DataFrame | None, now: pd.Timestamp,
                  *, window: timedelta = EXPIRING_WINDOW) -> pd.DataFrame:
    """Lots with stock on hand whose expiry day starts within ``window`` (or has passed),
    with their category and value at the catalogue price (unknown price: no value)."""
    require_columns(cohorts, ("region", "location_id", "sku", "lot", "expires_on",
                              "quantity"), "gold/stock_cohorts")
    lots = cohorts[(cohorts["quantity"] > 0) & cohorts["expires_on"].notna()].copy()
    lots["days_left"] = days_until(lots["expires_on"], now)
    moment = pd.Timestamp(now)
    horizon = ((moment + window).normalize() - moment.normalize()).days
    lots = lots[lots["days_left"] <= horizon]
    if items is not None and not items.empty:
        catalogue = items.drop_duplicates("sku", keep="last").set_index("sku")
        lots["category"] = lots["sku"].map(catalogue["category"]).fillna("unknown")
        lots["value"] = lots["quantity"] * lots["sku"].map(catalogue["price"])
    else:
        lots["category"] = "unknown"
        lots["value"] = float("nan")
    days = lots["days_left"].astype(int)
    lots["when"] = np.select([days < 0, days == 0, days == 1], ["expired", "today", "tomorrow"],
                             "in " + days.astype(str) + " days")
    return lots.sort_values(["days_left", "location_id", "sku"]).reset_index(drop=True)


def at_risk_by(lots: pd.DataFrame, key: str) -> pd.DataFrame:
    """Units and value expiring, summed per ``key`` (region, category, location_id...),
    largest first."""
    grouped = lots.groupby(key, as_index=False).agg(units=("quantity", "sum"),
                                                    value=("value", "sum"),
                                                    lots=("lot", "size"))
    return grouped.sort_values(["units", key], ascending=[False, True]).reset_index(drop=True)


def expiring_by_location(lots: pd.DataFrame, *, limit: int = 20) -> pd.DataFrame:
    """Units expiring per location and day (expired, today, tomorrow...), for the
    ``limit`` locations with the most at risk: the stacked chart of the expiry page."""
    top = at_risk_by(lots, "location_id").head(limit)["location_id"]
    rows = lots[lots["location_id"].isin(top)]
    return rows.groupby(["location_id", "when"], as_index=False)["quantity"].sum()
