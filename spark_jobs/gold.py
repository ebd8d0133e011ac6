"""Silver events -> gold ``stock_cohorts`` and ``stock_levels``.

The state of a location is its latest count plus every later movement:
``cohorts = snapshot(C) + sum(movements with seq > C)``, where ``C`` is the seq of the
location's latest ``counted`` event (0 when it never counted). That rule gives the fold of
the location's events in seq order whatever order they arrive in: a movement older than
the latest count is already inside the count, and a movement newer than it is a delta.

Each micro-batch therefore produces rows of two modes for the MERGE into
``stock_cohorts``: ``add`` (a delta onto what is there) and ``set`` (a location whose
latest count just changed, rebuilt from that count and its later movements).
"""

from __future__ import annotations

from collections.abc import Mapping

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from .silver import count_snapshots, movements

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
    T.StructField("last_seq", T.LongType()),
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
])
PARTITIONS = ("region",)


def lookup(mapping: Mapping[str, int], key: Column, default: int = 0) -> Column:
    """A small driver-side dict as a Spark expression (no join, no extra job)."""
    if not mapping:
        return F.lit(default).cast("long")
    flat = [x for k, v in mapping.items() for x in (F.lit(k), F.lit(int(v)).cast("long"))]
    return F.coalesce(F.create_map(*flat)[key], F.lit(default).cast("long"))


def _sum_by_cohort(rows: DataFrame, mode: str) -> DataFrame:
    return (rows.groupBy("region", "location_id", "sku", "lot")
            .agg(F.sum("quantity").alias("quantity"),
                 F.max(F.to_date("expires_on")).alias("expires_on"))
            .withColumn("mode", F.lit(mode)))


def cohort_changes(fresh: DataFrame, count_base: Mapping[str, int],
                   resets: Mapping[str, int], history: DataFrame | None) -> DataFrame:
    """Rows for the ``stock_cohorts`` MERGE.

    ``fresh``: this batch's new silver events. ``count_base``: each location's latest
    count seq before this batch. ``resets``: locations whose latest count is in this
    batch, with its seq. ``history``: earlier silver events of the reset locations (only
    needed when a count arrives after events that followed it).
    """
    loc = F.col("location_id")
    moves = movements(fresh)
    adds = moves.where(F.col("seq") > lookup(count_base, loc))
    if resets:
        adds = adds.where(~loc.isin(list(resets)))
    out = _sum_by_cohort(adds, "add")
    if resets:
        new_base = lookup(resets, loc)
        snap = count_snapshots(fresh).where(loc.isin(list(resets)) & (F.col("seq") == new_base))
        later = moves.where(loc.isin(list(resets)) & (F.col("seq") > new_base))
        if history is not None:
            later = later.unionByName(
                movements(history.where(loc.isin(list(resets))))
                .where(F.col("seq") > new_base))
        out = out.unionByName(_sum_by_cohort(snap.unionByName(later), "set"))
    return out


def levels(cohorts: DataFrame, last_seq: Mapping[str, int]) -> DataFrame:
    """Per location and SKU: on hand, live cohorts, earliest expiry of positive stock."""
    q = F.col("quantity")
    return (cohorts.groupBy("region", "location_id", "sku")
            .agg(F.sum(q).cast("long").alias("on_hand"),
                 F.count(F.when(q != 0, True)).cast("int").alias("cohorts"),
                 F.min(F.when(q > 0, F.col("expires_on"))).alias("earliest_expiry"))
            .withColumn("last_seq", lookup(last_seq, F.col("location_id")))
            .withColumn("updated_at", F.current_timestamp()))
