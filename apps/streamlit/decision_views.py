"""Shaping the decision tables for the dashboard: transfers to approve, reorders and
forecast accuracy. Plain DataFrame -> DataFrame functions, tested without Streamlit."""

from __future__ import annotations

import pandas as pd

from apps.streamlit.views import require_columns

TRANSFER_COLUMNS = (
    "recommendation_id", "status", "sku", "lot", "expires_on", "source_location",
    "destination_location", "quantity", "transit_hours", "shelf_life_at_arrival_days",
    "min_sellable_days", "waste_prob_source_before", "waste_prob_source_after",
    "waste_prob_destination", "expected_units_saved", "transfer_cost", "value_saved",
    "reason",
)
REORDER_COLUMNS = (
    "location_id", "sku", "order_quantity", "on_hand", "in_transit", "sellable_at_arrival",
    "demand_forecast", "safety_stock", "arrives_on", "cover_until", "shelf_life_days",
    "expected_waste_units", "waste_prob", "reason",
)


def transfer_table(recs: pd.DataFrame, statuses: list[str]) -> pd.DataFrame:
    """Recommendations with the chosen statuses, most value first."""
    require_columns(recs, TRANSFER_COLUMNS, "gold/transfer_recommendations")
    rows = recs[recs["status"].isin(statuses)].sort_values("value_saved", ascending=False)
    return rows.loc[:, list(TRANSFER_COLUMNS)].reset_index(drop=True)


def transfer_totals(recs: pd.DataFrame) -> dict[str, float]:
    """What the proposed transfers would save, for the tab's headline figures."""
    proposed = recs[recs["status"] == "proposed"]
    return {"proposed": len(proposed), "approved": int((recs["status"] == "approved").sum()),
            "units": int(proposed["quantity"].sum()),
            "units_saved": float(proposed["expected_units_saved"].sum()),
            "value_saved": float(proposed["value_saved"].sum()),
            "cost": float(proposed["transfer_cost"].sum())}


def reorder_table(suggestions: pd.DataFrame, region: str | None = None) -> pd.DataFrame:
    """Suggested orders, largest first (optionally one region's)."""
    require_columns(suggestions, REORDER_COLUMNS, "gold/reorder_suggestions")
    rows = suggestions if region is None else suggestions[suggestions["region"] == region]
    rows = rows.sort_values(["order_quantity", "location_id"], ascending=[False, True])
    return rows.loc[:, list(REORDER_COLUMNS)].reset_index(drop=True)


def accuracy_by_day(accuracy: pd.DataFrame) -> pd.DataFrame:
    """Per day: series scored, WAPE, bias and how often sales fell inside the 80% interval."""
    require_columns(accuracy, ("day", "forecast", "actual", "abs_error", "within_interval",
                               "complete"), "gold/forecast_accuracy")
    grouped = accuracy.groupby("day", as_index=False).agg(
        series=("forecast", "size"), forecast=("forecast", "sum"), actual=("actual", "sum"),
        abs_error=("abs_error", "sum"), inside=("within_interval", "mean"),
        complete=("complete", "all"))
    actual = grouped["actual"].where(grouped["actual"] > 0)
    grouped["wape"] = grouped["abs_error"] / actual
    grouped["bias"] = grouped["forecast"] / actual - 1
    return grouped.sort_values("day", ascending=False).reset_index(drop=True)


def outcome_by_day(metrics: pd.DataFrame) -> pd.DataFrame:
    """Business metrics' forecast and transfer columns summed per day and category."""
    cols = ["forecast_units", "forecast_abs_error", "sold_units", "transferred_in_units",
            "transferred_sold_48h"]
    require_columns(metrics, ("day", "category", *cols), "gold/business_metrics")
    by_day = metrics.groupby(["day", "category"], as_index=False)[cols].sum(min_count=1)
    by_day["transfer_efficiency"] = by_day["transferred_sold_48h"] / by_day[
        "transferred_in_units"].where(by_day["transferred_in_units"] > 0)
    return by_day.sort_values(["day", "category"], ascending=[False, True]).reset_index(
        drop=True)
