"""The lakehouse on a folder or an S3 bucket: locations, clear errors, the landing zone.

S3 here is moto's server on loopback (``tests/s3.py``), reached over HTTP like any bucket.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import write_deltalake

from lakehouse import storage
from lakehouse.catalogue import STOCK_LEVELS
from lakehouse.landing import LandedRecord, landing_backlog, landing_url, landing_writer
from lakehouse.paths import lakehouse_root
from lakehouse.readers import read_table
from tests.s3 import BUCKET

pytestmark = pytest.mark.server


def test_a_folder_root_keeps_state_beside_the_tables(tmp_path):
    root = tmp_path / "lake"
    assert storage.lake_url(root) == str(root)
    assert STOCK_LEVELS.uri(root) == str(root / "gold" / "stock_levels")
    assert lakehouse_root(root) == root


def test_an_s3_root_keeps_state_on_the_local_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("SHELFLIFE_STATE_DIR", str(tmp_path / "state"))
    url = storage.lake_url("s3://bucket/some/prefix/")
    assert url == "s3://bucket/some/prefix"
    assert STOCK_LEVELS.uri(url) == "s3://bucket/some/prefix/gold/stock_levels"
    assert storage.spark_url(STOCK_LEVELS.uri(url)).startswith("s3a://bucket/some/prefix/")
    assert lakehouse_root(url) == tmp_path / "state" / "bucket" / "some" / "prefix"
    with pytest.raises(ValueError, match="on S3"):
        STOCK_LEVELS.path(url)
    with pytest.raises(storage.StorageError, match="s3://bucket/prefix"):
        storage.lake_url("s3:///no-bucket")


def test_a_region_may_land_in_a_bucket_of_its_own(monkeypatch):
    monkeypatch.setenv("SHELFLIFE_LANDING_WEST", "s3://west-only/landing")
    assert landing_url("west", "s3://shared/lake") == "s3://west-only/landing"
    assert landing_url("east", "s3://shared/lake") == "s3://shared/lake/landing/east"


def test_tables_round_trip_through_the_bucket(s3_lake):
    url = STOCK_LEVELS.uri(s3_lake)
    rows = pa.Table.from_pylist([{"region": "east", "location_id": "E001", "sku": "MILK",
                                  "on_hand": 12}], schema=STOCK_LEVELS.schema)
    write_deltalake(url, rows, partition_by=["region"],
                    storage_options=storage.delta_options(url))
    got = read_table(STOCK_LEVELS, s3_lake)
    assert got[["location_id", "sku", "on_hand"]].to_dict("records") == [
        {"location_id": "E001", "sku": "MILK", "on_hand": 12}]


def test_landing_on_s3_puts_whole_batches_and_counts_the_backlog(s3_lake, tmp_path,
                                                                 monkeypatch):
    monkeypatch.setenv("SHELFLIFE_STATE_DIR", str(tmp_path / "state"))
    writer = landing_writer("east", s3_lake, "w1")
    backlog = landing_backlog("east", s3_lake)
    records = [LandedRecord("event", "t", "east", "2026-12-06T10:00:00.000Z", b'{"a":1}'),
               LandedRecord("dead", "t", "east", "2026-12-06T10:00:00.000Z", b"\xff",
                            reason="not UTF-8")]
    batch = writer.prepare(records)
    assert backlog.scan().files == 0, "a prepared batch is not visible before its PUT"
    writer.publish(batch)
    writer.publish(batch)  # a retry after a crash is harmless
    bucket, prefix = storage.split_s3(landing_url("east", s3_lake))
    body = storage.s3_client().get_object(
        Bucket=bucket, Key=f"{prefix}/{batch.final.name}")["Body"].read()
    assert body.count(b"\n") == 2
    # a second counter (another machine) reads the batch to count it
    assert (landing_backlog("east", s3_lake).scan().files,
            landing_backlog("east", s3_lake).scan().events) == (1, 2)
    assert not any((tmp_path / "state").rglob("*.jsonl")), "the local copy goes once PUT"


def test_a_missing_bucket_or_credentials_is_named(s3_endpoint, tmp_path):
    env = {**os.environ, "SHELFLIFE_STATE_DIR": str(tmp_path)}
    cmd = [sys.executable, "-m", "apps.cli", "batch", "forecasts",
           "--lakehouse", "s3://no-such-bucket/lake"]
    cwd = Path(__file__).resolve().parents[2]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=cwd)
    assert out.returncode != 0
    assert "bucket 'no-such-bucket' does not exist" in out.stderr, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    bare = {k: v for k, v in env.items() if not k.startswith("AWS_")}
    bare["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp_path / "none")
    bare["AWS_CONFIG_FILE"] = str(tmp_path / "none")
    bare["AWS_EC2_METADATA_DISABLED"] = "true"
    out = subprocess.run([*cmd[:-1], f"s3://{BUCKET}/lake"], env=bare, capture_output=True,
                         text=True, timeout=120, cwd=cwd)
    assert out.returncode != 0
    assert "no AWS credentials" in out.stderr, out.stderr[-2000:]
