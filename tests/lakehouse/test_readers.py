"""JVM-free readers: gold written with delta-rs comes back as the page expects it.

``write_demo_lakehouse`` builds a small gold/silver lakehouse in the shapes Spark
writes; the dashboard tests reuse it.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from deltalake import write_deltalake

from lakehouse import catalogue
from lakehouse.readers import read_table, table_version

from .demo_tables import REGION_STATUS, write_demo_lakehouse


@pytest.fixture
def lakehouse(tmp_path: Path) -> Path:
    write_demo_lakehouse(tmp_path, datetime.now(UTC))
    return tmp_path


def test_missing_table_reads_as_none(tmp_path: Path) -> None:
    assert read_table(catalogue.STOCK_LEVELS, tmp_path) is None
    assert table_version(catalogue.STOCK_LEVELS, tmp_path) is None


def test_folder_without_a_commit_reads_as_none(tmp_path: Path) -> None:
    # Spark creates the folder before its first commit lands.
    catalogue.STOCK_LEVELS.path(tmp_path).mkdir(parents=True)
    assert read_table(catalogue.STOCK_LEVELS, tmp_path) is None


def test_reads_rows_and_types_back(lakehouse: Path) -> None:
    stock = read_table(catalogue.STOCK_LEVELS, lakehouse)
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
        catalogue.STOCK_LEVELS,
        lakehouse,
        filters=[("region", "=", "east")],
        columns=["location_id", "sku", "on_hand"],
    )
    assert east is not None
    assert list(east.columns) == ["location_id", "sku", "on_hand"]
    assert sorted(east["sku"]) == ["BREAD-WHT", "MILK-1L"]

    low = read_table(catalogue.STOCK_LEVELS, lakehouse, filters=[("on_hand", "<=", 0)])
    assert low is not None
    assert sorted(low["location_id"]) == ["C-S010", "W-DC01"]


def test_version_grows_with_each_commit_and_pins_reads(lakehouse: Path) -> None:
    first = table_version(catalogue.REGION_STATUS, lakehouse)
    assert first == 0
    status = read_table(catalogue.REGION_STATUS, lakehouse)
    assert status is not None
    write_deltalake(
        str(catalogue.REGION_STATUS.path(lakehouse)),
        pa.Table.from_pandas(status.head(1), schema=REGION_STATUS, preserve_index=False),
        mode="append",
    )
    assert table_version(catalogue.REGION_STATUS, lakehouse) == 1
    assert len(read_table(catalogue.REGION_STATUS, lakehouse)) == 4
    assert len(read_table(catalogue.REGION_STATUS, lakehouse, version=0)) == 3


def test_naive_timestamps_come_back_as_utc(tmp_path: Path) -> None:
    moment = datetime(2025, 3, 1, 12, 30)
    data = pa.table({"region": ["east"], "received_at": pa.array([moment], pa.timestamp("us"))})
    write_deltalake(str(catalogue.DEAD_LETTERS.path(tmp_path)), data)
    frame = read_table(catalogue.DEAD_LETTERS, tmp_path)
    assert frame is not None
    assert frame["received_at"].iloc[0] == pd.Timestamp("2025-03-01 12:30", tz="UTC")


@pytest.mark.parametrize("stored_tz", [None, "UTC"])
def test_a_time_filter_takes_a_utc_time_whatever_the_column_stores(tmp_path: Path,
                                                                    stored_tz) -> None:
    """Spark stores UTC-aware times, delta-rs may store naive ones; a caller filtering on
    "since this moment" writes the same filter for both and gets the same rows."""
    times = [datetime(2026, 11, 1, 12), datetime(2026, 12, 1, 8), datetime(2026, 12, 1, 9)]
    table = pa.table({"occurred_at": pa.array(times, pa.timestamp("us", tz=stored_tz)),
                      "n": [1, 2, 3]})
    write_deltalake(str(catalogue.EVENTS.path(tmp_path)), table)
    for since in (datetime(2026, 12, 1, 8, 30, tzinfo=UTC), datetime(2026, 12, 1, 8, 30)):
        got = read_table(catalogue.EVENTS, tmp_path,
                         filters=[("occurred_at", ">=", since)])
        assert got["n"].tolist() == [3]
        assert str(got["occurred_at"].dt.tz) == "UTC"
