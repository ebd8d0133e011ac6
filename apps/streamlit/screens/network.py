"""Network today: are we wasting more or running out more than yesterday, where, and
how much stock is about to lose its value."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from apps.streamlit import network_views, parts, regions
from apps.streamlit.network_views import KPIS
from lakehouse import catalogue

WORSE_WHEN_UP = {"waste_rate": True, "stockout_rate": True, "sell_through": False}


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def render_kpis(root: str, now: pd.Timestamp) -> None:
    """Today's rates with yesterday's change and their trend, and the value at risk."""
    metrics = parts.current_table(root, catalogue.BUSINESS_METRICS)
    lots = None
    cohorts = parts.current_table(root, catalogue.STOCK_COHORTS)
    if cohorts is not None:
        lots = network_views.expiring_lots(cohorts, parts.current_table(root, catalogue.ITEMS),
                                           now)
    cols = st.columns(4)
    if metrics is None or metrics.empty:
        st.info("Business metrics are written every 10 s once stock flows.")
    else:
        network = network_views.daily_kpis(metrics)
        for col, (key, label) in zip(cols, KPIS.items(), strict=False):
            latest, before = network_views.day_over_day(network, key)
            change = (None if latest is None or before is None
                      else f"{(latest - before) * 100:+.1f} pts vs day before")
            col.metric(label, _pct(latest), delta=change,
                       delta_color="inverse" if WORSE_WHEN_UP[key] else "normal",
                       chart_data=(network[key].fillna(0) * 100).round(2).tolist(),
                       chart_type="line", border=True)
    if lots is not None:
        value = lots["value"].sum(min_count=1)
        units = int(lots["quantity"].sum())
        cols[3].metric("Value at risk of expiry (48 h)",
                       f"{units:,} units" if pd.isna(value) else f"{value:,.2f}",
                       delta=f"{units:,} units · {len(lots):,} lot"
                       + ("" if len(lots) == 1 else "s"), delta_color="off", delta_arrow="off",
                       border=True, help="lots on hand whose expiry day starts within 48 h "
                       "(or has passed), at catalogue prices")


def render_trends(root: str, now: pd.Timestamp, split: str) -> None:
    """Each rate day by day, one line per region or category; value at risk per group."""
    metrics = parts.current_table(root, catalogue.BUSINESS_METRICS)
    if metrics is not None and not metrics.empty:
        kpis = network_views.daily_kpis(metrics, split)
        for col, (key, label) in zip(st.columns(3), KPIS.items(), strict=True):
            with col:
                st.markdown(f"**{label}** by {split}, day by day (%)")
                chart = kpis.assign(day=kpis["day"].dt.strftime("%Y-%m-%d")).pivot_table(
                    index="day", columns=split, values=key) * 100  # one tick per day
                st.line_chart(chart, height=240, x_label="day", y_label="%")
    cohorts = parts.current_table(root, catalogue.STOCK_COHORTS)
    if cohorts is None:
        return
    lots = network_views.expiring_lots(cohorts, parts.current_table(root, catalogue.ITEMS),
                                       now)
    st.markdown(f"**Expiring within 48 h** by {split}")
    if lots.empty:
        st.success("No lot on hand expires within 48 h.")
        return
    risk = network_views.at_risk_by(lots, split)
    measure = "units" if risk["value"].isna().all() else "value"
    chart_col, table_col = st.columns([2, 1])
    chart_col.bar_chart(risk, x=split, y=measure, horizontal=True,
                        height=min(90 + 40 * len(risk), 320))
    table_col.dataframe(risk, hide_index=True,
                        column_config={"value": st.column_config.NumberColumn(format="%.2f")})


@parts.live
def live_headline(root: str) -> None:
    now = pd.Timestamp.now(tz="UTC")
    regions.render_freshness(root, now)
    render_kpis(root, now)


@parts.live
def live_trends(root: str, split: str) -> None:
    render_trends(root, pd.Timestamp.now(tz="UTC"), split)


def main() -> None:
    root = parts.context().root
    st.title("Shelflife — network today")
    live_headline(root)
    split = st.segmented_control("Split by", ["region", "category"], default="region",
                                 key="network_split") or "region"
    live_trends(root, split)
    st.caption("Waste rate = units wasted / units received; stockout rate = SKU-locations "
               "out of stock / active; sell-through = units sold / units received; each "
               "summed over the group before dividing. Days are UTC.")


main()
