"""A small demo lakehouse written with delta-rs, shaped like the Spark jobs' gold.

Shared by the reader, dashboard and notebook tests.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
from deltalake import write_deltalake

from lakehouse import catalogue
from lakehouse.catalogue import Table
from lakehouse.contract import hold_id
from lakehouse.paths import table_url
from lakehouse.storage import delta_options

UTC_TS = pa.timestamp("us", tz="UTC")

STOCK_LEVELS = pa.schema(
    [
        ("region", pa.string()),
        ("location_id", pa.string()),
        ("sku", pa.string()),
        ("on_hand", pa.int64()),
        ("cohorts", pa.int32()),
        ("earliest_expiry", pa.date32()),
        ("last_seq", pa.int64()),
        ("updated_at", UTC_TS),
    ]
)
STOCK_COHORTS = pa.schema(
    [
        ("region", pa.string()),
        ("location_id", pa.string()),
        ("sku", pa.string()),
        ("lot", pa.string()),
        ("expires_on", pa.date32()),
        ("quantity", pa.int64()),
        ("updated_at", UTC_TS),
    ]
)
REGION_STATUS = pa.schema(
    [
        ("region", pa.string()),
        ("mode", pa.string()),
        ("events_total", pa.int64()),
        ("events_last_batch", pa.int64()),
        ("batch_duration_s", pa.float64()),
        ("last_event_at", UTC_TS),
        ("lag_s", pa.float64()),
        ("updated_at", UTC_TS),
    ]
)
DEAD_LETTERS = pa.schema(
    [
        ("region", pa.string()),
        ("topic", pa.string()),
        ("raw", pa.binary()),
        ("reason", pa.string()),
        ("received_at", UTC_TS),
        ("source", pa.string()),
    ]
)


def write_table(root: Path, layer: str, name: str, rows: list[dict], schema: pa.Schema) -> None:
    """Write rows as a Delta table partitioned by region, like the Spark jobs do."""
    data = pa.Table.from_pylist(rows, schema=schema)
    url = table_url(layer, name, root)
    write_deltalake(url, data, partition_by=["region"], mode="overwrite",
                    storage_options=delta_options(url))


def write_demo_lakehouse(root: Path, now: datetime) -> None:
    """Three regions, a few stores, lots that expire soon, a negative balance, dead letters.

    Dates are relative to ``now`` so expiry filters mean the same whenever the test runs.
    """
    today = now.date()
    fresh = now - timedelta(seconds=1)

    def level(region, location, sku, on_hand, cohorts, expiry, seq):
        return {
            "region": region,
            "location_id": location,
            "sku": sku,
            "on_hand": on_hand,
            "cohorts": cohorts,
            "earliest_expiry": expiry,
            "last_seq": seq,
            "updated_at": fresh,
        }

    def lot(region, location, sku, name, expires_on, quantity):
        return {
            "region": region,
            "location_id": location,
            "sku": sku,
            "lot": name,
            "expires_on": expires_on,
            "quantity": quantity,
            "updated_at": fresh,
        }

    write_table(
        root,
        "gold",
        "stock_levels",
        [
            level("east", "E-S001", "MILK-1L", 30, 2, today + timedelta(days=1), 12),
            level("east", "E-S001", "BREAD-WHT", 8, 1, today + timedelta(days=5), 7),
            level("central", "C-S010", "YOGURT-500", -3, 0, None, 40),
            level("west", "W-DC01", "MILK-1L", 0, 0, None, 3),
        ],
        STOCK_LEVELS,
    )
    write_table(
        root,
        "gold",
        "stock_cohorts",
        [
            lot("east", "E-S001", "MILK-1L", "L-0917", today + timedelta(days=1), 12),
            lot("east", "E-S001", "MILK-1L", "L-0921", today + timedelta(days=6), 18),
            lot("east", "E-S001", "MILK-1L", "L-0800", today - timedelta(days=9), 0),
            lot("east", "E-S001", "BREAD-WHT", "B-77", today + timedelta(days=5), 8),
            lot("central", "C-S010", "YOGURT-500", "(none)", None, -3),
        ],
        STOCK_COHORTS,
    )
    write_table(
        root,
        "gold",
        "region_status",
        [
            {
                "region": "east",
                "mode": "live",
                "events_total": 1234,
                "events_last_batch": 17,
                "batch_duration_s": 0.8,
                "last_event_at": fresh - timedelta(seconds=1.2),
                "lag_s": 1.2,
                "updated_at": fresh,
            },
            {
                "region": "central",
                "mode": "live",
                "events_total": 880,
                "events_last_batch": 0,
                "batch_duration_s": 0.4,
                "last_event_at": now - timedelta(seconds=95),
                "lag_s": 0.9,
                "updated_at": now - timedelta(seconds=94),
            },
            {
                "region": "west",
                "mode": "syncing",
                "events_total": 56,
                "events_last_batch": 50,
                "batch_duration_s": 1.9,
                "last_event_at": fresh - timedelta(minutes=23),
                "lag_s": 23 * 60.0,
                "updated_at": fresh,
            },
        ],
        REGION_STATUS,
    )
    write_table(
        root,
        "silver",
        "dead_letters",
        [
            {
                "region": "east",
                "topic": f"shelflife/v1/east/E-S001/events#{i}",
                "raw": b"{not json",
                "reason": f"payload.quantity: expected int, got str (#{i})",
                "received_at": now - timedelta(seconds=60 - i),
                "source": "ingest",
            }
            for i in range(25)
        ],
        DEAD_LETTERS,
    )


def write_catalogue_table(root: Path, table: Table, rows: list[dict]) -> None:
    """Rows in a catalogue table's own schema and partitions, as its writer lays it out."""
    data = pa.Table.from_pylist(rows, schema=table.schema)
    write_deltalake(table.uri(root), data, partition_by=list(table.partitions) or None,
                    mode="overwrite", storage_options=delta_options(table.uri(root)))


def write_demo_pages(root: Path, now: datetime) -> None:
    """What the other pages read, on top of :func:`write_demo_lakehouse`: three days of
    business metrics, item prices, store heartbeats (one store online and catching up, one
    offline, one silent, one that went quiet), a forecast with its history and reorders."""
    today = now.date()
    write_catalogue_table(root, catalogue.ITEMS, [
        {"sku": sku, "description": sku.title(), "category": cat, "price": price,
         "shelf_life_days": days, "min_sellable_days": 1, "updated_at": now}
        for sku, cat, price, days in (("MILK-1L", "dairy", 1.2, 7),
                                      ("BREAD-WHT", "bakery", 2.5, 4),
                                      ("YOGURT-500", "dairy", 1.9, 14))])
    metrics = []
    for back, (received, sold, wasted, out) in enumerate(
            ((400, 330, 14, 3), (380, 300, 22, 5), (420, 310, 30, 4))):
        for region, scale, extra_out in (("east", 1.0, 0), ("central", 0.7, 1),
                                         ("west", 0.5, back)):
            for category, share in (("dairy", 0.6), ("bakery", 0.4)):
                metrics.append({
                    "region": region, "location_id": f"{region[0].upper()}-S001",
                    "category": category, "day": today - timedelta(days=back),
                    "received_units": int(received * scale * share),
                    "sold_units": int(sold * scale * share),
                    "wasted_units": int(wasted * scale * share * (1.5 if region == "west"
                                                                  else 1.0)),
                    "skus_active": 12,
                    "skus_stocked_out": extra_out + (out if category == "dairy" else 1),
                    "updated_at": now})
    write_catalogue_table(root, catalogue.BUSINESS_METRICS, metrics)
    more_lots = [  # other stores' lots close to expiry, beside the base demo's
        (region, store, sku, f"{store[-2:]}-{sku[:2]}{days}", today + timedelta(days=days), qty)
        for region, store, sku, days, qty in (
            ("east", "E-S002", "MILK-1L", 0, 9), ("east", "E-S002", "YOGURT-500", 2, 14),
            ("central", "C-S011", "BREAD-WHT", 1, 6), ("central", "C-S011", "MILK-1L", 2, 20),
            ("west", "W-S100", "YOGURT-500", -1, 3), ("west", "W-S100", "MILK-1L", 1, 11))]
    cohorts = catalogue.STOCK_COHORTS.uri(root)
    write_deltalake(cohorts, pa.Table.from_pylist(
        [dict(zip(("region", "location_id", "sku", "lot", "expires_on", "quantity"), row,
                  strict=True)) | {"updated_at": now} for row in more_lots],
        schema=STOCK_COHORTS), partition_by=["region"], mode="append",
        storage_options=delta_options(cohorts))

    write_demo_recall(root, now)
    write_demo_heartbeats(root, now)
    write_demo_pipeline(root, now)

    write_catalogue_table(root, catalogue.DAILY_MOVEMENTS, [
        {"region": "east", "location_id": "E-S001", "sku": "MILK-1L",
         "day": today - timedelta(days=back), "sold": 20 + (back * 7) % 9, "received": 30,
         "wasted": 1, "transfer_in": 0, "transfer_out": 0, "hit_zero": 0}
        for back in range(14, 0, -1)])
    write_catalogue_table(root, catalogue.DEMAND_FORECASTS, [
        {"region": "east", "location_id": "E-S001", "sku": "MILK-1L",
         "forecast_date": today + timedelta(days=ahead), "forecast": 24.0 + ahead,
         "lower": 18.0, "upper": 31.0 + 2 * ahead, "model": "prophet", "history_days": 14,
         "trained_at": now, "fit_seconds": 0.4}
        for ahead in range(7)])
    write_catalogue_table(root, catalogue.REORDER_SUGGESTIONS, [
        {"region": region, "location_id": store, "sku": sku, "category": cat, "on_hand": 4,
         "sellable_at_arrival": 2.0, "in_transit": 0, "lead_time_days": 1.0,
         "arrives_on": today + timedelta(days=1), "cover_until": today + timedelta(days=4),
         "demand_forecast": 30.0, "safety_stock": 6.0, "order_quantity": qty,
         "case_size": 6, "shelf_life_days": 7, "expected_waste_units": 1.5,
         "waste_prob": 0.05, "reason": "forecast 30 over 3 days, 2 sellable at arrival",
         "created_at": now}
        for region, store, sku, cat, qty in (("east", "E-S001", "MILK-1L", "dairy", 36),
                                             ("west", "W-S100", "BREAD-WHT", "bakery", 12))])


DEMO_HOLD = hold_id("MILK-1L", "L-0917")


def write_demo_recall(root: Path, now: datetime) -> None:
    """A recall of east's first milk lot half an hour ago, and one released yesterday."""
    write_catalogue_table(root, catalogue.LOT_HOLDS, [
        {"hold_id": hold_id("BREAD-WHT", "B-12"), "sku": "BREAD-WHT", "lot": "B-12",
         "on_hold": True, "reason": "notice 2026-101: mislabelled", "decided_by": "ana",
         "decided_at": now - timedelta(days=1, hours=3)},
        {"hold_id": hold_id("BREAD-WHT", "B-12"), "sku": "BREAD-WHT", "lot": "B-12",
         "on_hold": False, "reason": "supplier relabelled", "decided_by": "ana",
         "decided_at": now - timedelta(days=1)},
        {"hold_id": DEMO_HOLD, "sku": "MILK-1L", "lot": "L-0917", "on_hold": True,
         "reason": "notice 2026-114: possible listeria", "decided_by": "ana",
         "decided_at": now - timedelta(minutes=30)}])


def write_demo_heartbeats(root: Path, now: datetime) -> None:
    """An hour of heartbeats up to ``now``: one store online and catching up, one offline,
    one silent for ten minutes, one whose events went quiet while it kept beating."""
    beats = []
    stores = (("east", "E-S001", "online", 4), ("east", "E-S002", "online", 0),
              ("central", "C-S010", "offline", 0), ("west", "W-S100", "silent", 0),
              ("west", "W-S101", "quiet", 0))
    for region, store, kind, outbox in stores:
        last = 40 if kind == "silent" else 0
        for i in range(last, 121):  # a beat every 30 s over the last hour
            at = now - timedelta(seconds=30 * (120 - i))
            rate = 2 if kind == "quiet" and i > 90 else 12  # events per beat
            beats.append({
                "region": region, "location_id": store, "agent_version": "0.1.0"
                if store != "W-S101" else "0.0.9", "online": not (kind == "offline"
                                                                  and i == 120),
                "local_time": at + timedelta(seconds=2.5 if store == "E-S002" else 0.1),
                "received_at": at, "outbox_depth": outbox if i == 120 else 0,
                "last_seq": 1000 + 12 * min(i, 90) + rate * max(i - 90, 0),
                "last_acked_seq": 1000 + 12 * min(i, 90) + rate * max(i - 90, 0)
                - (outbox if i == 120 else 0),
                "refused_messages": 0, "clock_skew_hint_s": None, "heartbeat_version": 1,
                # E-S001 took the demo recall in 25 minutes ago; nobody else holds the lot
                "holds": DEMO_HOLD if store == "E-S001" and i >= 70 else None})
    write_catalogue_table(root, catalogue.STORE_HEARTBEATS,
                          [b for b in beats if not (b["location_id"] == "W-S100"
                                                    and b["received_at"] > now - timedelta(
                                                        minutes=10))])


def write_demo_pipeline(root: Path, now: datetime) -> None:
    """Two hours of pipeline history and broker figures, a row every 30 s per region:
    east's latency spikes for ten minutes an hour ago while its broker's held messages
    climb and drain; the stream's memory is steady."""
    history, brokers = [], []
    for i in range(240):
        at = now - timedelta(seconds=30 * (239 - i))
        spike = 120 <= i < 140
        for region, clients in (("east", 100), ("central", 100), ("west", 99)):
            hot = spike and region == "east"
            history.append({
                "region": region, "at": at, "mode": "syncing" if hot else "live",
                "lag_s": 40.0 if hot else 0.8, "backlog_events": 9000 if hot else 40,
                "events": 3000, "events_per_s": 100.0, "latency_p50_s": 6.0 if hot else 0.9,
                "latency_p95_s": 20.0 if hot else 1.4, "latency_p99_s": 31.0 if hot else 1.9,
                "batch_p95_s": 0.4, "dead_letters": 1 if i % 40 == 0 else 0,
                "locations": clients, "cohorts": 4000 + i, "state_mb": 3.0 + i / 200,
                "driver_rss_mb": 610.0, "jvm_rss_mb": 1200.0})
            brokers.append({
                "region": region, "at": at, "connected_clients": clients - (40 if hot else 0),
                "disconnected_clients": 40 if hot else 0,
                "stored_messages": 8000 if hot else 120, "stored_bytes": 900_000,
                "received_per_min": 6000.0, "sent_per_min": 6100.0, "uptime_s": 7200 + 30 * i})
    write_catalogue_table(root, catalogue.PIPELINE_HISTORY, history)
    write_catalogue_table(root, catalogue.BROKER_HEALTH, brokers)


def write_one_store_of_milk(root: Path, now: datetime, lots: dict[str, int],
                            forecast: float) -> None:
    """One east store holding ``lots`` of MILK-1L (five days of life each), a week's
    forecast of ``forecast`` units a day and the item's catalogue row: what the reorders
    job needs to suggest an order."""
    today = now.date()
    write_catalogue_table(root, catalogue.STOCK_LEVELS, [
        {"region": "east", "location_id": "E-S001", "sku": "MILK-1L",
         "on_hand": sum(lots.values()), "in_transit_in": 0, "updated_at": now}])
    write_catalogue_table(root, catalogue.STOCK_COHORTS, [
        {"region": "east", "location_id": "E-S001", "sku": "MILK-1L", "lot": lot,
         "expires_on": today + timedelta(days=5), "quantity": quantity, "updated_at": now}
        for lot, quantity in lots.items()])
    write_catalogue_table(root, catalogue.DEMAND_FORECASTS, [
        {"region": "east", "location_id": "E-S001", "sku": "MILK-1L",
         "forecast_date": today + timedelta(days=d), "forecast": forecast,
         "lower": forecast * 0.75, "upper": forecast * 1.25, "model": "prophet",
         "history_days": 28, "trained_at": now}
        for d in range(7)])
    write_catalogue_table(root, catalogue.ITEMS, [
        {"sku": "MILK-1L", "description": "milk", "category": "dairy", "price": 1.2,
         "shelf_life_days": 7, "min_sellable_days": 1, "updated_at": now}])
