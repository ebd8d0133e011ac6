"""Creates the streaming job's Delta tables (empty, partitioned) before any query starts,
each from its catalogue entry."""

from __future__ import annotations

import logging
from pathlib import Path

from pyspark.sql import SparkSession

from lakehouse.catalogue import STREAM_TABLES

from ..schema import spark_schema

log = logging.getLogger(__name__)

_CREATED_CONCURRENTLY = {"ProtocolChangedException", "MetadataChangedException",
                         "ConcurrentAppendException", "ConcurrentWriteException"}
"""Delta's errors for a table another writer created between the check and the write."""


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
        try:
            writer.mode("ignore").save(str(path))
        except Exception as exc:
            # Shards (one stream driver per region) started together race to create the
            # same empty tables; losing that race leaves the winner's table, which is
            # all this wanted.
            if type(exc).__name__ not in _CREATED_CONCURRENTLY:
                raise
            log.info("%s: created by another stream driver meanwhile", table.name)
