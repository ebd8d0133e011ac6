"""The catalogue is what is on disk: every table its writers create has exactly the
catalogue's columns, types, nullability, partitions and properties. A column that drifts
in one writer would show up as a missing or mistyped column in the dashboard or a
notebook."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from deltalake import DeltaTable, Schema

from lakehouse import catalogue
from lakehouse.catalogue import Table
from lakehouse.contract import PAYLOAD_FIELDS
from lakehouse.decisions import record_decision
from lakehouse.logtidy import TIDY_EVERY


def assert_on_disk(table: Table, root: Path) -> None:
    """The Delta table at ``table.path(root)`` is exactly the catalogue's."""
    delta = DeltaTable(str(table.path(root)))
    found = json.loads(delta.schema().to_json())["fields"]
    declared = json.loads(Schema.from_arrow(table.schema).to_json())["fields"]
    assert [f["name"] for f in found] == [f["name"] for f in declared], table
    for got, want in zip(found, declared, strict=True):
        assert got == want, f"{table}.{want['name']}"
    metadata = delta.metadata()
    assert tuple(metadata.partition_columns) == table.partitions, table
    config = metadata.configuration
    assert {k: config.get(k) for k in table.properties} == dict(table.properties), table


def test_every_table_is_found_by_layer_and_name_and_lives_in_its_folder(tmp_path):
    for table in catalogue.TABLES:
        assert catalogue.table(table.layer, table.name) is table
        assert table.path(tmp_path) == tmp_path.resolve() / table.layer / table.name
    assert len({t.name for t in catalogue.TABLES}) == len(catalogue.TABLES)
    with pytest.raises(KeyError, match="gold/stock_level: no such table"):
        catalogue.table("gold", "stock_level")


def test_a_table_whose_partitions_are_not_columns_is_refused():
    with pytest.raises(ValueError, match="partitions"):
        Table("gold", "bad", catalogue.REGION_STATUS.schema, ("day",), "delta-rs",
              ("stream",), "refused")
    with pytest.raises(ValueError, match="layer"):
        Table("platinum", "bad", catalogue.REGION_STATUS.schema, (), "delta-rs",
              ("stream",), "refused")


def test_silver_events_hold_every_payload_field_of_the_contract():
    payload = catalogue.EVENTS.schema.field("payload").type
    assert [payload.field(i).name for i in range(payload.num_fields)] == list(PAYLOAD_FIELDS)
    assert catalogue.EVENT_ENVELOPE.field("payload").type == payload


def test_gold_rewritten_every_second_keeps_minutes_of_log_and_an_hour_of_files():
    assert {t.name for t in catalogue.REWRITTEN_TABLES} == {
        "stock_cohorts", "stock_levels", "region_status", "review_queue", "daily_movements",
        "demand_trends", "network_availability", "business_metrics"}
    for table in catalogue.REWRITTEN_TABLES:
        assert table.properties["delta.deletedFileRetentionDuration"] == "interval 1 hours"
        assert table.properties["delta.logRetentionDuration"].endswith("minutes")


def test_the_stock_tables_log_stays_short_however_long_the_stream_runs(tmp_path):
    # delta-rs lists the whole _delta_log after each commit on a local disk, so a log that
    # kept a day of commits made each of the stream's commits slower by the hour. Commits
    # older than the table's log retention go at the writer's next tidy round (every
    # TIDY_EVERY commits), up to the checkpoint that covers them.
    from spark_jobs.stream.gold import write_region
    from spark_jobs.stream.tables import ensure_tables

    ensure_tables(tmp_path)
    url = catalogue.STOCK_LEVELS.uri(tmp_path)
    row = tuple({"region": "east", "location_id": "S1", "sku": "MILK", "on_hand": 3,
                 "seqs_after_gap": []}.get(f.name) for f in catalogue.STOCK_LEVELS.schema)
    for batch in range(60):
        write_region(url, [row], catalogue.STOCK_LEVELS.schema, "east", app_id="t",
                     batch_id=batch)
    log = Path(url) / "_delta_log"
    an_hour_ago = time.time() - 3600  # what a long run's early commits look like
    for commit in log.glob("*.json"):
        os.utime(commit, (an_hour_ago, an_hour_ago))
    for batch in range(60, 60 + TIDY_EVERY):  # past a checkpoint and a tidy round
        write_region(url, [row], catalogue.STOCK_LEVELS.schema, "east", app_id="t",
                     batch_id=batch)
    kept = sorted(int(f.name[:20]) for f in log.glob("*.json"))
    # the aged commits are gone up to the checkpoint that covers them (version 50)
    assert kept[0] >= 49 and len(kept) <= TIDY_EVERY + 12, (kept[0], len(kept))
    table = DeltaTable(url)
    assert table.version() == 60 + TIDY_EVERY and table.to_pyarrow_table().num_rows == 1


def test_tables_the_jobs_and_people_write_with_delta_rs_match_the_catalogue(tmp_path):
    from spark_jobs.decisions import jobs, reference

    batch = (catalogue.FORECAST_HISTORY, catalogue.FORECAST_ACCURACY,
             catalogue.TRANSFER_OUTCOMES, catalogue.REORDER_SUGGESTIONS)
    for table in batch:
        jobs.write_table(table, table.schema.empty_table().to_pandas(), tmp_path)
    rec = {name: None for name in catalogue.TRANSFER_RECOMMENDATIONS.schema.names}
    rec.update(recommendation_id="R1", created_at=datetime.now(UTC))
    jobs.write_table(catalogue.TRANSFER_RECOMMENDATIONS, pd.DataFrame([rec]), tmp_path)
    record_decision("R1", "approved", "ana", root=tmp_path)
    reference.upsert("locations", [{"location_id": "E001", "region": "east",
                                    "kind": "store"}], tmp_path)
    reference.upsert("transit_times", [{"source": "E001", "destination": "E002",
                                        "transit_hours": 5.0}], tmp_path)
    reference.upsert("sellable_policy", [{"category": "dairy", "destination_kind": "store",
                                          "min_sellable_days": 1.5}], tmp_path)
    for table in (*batch, catalogue.TRANSFER_RECOMMENDATIONS, catalogue.TRANSFER_DECISIONS,
                  catalogue.LOCATIONS, catalogue.TRANSIT_TIMES, catalogue.SELLABLE_POLICY):
        assert table.engine == "delta-rs"
        assert_on_disk(table, tmp_path)


@pytest.mark.spark
def test_tables_spark_creates_match_the_catalogue(spark, tmp_path):
    from spark_jobs.decisions.forecast import run_forecasts
    from spark_jobs.stream.tables import ensure_tables

    ensure_tables(tmp_path)
    for table in catalogue.STREAM_TABLES:
        assert_on_disk(table, tmp_path)
    assert run_forecasts(spark, tmp_path) == 0  # no sales yet: an empty table
    assert_on_disk(catalogue.DEMAND_FORECASTS, tmp_path)
    created = set(catalogue.STREAM_TABLES) | {catalogue.DEMAND_FORECASTS}
    writers = {catalogue.FORECAST_HISTORY, catalogue.FORECAST_ACCURACY,
               catalogue.TRANSFER_OUTCOMES, catalogue.REORDER_SUGGESTIONS,
               catalogue.TRANSFER_RECOMMENDATIONS, catalogue.TRANSFER_DECISIONS,
               catalogue.LOCATIONS, catalogue.TRANSIT_TIMES, catalogue.SELLABLE_POLICY,
               catalogue.STORE_HEARTBEATS,  # these two: tests/ingest/test_heartbeats.py
               catalogue.BROKER_HEALTH,
               catalogue.PURCHASE_ORDERS,  # tests/lakehouse/test_purchase_orders.py
               catalogue.LOT_HOLDS}  # tests/lakehouse/test_recalls.py
    assert created | writers == set(catalogue.TABLES), "every table is checked somewhere"
