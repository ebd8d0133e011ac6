"""Stores: which stores are online, which went quiet, how far behind their outboxes
are, how far off their clocks run and which agent they run, from their heartbeats."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from apps.streamlit import parts, store_views
from lakehouse import catalogue

HISTORY_H = 3  # hours of heartbeats read (a live page rereads them every few seconds)
STATES = ("offline", "silent", "online")


def render_stores(root: str, states: list[str]) -> None:
    """Headline counts, stores flagged quiet, the outbox chart and every store's row."""
    beats = parts.recent_rows(root, catalogue.STORE_HEARTBEATS, "received_at", HISTORY_H)
    if beats is None or beats.empty:
        st.info("No store heartbeat yet: ingest writes them to silver store_heartbeats "
                "every few seconds once stores connect (each beats every 30 s).")
        return
    now = pd.Timestamp.now(tz="UTC")
    stores = store_views.store_status(beats, now)
    counts = stores["state"].value_counts()
    cols = st.columns(5)
    cols[0].metric(f"Stores heard ({HISTORY_H} h)", f"{len(stores):,}",
                   help=f"a store not heard from for {HISTORY_H} hours is not listed here")
    cols[1].metric("Online", f"{int(counts.get('online', 0)):,}")
    cols[2].metric("Offline", f"{int(counts.get('offline', 0)):,}",
                   help="the store said so: its will, or a clean shutdown")
    cols[3].metric("Silent", f"{int(counts.get('silent', 0)):,}",
                   help="no heartbeat for 90 s (three missed)")
    cols[4].metric("Catching up", f"{int(stores['replaying'].sum()):,}",
                   help="online with events in their outbox not yet acked end to end")
    quiet = store_views.quiet_stores(store_views.event_rates(beats, now))
    quiet = quiet[quiet["location_id"].isin(stores.loc[stores["state"] == "online",
                                                       "location_id"])]
    if not quiet.empty:
        st.warning(f"{len(quiet)} online store(s) recorded far fewer events in the last "
                   "15 minutes than usual: " + ", ".join(
                       f"{r.location_id} ({r.recent_per_h:.0f}/h, usually "
                       f"{r.usual_per_h:.0f}/h)" for r in quiet.itertuples()))
    chart_col, version_col = st.columns([3, 1])
    with chart_col:
        deepest = stores[stores["outbox_depth"] > 0].nlargest(20, "outbox_depth")
        st.markdown("**Deepest outboxes** (events recorded, not yet acked end to end)")
        if deepest.empty:
            st.success("Every store's outbox is empty: all events are landed.")
        else:
            st.bar_chart(deepest, x="location_id", y="outbox_depth", horizontal=True,
                         height=min(110 + 30 * len(deepest), 420),
                         x_label="store", y_label="events")
    with version_col:
        st.markdown("**Agent versions**")
        st.dataframe(stores["agent_version"].value_counts().rename_axis("version")
                     .reset_index(name="stores"), hide_index=True)
    shown = stores[stores["state"].isin(states)]
    st.dataframe(shown, hide_index=True, column_config={
        "location_id": st.column_config.TextColumn("store"),
        "last_heard": st.column_config.TextColumn("last heartbeat"),
        "received_at": st.column_config.DatetimeColumn("at (UTC)",
                                                       format="YYYY-MM-DD HH:mm:ss"),
        "outbox_depth": st.column_config.NumberColumn("outbox", format="%d"),
        "not_acked": st.column_config.NumberColumn("seqs not acked", format="%d"),
        "replaying": st.column_config.CheckboxColumn("catching up"),
        "clock_skew_s": st.column_config.NumberColumn(
            "clock skew (s)", format="%.1f", help="store clock minus ingest's; + = ahead"),
        "agent_version": st.column_config.TextColumn("agent")})


# Heartbeats come every 30 s; rereading hours of them every 2 s would buy nothing.
live_stores = parts.live(render_stores, every_s=10.0)


def main() -> None:
    st.title("Shelflife — stores")
    states = st.multiselect("Show stores that are", list(STATES), default=list(STATES),
                            key="store_states")
    live_stores(parts.context().root, states)


main()
