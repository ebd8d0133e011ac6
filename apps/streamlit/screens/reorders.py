"""Reorders: what each store should order now, and what it would waste if it ordered
more; an approver turns the most urgent into purchase orders within today's spend limit.

Never reruns on a timer (a Refresh button instead), like the transfers page. Approvals go
through :func:`lakehouse.purchase_orders.approve` with the signed-in operator's name.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from apps.auth.exceptions import AuthError
from apps.auth.users import User, UsersFile
from apps.streamlit import decision_views, login, parts
from lakehouse import catalogue
from lakehouse import purchase_orders as po

MAX_AT_ONCE = 100  # the most one click orders
ORDER_SHOWN = ["location_id", "sku", "order_quantity", "unit_price", "value", "on_hand",
               "in_transit", "demand_forecast", "arrives_on"]


def order_form(ranked: pd.DataFrame, spent: dict[str, float], limit: float,
               user: User) -> pd.DataFrame | None:
    """The approver's choice: the N most urgent suggestions that fit today's limit, shown
    before the button that orders exactly them."""
    st.markdown("**Order the most urgent**: emptiest shelves first, each region within "
                f"today's spend limit of {limit:,.2f}")
    n = int(st.number_input("How many", min_value=1, max_value=MAX_AT_ONCE,
                            value=min(10, len(ranked)), step=1, key="po_count"))
    chosen = po.that_fit(ranked, spent, limit).head(n)
    st.dataframe(chosen[ORDER_SHOWN], hide_index=True, column_config={
        "unit_price": st.column_config.NumberColumn("price", format="%.2f"),
        "value": st.column_config.NumberColumn("value", format="%.2f"),
        "demand_forecast": st.column_config.NumberColumn("forecast", format="%.0f")})
    skipped = len(set(range(min(n, len(ranked)))) - set(chosen.index))
    if skipped:
        st.caption(f"{skipped} of the {n} most urgent do not fit what is left of the limit "
                   "(or have no price) and are left out.")
    pressed = st.button(f"Approve {len(chosen)} purchase orders "
                        f"({chosen['value'].sum():,.2f}) as {user.name}", type="primary",
                        disabled=chosen.empty, key="po_approve")
    return chosen if pressed else None


def approve(root: str, users: UsersFile, user: User, rows: pd.DataFrame) -> None:
    """Approve as the operator the users file says ``user`` is now; say what happened."""
    try:
        who = login.decider(users, user, "approve purchase orders").name
        done = po.approve(rows, who, root=root)
    except (AuthError, ValueError) as exc:
        st.error(str(exc))
        return
    st.success(f"{len(done.lines)} purchase orders approved by {who} "
               f"({done.lines['value'].sum():,.2f}), sent as {done.document}")


def render_orders(root: str) -> None:
    """Today's approvals, and lines overdue (approved, not received)."""
    orders = parts.current_table(root, catalogue.PURCHASE_ORDERS)
    if orders is None or orders.empty:
        st.caption("No purchase order approved yet.")
        return
    today = pd.Timestamp.now(tz="UTC").normalize()
    recent = orders[orders["approved_at"] >= today]
    st.markdown(f"**Approved today**: {len(recent):,} lines")
    if not recent.empty:
        st.dataframe(recent.groupby(["batch_id", "approved_by", "region"], as_index=False)
                     .agg(lines=("po_id", "size"), units=("quantity", "sum"),
                          value=("value", "sum"), at=("approved_at", "max"))
                     .sort_values("at", ascending=False), hide_index=True,
                     column_config={"value": st.column_config.NumberColumn(format="%.2f"),
                                    "at": st.column_config.DatetimeColumn("approved (UTC)")})
    waiting = po.open_orders(root)
    overdue = waiting[pd.to_datetime(waiting["arrives_on"]) < today.tz_localize(None)]
    if not overdue.empty:
        st.warning(f"{len(overdue)} approved lines were due before today and their receipt "
                   "is not in: " + ", ".join(overdue["po_id"].head(10)))


def render_reorders(root: str, users: UsersFile, user: User) -> None:
    """Units to order per region and category, the order form, then every suggestion."""
    sugg = parts.current_table(root, catalogue.REORDER_SUGGESTIONS)
    if sugg is None or sugg.empty:
        st.info("Reorder suggestions appear after `shelflife batch reorders` (every 5 minutes "
                "in the demo); none means every store's stock covers its forecast.")
        render_orders(root)
        return
    limit = po.spend_limit()
    items = po.items_table(root)
    headline = st.container()  # filled after the form, so it counts what it approved
    if "category" in sugg:
        by = sugg.fillna({"category": "unknown"}).groupby(
            ["region", "category"], as_index=False)["order_quantity"].sum()
        st.bar_chart(by, x="region", y="order_quantity", color="category", height=220,
                     y_label="units to order")
    if not user.may_decide:
        st.info(f"Signed in as {user.name} ({user.role}): viewers see reorders but cannot "
                "approve purchase orders.")
    else:
        ranked = po.priced(po.not_yet_ordered(sugg, root), items)
        chosen = order_form(ranked, po.spent_today(root), limit, user)
        if chosen is not None:
            approve(root, users, user, chosen)
    spent = po.spent_today(root)
    with headline:
        cols = st.columns(4)
        cols[0].metric("Suggested orders", f"{len(sugg):,}")
        cols[1].metric("Units to order", f"{int(sugg['order_quantity'].sum()):,}")
        value = po.priced(sugg, items)["value"].sum()
        cols[2].metric("Value at shelf price", f"{value:,.0f}")
        cols[3].metric("Spent today", f"{sum(spent.values()):,.0f}",
                       help=f"approved today, of {limit:,.0f} per region "
                            f"({po.ENV_SPEND_LIMIT})")
    render_orders(root)
    regions = ["all", *sorted(sugg["region"].unique())]
    region = st.selectbox("Region", regions, key="reorder_region")
    st.dataframe(decision_views.reorder_table(sugg, None if region == "all" else region),
                 hide_index=True)
    st.caption("Orders never exceed what the forecast says will sell before the new lot "
               "stops being sellable; counts and adjustments are not demand. An approved "
               "order counts as on its way until its receipt names it (supplier ref = po id).")


@parts.on_demand
def reorders_part(root: str, users: UsersFile, user: User) -> None:
    st.button("Refresh", key="reorders_refresh", icon=":material/refresh:")
    render_reorders(root, users, user)


def main() -> None:
    ctx = parts.context()
    st.title("Shelflife — reorders")
    reorders_part(ctx.root, ctx.users, ctx.user)


main()
