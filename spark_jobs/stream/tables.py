"""Creates the streaming job's Delta tables (empty, partitioned) before any query starts.

Schemas are declared next to the transform that writes them; the silver ones are taken
from the transform itself, so they cannot drift.
"""

from __future__ import annotations

from pathlib import Path

from pyspark.sql import SparkSession
from pyspark.sql import types as T

from lakehouse.paths import table_path

from . import derived, gold, silver
from .bronze import EVENTS_RAW_PARTITIONS, EVENTS_RAW_SCHEMA, LANDING_SCHEMA


def _silver_events_schema(spark: SparkSession) -> T.StructType:
    empty = spark.createDataFrame([], LANDING_SCHEMA)
    return silver.to_events(silver.with_parsed(empty)).schema


def table_specs(spark: SparkSession) -> dict[tuple[str, str], tuple[T.StructType, tuple]]:
    return {
        ("bronze", "events_raw"): (EVENTS_RAW_SCHEMA, EVENTS_RAW_PARTITIONS),
        ("silver", "events"): (_silver_events_schema(spark), silver.EVENTS_PARTITIONS),
        ("silver", "dead_letters"): (silver.DEAD_LETTERS_SCHEMA, silver.DEAD_LETTERS_PARTITIONS),
        ("gold", "stock_cohorts"): (gold.COHORTS_SCHEMA, gold.PARTITIONS),
        ("gold", "stock_levels"): (gold.LEVELS_SCHEMA, gold.PARTITIONS),
        ("gold", "region_status"): (gold.REGION_STATUS_SCHEMA, gold.PARTITIONS),
        **{key: (schema, derived.PARTITIONS[key]) for key, schema in derived.SCHEMAS.items()},
    }


GOLD_REWRITTEN = ("stock_cohorts", "stock_levels", "region_status", "review_queue",
                  "daily_movements", "demand_trends", "network_availability",
                  "business_metrics")
GOLD_PROPERTIES = {
    # Gold partitions are rewritten every second: keep a day of history for time travel
    # and let files replaced more than an hour ago be vacuumed (see maintenance).
    "delta.logRetentionDuration": "interval 1 days",
    "delta.deletedFileRetentionDuration": "interval 1 hours",
}


def ensure_tables(spark: SparkSession, root: Path) -> None:
    """Create each missing table with its schema and partitioning; leave others alone."""
    for (layer, name), (schema, parts) in table_specs(spark).items():
        path = table_path(layer, name, root)
        if (path / "_delta_log").exists():
            continue
        writer = spark.createDataFrame([], schema).write.format("delta")
        if parts:
            writer = writer.partitionBy(*parts)
        if layer == "gold" and name in GOLD_REWRITTEN:
            for key, value in GOLD_PROPERTIES.items():
                writer = writer.option(key, value)
        writer.mode("ignore").save(str(path))
