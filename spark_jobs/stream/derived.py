"""The semantic tables kept beside stock: review items, conflicts, gaps, count variances,
the catalogue, demand trends, network availability and business metrics.

They change far less often than stock, or matter at a coarser grain, so a thread per
region writes them every couple of seconds (only the tables that changed) instead of
adding commits to the one-second live path. Each write is a delta-rs commit of a region
partition (or, for the network-wide catalogue, the whole small table).

Rules kept here:
- Demand is ``sold`` only. Counts and adjustments correct stock (so they move on hand,
  cover and stockout projections through stock) but never the burn rate.
- Waste rate = units wasted / units received, per location, category and day.
- Stockout rate = share of a location's active SKUs in the category whose on hand
  reached zero or below that day.
- A location is "low" on a SKU when it is in stock with less than ``LOW_COVER_DAYS`` of
  cover at its burn rate (or under ``LOW_UNITS`` units when it has no sales yet).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import CommitFailedError

from lakehouse import catalogue
from lakehouse.catalogue import Table
from lakehouse.contract import parse_ts
from lakehouse.logtidy import HOOKS, LogTidy
from lakehouse.naming import category_of_sku
from lakehouse.storage import delta_options

from .books import ItemsBook
from .fold import RegionState

log = logging.getLogger(__name__)

TREND_DAYS = 7
LOW_COVER_DAYS = 2.0
LOW_UNITS = 5
ITEMS_WRITE_ATTEMPTS = 5
"""Read-merge-overwrite attempts of silver ``items`` against other stream processes."""
KEEP_DAYS = 35
"""Movement totals older than this are dropped from the driver's state (closed gaps and
closed review items after a week); gold keeps them."""

def _ts(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return parse_ts(value)


def category_of(items: ItemsBook, sku: str) -> str:
    """The catalogue's category, else the one the SKU's prefix names
    (``DAIRY-MILK-1L`` -> ``dairy``): the same names the decision jobs and the sellable
    policy use, so a business metric and a transfer of one product share a category."""
    return category_of_sku(sku, items.get(sku, "category"))


# --- rows -------------------------------------------------------------------------------

def review_rows(state: RegionState, resolutions: dict[str, dict[str, Any]]) -> list[dict]:
    out = []
    for item in state.review.values():
        row = {k: item.get(k) for k in catalogue.REVIEW_QUEUE.schema.names}
        row["occurred_at"] = _ts(item["occurred_at"])
        res = resolutions.get(item["item_id"])
        if res is not None:
            row.update(status="resolved", resolved_by=res["resolved_by"],
                       resolved_at=res["resolved_at"], resolution=res["resolution"],
                       adjustment_event_id=res.get("adjustment_event_id"))
        out.append(row)
    return out


def gap_rows(state: RegionState, now: datetime) -> list[dict]:
    """Open gaps, and closed ones from the last day."""
    cutoff = now - timedelta(days=1)
    return [{**{k: g.get(k) for k in ("region", "location_id", "first_missing",
                                      "last_missing", "missing", "status", "opened_at",
                                      "updated_at", "closed_at")},
             "missing_count": g.get("missing_count", len(g["missing"]))}
            for g in state.gaps.values()
            if g["status"] == "open" or (g["closed_at"] or now) >= cutoff]


def item_rows(items: ItemsBook) -> list[dict]:
    return [{**r, "field_keys": json.dumps(r["field_keys"], sort_keys=True)}
            for r in items.rows()]


def merge_items(on_table: list[dict], ours: ItemsBook) -> list[dict]:
    """Silver ``items`` rows holding both what the table has and what ``ours`` knows,
    last writer wins per field (the books' own order).

    Each stream process keeps its own catalogue book, learning live only the
    ``item_updated`` events of its own regions; a second stream process (regions split
    over two drivers, or an old one still finishing) writes the same whole table, so
    writing one book alone would erase what only the other has seen."""
    book = ItemsBook()
    book.load([{**r, "field_keys": json.loads(r.get("field_keys") or "{}")}
               for r in on_table])
    book.load(ours.rows())
    return item_rows(book)


def daily_rows(state: RegionState, since: str) -> list[dict]:
    return [{"region": state.region, "location_id": loc, "sku": sku,
             "day": date.fromisoformat(day), "sold": v[0], "received": v[1], "wasted": v[2],
             "transfer_in": v[3], "transfer_out": v[4], "hit_zero": v[5]}
            for (loc, sku, day), v in state.daily.items() if day >= since]


def trend_rows(state: RegionState, now: datetime) -> list[dict]:
    """Burn rate from sales of the last ``TREND_DAYS`` days (today included)."""
    first = (now.date() - timedelta(days=TREND_DAYS - 1)).isoformat()
    sold: dict[tuple[str, str], int] = {}
    for (loc, sku, day), v in state.daily.items():
        if day >= first:
            sold[(loc, sku)] = sold.get((loc, sku), 0) + v[0]
    out = []
    for loc, st in state.locations.items():
        for sku in st.skus:
            units = sold.get((loc, sku), 0)
            burn = units / TREND_DAYS
            on_hand = int(st.totals.get(sku, 0))
            cover = on_hand / burn if burn > 0 else None
            out.append({"region": state.region, "location_id": loc, "sku": sku,
                        "sold_last_7d": units, "burn_rate_per_day": burn,
                        "on_hand": on_hand, "days_of_cover": cover,
                        "projected_stockout_at": (now + timedelta(days=max(cover, 0.0))
                                                  if cover is not None else None),
                        "updated_at": now})
    return out


def availability_rows(state: RegionState, trends: list[dict], levels: list[tuple],
                      now: datetime) -> list[dict]:
    cover = {(t["location_id"], t["sku"]): t["days_of_cover"] for t in trends}
    agg: dict[str, dict[str, int]] = {}
    for row in levels:
        loc, sku, on_hand, sellable = row[1], row[2], row[3], row[6]
        a = agg.setdefault(sku, {"on_hand": 0, "sellable": 0, "locations": 0,
                                 "locations_in_stock": 0, "locations_low": 0,
                                 "locations_out": 0})
        a["on_hand"] += on_hand
        a["sellable"] += sellable
        a["locations"] += 1
        if on_hand > 0:
            a["locations_in_stock"] += 1
            c = cover.get((loc, sku))
            if (c is not None and c < LOW_COVER_DAYS) or (c is None and on_hand < LOW_UNITS):
                a["locations_low"] += 1
        else:
            a["locations_out"] += 1
    return [{"region": state.region, "sku": sku, **a, "updated_at": now}
            for sku, a in sorted(agg.items())]


OutcomeBook = dict[tuple[str, str, str], list[float]]
"""(location, category, day) -> [forecast units, forecast actual, absolute error,
transferred-in units, of which sold within 48 h], from the batch jobs' gold tables."""


def outcome_book(state: RegionState, accuracy: list[dict], transfers: list[dict]
                 ) -> OutcomeBook:
    """Forecast accuracy and transfer outcomes summed per location, category and day."""
    book: OutcomeBook = {}
    for r in accuracy:
        key = (r["location_id"], category_of(state.items, r["sku"]), str(r["day"]))
        b = book.setdefault(key, [0.0] * 5)
        b[0] += r["forecast"] or 0.0
        b[1] += r["actual"] or 0.0
        b[2] += r["abs_error"] or 0.0
    for r in transfers:
        key = (r["location_id"], category_of(state.items, r["sku"]), str(r["day"]))
        b = book.setdefault(key, [0.0] * 5)
        b[3] += r["units_in"] or 0
        b[4] += r["sold_48h"] or 0
    return book


def _outcome_columns(b: list[float] | None) -> dict[str, Any]:
    if b is None:
        return {"forecast_units": None, "forecast_abs_error": None, "forecast_wape": None,
                "transferred_in_units": None, "transferred_sold_48h": None,
                "transfer_efficiency": None}
    return {"forecast_units": b[0], "forecast_abs_error": b[2],
            "forecast_wape": b[2] / b[1] if b[1] > 0 else None,
            "transferred_in_units": int(b[3]), "transferred_sold_48h": int(b[4]),
            "transfer_efficiency": b[4] / b[3] if b[3] > 0 else None}


def business_rows(state: RegionState, since: str, now: datetime,
                  outcomes: OutcomeBook | None = None) -> list[dict]:
    """Per location, category and day: waste and stockout rates from the stream, and the
    forecast error and transfer efficiency the batch jobs measured for it."""
    outcomes = outcomes or {}
    agg: dict[tuple[str, str, str], list[int]] = {}
    for (loc, sku, day), v in state.daily.items():
        if day < since:
            continue
        a = agg.setdefault((loc, category_of(state.items, sku), day), [0, 0, 0, 0, 0])
        a[0] += v[1]
        a[1] += v[0]
        a[2] += v[2]
        a[3] += 1
        a[4] += 1 if v[5] else 0
    return [{"region": state.region, "location_id": loc, "category": cat,
             "day": date.fromisoformat(day), "received_units": a[0], "sold_units": a[1],
             "wasted_units": a[2], "waste_rate": (a[2] / a[0]) if a[0] else None,
             "skus_active": a[3], "skus_stocked_out": a[4],
             "stockout_rate": a[4] / a[3] if a[3] else None, "updated_at": now,
             **_outcome_columns(outcomes.get((loc, cat, day)))}
            for (loc, cat, day), a in sorted(agg.items())]


# --- writing ----------------------------------------------------------------------------

class DerivedWriter:
    """One region's writer of the semantic tables (see the module docstring)."""

    def __init__(self, state: RegionState, lock: threading.Lock, paths: dict[str, str],
                 app_id: str, levels: Callable[[], list[tuple]],
                 batch: Callable[[], int | None], *,
                 every_s: float = 2.0, aggregates_every_s: float = 10.0,
                 on_tick: Callable[[], None] | None = None) -> None:
        self.state = state
        self.lock = lock
        self.paths = paths
        self.app_id = app_id
        self.levels = levels
        self.batch = batch
        self.on_tick = on_tick
        self.every_s = every_s
        self.aggregates_every_s = aggregates_every_s
        self._open: dict[str, DeltaTable] = {}
        self._tidy: dict[str, LogTidy] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._write_lock = threading.Lock()
        self._last_aggregates = 0.0
        self._resolutions_version = -1
        self.resolutions: dict[str, dict[str, Any]] = {}
        self._outcome_versions: tuple[int | None, ...] = (None, None)
        self.outcomes: OutcomeBook = {}
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"derived-{self.state.region}")
        self._thread.start()

    def stop(self, *, write: bool = True) -> None:
        """Stop the thread and write what changed; ``write=False`` after a failed batch,
        whose half-applied state must not reach the tables (a restart rebuilds it)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        if not write:
            return
        try:
            self.write(aggregates=True)
        except Exception:  # noqa: BLE001 - one retry on fresh handles, then report
            self._open.clear()
            self.write(aggregates=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                if self.on_tick is not None:
                    self.on_tick()
                self.write()
            except Exception as exc:  # noqa: BLE001 - report, keep the state, retry
                self.error = exc
                log.exception("derived %s: writing failed; will retry", self.state.region)

    def write(self, *, aggregates: bool | None = None) -> list[str]:
        """Write what changed; returns the tables written. One write at a time: the
        background round and a caller's explicit write (at stop, or a test draining)
        would otherwise overwrite the same partitions at once, and Delta refuses the
        second commit."""
        with self._write_lock:
            return self._write(aggregates=aggregates)

    def _write(self, *, aggregates: bool | None = None) -> list[str]:
        now = datetime.now(UTC).replace(tzinfo=None)
        if aggregates is None:
            aggregates = (now.timestamp() - self._last_aggregates) >= self.aggregates_every_s
        self._load_resolutions()
        if aggregates:
            self._load_outcomes()
        st = self.state
        written: list[str] = []
        with self.lock:
            dirty = set(st.dirty)
            st.dirty.clear()
            conflicts, st.conflict_log = st.conflict_log, []
            variances, st.variance_log = st.variance_log, []
            review = review_rows(st, self.resolutions) if (
                "review_queue" in dirty or "resolutions" in dirty) else None
            gaps = gap_rows(st, now) if "sequence_gaps" in dirty else None
            days = sorted(st.dirty_days)
            batch = self.batch() if aggregates else None
            if batch is None:  # a batch is between its apply and its gold: next round
                aggregates = False
            if aggregates:
                st.dirty_days.clear()
                since = days[0] if days else None
                daily = daily_rows(st, since) if since else []
                business = business_rows(st, since, now, self.outcomes) if since else []
                trends = trend_rows(st, now)
                levels = self.levels()
                _prune(st, now)
                st.transit.forget_arrived()
        try:
            if conflicts:
                self._append(catalogue.QUANTITY_CONFLICTS, [
                    {**c, "occurred_at": _ts(c["occurred_at"])} for c in conflicts])
                written.append("quantity_conflicts")
                conflicts = []  # appended: a later failure must not append them again
            if variances:
                self._append(catalogue.COUNT_VARIANCES, [
                    {**v, "counted_at": _ts(v["counted_at"])} for v in variances])
                written.append("count_variances")
                variances = []
            if review is not None:
                self._replace(catalogue.REVIEW_QUEUE, review)
                written.append("review_queue")
            if gaps is not None:
                self._replace(catalogue.SEQUENCE_GAPS, gaps)
                written.append("sequence_gaps")
            self._write_items(written)
            if aggregates:
                self._last_aggregates = now.timestamp()
                if since:
                    self._replace(catalogue.DAILY_MOVEMENTS, daily, since=since,
                                  batch=batch)
                    self._replace(catalogue.BUSINESS_METRICS, business, since=since)
                    written += ["daily_movements", "business_metrics"]
                self._replace(catalogue.DEMAND_TRENDS, trends)
                self._replace(catalogue.NETWORK_AVAILABILITY,
                              availability_rows(st, trends, levels, now))
                written += ["demand_trends", "network_availability"]
        except Exception:
            with self.lock:  # nothing is lost: put the work back for the next round
                st.dirty |= dirty
                st.conflict_log[:0] = conflicts
                st.variance_log[:0] = variances
                st.dirty_days.update(days)
            raise
        return written

    def _load_resolutions(self) -> None:
        if catalogue.REVIEW_RESOLUTIONS.name not in self.paths:
            return
        table = self._table(catalogue.REVIEW_RESOLUTIONS)
        table.update_incremental()
        if table.version() == self._resolutions_version:
            return
        self._resolutions_version = table.version()
        rows = table.to_pyarrow_table(
            filters=[("region", "=", self.state.region)]).to_pylist()
        latest = {}
        for r in sorted(rows, key=lambda r: r["resolved_at"]):
            latest[r["item_id"]] = {**r, "resolved_at": r["resolved_at"].replace(tzinfo=None)}
        if latest != self.resolutions:
            self.resolutions = latest
            self.state.dirty.add("resolutions")

    def _load_outcomes(self) -> None:
        """Re-read the batch jobs' forecast accuracy and transfer outcomes when they
        changed, and mark their days for rewriting in ``business_metrics``."""
        columns = {catalogue.FORECAST_ACCURACY: ["location_id", "sku", "day", "forecast",
                                                 "actual", "abs_error"],
                   catalogue.TRANSFER_OUTCOMES: ["location_id", "sku", "day", "units_in",
                                                 "sold_48h"]}
        handles = {}
        for table in columns:
            name = table.name
            if name in self._open or DeltaTable.is_deltatable(
                    self.paths[name], storage_options=delta_options(self.paths[name])):
                handles[name] = self._table(table)
                handles[name].update_incremental()
        versions = tuple(handles[t.name].version() if t.name in handles else None
                         for t in columns)
        if versions == self._outcome_versions:
            return
        rows = {t.name: handles[t.name].to_pyarrow_table(
                    columns=cols, filters=[("region", "=", self.state.region)]).to_pylist()
                if t.name in handles else [] for t, cols in columns.items()}
        with self.lock:
            book = outcome_book(self.state, rows["forecast_accuracy"],
                                rows["transfer_outcomes"])
            changed = {k[2] for k in set(book) ^ set(self.outcomes)} | {
                k[2] for k in book if book[k] != self.outcomes.get(k)}
            self.outcomes = book
            self.state.dirty_days.update(changed)
        self._outcome_versions = versions

    def _write_items(self, written: list[str]) -> None:
        """Rewrite the catalogue merged with what the table holds (:func:`merge_items`).

        Every region's writer rewrites this one table: in one process the lock makes
        them take turns; another process's commit between our read and our overwrite
        fails ours (it removed the files we read), so we read, merge and try again."""
        books = self.state.books
        with books.items_write_lock:
            if books.items.version == books.items_written:
                return
            version = books.items.version
            handle = self._table(catalogue.ITEMS)
            schema = catalogue.ITEMS.schema
            for attempt in range(ITEMS_WRITE_ATTEMPTS):
                handle.update_incremental()
                current = sorted(handle.to_pyarrow_table().to_pylist(),
                                 key=lambda r: r["sku"])
                table = pa.Table.from_pylist(merge_items(current, books.items),
                                             schema=schema)
                if table.equals(pa.Table.from_pylist(current, schema=schema)):
                    break  # the table holds all we know already
                try:
                    write_deltalake(handle, table, mode="overwrite",
                                    post_commithook_properties=HOOKS)
                except CommitFailedError:
                    if attempt == ITEMS_WRITE_ATTEMPTS - 1:
                        raise
                    continue
                self._tidied(catalogue.ITEMS, handle)
                written.append("items")
                break
            books.items_written = version

    def _table(self, table: Table) -> DeltaTable:
        if table.name not in self._open:
            path = self.paths[table.name]
            self._open[table.name] = DeltaTable(path, storage_options=delta_options(path))
        return self._open[table.name]

    def _tidied(self, table: Table, handle: DeltaTable) -> None:
        """Count a commit made through ``handle`` to ``table``; its expired log files go
        every few hundred commits (``lakehouse.logtidy``)."""
        if table.name not in self._tidy:
            self._tidy[table.name] = LogTidy(self.paths[table.name])
        self._tidy[table.name].committed(handle)

    def _commit(self, table: Table, batch: int | None = None) -> CommitProperties:
        """``batch`` records, for daily totals, the last stream batch they include: on
        restart, bronze batches after it are added back (see ``runner``)."""
        txn = [] if batch is None else [Transaction(f"{self.app_id}-{table.name}", batch)]
        return CommitProperties(app_transactions=txn, max_commit_retries=20)

    def _append(self, table: Table, rows: list[dict]) -> None:
        data = pa.Table.from_pylist(rows, schema=table.schema)
        handle = self._table(table)
        try:
            write_deltalake(handle, data, mode="append",
                            commit_properties=self._commit(table),
                            post_commithook_properties=HOOKS)
        except Exception:
            self._open.pop(table.name, None)
            raise
        self._tidied(table, handle)

    def _replace(self, table: Table, rows: list[dict], since: str | None = None,
                 batch: int | None = None) -> None:
        data = pa.Table.from_pylist(rows, schema=table.schema)
        predicate = f"region = '{self.state.region}'"
        if since is not None:
            predicate += f" AND day >= '{since}'"
        handle = self._table(table)
        try:
            write_deltalake(handle, data, mode="overwrite", predicate=predicate,
                            commit_properties=self._commit(table, batch),
                            post_commithook_properties=HOOKS)
        except Exception:
            self._open.pop(table.name, None)
            raise
        self._tidied(table, handle)


def _prune(state: RegionState, now: datetime) -> None:
    """Forget movement totals older than ``KEEP_DAYS`` (they stay in gold)."""
    cutoff = (now.date() - timedelta(days=KEEP_DAYS)).isoformat()
    for key in [k for k in state.daily if k[2] < cutoff]:
        del state.daily[key]
    week = now - timedelta(days=7)
    for key in [k for k, g in state.gaps.items()
                if g["status"] == "closed" and g["closed_at"] < week]:
        del state.gaps[key]
    for key in [k for k, r in state.review.items()
                if r["status"] == "closed" and r["updated_at"] < week]:
        del state.review[key]
