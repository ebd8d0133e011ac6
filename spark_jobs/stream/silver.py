"""Landing lines -> silver ``events`` (typed, one row per ``(location_id, seq)``) and
``dead_letters``."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lakehouse.contract import spark_schema

from .bronze import ts

EVENTS_PARTITIONS = ("region", "category")
DEAD_LETTERS_SCHEMA = T.StructType([
    T.StructField("region", T.StringType(), False),
    T.StructField("topic", T.StringType()),
    T.StructField("raw", T.BinaryType()),
    T.StructField("reason", T.StringType()),
    T.StructField("received_at", T.TimestampType()),
    T.StructField("source", T.StringType()),
    T.StructField("ingest_batch_id", T.StringType()),
    T.StructField("line", T.LongType()),
])
DEAD_LETTERS_PARTITIONS = ("region",)

def with_parsed(landing: DataFrame) -> DataFrame:
    """Adds ``ev``: the event struct, null for dead letters and unreadable lines."""
    ev = F.from_json(F.col("raw"), spark_schema(), {"mode": "PERMISSIVE"})
    return landing.withColumn("ev", F.when(F.col("kind") == "event", ev))


def dead_letters(parsed: DataFrame) -> DataFrame:
    """Ingest's dead letters, plus any event line Spark could not read."""
    from_ingest = (parsed.where(F.col("kind") == "dead")
                   .select(F.col("region"), F.col("topic"),
                           F.unbase64(F.col("raw_b64")).alias("raw"), F.col("reason"),
                           ts("received_at").alias("received_at"),
                           F.lit("ingest").alias("source"),
                           F.col("batch_id").alias("ingest_batch_id"), F.col("line")))
    unreadable = (parsed.where((F.col("kind") == "event") & F.col("ev.event_id").isNull())
                  .select(F.col("region"), F.col("topic"),
                          F.encode(F.col("raw"), "UTF-8").alias("raw"),
                          F.lit("spark could not parse the event").alias("reason"),
                          ts("received_at").alias("received_at"),
                          F.lit("spark").alias("source"),
                          F.col("batch_id").alias("ingest_batch_id"), F.col("line")))
    return from_ingest.unionByName(unreadable)


def to_events(parsed: DataFrame) -> DataFrame:
    """Typed silver rows for readable events."""
    ev = F.col("ev")
    return (parsed.where((F.col("kind") == "event") & ev["event_id"].isNotNull())
            .select(
                ev["event_id"].alias("event_id"), F.col("region"),
                ev["location_id"].alias("location_id"), ev["seq"].alias("seq"),
                ev["event_type"].alias("event_type"), ev["category"].alias("category"),
                F.to_timestamp(ev["occurred_at"], "yyyy-MM-dd'T'HH:mm:ss.SSSX")
                .alias("occurred_at"),
                ev["offline"].alias("offline"), ev["causation_id"].alias("causation_id"),
                ev["clock"].alias("clock"), ev["agent_version"].alias("agent_version"),
                ev["payload"]["sku"].alias("sku"),
                ev["payload"]["quantity"].alias("quantity"),
                ev["payload"]["stock_before"].alias("stock_before"),
                ev["payload"].alias("payload"),
                F.col("topic"), ts("received_at").alias("received_at"),
                F.col("batch_id").alias("ingest_batch_id"),
                F.current_timestamp().alias("processed_at")))

