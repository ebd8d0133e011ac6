"""Reorders: what each store should order now, and what it would waste if it ordered
more."""

from __future__ import annotations

import streamlit as st

from apps.streamlit import decision_views, parts
from lakehouse import catalogue


def render_reorders(root: str) -> None:
    """Units to order per region and category, then the suggestions largest first."""
    sugg = parts.current_table(root, catalogue.REORDER_SUGGESTIONS)
    if sugg is None or sugg.empty:
        st.info("Reorder suggestions appear after `shelflife batch reorders` (every 5 minutes "
                "in the demo); none means every store's stock covers its forecast.")
        return
    cols = st.columns(3)
    cols[0].metric("Suggested orders", f"{len(sugg):,}")
    cols[1].metric("Units to order", f"{int(sugg['order_quantity'].sum()):,}")
    cols[2].metric("Expected waste (units)", f"{sugg['expected_waste_units'].sum():,.0f}")
    if "category" in sugg:
        by = sugg.fillna({"category": "unknown"}).groupby(
            ["region", "category"], as_index=False)["order_quantity"].sum()
        st.bar_chart(by, x="region", y="order_quantity", color="category", height=220,
                     y_label="units to order")
    regions = ["all", *sorted(sugg["region"].unique())]
    region = st.selectbox("Region", regions, key="reorder_region")
    st.dataframe(decision_views.reorder_table(sugg, None if region == "all" else region),
                 hide_index=True)
    st.caption("Orders never exceed what the forecast says will sell before the new lot "
               "stops being sellable; counts and adjustments are not demand.")


reorders_part = parts.on_demand(render_reorders)


def main() -> None:
    st.title("Shelflife — reorders")
    reorders_part(parts.context().root)


main()
