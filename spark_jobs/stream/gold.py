"""Gold tables written by the streaming job: schemas, and the per-region rewrite.

``stock_cohorts`` and ``stock_levels`` are rewritten per region partition from the
region's :class:`~spark_jobs.stream.fold.RegionState` on every micro-batch that changes it.
That rewrite is committed from the Spark driver with delta-rs: it is a few thousand rows,
and a delta-rs commit takes tens of milliseconds where a Spark Delta commit takes a few
hundred, which is the difference between one-second and several-second freshness on a
two-core machine. Spark creates the tables and reads them like any other Delta table.
"""

from __future__ import annotations

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from pyspark.sql import types as T

COHORTS_SCHEMA = T.StructType([
    T.StructField("region", T.StringType(), False),
    T.StructField("location_id", T.StringType(), False),
    T.StructField("sku", T.StringType(), False),
    T.StructField("lot", T.StringType(), False),
    T.StructField("expires_on", T.DateType()),
    T.StructField("quantity", T.LongType()),
    T.StructField("updated_at", T.TimestampType()),
])
LEVELS_SCHEMA = T.StructType([
    T.StructField("region", T.StringType(), False),
    T.StructField("location_id", T.StringType(), False),
    T.StructField("sku", T.StringType(), False),
    T.StructField("on_hand", T.LongType()),
    T.StructField("cohorts", T.IntegerType()),
    T.StructField("earliest_expiry", T.DateType()),
    T.StructField("sellable", T.LongType()),
    T.StructField("expiring_48h", T.LongType()),
    T.StructField("expired", T.LongType()),
    T.StructField("in_transit_in", T.LongType()),
    T.StructField("in_transit_out", T.LongType()),
    T.StructField("last_seq", T.LongType()),
    T.StructField("last_count_seq", T.LongType()),
    T.StructField("contiguous_seq", T.LongType()),
    T.StructField("seqs_after_gap", T.ArrayType(T.LongType())),
    T.StructField("updated_at", T.TimestampType()),
])
REGION_STATUS_SCHEMA = T.StructType([
    T.StructField("region", T.StringType(), False),
    T.StructField("mode", T.StringType()),
    T.StructField("events_total", T.LongType()),
    T.StructField("events_last_batch", T.LongType()),
    T.StructField("batch_duration_s", T.DoubleType()),
    T.StructField("last_event_at", T.TimestampType()),
    T.StructField("lag_s", T.DoubleType()),
    T.StructField("updated_at", T.TimestampType()),
    T.StructField("minutes_behind", T.DoubleType()),
    T.StructField("backlog_events", T.LongType()),
    T.StructField("backlog_files", T.LongType()),
    T.StructField("events_per_s", T.DoubleType()),
])
PARTITIONS = ("region",)


_ARROW = {
    "string": pa.string(), "bigint": pa.int64(), "int": pa.int32(), "double": pa.float64(),
    "date": pa.date32(), "timestamp": pa.timestamp("us", tz="UTC"), "boolean": pa.bool_(),
    "array<bigint>": pa.list_(pa.int64()),
}


def arrow_schema(struct: T.StructType) -> pa.Schema:
    """The Arrow twin of a flat Spark schema (declared once, in Spark terms)."""
    return pa.schema([pa.field(f.name, _ARROW[f.dataType.simpleString()], f.nullable)
                      for f in struct.fields])


_OPEN: dict[tuple[str, str], DeltaTable] = {}


def _table(path: str, region: str) -> DeltaTable:
    """The writer's own handle on a gold table, kept between batches.

    Opening a table replays its log since the last checkpoint, which at one commit a
    second is most of a small write's cost. Each region keeps its own handle (its batches
    run one at a time), and a commit by another region is resolved by delta-rs's conflict
    check: the regions overwrite disjoint partitions.
    """
    key = (path, region)
    if key not in _OPEN:
        _OPEN[key] = DeltaTable(path)
    return _OPEN[key]


def write_region(path: str, rows: list[tuple], struct: T.StructType, region: str, *,
                 app_id: str, batch_id: int) -> None:
    """Replace one region's partition, recording ``(app_id, batch_id)`` in the commit."""
    schema = arrow_schema(struct)
    columns = list(zip(*rows, strict=True)) if rows else [[] for _ in schema]
    table = pa.Table.from_arrays([pa.array(c, type=f.type) for c, f in
                                  zip(columns, schema, strict=True)], schema=schema)
    try:
        write_deltalake(_table(path, region), table, mode="overwrite",
                        predicate=f"region = '{region}'",
                        commit_properties=CommitProperties(
                            app_transactions=[Transaction(app_id, batch_id)],
                            max_commit_retries=20))
    except Exception:
        _OPEN.pop((path, region), None)  # reopen from the log next time
        raise
