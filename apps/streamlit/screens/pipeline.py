"""Pipeline: is each region's stream keeping up (lag, backlog, events per second, batch
time), since when is it slow, is anything growing that should not (state, memory, a
broker's queue), and what is being refused, since when and why."""

from __future__ import annotations

import altair as alt
import pandas as pd
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

HISTORY_H = 6  # hours of pipeline and broker history charted
PERCENTILES = {"latency_p50_s": "p50", "latency_p95_s": "p95", "latency_p99_s": "p99"}
MEMORY = {"driver_rss_mb": "stream (Python)", "jvm_rss_mb": "stream (JVM)"}


def over_time(frame: pd.DataFrame, y: str, title: str, *, color: str = "region",
              dash: str | None = None, height: int = 220) -> alt.Chart:
    """One line per ``color`` (and dash) over ``at``, with a tooltip per point."""
    enc = {"x": alt.X("at:T", title=None), "y": alt.Y(f"{y}:Q", title=title),
           "color": alt.Color(f"{color}:N", title=None, legend=alt.Legend(orient="top")),
           "tooltip": [alt.Tooltip("at:T", format="%H:%M:%S"), f"{color}:N",
                       alt.Tooltip(f"{y}:Q", format=",.2f")]}
    if dash:
        enc["strokeDash"] = alt.StrokeDash(f"{dash}:N", title=None,
                                           legend=alt.Legend(orient="top"))
        enc["tooltip"].insert(2, f"{dash}:N")
    return alt.Chart(frame).mark_line(strokeWidth=1.5).encode(**enc).properties(height=height)


def latency_long(history: pd.DataFrame) -> pd.DataFrame:
    """Latency percentiles as one row per (time, region, percentile)."""
    long = history.melt(id_vars=["at", "region"], value_vars=list(PERCENTILES),
                        var_name="percentile", value_name="seconds").dropna()
    long["percentile"] = long["percentile"].map(PERCENTILES)
    return long


def memory_long(history: pd.DataFrame) -> pd.DataFrame:
    """The stream process's memory (the same in every region's rows: one process) and
    each region's state, as one row per (time, series)."""
    proc = (history.melt(id_vars=["at"], value_vars=list(MEMORY), var_name="series",
                         value_name="mb").dropna())
    proc["series"] = proc["series"].map(MEMORY)
    proc["at"] = proc["at"].dt.floor("30s")
    proc = proc.groupby(["at", "series"], as_index=False)["mb"].max()
    state = history[["at", "region", "state_mb"]].dropna().rename(columns={"state_mb": "mb"})
    state["series"] = "state: " + state.pop("region")
    return pd.concat([proc, state], ignore_index=True)


def uptime(seconds: object) -> str:
    """'3 h 20 min' (or '45 s') since the broker started; a dash when unknown."""
    if pd.isna(seconds):
        return "—"
    s = int(seconds)
    return f"{s} s" if s < 60 else f"{s // 3600} h {s % 3600 // 60} min"


def render_history(root: str) -> None:
    """The last hours per region: latency, lag and backlog, memory and state, brokers."""
    history = parts.recent_rows(root, catalogue.PIPELINE_HISTORY, "at", HISTORY_H)
    brokers = parts.recent_rows(root, catalogue.BROKER_HEALTH, "at", HISTORY_H)
    st.subheader(f"Over the last {HISTORY_H} hours")
    if history is None or history.empty:
        st.info("No history yet: each region's stream adds a row every 30 s "
                "(gold pipeline_history).")
    else:
        history = history.sort_values("at")
        st.altair_chart(over_time(latency_long(history), "seconds",
                                  "store event -> gold (s)", dash="percentile", height=260),
                        width="stretch")
        lag_col, backlog_col = st.columns(2)
        lag_col.altair_chart(over_time(history, "lag_s", "lag (s)"), width="stretch")
        backlog_col.altair_chart(over_time(history, "backlog_events", "backlog (events)"),
                                 width="stretch")
        mem_col, cohorts_col = st.columns(2)
        mem_col.altair_chart(over_time(memory_long(history), "mb", "memory (MB)",
                                       color="series"), width="stretch")
        cohorts_col.altair_chart(over_time(history, "cohorts", "cohorts held"),
                                 width="stretch")
        st.caption("Memory or state that only grows while the events per second do not is "
                   "how a runaway shows, hours before it stops anything.")
    st.markdown("**Brokers**")
    if brokers is None or brokers.empty:
        st.info("No broker figures yet: each region's ingest records its broker's "
                "$SYS figures every 30 s (silver broker_health).")
        return
    brokers = brokers.sort_values("at")
    latest = brokers.groupby("region").tail(1).set_index("region").sort_index()
    cols = st.columns(max(1, len(latest)))
    for col, (region, row) in zip(cols, latest.iterrows(), strict=False):
        col.metric(f"{region}: clients connected", f"{int(row['connected_clients'] or 0):,}",
                   help=f"{int(row['stored_messages'] or 0):,} messages held by the broker, "
                        f"up {uptime(row['uptime_s'])}")
    clients_col, stored_col = st.columns(2)
    clients_col.altair_chart(over_time(brokers, "connected_clients", "clients connected"),
                             width="stretch")
    stored_col.altair_chart(over_time(brokers, "stored_messages", "messages held"),
                            width="stretch")


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


# Rows come every 30 s: rereading them every two seconds would cost the page for nothing.
pipeline_history = parts.live(render_history, every_s=30.0)


def main() -> None:
    root = parts.context().root
    st.title("Shelflife — pipeline")
    regions.live_regions(root)
    live_pipeline(root)
    pipeline_history(root)


main()
