"""``shelflife maintain``: small files merged, replaced files deleted, every row still
there, on a local and an S3 lakehouse."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from lakehouse.catalogue import DEMAND_FORECASTS, STOCK_LEVELS, STORE_HEARTBEATS, TABLES
from lakehouse.maintenance import Lease, maintain
from lakehouse.storage import delta_options, ensure_parent, s3_client, split_s3
from spark_jobs.stream.gold import write_region
from spark_jobs.stream.tables import ensure_tables

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["local", "s3"])
def lake(request, tmp_path) -> str:
    """A local lakehouse folder, or a fresh prefix on the session's S3 server."""
    if request.param == "local":
        return str(tmp_path / "lake")
    return request.getfixturevalue("s3_lake")


def _table(url: str, version: int | None = None) -> DeltaTable:
    return DeltaTable(url, version=version, storage_options=delta_options(url))


def _append_heartbeats(lake: str, commits: int) -> list[tuple[str, int]]:
    """``commits`` one-row appends over two regions, as ingest writes them."""
    url = STORE_HEARTBEATS.uri(lake)
    ensure_parent(url)
    keys = []
    for seq in range(commits):
        region = ("east", "west")[seq % 2]
        row = dict.fromkeys(STORE_HEARTBEATS.schema.names) | {
            "region": region, "location_id": f"{region}-1", "online": True,
            "last_seq": seq, "received_at": datetime.now(UTC)}
        write_deltalake(url, pa.Table.from_pylist([row], schema=STORE_HEARTBEATS.schema),
                        mode="append", partition_by=["region"],
                        storage_options=delta_options(url))
        keys.append((region, seq))
    return keys


def _data_files(url: str) -> set[str]:
    """The parquet files in storage under a table, referenced or not."""
    if url.startswith("s3://"):
        bucket, prefix = split_s3(url)
        pages = s3_client().get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=f"{prefix}/")
        return {o["Key"] for page in pages for o in page.get("Contents", [])
                if o["Key"].endswith(".parquet")}
    return {str(p) for p in Path(url).rglob("*.parquet")}


def test_many_small_appends_become_few_files_with_the_same_rows(lake):
    keys = _append_heartbeats(lake, 24)
    url = STORE_HEARTBEATS.uri(lake)
    assert len(_table(url).file_uris()) == 24
    lines: list[str] = []
    [report] = maintain(lake, tables=[STORE_HEARTBEATS], say=lines.append)

    assert len(_table(url).file_uris()) == 2, "one file per region partition"
    rows = _table(url).to_pyarrow_table().to_pylist()
    assert sorted((r["region"], r["last_seq"]) for r in rows) == sorted(keys)
    assert lines == [lines[0]] and lines[0].startswith(
        "[1/1] silver/store_heartbeats: 24 files -> 2, vacuumed 0 files (older than 168 h)")
    # An append-only table keeps a week of replaced files: yesterday's reader (time
    # travel to a version before the compaction) still reads its rows.
    assert report.vacuumed == 0
    assert _table(url, version=11).to_pyarrow_table().num_rows == 12


def _levels(region: str, batch: int) -> list[tuple]:
    names = STOCK_LEVELS.schema.names
    return [tuple((dict.fromkeys(names) | {"region": region, "location_id": f"{region}-{i}",
                                           "sku": "MILK", "on_hand": batch})[n]
                  for n in names) for i in range(3)]


def test_vacuum_deletes_what_gold_rewrites_replaced_and_the_latest_still_reads_whole(lake):
    ensure_tables(lake)
    url = STOCK_LEVELS.uri(lake)
    for batch in range(1, 9):
        for region in ("east", "west"):
            write_region(url, _levels(region, batch), STOCK_LEVELS.schema, region,
                         app_id=f"test-{region}", batch_id=batch)
    assert len(_data_files(url)) == 16

    [report] = maintain(lake, tables=[STOCK_LEVELS], rewritten_retain_hours=0,
                        say=lambda _line: None)

    assert report.vacuumed == 14, "every replaced file, none of the live ones"
    assert report.files_before == report.files_after == 2, "rewritten gold is not compacted"
    assert len(_data_files(url)) == 2
    rows = _table(url).to_pyarrow_table().to_pylist()
    assert sorted((r["location_id"], r["on_hand"]) for r in rows) == sorted(
        (f"{region}-{i}", 8) for region in ("east", "west") for i in range(3))


def test_rewritten_gold_keeps_an_hour_of_replaced_files_by_default(tmp_path):
    ensure_tables(tmp_path)
    url = STOCK_LEVELS.uri(tmp_path)
    for batch in range(1, 4):
        write_region(url, _levels("east", batch), STOCK_LEVELS.schema, "east",
                     app_id="test", batch_id=batch)
    [report] = maintain(tmp_path, tables=[STOCK_LEVELS], say=lambda _line: None)
    assert (report.retain_hours, report.vacuumed) == (1, 0)
    assert len(_data_files(url)) == 3, "a reader of a minute-old version still finds its files"


def test_a_second_maintainer_skips_its_round_instead_of_compacting_twice(tmp_path):
    """Two compactions of the same files at once would both commit in delta-rs, every
    row then twice: while one maintainer holds the lakehouse, another waits."""
    keys = _append_heartbeats(str(tmp_path), 6)
    first = Lease(tmp_path)
    assert first.acquire() is None
    lines: list[str] = []
    assert maintain(tmp_path, tables=[STORE_HEARTBEATS], say=lines.append) == []
    assert "another maintainer holds this lakehouse" in lines[0]
    assert len(_table(STORE_HEARTBEATS.uri(tmp_path)).file_uris()) == 6
    first.release()

    maintain(tmp_path, tables=[STORE_HEARTBEATS], say=lambda _line: None)
    rows = _table(STORE_HEARTBEATS.uri(tmp_path)).to_pyarrow_table().to_pylist()
    assert sorted((r["region"], r["last_seq"]) for r in rows) == sorted(keys)


def _shelflife(*args: str) -> list[str]:
    return [sys.executable, "-m", "apps.cli", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}


def test_maintain_once_prints_a_line_per_table(lake, tmp_path):
    _append_heartbeats(lake, 6)
    done = subprocess.run(_shelflife("maintain", "--once", "--lakehouse", lake),
                          cwd=tmp_path, env=_env(), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    total = len(TABLES)
    assert lines[0] == f"maintain: {lake}"
    assert f"[1/{total}] bronze/events_raw: no table yet, skipped" in lines
    beats = TABLES.index(STORE_HEARTBEATS) + 1
    assert any(line.startswith(f"[{beats}/{total}] silver/store_heartbeats: 6 files -> 2, "
                               "vacuumed 0 files") for line in lines), lines
    forecasts = TABLES.index(DEMAND_FORECASTS) + 1
    assert (f"[{forecasts}/{total}] gold/demand_forecasts: committed by Spark; maintained "
            "by the forecast job") in lines
    assert lines[-1] == "maintain: round done, 0 failed"


def test_maintain_on_a_schedule_stops_cleanly_on_sigterm(tmp_path):
    _append_heartbeats(str(tmp_path / "lake"), 4)
    proc = subprocess.Popen(_shelflife("maintain", "--lakehouse", str(tmp_path / "lake"),
                                       "--every", "3600", "--table",
                                       "silver/store_heartbeats"),
                            cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:
            seen.append(line.strip())
            if line.startswith("maintain: round done"):
                break
        assert "[1/1] silver/store_heartbeats: 4 files -> 2" in seen[1], seen
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert time.monotonic() - started < 10, "it stops at once, not after the hour"
    finally:
        if proc.poll() is None:
            proc.kill()
