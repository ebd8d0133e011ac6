"""Stock and expiry: what each location holds, which lots make it up, and where stock
runs out of life in the next two days."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from apps.streamlit import network_views, parts, regions, views
from lakehouse import catalogue


def render_stock(root: str, now: pd.Timestamp, known_regions: list[str]) -> None:
    """Filters, the stock table, and the expiry cohorts behind one chosen row."""
    st.subheader("Stock by location and SKU")
    region_col, location_col, sku_col, flag_col = st.columns([2, 2, 2, 2])
    chosen = region_col.multiselect("Region", known_regions, key="regions")
    stock = parts.current_table(root, catalogue.STOCK_LEVELS, regions=tuple(sorted(chosen)))
    if stock is None:
        st.info(parts.waiting_message(catalogue.STOCK_LEVELS.uri(root)))
        return
    views.require_columns(stock, views.STOCK_COLUMNS, "gold/stock_levels")
    locations = location_col.multiselect(
        "Location", sorted(stock["location_id"].unique()), key="locations"
    )
    sku_search = sku_col.text_input("SKU contains", key="sku_search")
    expiring_only = flag_col.checkbox("Only expiring within 48 h", key="expiring_only")
    non_positive_only = flag_col.checkbox("Only negative/zero stock", key="non_positive_only")

    rows = views.filter_stock(
        stock,
        now,
        regions=chosen,
        locations=locations,
        sku_search=sku_search,
        expiring_only=expiring_only,
        non_positive_only=non_positive_only,
    )
    table = views.stock_table(rows)
    shown = (
        f"{len(rows):,} rows"
        if len(rows) <= len(table)
        else (f"showing the first {len(table):,} of {len(rows):,} rows; narrow the filters")
    )
    st.caption(f"{shown} · on hand {int(rows['on_hand'].sum()):,} units")
    st.dataframe(
        table,
        hide_index=True,
        column_config={
            "location_id": st.column_config.TextColumn("location"),
            "on_hand": st.column_config.NumberColumn("on hand", format="%d"),
            "earliest_expiry": st.column_config.DateColumn("earliest expiry"),
            "days_to_expiry": st.column_config.NumberColumn("days to expiry", format="%d"),
            "updated_at": st.column_config.DatetimeColumn("updated (UTC)"),
        },
    )
    render_cohorts(root, now, table)


def render_cohorts(root: str, now: pd.Timestamp, table: pd.DataFrame) -> None:
    """The lots (and their expiry dates) that make up one location's stock of a SKU."""
    keys = views.stock_keys(table)
    if not keys:
        return
    choice = st.selectbox(
        "Expiry cohorts for",
        keys,
        format_func=lambda key: f"{key[0]} · {key[1]}",
        key="cohort_choice",
    )
    if choice is None:
        return
    location_id, sku = choice
    region = table.loc[table["location_id"] == location_id, "region"].iloc[0]
    cohorts = parts.current_table(root, catalogue.STOCK_COHORTS, regions=(region,))
    if cohorts is None:
        st.info(parts.waiting_message(catalogue.STOCK_COHORTS.uri(root)))
        return
    lots = views.cohort_breakdown(cohorts, location_id, sku, now)
    on_hand = int(
        table.loc[(table["location_id"] == location_id) & (table["sku"] == sku), "on_hand"].iloc[0]
    )
    lots_col, chart_col = st.columns([3, 2])
    with lots_col:
        st.dataframe(
            lots,
            hide_index=True,
            column_config={
                "expires_on": st.column_config.DateColumn("expires on"),
                "quantity": st.column_config.NumberColumn("quantity", format="%d"),
                "days_left": st.column_config.NumberColumn("days left", format="%d"),
            },
        )
        total = int(lots["quantity"].sum())
        if total != on_hand:
            # Levels and cohorts are separate commits; the next refresh brings them level.
            st.caption(f"lots add up to {total:,}, on hand reads {on_hand:,}: a batch apart")
    with chart_col:
        if not lots.empty:
            st.bar_chart(lots, x="lot", y="quantity", height=220)


def render_expiring(root: str, now: pd.Timestamp) -> None:
    """Where stock runs out of life within 48 h: units per location, by day, charted."""
    st.subheader("Expiring soon, by location")
    cohorts = parts.current_table(root, catalogue.STOCK_COHORTS)
    if cohorts is None:
        st.info(parts.waiting_message(catalogue.STOCK_COHORTS.uri(root)))
        return
    lots = network_views.expiring_lots(cohorts, parts.current_table(root, catalogue.ITEMS),
                                       now)
    if lots.empty:
        st.success("No lot on hand expires within 48 h.")
        return
    value = lots["value"].sum(min_count=1)
    places = lots["location_id"].nunique()
    st.caption(f"{int(lots['quantity'].sum()):,} units in {len(lots):,} lot"
               f"{'' if len(lots) == 1 else 's'} at {places:,} location"
               f"{'' if places == 1 else 's'} expire within 48 h (or have)"
               + ("" if pd.isna(value) else f", worth {value:,.2f} at catalogue prices"))
    chart_col, table_col = st.columns([3, 2])
    with chart_col:
        st.bar_chart(network_views.expiring_by_location(lots), x="location_id", y="quantity",
                     color="when", horizontal=True, x_label="location", y_label="units",
                     height=min(170 + 30 * lots["location_id"].nunique(), 480))
    with table_col:
        # The soonest first, capped: a network-wide list ran to 90,000 lots, and sending
        # them all to the browser made this the slowest page.
        shown = lots.head(views.MAX_STOCK_ROWS)
        if len(shown) < len(lots):
            st.caption(f"the {len(shown):,} soonest of {len(lots):,} lots")
        st.dataframe(shown[["location_id", "sku", "lot", "expires_on", "quantity", "value"]],
                     hide_index=True,
                     column_config={"location_id": st.column_config.TextColumn("location"),
                                    "expires_on": st.column_config.DateColumn("expires on"),
                                    "value": st.column_config.NumberColumn(format="%.2f")})


@parts.live
def live_stock(root: str) -> None:
    render_stock(root, pd.Timestamp.now(tz="UTC"), regions.known_regions(root))


@parts.live
def live_expiring(root: str) -> None:
    render_expiring(root, pd.Timestamp.now(tz="UTC"))


def main() -> None:
    root = parts.context().root
    st.title("Shelflife — stock")
    regions.live_freshness(root)
    live_stock(root)
    live_expiring(root)


main()
