"""Forecasts: how many units each store will sell, how sure the forecast is, and how
well past forecasts did."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from apps.streamlit import decision_views, parts
from lakehouse import catalogue

KINDS = ["history", "forecast"]  # sales solid, forecast dashed


def forecast_chart(series: pd.DataFrame) -> alt.LayerChart:
    """Sales so far as a solid line, the forecast dashed, its 80% interval shaded."""
    base = alt.Chart(series).encode(x=alt.X("date:T", title="day"))
    band = base.transform_filter(alt.datum.kind == "forecast").mark_area(opacity=0.25).encode(
        y=alt.Y("lower:Q", title="units"), y2="upper:Q")
    lines = base.mark_line(point=True).encode(
        y="units:Q",
        color=alt.Color("kind:N", title=None, legend=alt.Legend(orient="top"),
                        scale=alt.Scale(domain=KINDS, range=["#1f77b4", "#ff7f0e"])),
        strokeDash=alt.StrokeDash("kind:N", legend=None,
                                  scale=alt.Scale(domain=KINDS, range=[[1, 0], [6, 4]])),
        tooltip=["date:T", "kind:N", alt.Tooltip("units:Q", format=".1f"),
                 alt.Tooltip("lower:Q", format=".1f"), alt.Tooltip("upper:Q", format=".1f")])
    return alt.layer(band, lines).properties(height=320)


def render_forecasts(root: str) -> None:
    """Accuracy as actuals arrive, and one chosen series charted."""
    accuracy = parts.current_table(root, catalogue.FORECAST_ACCURACY, columns=(
        "day", "forecast", "actual", "abs_error", "within_interval", "complete"))
    if accuracy is not None and not accuracy.empty:
        st.subheader("Accuracy (forecast made before the day vs sales)")
        by_day = decision_views.accuracy_by_day(accuracy)
        chart_col, table_col = st.columns([2, 3])
        chart_col.line_chart(by_day.set_index("day")[["wape", "inside"]], height=220)
        table_col.dataframe(by_day, hide_index=True)
    forecasts = parts.current_table(root, catalogue.DEMAND_FORECASTS)
    if forecasts is None or forecasts.empty:
        st.info("Forecasts appear after `shelflife batch forecasts` (half-hourly in the demo).")
        return
    st.subheader("Demand forecasts")
    st.caption("Models: " + ", ".join(f"{m} for {n} series" for m, n in forecasts.drop_duplicates(
        ["location_id", "sku"])["model"].value_counts().items()))
    loc_col, sku_col = st.columns(2)
    loc = loc_col.selectbox("Location", sorted(forecasts["location_id"].unique()),
                            key="forecast_location")
    rows = forecasts[forecasts["location_id"] == loc]
    sku = sku_col.selectbox("SKU", sorted(rows["sku"].unique()), key="forecast_sku")
    region = rows["region"].iloc[0] if "region" in rows and len(rows) else None
    movements = parts.current_table(root, catalogue.DAILY_MOVEMENTS,
                                    regions=(region,) if region else ())
    series = decision_views.forecast_series(forecasts, movements, loc, sku)
    st.altair_chart(forecast_chart(series), width="stretch")
    st.caption("history = units sold per day (counts and adjustments are not demand); "
               "the shaded band is the forecast's 80% interval.")


forecasts_part = parts.on_demand(render_forecasts)


def main() -> None:
    st.title("Shelflife — forecasts")
    forecasts_part(parts.context().root)


main()
