"""Shaping the heartbeat log for the stores page: who is online, who is silent, who is
behind, and whose event rate fell far below its usual.

Plain DataFrame -> DataFrame functions, tested without Streamlit. A store publishes a
heartbeat every 30 s and its broker publishes the store's will (``online: false``) when
the connection dies, so "offline" is the store's own word and "silent" is ours: no
heartbeat for three intervals.
"""

from __future__ import annotations

from datetime import timedelta

import pandas as pd

from apps.streamlit.views import describe_duration, require_columns

SILENT_AFTER = timedelta(seconds=90)
"""Three missed heartbeats (every 30 s): the store is not heard from, whatever it said."""
HEARTBEAT_COLUMNS = ("region", "location_id", "agent_version", "online", "local_time",
                     "received_at", "outbox_depth", "last_seq", "last_acked_seq",
                     "clock_skew_hint_s")
RECENT = timedelta(minutes=15)
QUIET_RATIO = 0.25
MIN_USUAL_PER_H = 20.0


def store_status(heartbeats: pd.DataFrame, now: pd.Timestamp, *,
                 silent_after: timedelta = SILENT_AFTER) -> pd.DataFrame:
    """One row per store, its latest heartbeat: state (online, offline, silent), since
    when, outbox depth, events not yet acked, clock skew and agent version; the stores
    that need a look (offline, silent, deepest outbox) first."""
    require_columns(heartbeats, HEARTBEAT_COLUMNS, "silver/store_heartbeats")
    latest = (heartbeats.sort_values("received_at")
              .drop_duplicates("location_id", keep="last").copy())
    received = pd.to_datetime(latest["received_at"], utc=True)
    age = (pd.Timestamp(now) - received).dt.total_seconds().clip(lower=0)
    latest["state"] = ["offline" if not online else
                       "silent" if seconds > silent_after.total_seconds() else "online"
                       for online, seconds in zip(latest["online"], age, strict=True)]
    latest["last_heard"] = [f"{describe_duration(s)} ago" for s in age]
    skew = pd.to_numeric(latest["clock_skew_hint_s"], errors="coerce")
    measured = (pd.to_datetime(latest["local_time"], utc=True) - received).dt.total_seconds()
    latest["clock_skew_s"] = skew.fillna(measured).round(1)
    latest["not_acked"] = (latest["last_seq"] - latest["last_acked_seq"]).clip(lower=0)
    latest["replaying"] = (latest["state"] == "online") & (latest["outbox_depth"] > 0)
    order = {"offline": 0, "silent": 1, "online": 2}
    latest["_order"] = latest["state"].map(order)
    latest = latest.sort_values(["_order", "outbox_depth", "location_id"],
                                ascending=[True, False, True])
    return latest[["region", "location_id", "state", "last_heard", "received_at",
                   "outbox_depth", "not_acked", "replaying", "clock_skew_s",
                   "agent_version", "last_seq"]].reset_index(drop=True)


def event_rates(heartbeats: pd.DataFrame, now: pd.Timestamp, *,
                recent: timedelta = RECENT) -> pd.DataFrame:
    """Per store: events per hour over the last ``recent`` and over the history before
    it, from the growth of ``last_seq`` between heartbeats (a store's seq counts every
    event it records)."""
    require_columns(heartbeats, HEARTBEAT_COLUMNS, "silver/store_heartbeats")
    beats = heartbeats.dropna(subset=["last_seq"]).copy()
    beats["at"] = pd.to_datetime(beats["received_at"], utc=True)
    cut = pd.Timestamp(now) - recent
    rows = []
    for location, one in beats.sort_values("at").groupby("location_id"):
        before, after = one[one["at"] <= cut], one[one["at"] >= cut]
        rows.append({"location_id": location, "usual_per_h": _rate(before),
                     "recent_per_h": _rate(pd.concat([before.tail(1), after]))})
    return pd.DataFrame(rows, columns=["location_id", "usual_per_h", "recent_per_h"])


def _rate(beats: pd.DataFrame) -> float:
    if len(beats) < 2:
        return float("nan")
    hours = (beats["at"].iloc[-1] - beats["at"].iloc[0]).total_seconds() / 3600
    return float("nan") if hours <= 0 else float(
        (beats["last_seq"].iloc[-1] - beats["last_seq"].iloc[0]) / hours)


def quiet_stores(rates: pd.DataFrame, *, ratio: float = QUIET_RATIO,
                 min_usual_per_h: float = MIN_USUAL_PER_H) -> pd.DataFrame:
    """Stores recording far fewer events than usual (under ``ratio`` of their usual
    rate) while busy enough for the drop to mean something: a till that stopped
    reporting while the agent still beats."""
    busy = rates[rates["usual_per_h"] >= min_usual_per_h]
    return busy[busy["recent_per_h"].fillna(0) < ratio * busy["usual_per_h"]
                ].reset_index(drop=True)
