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
QUIET_RATIO = 0.65
"""A store is quiet under this share of the events its usual rate would have given in
the last 15 minutes: a halved store gets there 10-11 minutes after it halves, a silenced
one after 5; an hour-to-hour swing in trade (a busy lunch, a quiet evening) stays above."""
QUIET_SIGMAS = 3.0
"""...and at least this many standard deviations (Poisson, sqrt of the expected count)
below it, so a small store's chance dip of a few events is not an alert."""
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
    beats = beats.sort_values("at")
    cut = pd.Timestamp(now) - recent

    def ends(rows: pd.DataFrame, tag: str) -> pd.DataFrame:
        return rows.groupby("location_id").agg(**{
            f"{tag}_first_at": ("at", "first"), f"{tag}_first_seq": ("last_seq", "first"),
            f"{tag}_last_at": ("at", "last"), f"{tag}_last_seq": ("last_seq", "last"),
            f"{tag}_n": ("at", "size")})

    both = ends(beats[beats["at"] <= cut], "b").join(
        ends(beats[beats["at"] >= cut], "a"), how="outer")
    usual = _per_hour(both["b_last_seq"] - both["b_first_seq"],
                      both["b_last_at"] - both["b_first_at"], both["b_n"].fillna(0))
    # The recent window starts at the last heartbeat before it, when there is one.
    start_at = both["b_last_at"].fillna(both["a_first_at"])
    start_seq = both["b_last_seq"].fillna(both["a_first_seq"])
    end_at = both["a_last_at"].fillna(both["b_last_at"])
    end_seq = both["a_last_seq"].fillna(both["b_last_seq"])
    count = both["b_n"].notna().astype(int) + both["a_n"].fillna(0)
    recent_rate = _per_hour(end_seq - start_seq, end_at - start_at, count)
    recent_h = (end_at - start_at).dt.total_seconds() / 3600
    return pd.DataFrame({"location_id": both.index, "usual_per_h": usual.to_numpy(),
                         "recent_per_h": recent_rate.to_numpy(),
                         "recent_events": (end_seq - start_seq).astype(float).to_numpy(),
                         "expected_events": (usual * recent_h).to_numpy()}
                        ).reset_index(drop=True)


def _per_hour(events: pd.Series, span: pd.Series, beats: pd.Series) -> pd.Series:
    """Events per hour over ``span``; NaN with fewer than two heartbeats or no time."""
    hours = span.dt.total_seconds() / 3600
    ok = (beats >= 2) & (hours > 0)
    return (events.astype(float) / hours.where(ok)).astype(float)


def quiet_stores(rates: pd.DataFrame, *, ratio: float = QUIET_RATIO,
                 sigmas: float = QUIET_SIGMAS,
                 min_usual_per_h: float = MIN_USUAL_PER_H) -> pd.DataFrame:
    """Stores recording far fewer events than usual while their heartbeats go on: a till
    that stopped reporting, a scanner that went down, half the lanes closed.

    Quiet = fewer events in the recent window than ``ratio`` of what the usual rate
    predicts, and ``sigmas`` Poisson standard deviations below it (busy enough for the
    drop to mean something). A store with no recent span counts as zero events."""
    busy = rates[rates["usual_per_h"] >= min_usual_per_h]
    expected = busy["expected_events"].where(busy["expected_events"] > 0,
                                             busy["usual_per_h"] * RECENT.total_seconds()
                                             / 3600)
    got = busy["recent_events"].fillna(0)
    quiet = (got < ratio * expected) & (got < expected - sigmas * expected.pow(0.5))
    return busy[quiet].reset_index(drop=True)
