"""Creates the streaming job's Delta tables (empty, partitioned) before any query starts,
each from its catalogue entry."""

from __future__ import annotations

from pathlib import Path

from pyspark.sql import SparkSession

from lakehouse.catalogue import STREAM_TABLES

from ..schema import spark_schema


def ensure_tables(spark: SparkSession, root: Path) -> None:
    """Create each missing table with its schema, partitioning and properties; leave
    others alone."""
    for table in STREAM_TABLES:
        path = table.path(root)
        if (path / "_delta_log").exists():
            continue
        writer = spark.createDataFrame([], spark_schema(table)).write.format("delta")
        if table.partitions:
            writer = writer.partitionBy(*table.partitions)
        for key, value in table.properties.items():
            writer = writer.option(key, value)
        writer.mode("ignore").save(str(path))
