"""Bronze and silver, written behind the live path through a durable spill.

Each micro-batch's lines are fsynced to ``<checkpoint>/pending/<batch>.jsonl`` before the
batch returns; this writer turns pending spills into bronze ``events_raw``, silver
``events`` and ``dead_letters`` every few seconds, several batches in one Delta commit,
then deletes them. Spark shapes the rows (the same transforms as ever) and delta-rs
commits them: a Spark Delta commit costs a few hundred milliseconds of driver CPU, and
three regions committing every few seconds starved the one-second live path.
Exactly once: every commit carries ``(app id, highest batch in it)``; spills at or below
a table's recorded version are skipped, and leftovers are written on restart.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

import deltalake
import pyarrow as pa
from deltalake import CommitProperties, Transaction, write_deltalake
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from . import silver
from .bronze import LANDING_SCHEMA, to_events_raw

log = logging.getLogger(__name__)

LINE_FIELDS = tuple(f.name for f in LANDING_SCHEMA.fields)


def txn_version(path: str, app_id: str) -> int:
    """The highest batch id written to a Delta table under ``app_id`` (-1 when none)."""
    version = deltalake.DeltaTable(path).transaction_version(app_id)
    return -1 if version is None else int(version)


class RecordWriter:
    """One region's spill folder and the thread that drains it into Delta."""

    def __init__(self, spark: SparkSession, region: str, spill_dir: Path,
                 paths: dict[str, str], app_id: str, *, every_s: float = 10.0) -> None:
        self.spark = spark
        self.region = region
        self.dir = spill_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.paths = paths
        self.app_id = app_id
        self.every_s = every_s
        self._schemas: dict[str, pa.Schema] = {}
        self.written = {t: txn_version(paths[t], self._app(t))
                        for t in ("events_raw", "events", "dead_letters")}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def _app(self, table: str) -> str:
        return f"{self.app_id}-{table}"

    # --- the live side -------------------------------------------------------------------

    def spill(self, batch_id: int, lines: Iterable[dict]) -> None:
        """Make a batch's lines durable before the stream moves past it.

        A batch replayed after a crash keeps the spill (or the record) of its first run:
        the replay sees its own events as already applied.
        """
        final = self.dir / f"{batch_id:012d}.jsonl"
        if final.exists() or batch_id <= min(self.written["events_raw"],
                                             self.written["events"]):
            return
        tmp = self.dir / f".{batch_id:012d}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            for line in lines:
                fh.write(json.dumps(line, separators=(",", ":")) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)

    def pending(self) -> list[Path]:
        return sorted(self.dir.glob("*.jsonl"))

    def pending_events(self, before_batch: int) -> list[dict]:
        """Events spilled but maybe not yet in bronze (for a late count's history)."""
        out = []
        for f in self.pending():
            if int(f.stem) >= before_batch:
                continue
            for text in f.read_text(encoding="utf-8").splitlines():
                line = json.loads(text)
                if line["kind"] == "event":
                    out.append(json.loads(line["raw"]))
        return out

    # --- the writer ----------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"record-{self.region}")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=120)
        self.flush()

    def _run(self) -> None:
        self.spark.sparkContext.setLocalProperty("spark.scheduler.pool", "record")
        while not self._stop.wait(self.every_s):
            try:
                self.flush()
            except Exception as exc:  # noqa: BLE001 - keep the spill, report, retry
                self.error = exc
                log.exception("record %s: writing bronze/silver failed; will retry",
                              self.region)

    def flush(self) -> int:
        """Write every pending spill now; returns the number of batches written."""
        with self._lock:
            files = self.pending()
            if not files:
                return 0
            top = int(files[-1].stem)
            df = self.spark.read.schema(LANDING_SCHEMA).json([str(f) for f in files])
            df = df.withColumn("_batch", F.regexp_extract(
                F.input_file_name(), r"(\d+)\.jsonl$", 1).cast("long")).persist()
            try:
                parsed = silver.with_parsed(df)

                def above(low: int) -> DataFrame:
                    return parsed.where(F.col("_batch") > low)

                self._write("events_raw", top,
                            lambda low: to_events_raw(above(low), F.col("_batch")))
                self._write("events", top, lambda low: silver.to_events(above(low)),
                            partition=silver.EVENTS_PARTITIONS)
                self._write("dead_letters", top,
                            lambda low: silver.dead_letters(above(low)))
            finally:
                df.unpersist()
            for f in files:
                f.unlink()
            return len(files)

    def _write(self, table: str, top: int, frame: Callable[[int], DataFrame],
               partition: tuple[str, ...] = ("region",)) -> None:
        low = self.written[table]
        if top <= low:
            return
        rows = frame(low).toArrow()
        if table == "dead_letters" and rows.num_rows == 0:
            return  # most flushes have none; an empty commit would only cost time
        # Spark shapes the rows; delta-rs commits them. A Spark Delta commit costs a few
        # hundred milliseconds of driver CPU, which the one-second live path needs.
        write_deltalake(self.paths[table], rows.cast(self._schema(table)), mode="append",
                        partition_by=list(partition),
                        commit_properties=CommitProperties(
                            app_transactions=[Transaction(self._app(table), top)],
                            max_commit_retries=20))
        self.written[table] = top

    def _schema(self, table: str):
        """The table's own Arrow schema (nullability included), read once."""
        if table not in self._schemas:
            arrow = deltalake.DeltaTable(self.paths[table]).schema().to_arrow()
            self._schemas[table] = pa.schema(arrow)
        return self._schemas[table]

