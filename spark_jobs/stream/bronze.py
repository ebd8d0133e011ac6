"""Landing lines -> bronze ``events_raw``: every accepted payload, byte for byte."""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lakehouse.landing import LINE_FIELDS

LANDING_SCHEMA = T.StructType([
    T.StructField(name, T.LongType() if kind is int else T.StringType())
    for name, kind in LINE_FIELDS.items()])
"""A landing line (:data:`lakehouse.landing.LINE_FIELDS`) as Spark reads it."""

EVENTS_RAW_SCHEMA = T.StructType([
    T.StructField("region", T.StringType(), False),
    T.StructField("topic", T.StringType()),
    T.StructField("payload", T.BinaryType()),
    T.StructField("received_at", T.TimestampType()),
    T.StructField("ingest_batch_id", T.StringType()),
    T.StructField("line", T.LongType()),
    T.StructField("stream_batch_id", T.LongType()),
])
EVENTS_RAW_PARTITIONS = ("region",)


def ts(col: str) -> Column:
    """Contract timestamps (``...sss'Z'``) to Spark timestamps."""
    return F.to_timestamp(F.col(col), "yyyy-MM-dd'T'HH:mm:ss.SSSX")


def to_events_raw(landing: DataFrame, stream_batch_id: int | Column) -> DataFrame:
    """Accepted lines only; dead letters go to ``silver/dead_letters`` instead."""
    batch = stream_batch_id if isinstance(stream_batch_id, Column) else F.lit(stream_batch_id)
    return (landing.where(F.col("kind") == "event")
            .select(F.col("region"), F.col("topic"),
                    F.encode(F.col("raw"), "UTF-8").alias("payload"),
                    ts("received_at").alias("received_at"),
                    F.col("batch_id").alias("ingest_batch_id"), F.col("line"),
                    batch.cast("long").alias("stream_batch_id")))
