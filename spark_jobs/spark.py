"""The one place a Spark session with Delta Lake is made.

The Delta jar comes from Maven Central through ``spark.jars.packages`` and is cached in
``~/.ivy2.5.2`` after the first run. Python pins ``delta-spark==4.4.1``; the matching jar
for Spark 4.2 on Maven Central is ``delta-spark_4.2_2.13:4.4.0`` (4.4.1 of that artifact
is not published there), which is what :data:`DELTA_PACKAGE` names. Override with
``SHELFLIFE_DELTA_PACKAGE`` if your mirror has another build.

The settings favour latency of small, frequent commits on a small machine: one shuffle
partition, one partition for Delta snapshot state, no adaptive execution, no UI.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from lakehouse.storage import HADOOP_AWS_PACKAGE, is_s3, lake_url, spark_s3_conf

DELTA_PACKAGE = os.environ.get("SHELFLIFE_DELTA_PACKAGE", "io.delta:delta-spark_4.2_2.13:4.4.0")

LOW_LATENCY_CONF: dict[str, str] = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "1",
    "spark.default.parallelism": "2",
    "spark.sql.adaptive.enabled": "false",
    # A micro-batch holds a few hundred rows: compiling generated code for it (Janino,
    # in every batch) costs far more CPU than interpreting the expressions.
    "spark.sql.codegen.wholeStage": "false",
    "spark.sql.codegen.factoryMode": "NO_CODEGEN",
    # Landing batches are a few kilobytes each: read all of a trigger's files in one task
    # instead of one task per file (the default assumes 4 MB of cost to open a file).
    "spark.sql.files.openCostInBytes": "16384",
    "spark.sql.files.minPartitionNum": "1",
    "spark.databricks.delta.snapshotPartitions": "1",
    # Delta's VACUUM lists the table in this many tasks (Spark's default, 10,000): after
    # each forecast run that was a 10,000-task stage over two folders, 217 s on a
    # standalone cluster's executor. A table of Shelflife's size lists in a few.
    "spark.sql.sources.parallelPartitionDiscovery.parallelism": "8",
    "spark.databricks.delta.merge.repartitionBeforeWrite.enabled": "false",
    "spark.sql.streaming.stateStore.providerClass":
        "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider",
    # Changelog checkpointing: each batch persists only the keys it added instead of a
    # RocksDB snapshot, which is most of a small batch's cost otherwise.
    "spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled": "true",
    "spark.scheduler.mode": "FAIR",
    "spark.sql.session.timeZone": "UTC",
    "spark.driver.memory": "3g",
    "spark.sql.streaming.noDataMicroBatches.enabled": "false",
    # Delta writes checkpoints of its log every N commits; frequent tiny commits make
    # that the main source of latency spikes, so do it less often.
    "spark.databricks.delta.properties.defaults.checkpointInterval": "50",
    "spark.databricks.delta.properties.defaults.enableDeletionVectors": "false",
    # Compaction of bronze/silver runs in the streaming job's maintenance loop instead of
    # after every commit, where it competed with the one-second live path for the cores.
    "spark.databricks.delta.autoCompact.enabled": "false",
    # A streaming query writes two checkpoint files per trigger (offsets, commits). The
    # default FileContext manager renames each one through Hadoop's local file system,
    # which forks a `readlink` process per rename, and writes a .crc beside every file:
    # with both, one idle-ish region's query cost 0.33 of a core; with the FileSystem
    # manager and the raw local file system, 0.21 (bench/stream_cpu.py's README notes).
    # Rename on a local disk is atomic (rename(2)), which is all the manager needs.
    "spark.sql.streaming.checkpointFileManagerClass":
        "org.apache.spark.sql.execution.streaming.checkpointing."
        "FileSystemBasedCheckpointFileManager",
    "spark.hadoop.fs.file.impl": "org.apache.hadoop.fs.RawLocalFileSystem",
}


_POOL = ("  <pool name=\"{}\"><schedulingMode>FIFO</schedulingMode><weight>{}</weight>"
         "<minShare>{}</minShare></pool>\n")
FAIR_POOLS = ('<?xml version="1.0"?>\n<allocations>\n'
              + "".join(_POOL.format(r, 4, 1) for r in ("east", "central", "west"))
              + _POOL.format("record", 1, 0) + "</allocations>\n")
"""One pool per region's live query, and a low-weight pool for bronze/silver writes."""


def _pools_file() -> str:
    path = Path(tempfile.gettempdir()) / "shelflife-fairscheduler.xml"
    if not path.exists() or path.read_text() != FAIR_POOLS:
        path.write_text(FAIR_POOLS)
    return str(path)


def cluster_conf(master: str) -> dict[str, str]:
    """Settings a ``spark://`` master needs, and the event log wherever one is asked for.

    Executors of a standalone cluster connect back to the driver, so it must listen on an
    address they reach (``SHELFLIFE_SPARK_DRIVER_HOST``, default loopback, for a cluster on
    this machine); they start Python workers with this interpreter and import Shelflife
    from the folder the driver imports it from (same path on every worker). An event log
    (``SHELFLIFE_SPARK_EVENT_LOG``, a folder) keeps each task's executor, run and CPU time.
    """
    conf: dict[str, str] = {}
    if master.startswith("spark://"):
        host = os.environ.get("SHELFLIFE_SPARK_DRIVER_HOST", "127.0.0.1")
        code = str(Path(__file__).resolve().parents[1])
        conf |= {"spark.driver.host": host,
                 "spark.driver.bindAddress": os.environ.get("SHELFLIFE_SPARK_DRIVER_BIND",
                                                            host),
                 "spark.pyspark.python": os.environ["PYSPARK_PYTHON"],
                 "spark.executorEnv.PYTHONPATH": os.pathsep.join(
                     p for p in (code, os.environ.get("PYTHONPATH", "")) if p)}
    if log := os.environ.get("SHELFLIFE_SPARK_EVENT_LOG"):
        Path(log).mkdir(parents=True, exist_ok=True)
        conf |= {"spark.eventLog.enabled": "true",
                 "spark.eventLog.dir": Path(log).resolve().as_uri(),
                 # One plain JSON-lines file per application, readable without Spark.
                 "spark.eventLog.compress": "false",
                 "spark.eventLog.rolling.enabled": "false"}
    return conf


def spark_session(app_name: str = "shelflife", *, master: str | None = None,
                  extra: dict[str, Any] | None = None,
                  lakehouse: str | os.PathLike[str] | None = None) -> SparkSession:
    """Get or create the process's Spark session with Delta configured; for an
    ``s3://`` lakehouse (``lakehouse``, else ``$SHELFLIFE_LAKEHOUSE``) also with
    hadoop-aws and the bucket's ``s3a`` settings."""
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # Python UDF workers (the forecasts' applyInPandas) must run this interpreter, whose
    # environment has numpy, Prophet and LightGBM, not whatever `python3` is on PATH.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    packages, s3_conf = [DELTA_PACKAGE], {}
    if is_s3(lake_url(lakehouse)):
        packages.append(HADOOP_AWS_PACKAGE)
        s3_conf = spark_s3_conf()
    master = master or os.environ.get("SHELFLIFE_SPARK_MASTER", "local[2]")
    builder = (SparkSession.builder.appName(app_name).master(master)
               .config("spark.jars.packages", ",".join(packages))
               .config("spark.scheduler.allocation.file", _pools_file()))
    conf = {**LOW_LATENCY_CONF, **s3_conf, **cluster_conf(master), **(extra or {})}
    for key, value in conf.items():
        builder = builder.config(key, str(value))
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("SHELFLIFE_SPARK_LOG_LEVEL", "ERROR"))
    return spark
