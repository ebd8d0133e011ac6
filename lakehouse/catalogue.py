"""The catalogue: every Delta table Shelflife keeps, declared once.

Each :class:`Table` names its layer and folder, its Arrow schema, its partition columns,
the one engine that commits its rows, the processes that write it and what it is for.
Writers and readers import the table from here, so a column is added in one place and
the lowest layer never imports a writer. Spark jobs derive their ``StructType`` from the
Arrow schema (``spark_jobs.schema``); this module needs only pyarrow, so the dashboard and
notebooks can use it without a JVM.

Nullability is what the table on disk holds: Spark creates tables with every column
nullable, so tables Spark creates declare every column nullable; a table delta-rs creates
keeps the non-null columns declared here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal

import pyarrow as pa

from lakehouse.contract import PAYLOAD_FIELDS
from lakehouse.paths import LAYERS, table_path, table_url

Engine = Literal["spark", "delta-rs"]
ENGINES: tuple[Engine, ...] = ("spark", "delta-rs")

S, L, INT, D, B, BIN, DAY = (pa.string(), pa.int64(), pa.int32(), pa.float64(), pa.bool_(),
                             pa.binary(), pa.date32())
TS = pa.timestamp("us", tz="UTC")
"""Every time in Shelflife is UTC; Spark's ``timestamp`` is this type."""


@dataclass(frozen=True, eq=False)
class Table:
    """One Delta table: where it lives, its shape, and who commits to it."""

    layer: str
    name: str
    schema: pa.Schema
    partitions: tuple[str, ...]
    engine: Engine
    """The engine that commits its rows."""
    writers: tuple[str, ...]
    """The processes that write it (the stream, a batch job, the dashboard, a CLI...);
    besides them, ``shelflife maintain`` compacts and vacuums every delta-rs table
    (:mod:`lakehouse.maintenance`)."""
    purpose: str
    properties: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """Delta table properties set when the table is created."""

    def __post_init__(self) -> None:
        if self.layer not in LAYERS:
            raise ValueError(f"{self.name}: layer: expected one of {', '.join(LAYERS)}, "
                             f"got {self.layer!r}")
        if self.engine not in ENGINES:
            raise ValueError(f"{self.name}: engine: expected one of {', '.join(ENGINES)}, "
                             f"got {self.engine!r}")
        missing = [p for p in self.partitions if p not in self.schema.names]
        if missing:
            raise ValueError(f"{self.name}: partitions: {missing} are not columns")
        object.__setattr__(self, "properties", MappingProxyType(dict(self.properties)))

    def uri(self, root: str | os.PathLike[str] | None = None) -> str:
        """The table's location under the lakehouse root: a folder or an ``s3://`` URL."""
        return table_url(self.layer, self.name, root)

    def path(self, root: str | os.PathLike[str] | None = None) -> Path:
        """The table's folder, where the lakehouse is known to be local (tests, benches)."""
        return table_path(self.layer, self.name, root)

    def __str__(self) -> str:
        return f"{self.layer}/{self.name}"


def _schema(*fields: tuple[str, pa.DataType] | pa.Field) -> pa.Schema:
    return pa.schema([f if isinstance(f, pa.Field) else pa.field(*f) for f in fields])


def _required(name: str, kind: pa.DataType) -> pa.Field:
    return pa.field(name, kind, nullable=False)


# --- the event as the wire carries it ---------------------------------------------------

_LOT = pa.struct([("lot", S), ("expires_on", S), ("quantity", L)])
_ITEM = pa.struct([("sku", S), ("lot", S), ("expires_on", S), ("quantity", L)])
_BY_KIND = {"id": S, "str": S, "date": S, "reason": S, "stock": L, "quantity": L,
            "count": L, "days": L, "money": D, "hours": D, "lots": pa.list_(_LOT),
            "items": pa.list_(_ITEM)}
EVENT_PAYLOAD = pa.struct([(f.name, _BY_KIND[f.kind]) for f in PAYLOAD_FIELDS.values()])
"""Every payload field of the contract, typed by its kind (dates stay text, as sent)."""
CLOCK = pa.map_(S, L)
EVENT_ENVELOPE = _schema(
    ("schema_version", INT), ("event_id", S), ("location_id", S), ("seq", L),
    ("clock", CLOCK), ("occurred_at", S), ("event_type", S), ("category", S),
    ("causation_id", S), ("offline", B), ("agent_version", S), ("payload", EVENT_PAYLOAD))
"""The JSON event an ``events_raw`` payload holds, as the contract defines it."""

# --- bronze and silver, written by the stream -------------------------------------------

_STREAM = ("stream", "maintenance")

FREQUENT = MappingProxyType({
    # Committed every few seconds, for as long as Shelflife runs. Each writer removes the
    # expired log files every few hundred commits (lakehouse.logtidy), and reading the
    # table's log after a commit lists the _delta_log folder (the whole folder on a local
    # disk, where object_store has no start-after): about 15 us of CPU more per log file
    # kept. Delta's default 30 days of log would make each commit of these tables take
    # seconds within a month. An hour keeps a few thousand files; the rows themselves are
    # the history.
    "delta.logRetentionDuration": "interval 1 hours",
})

EVENTS_RAW = Table(
    "bronze", "events_raw",
    _schema(("region", S), ("topic", S), ("payload", BIN), ("received_at", TS),
            ("ingest_batch_id", S), ("line", L), ("stream_batch_id", L)),
    ("region",), "delta-rs", _STREAM,
    "every accepted payload, byte for byte, with where and when it landed", FREQUENT)
EVENTS = Table(
    "silver", "events",
    _schema(("event_id", S), ("region", S), ("location_id", S), ("seq", L),
            ("event_type", S), ("category", S), ("occurred_at", TS), ("offline", B),
            ("causation_id", S), ("clock", CLOCK), ("agent_version", S), ("sku", S),
            ("quantity", L), ("stock_before", L), ("payload", EVENT_PAYLOAD), ("topic", S),
            ("received_at", TS), ("ingest_batch_id", S), ("processed_at", TS)),
    ("region", "category"), "delta-rs", _STREAM,
    "typed events, one row per (location_id, seq)", FREQUENT)
DEAD_LETTERS = Table(
    "silver", "dead_letters",
    _schema(("region", S), ("topic", S), ("raw", BIN), ("reason", S), ("received_at", TS),
            ("source", S), ("ingest_batch_id", S), ("line", L)),
    ("region",), "delta-rs", _STREAM,
    "what ingest or the stream refused, with the raw bytes and the reason", FREQUENT)
QUANTITY_CONFLICTS = Table(
    "silver", "quantity_conflicts",
    _schema(("region", S), ("item_id", S), ("location_id", S), ("seq", L), ("event_id", S),
            ("sku", S), ("occurred_at", TS), ("store_before", L), ("lakehouse_before", L),
            ("difference", L), ("cause", S), ("status", S), ("note", S),
            ("detected_at", TS), ("gap_closed_at", TS), ("logged_at", TS)),
    ("region",), "delta-rs", ("stream",),
    "log of events whose stock_before disagreed with the lakehouse", FREQUENT)
COUNT_VARIANCES = Table(
    "silver", "count_variances",
    _schema(("region", S), ("location_id", S), ("seq", L), ("event_id", S),
            ("counted_at", TS), ("sku", S), ("system_quantity", L), ("counted_quantity", L),
            ("variance", L), ("detected_at", TS)),
    ("region",), "delta-rs", ("stream",),
    "log of counts that differed from the stock the lakehouse held", FREQUENT)
SEQUENCE_GAPS = Table(
    "silver", "sequence_gaps",
    _schema(("region", S), ("location_id", S), ("first_missing", L), ("last_missing", L),
            ("missing", pa.list_(L)), ("missing_count", L), ("status", S),
            ("opened_at", TS), ("updated_at", TS), ("closed_at", TS)),
    ("region",), "delta-rs", ("stream",),
    "seqs a location skipped, open until they arrive", FREQUENT)
ITEMS = Table(
    "silver", "items",
    _schema(("sku", S), ("description", S), ("category", S), ("price", D),
            ("shelf_life_days", L), ("min_sellable_days", L), ("updated_at", TS),
            ("updated_by", S), ("field_keys", S)),
    (), "delta-rs", ("stream",),
    "the product catalogue from item_updated events, last writer wins per field", FREQUENT)
REVIEW_RESOLUTIONS = Table(
    "silver", "review_resolutions",
    _schema(("item_id", S), ("region", S), ("resolved_by", S), ("resolved_at", TS),
            ("resolution", S), ("adjustment_event_id", S)),
    ("region",), "delta-rs", ("review CLI",),
    "who resolved a review item, how, and the adjustment it sent")

STORE_HEARTBEATS = Table(
    "silver", "store_heartbeats",
    _schema(("region", S), ("location_id", S), ("agent_version", S), ("online", B),
            ("local_time", TS), ("received_at", TS), ("outbox_depth", L), ("last_seq", L),
            ("last_acked_seq", L), ("refused_messages", L), ("clock_skew_hint_s", D),
            ("heartbeat_version", INT), ("holds", S)),
    ("region",), "delta-rs", ("ingest",),
    "append-only log of every store heartbeat (and will) ingest heard, as it arrived", FREQUENT)
BROKER_HEALTH = Table(
    "silver", "broker_health",
    _schema(("region", S), ("at", TS), ("connected_clients", L),
            ("disconnected_clients", L), ("stored_messages", L), ("stored_bytes", L),
            ("received_per_min", D), ("sent_per_min", D), ("uptime_s", L)),
    ("region",), "delta-rs", ("ingest",),
    "each regional broker's own figures ($SYS) every 30 s, as its ingest heard them",
    FREQUENT)

# --- silver, edited by people ------------------------------------------------------------

TRANSFER_DECISIONS = Table(
    "silver", "transfer_decisions",
    _schema(("recommendation_id", S), ("decision", S), ("decided_by", S),
            ("decided_at", TS), ("note", S)),
    (), "delta-rs", ("dashboard decisions", "batch CLI"),
    "append-only log of who approved or rejected a transfer recommendation")
PURCHASE_ORDERS = Table(
    "silver", "purchase_orders",
    _schema(("po_id", S), ("batch_id", S), ("region", S), ("location_id", S), ("sku", S),
            ("quantity", L), ("unit_price", D), ("value", D), ("arrives_on", DAY),
            ("approved_by", S), ("approved_at", TS), ("suggestion_created_at", TS)),
    (), "delta-rs", ("dashboard decisions",),
    "append-only log of reorder suggestions approved into purchase orders, by whom, "
    "valued at shelf price against the daily spend limit")
LOT_HOLDS = Table(
    "silver", "lot_holds",
    _schema(("hold_id", S), ("sku", S), ("lot", S), ("on_hold", B), ("reason", S),
            ("decided_by", S), ("decided_at", TS)),
    (), "delta-rs", ("dashboard decisions", "recall CLI"),
    "append-only log of recalls: a lot put on hold network-wide or released, by whom")
LOCATIONS = Table(
    "silver", "locations",
    _schema(_required("location_id", S), ("region", S), ("kind", S), ("updated_at", TS)),
    (), "delta-rs", ("reference CLI",),
    "each location's region and kind (store or warehouse)")
TRANSIT_TIMES = Table(
    "silver", "transit_times",
    _schema(_required("source", S), _required("destination", S), ("transit_hours", D),
            ("cost_per_unit", D), ("updated_at", TS)),
    (), "delta-rs", ("reference CLI",),
    "transit time and cost per location pair (negative hours forbid the route)")
SELLABLE_POLICY = Table(
    "silver", "sellable_policy",
    _schema(_required("category", S), _required("destination_kind", S),
            ("min_sellable_days", D), ("handling_hours", D), ("updated_at", TS)),
    (), "delta-rs", ("reference CLI",),
    "life a product must have left on arrival, per category and destination kind")

# --- gold, rewritten by the stream -------------------------------------------------------

REWRITTEN = MappingProxyType({
    # Rewritten every second or two: their history is silver's. Files replaced more than
    # an hour ago may be vacuumed (``shelflife maintain`` reads this), and ten minutes of
    # log are kept (see FREQUENT).
    "delta.logRetentionDuration": "interval 10 minutes",
    "delta.deletedFileRetentionDuration": "interval 1 hours",
})
LIVE = MappingProxyType({
    **REWRITTEN,
    # Stock, committed once or twice a second by every region: two minutes of log, a few
    # hundred files, keeps each commit's log listing to a few milliseconds. With a day of
    # log (before) a commit took 13 ms of CPU at 500 log files and 65 ms at 4,000, half an
    # hour of commits (bench/deltalog.py).
    "delta.logRetentionDuration": "interval 2 minutes",
})

STOCK_COHORTS = Table(
    "gold", "stock_cohorts",
    _schema(("region", S), ("location_id", S), ("sku", S), ("lot", S),
            ("expires_on", DAY), ("quantity", L), ("updated_at", TS)),
    ("region",), "delta-rs", _STREAM,
    "on-hand quantity per (location, sku, lot, expires_on)", LIVE)
STOCK_LEVELS = Table(
    "gold", "stock_levels",
    _schema(("region", S), ("location_id", S), ("sku", S), ("on_hand", L), ("cohorts", INT),
            ("earliest_expiry", DAY), ("sellable", L), ("expiring_48h", L), ("expired", L),
            ("in_transit_in", L), ("in_transit_out", L), ("last_seq", L),
            ("last_count_seq", L), ("contiguous_seq", L), ("seqs_after_gap", pa.list_(L)),
            ("updated_at", TS)),
    ("region",), "delta-rs", _STREAM,
    "stock per location and SKU, with expiry, transit and the seqs it reflects", LIVE)
REGION_STATUS = Table(
    "gold", "region_status",
    _schema(("region", S), ("mode", S), ("events_total", L), ("events_last_batch", L),
            ("batch_duration_s", D), ("last_event_at", TS), ("lag_s", D),
            ("updated_at", TS), ("minutes_behind", D), ("backlog_events", L),
            ("backlog_files", L), ("events_per_s", D)),
    ("region",), "delta-rs", _STREAM,
    "each region's stream: live or syncing, lag, backlog and throughput", REWRITTEN)
PIPELINE_HISTORY = Table(
    "gold", "pipeline_history",
    _schema(("region", S), ("at", TS), ("mode", S), ("lag_s", D), ("backlog_events", L),
            ("events", L), ("events_per_s", D), ("latency_p50_s", D),
            ("latency_p95_s", D), ("latency_p99_s", D), ("batch_p95_s", D),
            ("dead_letters", L), ("locations", L), ("cohorts", L), ("state_mb", D),
            ("driver_rss_mb", D), ("jvm_rss_mb", D)),
    ("region",), "delta-rs", _STREAM,
    "each region's stream every 30 s: latency percentiles, lag, backlog, dead letters, "
    "state size and the stream's memory, so a runaway shows before it stops anything",
    FREQUENT)
REVIEW_QUEUE = Table(
    "gold", "review_queue",
    _schema(("region", S), ("item_id", S), ("location_id", S), ("seq", L), ("event_id", S),
            ("sku", S), ("occurred_at", TS), ("store_before", L), ("lakehouse_before", L),
            ("difference", L), ("cause", S), ("status", S), ("note", S),
            ("detected_at", TS), ("gap_closed_at", TS), ("updated_at", TS),
            ("resolved_by", S), ("resolved_at", TS), ("resolution", S),
            ("adjustment_event_id", S)),
    ("region",), "delta-rs", _STREAM,
    "quantity conflicts for a person to resolve, with their resolution", REWRITTEN)
DAILY_MOVEMENTS = Table(
    "gold", "daily_movements",
    _schema(("region", S), ("location_id", S), ("sku", S), ("day", DAY), ("sold", L),
            ("received", L), ("wasted", L), ("transfer_in", L), ("transfer_out", L),
            ("hit_zero", L)),
    ("region",), "delta-rs", _STREAM,
    "units moved per location, SKU and day, by kind of movement", REWRITTEN)
DEMAND_TRENDS = Table(
    "gold", "demand_trends",
    _schema(("region", S), ("location_id", S), ("sku", S), ("sold_last_7d", L),
            ("burn_rate_per_day", D), ("on_hand", L), ("days_of_cover", D),
            ("projected_stockout_at", TS), ("updated_at", TS)),
    ("region",), "delta-rs", _STREAM,
    "burn rate, days of cover and projected stockout per location and SKU", REWRITTEN)
NETWORK_AVAILABILITY = Table(
    "gold", "network_availability",
    _schema(("region", S), ("sku", S), ("on_hand", L), ("sellable", L), ("locations", L),
            ("locations_in_stock", L), ("locations_low", L), ("locations_out", L),
            ("updated_at", TS)),
    ("region",), "delta-rs", _STREAM,
    "per region and SKU: stock, and how many locations are in stock, low or out",
    REWRITTEN)
BUSINESS_METRICS = Table(
    "gold", "business_metrics",
    _schema(("region", S), ("location_id", S), ("category", S), ("day", DAY),
            ("received_units", L), ("sold_units", L), ("wasted_units", L),
            ("waste_rate", D), ("skus_active", L), ("skus_stocked_out", L),
            ("stockout_rate", D), ("updated_at", TS), ("forecast_units", D),
            ("forecast_abs_error", D), ("forecast_wape", D), ("transferred_in_units", L),
            ("transferred_sold_48h", L), ("transfer_efficiency", D)),
    ("region",), "delta-rs", _STREAM,
    "waste, stockout, forecast error and transfer efficiency per location, category, day",
    REWRITTEN)

# --- gold, replaced by the batch jobs ----------------------------------------------------

_FORECAST = (("forecast", D), ("lower", D), ("upper", D), ("model", S))

DEMAND_FORECASTS = Table(
    "gold", "demand_forecasts",
    _schema(("region", S), ("location_id", S), ("sku", S), ("forecast_date", DAY),
            *_FORECAST, ("history_days", INT), ("trained_at", TS), ("fit_seconds", D)),
    ("region",), "spark", ("batch jobs",),
    "daily demand forecast with an 80% interval per location and SKU")
FORECAST_HISTORY = Table(
    "gold", "forecast_history",
    _schema(("region", S), ("location_id", S), ("sku", S), ("forecast_date", DAY),
            *_FORECAST, ("trained_at", TS), ("history_through", DAY)),
    ("region",), "delta-rs", ("batch jobs",),
    "per series and date, the forecast made before that date")
FORECAST_ACCURACY = Table(
    "gold", "forecast_accuracy",
    _schema(("region", S), ("location_id", S), ("sku", S), ("day", DAY), ("forecast", D),
            ("lower", D), ("upper", D), ("actual", D), ("abs_error", D),
            ("within_interval", B), ("model", S), ("trained_at", TS), ("days_ahead", INT),
            ("complete", B), ("updated_at", TS)),
    ("region",), "delta-rs", ("batch jobs",),
    "each forecast day against the units actually sold")
TRANSFER_OUTCOMES = Table(
    "gold", "transfer_outcomes",
    _schema(("region", S), ("location_id", S), ("source", S), ("transfer_id", S),
            ("sku", S), ("arrived_at", TS), ("day", DAY), ("units_in", L),
            ("sold_48h", L), ("efficiency", D), ("complete", B), ("updated_at", TS)),
    ("region",), "delta-rs", ("batch jobs",),
    "each arrived transfer and how many of its units sold within 48 hours")
TRANSFER_RECOMMENDATIONS = Table(
    "gold", "transfer_recommendations",
    _schema(_required("recommendation_id", S), ("created_at", TS), ("region", S),
            ("sku", S), ("category", S), ("lot", S), ("expires_on", DAY),
            ("source_location", S), ("source_kind", S), ("destination_location", S),
            ("destination_region", S), ("destination_kind", S), ("quantity", L),
            ("transit_hours", D), ("handling_hours", D), ("arrival_at", TS),
            ("shelf_life_at_arrival_days", D), ("min_sellable_days", D),
            ("waste_prob_source_before", D), ("waste_prob_source_after", D),
            ("waste_prob_destination", D), ("expected_units_saved", D),
            ("transfer_cost", D), ("value_saved", D), ("status", S), ("reason", S),
            ("decided_by", S), ("decided_at", TS)),
    (), "delta-rs", ("batch jobs",),
    "lots to move between locations before they spoil, best value first, and their "
    "latest decision")
REORDER_SUGGESTIONS = Table(
    "gold", "reorder_suggestions",
    _schema(("region", S), _required("location_id", S), _required("sku", S),
            ("category", S), ("on_hand", L), ("sellable_at_arrival", D), ("in_transit", L),
            ("lead_time_days", D), ("arrives_on", DAY), ("cover_until", DAY),
            ("demand_forecast", D), ("safety_stock", D), ("order_quantity", L),
            ("case_size", L), ("shelf_life_days", L), ("expected_waste_units", D),
            ("waste_prob", D), ("reason", S), ("created_at", TS)),
    ("region",), "delta-rs", ("batch jobs",),
    "what each store should order now, in whole cases, and the waste it risks")

TABLES: tuple[Table, ...] = (
    EVENTS_RAW, EVENTS, DEAD_LETTERS, QUANTITY_CONFLICTS, COUNT_VARIANCES, SEQUENCE_GAPS,
    ITEMS, REVIEW_RESOLUTIONS, STORE_HEARTBEATS, BROKER_HEALTH, TRANSFER_DECISIONS,
    PURCHASE_ORDERS, LOT_HOLDS, LOCATIONS,
    TRANSIT_TIMES, SELLABLE_POLICY, STOCK_COHORTS, STOCK_LEVELS, REGION_STATUS,
    PIPELINE_HISTORY, REVIEW_QUEUE,
    DAILY_MOVEMENTS, DEMAND_TRENDS, NETWORK_AVAILABILITY, BUSINESS_METRICS,
    DEMAND_FORECASTS, FORECAST_HISTORY, FORECAST_ACCURACY, TRANSFER_OUTCOMES,
    TRANSFER_RECOMMENDATIONS, REORDER_SUGGESTIONS,
)
STREAM_TABLES: tuple[Table, ...] = (
    EVENTS_RAW, EVENTS, DEAD_LETTERS, QUANTITY_CONFLICTS, COUNT_VARIANCES, SEQUENCE_GAPS,
    ITEMS, REVIEW_RESOLUTIONS, STOCK_COHORTS, STOCK_LEVELS, REGION_STATUS, PIPELINE_HISTORY,
    REVIEW_QUEUE, DAILY_MOVEMENTS, DEMAND_TRENDS, NETWORK_AVAILABILITY, BUSINESS_METRICS,
)
"""The tables the streaming job creates (empty, partitioned) before its queries start."""
REWRITTEN_TABLES: tuple[Table, ...] = tuple(t for t in TABLES
                                            if t.properties in (REWRITTEN, LIVE))
"""Gold rewritten every second or two: ``shelflife maintain`` vacuums what they replaced
after an hour and does not compact them."""

_BY_KEY = {(t.layer, t.name): t for t in TABLES}
if len(_BY_KEY) != len(TABLES) or len({t.name for t in TABLES}) != len(TABLES):
    raise ValueError("catalogue: every table needs a name of its own")


def table(layer: str, name: str) -> Table:
    """The table at ``<layer>/<name>``; the error lists what the layer holds."""
    try:
        return _BY_KEY[(layer, name)]
    except KeyError:
        known = ", ".join(t.name for t in TABLES if t.layer == layer) or "nothing"
        raise KeyError(f"{layer}/{name}: no such table (the {layer} layer holds "
                       f"{known})") from None
