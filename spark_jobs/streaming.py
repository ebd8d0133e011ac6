"""The streaming runner: one Structured Streaming query per region, one-second trigger.

landing/<region>/*.jsonl -> bronze events_raw -> silver events, dead_letters -> gold
stock_cohorts, stock_levels, region_status.

Exactly-once per micro-batch: the stream drops repeated ``(location_id, seq)`` with
checkpointed state, and every write that is not a pure recomputation carries Delta's
idempotent-write id ``(app id, batch id)``, so a batch replayed after a crash skips the
tables it already wrote. Gold cohorts are written before silver events: silver is what
later batches read, so it must not run ahead of gold.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from lakehouse.contract import check_region
from lakehouse.paths import checkpoint_dir, lakehouse_root, landing_dir, table_path

from . import gold, silver
from .bronze import LANDING_SCHEMA, to_events_raw
from .tables import ensure_tables

log = logging.getLogger(__name__)

TXN_APP = "spark.databricks.delta.write.txnAppId"
TXN_VERSION = "spark.databricks.delta.write.txnVersion"


@dataclass(frozen=True)
class StreamConfig:
    """Settings of the per-region streaming queries."""

    lakehouse: str | None = None
    """Lakehouse root (default $SHELFLIFE_LAKEHOUSE or ./lakehouse)."""
    trigger_s: float = 1.0
    """Micro-batch trigger interval."""
    max_files_per_trigger: int = 200
    """Landing batches taken per micro-batch (the region's rate limit)."""
    status_every_s: float = 5.0
    """How often gold region_status is rewritten."""


def _retrying(what: str, fn: Callable[[], object], attempts: int = 6) -> None:
    """Retry Delta conflicts; safe because every write here is idempotent."""
    for i in range(attempts):
        try:
            fn()
            return
        except Exception as exc:  # noqa: BLE001 - Delta raises JVM-wrapped errors
            if "Concurrent" not in type(exc).__name__ + str(exc)[:400] or i == attempts - 1:
                raise
            log.warning("%s: concurrent Delta commit, retrying (%d)", what, i + 1)
            time.sleep(0.05 * (i + 1))


class RegionStream:
    """One region's query and the state its batches keep on the driver."""

    def __init__(self, spark: SparkSession, region: str, config: StreamConfig) -> None:
        self.spark = spark
        self.region = check_region(region)
        self.config = config
        self.root = lakehouse_root(config.lakehouse)
        self.checkpoint = checkpoint_dir(f"stream-{region}", self.root)
        self.app_id = self._app_id()
        self.paths = {name: str(table_path(layer, name, self.root)) for layer, name in (
            ("bronze", "events_raw"), ("silver", "events"), ("silver", "dead_letters"),
            ("gold", "stock_cohorts"), ("gold", "stock_levels"), ("gold", "region_status"))}
        self.count_base = self._load_count_base()
        self.events_total = self._load_events_total()
        self.last_event_at = None
        self._status_written = 0.0
        self.last_batch: dict[str, float] = {}
        self.query: StreamingQuery | None = None

    def _app_id(self) -> str:
        """Idempotent-write id tied to this checkpoint: a new checkpoint gets a new id."""
        self.checkpoint.mkdir(parents=True, exist_ok=True)
        marker = self.checkpoint / "shelflife-app-id"
        if not marker.exists():
            marker.write_text(f"shelflife-{self.region}-{uuid.uuid4().hex[:12]}")
        return marker.read_text().strip()

    def _silver(self) -> DataFrame:
        return (self.spark.read.format("delta").load(self.paths["events"])
                .where(F.col("region") == self.region))

    def _load_count_base(self) -> dict[str, int]:
        rows = (self._silver().where((F.col("category") == "operational")
                                     & (F.col("event_type") == "counted"))
                .groupBy("location_id").agg(F.max("seq").alias("c")).collect())
        return {r["location_id"]: int(r["c"]) for r in rows}

    def _load_events_total(self) -> int:
        return self._silver().count()

    # --- the query ---------------------------------------------------------------------

    def start(self) -> StreamingQuery:
        src = landing_dir(self.region, self.root)
        src.mkdir(parents=True, exist_ok=True)
        stream = (self.spark.readStream.schema(LANDING_SCHEMA)
                  .option("maxFilesPerTrigger", self.config.max_files_per_trigger)
                  .option("cleanSource", "delete")
                  .json(str(src)))
        deduped = silver.with_parsed(stream).dropDuplicates(["dedup_key"])
        self.query = (deduped.writeStream.queryName(f"shelflife-{self.region}")
                      .foreachBatch(self.process_batch)
                      .option("checkpointLocation", str(self.checkpoint / "query"))
                      .trigger(processingTime=f"{self.config.trigger_s} seconds")
                      .start())
        return self.query

    def process_batch(self, batch: DataFrame, batch_id: int) -> None:
        started = time.time()
        spark = batch.sparkSession
        spark.sparkContext.setLocalProperty("spark.scheduler.pool", self.region)
        batch = batch.persist()
        try:
            events = silver.to_events(batch).persist()
            self._append(to_events_raw(batch, batch_id), "events_raw", batch_id)
            info = (events.groupBy("location_id")
                    .agg(F.max("seq").alias("last_seq"),
                         F.max(F.when(F.col("event_type") == "counted", F.col("seq")))
                         .alias("count_seq"),
                         F.count(F.lit(1)).alias("n"),
                         F.max("occurred_at").alias("newest"))
                    .collect())
            if info:
                self._apply_gold(spark, events, info, batch_id)
            self._append(events.drop("processed_at")
                         .withColumn("processed_at", F.current_timestamp()),
                         "events", batch_id, partition=silver.EVENTS_PARTITIONS)
            self._append(silver.dead_letters(batch), "dead_letters", batch_id)
            for r in info:
                if r["count_seq"] is not None and r["count_seq"] > self.count_base.get(
                        r["location_id"], 0):
                    self.count_base[r["location_id"]] = int(r["count_seq"])
            n = sum(int(r["n"]) for r in info)
            self.events_total += n
            newest = max((r["newest"] for r in info if r["newest"] is not None), default=None)
            if newest is not None:
                self.last_event_at = max(newest, self.last_event_at or newest)
            self.last_batch = {"batch_id": batch_id, "events": n,
                               "duration_s": time.time() - started, "finished_at": time.time()}
            if time.time() - self._status_written >= self.config.status_every_s:
                self._write_status(spark)
            events.unpersist()
        finally:
            batch.unpersist()

    # --- writes ------------------------------------------------------------------------

    def _append(self, df: DataFrame, table: str, batch_id: int,
                partition: tuple[str, ...] = ("region",)) -> None:
        def write() -> None:
            (df.write.format("delta").mode("append")
             .option("txnAppId", f"{self.app_id}-{table}").option("txnVersion", batch_id)
             .partitionBy(*partition).save(self.paths[table]))
        _retrying(f"{self.region} {table}", write)

    def _apply_gold(self, spark: SparkSession, events: DataFrame, info: list,
                    batch_id: int) -> None:
        touched = [r["location_id"] for r in info]
        resets = {r["location_id"]: int(r["count_seq"]) for r in info
                  if r["count_seq"] is not None
                  and r["count_seq"] > self.count_base.get(r["location_id"], 0)}
        base = {loc: self.count_base[loc] for loc in touched if loc in self.count_base}
        history = self._silver() if resets else None
        changes = gold.cohort_changes(events, base, resets, history)
        region = self.region
        cohorts = DeltaTable.forPath(spark, self.paths["stock_cohorts"])
        now = F.current_timestamp()
        merge = (cohorts.alias("t").merge(
            changes.alias("s"),
            f"t.region = '{region}' AND t.region = s.region AND t.location_id = s.location_id"
            " AND t.sku = s.sku AND t.lot = s.lot")
            .whenMatchedDelete("s.mode = 'add' AND t.quantity + s.quantity = 0")
            .whenMatchedDelete("s.mode = 'set' AND s.quantity = 0")
            .whenMatchedUpdate("s.mode = 'add'", {
                "quantity": "t.quantity + s.quantity",
                "expires_on": "coalesce(t.expires_on, s.expires_on)", "updated_at": now})
            .whenMatchedUpdate("s.mode = 'set'", {
                "quantity": "s.quantity",
                "expires_on": "coalesce(s.expires_on, t.expires_on)", "updated_at": now})
            .whenNotMatchedInsert("s.quantity != 0", {
                "region": "s.region", "location_id": "s.location_id", "sku": "s.sku",
                "lot": "s.lot", "expires_on": "s.expires_on", "quantity": "s.quantity",
                "updated_at": now}))
        if resets:
            merge = merge.whenNotMatchedBySourceDelete(
                f"t.region = '{region}' AND t.location_id IN ({_sql_list(resets)})")

        def write_cohorts() -> None:
            spark.conf.set(TXN_APP, f"{self.app_id}-stock_cohorts")
            spark.conf.set(TXN_VERSION, str(batch_id))
            try:
                merge.execute()
            finally:
                spark.conf.unset(TXN_APP)
                spark.conf.unset(TXN_VERSION)

        _retrying(f"{region} stock_cohorts", write_cohorts)

        # Levels are recomputed from the cohorts of the touched locations, so running
        # this twice gives the same table: no idempotency id needed.
        last_seq = {r["location_id"]: int(r["last_seq"]) for r in info}
        current = (spark.read.format("delta").load(self.paths["stock_cohorts"])
                   .where((F.col("region") == region) & F.col("location_id").isin(touched)))
        lv = gold.levels(current, last_seq)
        levels = DeltaTable.forPath(spark, self.paths["stock_levels"])
        lmerge = (levels.alias("t").merge(
            lv.alias("s"),
            f"t.region = '{region}' AND t.region = s.region AND t.location_id = s.location_id"
            " AND t.sku = s.sku")
            .whenMatchedUpdate(set={
                "on_hand": "s.on_hand", "cohorts": "s.cohorts",
                "earliest_expiry": "s.earliest_expiry",
                "last_seq": "greatest(t.last_seq, s.last_seq)", "updated_at": "s.updated_at"})
            .whenNotMatchedInsertAll()
            .whenNotMatchedBySourceUpdate(
                f"t.region = '{region}' AND t.location_id IN ({_sql_list(touched)})"
                " AND (t.on_hand != 0 OR t.cohorts != 0)",
                {"on_hand": "0", "cohorts": "0", "earliest_expiry": "null",
                 "updated_at": now}))
        _retrying(f"{region} stock_levels", lmerge.execute)

    def _write_status(self, spark: SparkSession) -> None:
        now = time.time()
        last = self.last_batch
        lag = None
        if self.last_event_at is not None:
            lag = max(0.0, now - self.last_event_at.timestamp())
        row = [(self.region, "live", int(self.events_total), int(last.get("events", 0)),
                float(last.get("duration_s", 0.0)), self.last_event_at, lag)]
        df = (spark.createDataFrame(row, "region string, mode string, events_total long, "
                                         "events_last_batch long, batch_duration_s double, "
                                         "last_event_at timestamp, lag_s double")
              .withColumn("updated_at", F.current_timestamp()))
        _retrying(f"{self.region} region_status", lambda: (
            df.write.format("delta").mode("overwrite")
            .option("replaceWhere", f"region = '{self.region}'")
            .save(self.paths["region_status"])))
        self._status_written = now


def _sql_list(values) -> str:
    return ", ".join("'" + str(v).replace("'", "''") + "'" for v in values)


def start_streams(spark: SparkSession, regions: list[str], config: StreamConfig
                  ) -> list[RegionStream]:
    """Create missing tables, then start one query per region."""
    ensure_tables(spark, lakehouse_root(config.lakehouse))
    streams = [RegionStream(spark, r, config) for r in regions]
    for s in streams:
        s.start()
    return streams


def run_streams(regions: list[str], config: StreamConfig, *,
                stop: threading.Event | None = None) -> None:
    """Run until ``stop`` is set (or forever), printing a line per region every 10 s."""
    from lakehouse.spark import spark_session

    spark = spark_session("shelflife-streaming")
    streams = start_streams(spark, regions, config)
    stop = stop or threading.Event()
    try:
        last = time.monotonic()
        while not stop.wait(1.0):
            for s in streams:
                if s.query is not None and s.query.exception() is not None:
                    raise RuntimeError(f"region {s.region} query failed: "
                                       f"{s.query.exception()}")
            if time.monotonic() - last >= 10:
                last = time.monotonic()
                for s in streams:
                    b = s.last_batch
                    print(f"stream {s.region}: events={s.events_total} last batch "
                          f"{b.get('events', 0)} in {b.get('duration_s', 0):.2f}s", flush=True)
    finally:
        for s in streams:
            if s.query is not None:
                s.query.stop()

