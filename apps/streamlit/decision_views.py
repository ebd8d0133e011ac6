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


def with_decisions(recs: pd.DataFrame, decisions: pd.DataFrame | None) -> pd.DataFrame:
    """Recommendations with each one's latest decision applied, so a transfer approved a
    moment ago shows as approved (and by whom) before the next transfers run."""
    if decisions is None or decisions.empty:
        return recs
    latest = (decisions.sort_values("decided_at")
              .drop_duplicates("recommendation_id", keep="last")
              .set_index("recommendation_id"))
    out = recs.copy()
    decided = out["recommendation_id"].map(latest["decision"])
    out["status"] = decided.fillna(out["status"])
    if "decided_by" in out:
        out["decided_by"] = out["recommendation_id"].map(latest["decided_by"]).fillna(
            out["decided_by"])
    return out


def justification(row: object) -> str:
    """One transfer in words: what moves where, why it is worth it, and what it costs."""
    get = row.__getitem__ if isinstance(row, pd.Series) else lambda k: getattr(row, k)
    before, after = get("waste_prob_source_before"), get("waste_prob_source_after")
    return (f"Move {int(get('quantity'))} × {get('sku')} (lot {get('lot')}) from "
            f"{get('source_location')} to {get('destination_location')}: "
            f"{get('transit_hours'):.0f} h on the road, arrives with "
            f"{get('shelf_life_at_arrival_days'):.1f} days of life "
            f"(needs {get('min_sellable_days'):.1f}). Waste risk at the source falls from "
            f"{before:.0%} to {after:.0%} ({get('waste_prob_destination'):.0%} at the "
            f"destination): about {get('expected_units_saved'):.0f} units saved, worth "
            f"{get('value_saved'):,.2f} for {get('transfer_cost'):,.2f} of transport.")


def ranked_transfers(recs: pd.DataFrame, statuses: list[str]) -> pd.DataFrame:
    """Recommendations with the chosen statuses, best expected value net of transport
    first, each with its rank and its justification in words."""
    rows = transfer_table(recs, statuses)
    extra = [c for c in ("decided_by",) if c in recs]
    if extra:
        rows = rows.merge(recs[["recommendation_id", *extra]], on="recommendation_id",
                          how="left")
    rows["net_value"] = rows["value_saved"] - rows["transfer_cost"]
    rows = rows.sort_values(["net_value", "recommendation_id"],
                            ascending=[False, True]).reset_index(drop=True)
    rows.insert(0, "rank", range(1, len(rows) + 1))
    rows["why"] = [justification(r) for r in rows.itertuples(index=False)]
    return rows


def top_proposed(ranked: pd.DataFrame, n: int) -> list[str]:
    """The ids of the ``n`` best proposals still waiting for a decision, in rank order."""
    proposed = ranked[ranked["status"] == "proposed"]
    return proposed["recommendation_id"].head(max(n, 0)).tolist()


def forecast_series(forecasts: pd.DataFrame, movements: pd.DataFrame | None,
                    location_id: str, sku: str) -> pd.DataFrame:
    """One series for the forecast chart: units sold per past day (``history``) followed
    by the forecast with its 80% interval, in one long frame (date, units, kind, lower,
    upper)."""
    require_columns(forecasts, ("location_id", "sku", "forecast_date", "forecast", "lower",
                                "upper"), "gold/demand_forecasts")
    ahead = forecasts[(forecasts["location_id"] == location_id) & (forecasts["sku"] == sku)]
    ahead = pd.DataFrame({"date": pd.to_datetime(ahead["forecast_date"]),
                          "units": ahead["forecast"], "kind": "forecast",
                          "lower": ahead["lower"], "upper": ahead["upper"]})
    past = pd.DataFrame(columns=["date", "units", "kind", "lower", "upper"])
    if movements is not None and not movements.empty:
        sold = movements[(movements["location_id"] == location_id) & (movements["sku"] == sku)]
        past = pd.DataFrame({"date": pd.to_datetime(sold["day"]),
                             "units": sold["sold"].astype(float), "kind": "history",
                             "lower": float("nan"), "upper": float("nan")})
    series = pd.concat([frame for frame in (past, ahead) if not frame.empty],
                       ignore_index=True) if len(past) or len(ahead) else past
    return series.sort_values(["date", "kind"]).reset_index(drop=True)
