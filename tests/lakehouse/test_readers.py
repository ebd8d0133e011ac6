"""JVM-free readers: gold written with delta-rs comes back as the page expects it.

``write_demo_lakehouse`` builds a small gold/silver lakehouse in the shapes Spark
writes; the dashboard tests reuse it.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from deltalake import write_deltalake

from lakehouse.paths import table_path
from lakehouse.readers import read_table, table_version

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


@pytest.fixture
def lakehouse(tmp_path: Path) -> Path:
    write_demo_lakehouse(tmp_path, datetime.now(UTC))
    return tmp_path


def test_missing_table_reads_as_none(tmp_path: Path) -> None:
    assert read_table("gold", "stock_levels", tmp_path) is None
    assert table_version("gold", "stock_levels", tmp_path) is None


def test_folder_without_a_commit_reads_as_none(tmp_path: Path) -> None:
    # Spark creates the folder before its first commit lands.
    table_path("gold", "stock_levels", tmp_path).mkdir(parents=True)
    assert read_table("gold", "stock_levels", tmp_path) is None


def test_reads_rows_and_types_back(lakehouse: Path) -> None:
    stock = read_table("gold", "stock_levels", lakehouse)
    assert stock is not None
    assert len(stock) == 4
    assert set(stock["region"]) == {"east", "central", "west"}
    assert str(stock["updated_at"].dt.tz) == "UTC"
    assert isinstance(stock["earliest_expiry"].dropna().iloc[0], date)
    yogurt = stock[stock["sku"] == "YOGURT-500"].iloc[0]
    assert yogurt["on_hand"] == -3
    assert pd.isna(yogurt["earliest_expiry"])


def test_filters_and_columns_are_applied(lakehouse: Path) -> None:
    east = read_table(
        "gold",
        "stock_levels",
        lakehouse,
        filters=[("region", "=", "east")],
        columns=["location_id", "sku", "on_hand"],
    )
    assert east is not None
    assert list(east.columns) == ["location_id", "sku", "on_hand"]
    assert sorted(east["sku"]) == ["BREAD-WHT", "MILK-1L"]

    low = read_table("gold", "stock_levels", lakehouse, filters=[("on_hand", "<=", 0)])
    assert low is not None
    assert sorted(low["location_id"]) == ["C-S010", "W-DC01"]


def test_version_grows_with_each_commit_and_pins_reads(lakehouse: Path) -> None:
    first = table_version("gold", "region_status", lakehouse)
    assert first == 0
    status = read_table("gold", "region_status", lakehouse)
    assert status is not None
    write_deltalake(
        str(table_path("gold", "region_status", lakehouse)),
        pa.Table.from_pandas(status.head(1), schema=REGION_STATUS, preserve_index=False),
        mode="append",
    )
    assert table_version("gold", "region_status", lakehouse) == 1
    assert len(read_table("gold", "region_status", lakehouse)) == 4
    assert len(read_table("gold", "region_status", lakehouse, version=0)) == 3


def test_naive_timestamps_come_back_as_utc(tmp_path: Path) -> None:
    moment = datetime(2025, 3, 1, 12, 30)
    data = pa.table({"region": ["east"], "received_at": pa.array([moment], pa.timestamp("us"))})
    write_deltalake(str(table_path("silver", "dead_letters", tmp_path)), data)
    frame = read_table("silver", "dead_letters", tmp_path)
    assert frame is not None
    assert frame["received_at"].iloc[0] == pd.Timestamp("2025-03-01 12:30", tz="UTC")
