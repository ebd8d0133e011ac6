"""The decision jobs behind ``shelflife batch``: forecasts, accuracy, transfers, reorders.

Each job reads the lakehouse, decides, and replaces one gold table, printing what it is
doing as it goes. Forecasts and transfer outcomes read silver ``events`` with Spark
(months of events); transfers and reorders work on gold stock, the forecasts and the
reference tables, which fit in memory, so they run in pandas with ``deltalake`` and need
no JVM. :func:`run_schedule` runs them on a timer for the demo and for a small network.

Only demand drives these decisions: forecasts read ``sold`` events alone, and transfers
and reorders read forecasts and stock, never counts or adjustments as demand. A count
changes what is on hand, which is the point of counting, and nothing else.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd
import pyarrow as pa
from deltalake import write_deltalake

from lakehouse.catalogue import (
    DAILY_MOVEMENTS,
    DEMAND_FORECASTS,
    EVENTS,
    FORECAST_ACCURACY,
    FORECAST_HISTORY,
    REORDER_SUGGESTIONS,
    STOCK_COHORTS,
    STOCK_LEVELS,
    TRANSFER_OUTCOMES,
    TRANSFER_RECOMMENDATIONS,
    Table,
)
from lakehouse.decisions import (
    approved_since,
    read_decisions,
    record_decisions,
    transfer_progress,
)
from lakehouse.purchase_orders import open_orders
from lakehouse.readers import is_table, read_table
from lakehouse.recalls import lots_on_hold, without_held
from lakehouse.storage import delta_options, ensure_parent, spark_url

from . import reference
from .accuracy import forecast_accuracy, merge_history, transfer_outcomes
from .approval import (
    AUTO_APPROVAL_ENV,
    AUTO_APPROVAL_RULE,
    AUTO_APPROVER,
    ESTIMATES_AS_MEASURED,
    auto_approval_on,
    auto_approve,
)
from .reorders import service_levels_from_env, suggest_reorders, unknown_categories
from .shelf import ServiceLevels
from .transfers import recommend_transfers

Root = str | os.PathLike[str] | None
Say = Callable[[str], None]
JOBS = ("forecasts", "accuracy", "transfers", "reorders")
KEEP_DECIDED_DAYS = 2
"""Approved or rejected transfers stay listed this long after the job stops proposing them."""
OUTCOME_LOOKBACK_DAYS = 14


def _print(message: str) -> None:
    print(message, flush=True)


def _now(now: datetime | None) -> datetime:
    return (now or datetime.now(UTC)).astimezone(UTC)


def batch_session(say: Say | None = None, root: Root = None, *, master: str | None = None
                  ) -> Any:  # -> pyspark.sql.SparkSession
    """The batch jobs' Spark session on ``master`` (default $SHELFLIFE_SPARK_MASTER or
    local[2]), able to read the lakehouse at ``root`` (s3a for an ``s3://`` one); ``say``
    is told when it has to be started, which takes a while (the first start downloads
    the Delta jars)."""
    from ..spark import spark_session  # pyspark: transfers and reorders run without it

    if say is not None:
        say(f"batch: starting Spark on {master or 'the default master'} "
            "(the first run downloads the Delta jars)")
    return spark_session("shelflife-batch", master=master, lakehouse=root)


def write_table(table: Table, frame: pd.DataFrame, root: Root = None) -> int:
    """Replace a whole table with ``frame`` (delta-rs), in its catalogue schema and
    partitions; returns the rows written."""
    schema = table.schema
    data = pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)
    url = table.uri(root)
    ensure_parent(url)
    write_deltalake(url, data, mode="overwrite", schema_mode="overwrite",
                    partition_by=list(table.partitions) or None,
                    storage_options=delta_options(url))
    return data.num_rows


# --- forecasts -------------------------------------------------------------------------

@contextlib.contextmanager
def _spark_progress(spark: Any, what: str, say: Say, every_s: float = 10.0) -> Iterator[None]:
    """Say how far Spark's running stages are, every ``every_s`` seconds, while the body
    runs: fitting thousands of series takes minutes and should not look hung."""
    stop = threading.Event()
    began = time.monotonic()

    def watch() -> None:
        tracker = spark.sparkContext.statusTracker()
        while not stop.wait(every_s):
            stages = [tracker.getStageInfo(s) for s in tracker.getActiveStageIds()]
            stages = [s for s in stages if s is not None]
            if stages:
                done = sum(s.numCompletedTasks for s in stages)
                total = sum(s.numTasks for s in stages)
                say(f"{what}: {done}/{total} tasks of the running stage(s) done "
                    f"({time.monotonic() - began:.0f} s)")

    thread = threading.Thread(target=watch, daemon=True, name=f"{what}-progress")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=every_s)


def default_through(spark: Any, root: Root, today: date) -> date | None:
    """The last complete day of sales (yesterday), or today when the network has traded
    only today (its first day: a partial day is all the history there is)."""
    from pyspark.sql import functions as F  # as in batch_session

    events = spark.read.format("delta").load(spark_url(EVENTS.uri(root)))
    last = (events.where(F.col("event_type") == "sold")
            .agg(F.max(F.to_date("occurred_at"))).first()[0])
    if last is None:
        return None
    if last < today:
        return last
    first = (events.where(F.col("event_type") == "sold")
             .agg(F.min(F.to_date("occurred_at"))).first()[0])
    return today if first >= today else today - timedelta(days=1)


def run_forecasts_job(root: Root = None, *, spark: Any = None, horizon_days: int = 7,
                      through: date | None = None, now: datetime | None = None,
                      say: Say = _print) -> dict[str, Any]:
    """Forecast every selling (location, SKU), replace gold ``demand_forecasts`` and
    record the forecasts of the dates not yet seen in gold ``forecast_history``."""
    from .forecast import run_forecasts  # pyspark, as in batch_session

    began = time.monotonic()
    now = _now(now)
    spark = spark or batch_session(root=root)
    if not is_table(EVENTS.uri(root)):
        say("forecasts: no silver events yet; nothing to forecast")
        return {"job": "forecasts", "rows": 0, "series": 0}
    through = through or default_through(spark, root, now.date())
    if through is None:
        say("forecasts: no sales yet; nothing to forecast")
        return {"job": "forecasts", "rows": 0, "series": 0}
    say(f"forecasts: history through {through}, {horizon_days} days ahead")
    with _spark_progress(spark, "forecasts", say):
        rows = run_forecasts(spark, root, horizon_days, through=through)
    forecasts = read_table(DEMAND_FORECASTS, root)
    history = merge_history(read_table(FORECAST_HISTORY, root), forecasts, through)
    write_table(FORECAST_HISTORY, history, root)
    models = forecasts.drop_duplicates(["location_id", "sku"])["model"].value_counts()
    series = int(models.sum()) if len(models) else 0
    say(f"forecasts: {series} series, {rows} rows in {time.monotonic() - began:.1f} s "
        f"({', '.join(f'{m} {n}' for m, n in models.items()) or 'none'})")
    return {"job": "forecasts", "rows": rows, "series": series, "through": str(through),
            "seconds": round(time.monotonic() - began, 1)}


# --- accuracy --------------------------------------------------------------------------

def _complete_ratio(frame: pd.DataFrame, part: str, whole: str) -> tuple[float | None, int]:
    """sum(part) / sum(whole) over the rows whose outcome is final, and how many those are."""
    done = frame[frame["complete"]]
    total = done[whole].sum()
    return (float(done[part].sum() / total) if len(done) and total > 0 else None), len(done)


def run_accuracy_job(root: Root = None, *, spark: Any = None, now: datetime | None = None,
                     say: Say = _print) -> dict[str, Any]:
    """Score past forecasts against sales, and transfers by what sold within 48 hours."""
    began = time.monotonic()
    now = _now(now)
    out: dict[str, Any] = {"job": "accuracy", "forecast_rows": 0, "transfer_rows": 0}
    history, daily = read_table(FORECAST_HISTORY, root), read_table(DAILY_MOVEMENTS, root)
    if history is not None and daily is not None:
        scored = forecast_accuracy(history, daily, today=now.date(), now=now)
        out["forecast_rows"] = write_table(FORECAST_ACCURACY, scored, root)
        wape, done = _complete_ratio(scored, "abs_error", "actual")
        if wape is not None:
            out["wape"] = round(wape, 4)
            say(f"accuracy: {done} complete series-days scored, WAPE {wape:.3f}")
        else:
            say(f"accuracy: {len(scored)} series-days with forecasts, none complete yet")
    else:
        say("accuracy: no forecast history or daily sales yet")
    if is_table(EVENTS.uri(root)):
        spark = spark or batch_session(root=root)
        events = spark.read.format("delta").load(spark_url(EVENTS.uri(root)))
        since = (now - timedelta(days=OUTCOME_LOOKBACK_DAYS)).replace(tzinfo=None)
        outcomes = transfer_outcomes(events, now.replace(tzinfo=None), since=since).toPandas()
        for col in ("arrived_at", "updated_at"):
            outcomes[col] = pd.to_datetime(outcomes[col]).dt.tz_localize("UTC")
        out["transfer_rows"] = write_table(TRANSFER_OUTCOMES, outcomes, root)
        eff, done = _complete_ratio(outcomes, "sold_48h", "units_in")
        if eff is not None:
            out["transfer_efficiency"] = round(eff, 4)
            say(f"accuracy: {done} transfers past 48 h, {eff:.0%} of their units sold")
        else:
            say(f"accuracy: {len(outcomes)} transfers booked in, none past 48 h yet")
    out["seconds"] = round(time.monotonic() - began, 1)
    return out


# --- transfers and reorders --------------------------------------------------------------

def decision_inputs(root: Root = None) -> dict[str, pd.DataFrame] | None:
    """What transfers and reorders decide from, read from the lakehouse; None before the
    streaming job has written any stock."""
    cohorts, levels = read_table(STOCK_COHORTS, root), read_table(STOCK_LEVELS, root)
    if cohorts is None or levels is None or levels.empty:
        return None
    # A recalled lot is stock nobody may sell or move: not a transfer's source, and not
    # on hand for a reorder (its units are replaced, not counted).
    cohorts = without_held(cohorts, lots_on_hold(root))
    forecasts = read_table(DEMAND_FORECASTS, root)
    if forecasts is None:
        forecasts = pd.DataFrame(columns=["region", "location_id", "sku", "forecast_date",
                                          "forecast", "lower", "upper", "model"])
    locs = reference.locations(levels, root)
    items = reference.sku_attributes(set(cohorts["sku"]) | set(levels["sku"]), root)
    book = transfer_book(root)
    in_transit = in_transit_lots(levels, book.shipped())
    return {
        "cohorts": _commit(cohorts, book.committed()), "forecasts": forecasts,
        "locations": locs, "items": items,
        "policy": reference.sellable_policy(items["category"], root),
        "transit": reference.transit_matrix(locs, root), "in_transit": in_transit,
        "book": book,
    }


def in_transit_lots(levels: pd.DataFrame, shipped: pd.DataFrame) -> pd.DataFrame:
    """``location_id, sku, expires_on, quantity`` on their way to each location: gold
    ``in_transit_in``, with the units of approved transfers that have shipped given their
    lot's expiry (earliest first, never more than the level shows), the rest none.

    A transfer brings a lot with its own life left, often short: counted as a fresh
    receipt, the destination's next order would skip the days after it expires."""
    moving = levels[levels["in_transit_in"].fillna(0) > 0]
    rows: list[tuple[str, str, Any, int]] = []
    known = (shipped.sort_values("expires_on").groupby(["destination_location", "sku"])
             if len(shipped) else None)
    groups = dict(list(known)) if known is not None else {}
    for loc, sku, total in zip(moving["location_id"], moving["sku"],
                               moving["in_transit_in"].astype("int64"), strict=True):
        left = int(total)
        lots = groups.get((loc, sku))
        for expires_on, quantity in ([] if lots is None else
                                     zip(lots["expires_on"], lots["quantity"], strict=True)):
            take = min(left, int(quantity)) if pd.notna(quantity) else 0
            if take > 0:
                rows.append((loc, sku, expires_on, take))
                left -= take
        if left > 0:
            rows.append((loc, sku, None, left))
    return pd.DataFrame(rows, columns=["location_id", "sku", "expires_on", "quantity"])


def _commit(cohorts: pd.DataFrame, committed: pd.DataFrame) -> pd.DataFrame:
    """Stock as it will stand once the approved, unshipped transfers have moved: their
    units leave the source lot and join the destination as that lot (same expiry), as the
    recommendation foresaw. So no later run proposes the same units again, and no store
    reorders what a transfer will bring."""
    if committed.empty:
        return cohorts
    taken = committed.groupby(["source_location", "sku", "lot"])["quantity"].sum()
    key = pd.MultiIndex.from_frame(cohorts[["location_id", "sku", "lot"]])
    less = taken.reindex(key).fillna(0).to_numpy()
    left = cohorts.assign(quantity=(cohorts["quantity"] - less).clip(lower=0)
                          .astype(cohorts["quantity"].dtype))
    coming = pd.DataFrame({"region": committed["destination_region"],
                           "location_id": committed["destination_location"],
                           "sku": committed["sku"], "lot": committed["lot"],
                           "expires_on": committed["expires_on"],
                           "quantity": committed["quantity"].astype("int64")})
    return pd.concat([left, coming[[c for c in coming if c in cohorts]]], ignore_index=True)


@dataclass
class TransferBook:
    """The recommendations gold holds, their latest decisions, and how far the approved
    ones have got: what a run must not forget or propose twice."""

    previous: pd.DataFrame | None
    decisions: pd.DataFrame
    progress: dict[str, str]

    def committed(self) -> pd.DataFrame:
        """Approved transfers not shipped yet, with the quantity that was approved."""
        cols = ["recommendation_id", "source_location", "destination_location",
                "destination_region", "sku", "lot", "expires_on", "quantity"]
        if self.previous is None or self.previous.empty or self.decisions.empty:
            return pd.DataFrame(columns=cols)
        latest = self.decisions.set_index("recommendation_id")["decision"]
        ids = self.previous["recommendation_id"]
        open_ = (ids.map(latest) == "approved") & ~ids.isin(set(self.progress))
        return self.previous.loc[open_, cols].reset_index(drop=True)

    def shipped(self) -> pd.DataFrame:
        """Approved transfers on their way (shipped, not arrived): ``destination_location,
        sku, lot, expires_on, quantity``."""
        cols = ["destination_location", "sku", "lot", "expires_on", "quantity"]
        if self.previous is None or self.previous.empty or not self.progress:
            return pd.DataFrame(columns=cols)
        going = self.previous["recommendation_id"].map(self.progress) == "shipped"
        return self.previous.loc[going, cols].reset_index(drop=True)


def transfer_book(root: Root = None) -> TransferBook:
    decisions = read_decisions(root)
    previous = read_table(TRANSFER_RECOMMENDATIONS, root)
    listed = set(previous["recommendation_id"]) if previous is not None else set()
    approved, since = approved_since(decisions, listed)
    return TransferBook(previous, decisions, transfer_progress(root, approved, since))


def _fresh_id(rec_id: str, taken: set[str]) -> str:
    """An id of its own for a run's proposal of a move someone already decided on."""
    while rec_id in taken:
        rec_id = hashlib.sha1(f"{rec_id}|again".encode()).hexdigest()[:16]
    return rec_id


def _id_chain(first: str, last: str) -> list[str]:
    """The ids :func:`_fresh_id` stepped through from ``first`` to ``last``."""
    chain = [first]
    while chain[-1] != last:
        chain.append(hashlib.sha1(f"{chain[-1]}|again".encode()).hexdigest()[:16])
    return chain


def _with_decisions(recs: pd.DataFrame, previous: pd.DataFrame | None,
                    decisions: pd.DataFrame, now: datetime,
                    progress: dict[str, str] | None = None) -> pd.DataFrame:
    """New recommendations carry their decision; decided ones the run no longer proposes
    stay listed for :data:`KEEP_DECIDED_DAYS` so the approver sees what they decided. An
    approved one that has shipped or arrived says so (``progress``).

    A decided row keeps the figures it was decided on, and an approved one stays listed
    until it arrives (or is rejected). When this run proposes an approved move again (more
    units of the same lot for the same store), that proposal gets an id of its own, so
    nobody approves units they did not see and no order is sent twice; a move rejected
    today is not proposed again today (its id holds the date)."""
    latest = decisions.set_index("recommendation_id")
    progress = progress or {}
    recs = recs.copy()
    if previous is not None and len(previous):
        ids = previous["recommendation_id"]
        cutoff = pd.Timestamp(now - timedelta(days=KEEP_DECIDED_DAYS))
        in_flight = (ids.map(latest["decision"]) == "approved") & (
            ids.map(progress).fillna("") != "arrived")
        old = previous[ids.isin(latest.index)
                       & ((pd.to_datetime(previous["created_at"], utc=True) >= cutoff)
                          | in_flight)]
        if len(old):
            rejected = set(old.loc[old["recommendation_id"].map(latest["decision"])
                                   == "rejected", "recommendation_id"])
            recs = recs[~recs["recommendation_id"].isin(rejected)]  # no means no, today
            taken = set(latest.index) | set(recs["recommendation_id"])
            clash = recs["recommendation_id"].isin(set(old["recommendation_id"]))
            fresh, refused = [], []
            for rec_id in recs.loc[clash, "recommendation_id"]:
                fresh.append(_fresh_id(rec_id, taken))
                taken.add(fresh[-1])
                # ...and for its proposals again: a re-proposal someone rejected is not
                # proposed once more under the next id of the chain.
                refused.append(any(i in rejected for i in _id_chain(rec_id, fresh[-1])))
            recs.loc[clash, "recommendation_id"] = fresh
            recs = recs.drop(recs.index[clash][refused])
            recs = pd.concat([recs, old[recs.columns]], ignore_index=True)
    ids = recs["recommendation_id"]
    status = ids.map(latest["decision"]) if len(latest) else pd.Series(None, index=ids.index)
    status = status.fillna("proposed")
    if progress:
        moved = ids.map(progress)
        status = moved.where((status == "approved") & moved.notna(), status)
    recs["status"] = status.to_numpy()
    recs["decided_by"] = ids.map(latest["decided_by"]).to_numpy() if len(latest) else None
    recs["decided_at"] = ids.map(latest["decided_at"]).to_numpy() if len(latest) else None
    return recs


def run_transfers_job(root: Root = None, *, now: datetime | None = None,
                      horizon_days: int = 7, auto_approval: bool | None = None,
                      say: Say = _print) -> dict[str, Any]:
    """Replace gold ``transfer_recommendations`` from stock, forecasts and reference; with
    ``auto_approval`` (default: :func:`auto_approval_on`), approve what the rule passes."""
    began = time.monotonic()
    now = _now(now)
    if auto_approval is None:
        try:
            auto_approval = auto_approval_on()
        except ValueError as exc:  # the recommendations still go out; nothing is approved
            say(f"transfers: {exc}; auto-approval stays off")
            auto_approval = False
    levels = service_levels_from_env()  # the stores' orders in the what-ifs aim for it
    inputs = decision_inputs(root)
    if inputs is None:
        say("transfers: no stock in gold yet; nothing to recommend")
        return {"job": "transfers", "rows": 0}
    _say_unknown_categories("transfers", levels, inputs["items"], say)
    say(f"transfers: {len(inputs['locations'])} locations, "
        f"{inputs['cohorts']['sku'].nunique()} SKUs, {len(inputs['cohorts'])} cohorts, "
        f"{len(inputs['transit'])} routes")
    recs = recommend_transfers(inputs["cohorts"], inputs["forecasts"], inputs["locations"],
                               inputs["transit"], inputs["policy"], inputs["items"],
                               in_transit=inputs["in_transit"], now=now,
                               horizon_days=horizon_days, service_level=levels)
    book = inputs["book"]
    recs = _with_decisions(recs, book.previous, book.decisions, now, book.progress)
    rows = write_table(TRANSFER_RECOMMENDATIONS, recs, root)
    saved = float(recs["expected_units_saved"].sum()) if rows else 0.0
    say(f"transfers: {rows} recommendations, {saved:.0f} units expected saved "
        f"({time.monotonic() - began:.1f} s)")
    approved = _auto_approve(recs, root, say) if auto_approval and rows else 0
    return {"job": "transfers", "rows": rows, "expected_units_saved": round(saved, 1),
            "auto_approved": approved, "seconds": round(time.monotonic() - began, 1)}


def _auto_approve(recs: pd.DataFrame, root: Root, say: Say) -> int:
    """Approve, as :data:`AUTO_APPROVER`, the proposals the rule passes; logged like a
    person's decision, with the rule as its note."""
    say(f"transfers: WARNING auto-approval is on ({AUTO_APPROVAL_ENV}); it is "
        f"{ESTIMATES_AS_MEASURED}")
    proposed = recs[recs["status"] == "proposed"]
    # Decisions are read again now: a person who rejected (or approved) one while the
    # recommender ran has the last word, and the rule never decides a second time.
    decided = set(read_decisions(root)["recommendation_id"])
    passing = proposed.loc[auto_approve(proposed), "recommendation_id"]
    ids = [i for i in passing.tolist() if i not in decided]
    record_decisions(ids, "approved", AUTO_APPROVER, note=AUTO_APPROVAL_RULE, root=root)
    say(f"transfers: auto-approved {len(ids)} of {len(proposed)} proposed")
    return len(ids)


def _say_unknown_categories(job: str, levels: ServiceLevels, items: pd.DataFrame,
                            say: Say) -> None:
    unknown = unknown_categories(levels, items)
    if unknown:
        say(f"{job}: warning: SHELFLIFE_SERVICE_LEVELS names {', '.join(unknown)}, which no "
            f"SKU in the catalogue has (a misspelling?); those levels apply to nothing")


def run_reorders_job(root: Root = None, *, now: datetime | None = None,
                     say: Say = _print) -> dict[str, Any]:
    """Replace gold ``reorder_suggestions`` from forecasts, stock, transit and shelf life, at
    the service levels ``SHELFLIFE_SERVICE_LEVELS`` sets (see
    :func:`.reorders.service_levels_from_env`)."""
    began = time.monotonic()
    now = _now(now)
    levels = service_levels_from_env()
    inputs = decision_inputs(root)
    if inputs is None:
        say("reorders: no stock in gold yet; nothing to suggest")
        return {"job": "reorders", "rows": 0}
    _say_unknown_categories("reorders", levels, inputs["items"], say)
    stores = int((inputs["locations"]["kind"] == "store").sum())
    series = inputs["forecasts"][["location_id", "sku"]].drop_duplicates().shape[0]
    on_order = open_orders(root, now)
    say(f"reorders: {stores} stores, {series} forecast series, "
        f"{int(on_order['quantity'].sum()) if len(on_order) else 0} units on order")
    # Approved purchase orders not yet received are on their way like a transfer: an
    # order already placed is not suggested again.
    coming = pd.concat([inputs["in_transit"],
                        on_order[["location_id", "sku", "quantity"]].astype(
                            {"quantity": "int64"})], ignore_index=True)
    out = suggest_reorders(inputs["cohorts"], inputs["forecasts"], inputs["locations"],
                           inputs["items"], in_transit=coming, now=now, service_level=levels)
    rows = write_table(REORDER_SUGGESTIONS, out, root)
    units = int(out["order_quantity"].sum()) if rows else 0
    say(f"reorders: {rows} suggestions, {units} units ({time.monotonic() - began:.1f} s)")
    return {"job": "reorders", "rows": rows, "units": units,
            "seconds": round(time.monotonic() - began, 1)}


# --- the schedule ------------------------------------------------------------------------

DEFAULT_EVERY_S = {"forecasts": 1800.0, "accuracy": 1800.0, "transfers": 300.0,
                   "reorders": 300.0}
"""Forecasts change with a day's sales, so half-hourly is plenty; transfers and reorders
follow stock, which moves by the second."""


def run_job(name: str, root: Root = None, *, spark: Any = None,
            say: Say = _print) -> dict[str, Any]:
    if name == "forecasts":
        return run_forecasts_job(root, spark=spark, say=say)
    if name == "accuracy":
        return run_accuracy_job(root, spark=spark, say=say)
    if name == "transfers":
        return run_transfers_job(root, say=say)
    if name == "reorders":
        return run_reorders_job(root, say=say)
    raise ValueError(f"job: expected one of {', '.join(JOBS)} (got {name!r})")


def run_schedule(root: Root = None, *, every_s: dict[str, float] | None = None,
                 first_after_s: float = 120.0, stop: threading.Event | None = None,
                 say: Say = _print, master: str | None = None) -> None:
    """Run each job every ``every_s[job]`` seconds, the first round ``first_after_s`` after
    start (the stream needs a moment to write stock). A failing job is reported and
    retried at its next slot; the others go on."""
    every = {**DEFAULT_EVERY_S, **(every_s or {})}
    stop = stop or threading.Event()
    due = {job: time.monotonic() + first_after_s for job in JOBS}
    spark = None
    say(f"batch: schedule {', '.join(f'{j} every {every[j]:g} s' for j in JOBS)}; "
        f"first round in {first_after_s:g} s")
    while not stop.is_set():
        for job in JOBS:
            if stop.is_set() or time.monotonic() < due[job]:
                continue
            due[job] = time.monotonic() + every[job]
            try:
                if job in ("forecasts", "accuracy") and spark is None:
                    spark = batch_session(say, root, master=master)
                run_job(job, root, spark=spark, say=say)
            except Exception as exc:  # noqa: BLE001 - report, keep the schedule
                say(f"batch: {job} failed: {type(exc).__name__}: {exc}")
        stop.wait(1.0)
