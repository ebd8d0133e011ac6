"""Recall: put a lot on hold everywhere, see which locations still hold its units and
which stores have the hold in force, and release it.

Holds go through :mod:`lakehouse.recalls` with the signed-in operator's name, as
``shelflife recall`` does; the order dispatcher carries them to the stores. Never reruns
on a timer (a Refresh button instead), like the other pages with a form.
"""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from apps.auth.exceptions import AuthError
from apps.auth.users import User, UsersFile
from apps.streamlit import login, parts
from lakehouse import catalogue, recalls
from lakehouse.contract import ContractError

SHOWN_LOCATIONS = 30  # bars in a hold's chart: the locations holding most units


def decide(root: str, users: UsersFile, user: User, sku: str, lot: str, reason: str,
           on_hold: bool) -> None:
    """Place or release a hold as the operator the users file says ``user`` is now."""
    act = recalls.place_hold if on_hold else recalls.release_hold
    try:
        who = login.decider(users, user, "place or release recalls").name
        act(root, sku, lot, by=who, reason=reason)
    except (AuthError, recalls.HoldError, ContractError) as exc:
        st.error(str(exc))
        return
    st.success(f"{sku} lot {lot} {'put on hold' if on_hold else 'released'} by {who}: the "
               "order dispatcher tells every store within its next round (15 s).")


def hold_form(root: str, users: UsersFile, user: User) -> None:
    """A SKU of the catalogue (or one typed in), the lot, and why."""
    items = parts.current_table(root, catalogue.ITEMS, columns=("sku",))
    skus = sorted(items["sku"].unique()) if items is not None else []
    with st.form("recall_hold", clear_on_submit=False, border=True):
        st.markdown("**Put a lot on hold** at every location")
        cols = st.columns([2, 2, 4])
        sku = cols[0].selectbox("SKU", skus, index=None, placeholder="choose a SKU",
                                accept_new_options=True, key="recall_sku")
        lot = cols[1].text_input("Lot", key="recall_lot",
                                 help="as printed on the supplier's recall notice")
        reason = cols[2].text_input("Reason", key="recall_reason",
                                    placeholder="e.g. supplier notice 2026-114: listeria")
        pressed = st.form_submit_button(f"Put on hold as {user.name}", type="primary")
    if pressed:
        if not (sku and lot.strip() and reason.strip()):
            st.error("A hold needs a SKU, a lot and a reason.")
            return
        decide(root, users, user, sku, lot.strip(), reason.strip(), True)


def hold_chart(where: pd.DataFrame) -> alt.Chart:
    """Units still held per location, most first."""
    top = where.head(SHOWN_LOCATIONS)
    return alt.Chart(top).mark_bar().encode(
        x=alt.X("units:Q", title="units still held"),
        y=alt.Y("location_id:N", sort="-x", title=None),
        color=alt.Color("status:N", title=None,
                        scale=alt.Scale(domain=["confirmed", "not confirmed"],
                                        range=["#2e7d32", "#c62828"])),
        tooltip=["location_id", "region", "units", "status"],
    ).properties(height=max(120, 18 * len(top)))


def render_hold(root: str, users: UsersFile, user: User, hold: pd.Series,
                confirmed: pd.DataFrame) -> None:
    """One lot on hold: who holds its units, who confirmed, what was wasted; release."""
    where = recalls.holders(root, hold["sku"], hold["lot"])
    mine = confirmed[confirmed["hold_id"] == hold["hold_id"]]
    ok = set(mine.loc[mine["confirmed_at"].notna(), "location_id"])
    wasted = recalls.recall_waste(root, hold["sku"], hold["lot"],
                                  pd.Timestamp(hold["decided_at"]).to_pydatetime())
    st.subheader(f"{hold['sku']} lot {hold['lot']}")
    st.caption(f"On hold since {hold['decided_at']:%Y-%m-%d %H:%M} UTC by "
               f"{hold['decided_by']}: {hold['reason']}")
    cols = st.columns(4)
    cols[0].metric("Units still held", f"{int(where['units'].sum()):,}")
    cols[1].metric("Locations holding", f"{len(where):,}")
    cols[2].metric("Stores confirmed", f"{len(ok):,} of {len(mine):,}",
                   help="stores whose heartbeat since the hold lists it, of those heard "
                        "from since")
    cols[3].metric("Wasted for the recall", f"{int(wasted['units'].sum()):,}")
    if where.empty:
        st.success("No location holds units of this lot any more: release the hold once "
                   "the supplier has closed the recall.")
    else:
        where = where.assign(status=where["location_id"].map(
            lambda loc: "confirmed" if loc in ok else "not confirmed"))
        st.altair_chart(hold_chart(where), use_container_width=True)
        late = where[where["status"] == "not confirmed"]
        if len(late):
            st.warning(f"{len(late)} locations holding units have not confirmed the hold: "
                       + ", ".join(late["location_id"].head(15))
                       + (" …" if len(late) > 15 else ""))
    if user.may_decide:
        with st.form(f"release_{hold['hold_id']}", border=False):
            reason = st.text_input("Release reason", key=f"release_reason_{hold['hold_id']}",
                                   placeholder="e.g. supplier cleared the lot")
            if st.form_submit_button(f"Release as {user.name}"):
                if not reason.strip():
                    st.error("A release needs a reason.")
                else:
                    decide(root, users, user, hold["sku"], hold["lot"], reason.strip(), False)


def render_recall(root: str, users: UsersFile, user: User) -> None:
    """The form, then every lot on hold, then the last releases."""
    if user.may_decide:
        hold_form(root, users, user)
    else:
        st.info(f"Signed in as {user.name} ({user.role}): viewers see recalls but cannot "
                "place or release them.")
    cur = recalls.current_holds(root)
    on = cur[cur["on_hold"].astype(bool)] if len(cur) else cur
    if on.empty:
        st.success("No lot is on hold.")
    else:
        confirmed = recalls.confirmations(root, on)
        for _, hold in on.iterrows():
            render_hold(root, users, user, hold, confirmed)
    released = cur[~cur["on_hold"].astype(bool)] if len(cur) else cur
    if len(released):
        st.markdown("**Released**")
        st.dataframe(released[["sku", "lot", "reason", "decided_by", "decided_at"]].head(20),
                     hide_index=True, column_config={
                         "decided_by": "released by",
                         "decided_at": st.column_config.DatetimeColumn("released (UTC)")})
    st.caption("A lot on hold is never sold (FEFO skips it) or shipped at any store that "
               "has the hold; transfers and reorders leave it out. Waste what is left with "
               "reason `recall`. From a shell: `shelflife recall hold|release|list`.")


@parts.on_demand
def recall_part(root: str, users: UsersFile, user: User) -> None:
    st.button("Refresh", key="recall_refresh", icon=":material/refresh:")
    render_recall(root, users, user)


def main() -> None:
    ctx = parts.context()
    st.title("Shelflife — recall")
    recall_part(ctx.root, ctx.users, ctx.user)


main()
