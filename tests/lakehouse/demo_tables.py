"""A small demo lakehouse written with delta-rs, shaped like the Spark jobs' gold.

Shared by the reader, dashboard and notebook tests.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
from deltalake import write_deltalake

from lakehouse.paths import table_path

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
    write_deltalake(
        str(table_path(layer, name, root)), data, partition_by=["region"], mode="overwrite"
    )


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
