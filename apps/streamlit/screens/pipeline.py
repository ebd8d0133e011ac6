"""Pipeline: is each region's stream keeping up (lag, backlog, events per second, batch
time), and what is being refused, since when and why."""

from __future__ import annotations

import streamlit as st

from apps.streamlit import parts, regions, views
from lakehouse import catalogue

STREAM_FIGURES = {"lag_s": "lag (s)", "backlog_events": "backlog (events)",
                  "events_per_s": "events/s", "batch_duration_s": "batch (s)"}


def render_stream(root: str) -> None:
    """Per region: lag, backlog, throughput and batch time, side by side."""
    status = parts.current_table(root, catalogue.REGION_STATUS)
    if status is None or status.empty:
        return
    st.subheader("Per region, now")
    present = {k: v for k, v in STREAM_FIGURES.items() if k in status}
    for col, (key, label) in zip(st.columns(len(present)), present.items(), strict=True):
        with col:
            st.markdown(f"**{label}**")
            st.bar_chart(status, x="region", y=key, height=200, x_label="", y_label="")
    st.dataframe(status[["region", "mode", *present, "events_total", "updated_at"]]
                 .sort_values("region"), hide_index=True,
                 column_config={"updated_at": st.column_config.DatetimeColumn("updated (UTC)")})
    st.caption("gold region_status keeps only each region's latest figures, so this page "
               "shows them now, not over time; their history (and latency percentiles) is "
               "in ingest's and the stream's Prometheus metrics at /metrics.")


def render_dead_letters(root: str) -> None:
    """How many inputs were refused, over time and by cause, so a bad producer is
    noticed early."""
    st.subheader("Dead letters")
    dead = parts.current_table(root, catalogue.DEAD_LETTERS, columns=views.DEAD_LETTER_COLUMNS)
    count = 0 if dead is None else len(dead)
    st.metric("Dead letters", f"{count:,}")
    if not count:
        st.success("Nothing refused: every payload so far met the contract.")
        return
    chart_col, causes_col = st.columns([3, 2])
    with chart_col:
        over_time = views.dead_letters_over_time(dead)
        over_time["at"] = over_time["at"].dt.strftime("%m-%d %H:%M")  # one bar per bucket
        st.bar_chart(over_time, x="at", y="dead_letters",
                     color="cause", height=260, x_label="received (UTC)", y_label="refused")
    with causes_col:
        st.markdown("**Top causes**")
        st.dataframe(views.top_dead_letter_causes(dead), hide_index=True,
                     column_config={"latest": st.column_config.DatetimeColumn("latest")})
    with st.expander("Latest 20 reasons"):
        st.dataframe(views.latest_dead_letters(dead), hide_index=True)
    st.caption("Inspect and re-drive them with `shelflife deadletters`.")


@parts.live
def live_pipeline(root: str) -> None:
    render_stream(root)
    render_dead_letters(root)


def main() -> None:
    root = parts.context().root
    st.title("Shelflife — pipeline")
    regions.live_regions(root)
    live_pipeline(root)


main()
