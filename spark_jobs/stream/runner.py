"""The streaming runner: one Structured Streaming query per region, one-second trigger.

landing/<region>/*.jsonl -> bronze events_raw -> silver events, dead_letters -> gold
stock_cohorts, stock_levels, region_status.

Exactly-once per micro-batch: the region's state drops repeated ``(location_id, seq)``
(its seq tracker is saved with gold), and every Delta write carries an idempotent-write
id ``(app id, batch id)``, so a batch replayed after a crash skips the tables it already
wrote. Gold is kept as the region's state on the driver (see
``fold``) and rewritten per region partition; on restart that state is read back from
gold, together with the last batch id each gold table holds.

A batch goes through named steps (``process_batch``): read, check, fold, count the dead
letters, spill, write gold, account, report; what it carries between them is a
``steps.MicroBatch``. The network-wide books are one ``NetworkBooks`` per stream process,
made in ``start_streams`` and handed to every region.

The stream does no table upkeep of its own: compacting what the record writer appends
and vacuuming the gold it rewrites is ``shelflife maintain``'s job
(:mod:`lakehouse.maintenance`), a process of its own that the demo starts beside it.
"""

from __future__ import annotations

import json
import logging
import pickle
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from lakehouse import startup
from lakehouse.catalogue import (
    EVENT_ENVELOPE,
    EVENTS_RAW,
    FORECAST_ACCURACY,
    REGION_STATUS,
    STOCK_COHORTS,
    STOCK_LEVELS,
    STREAM_TABLES,
    TRANSFER_OUTCOMES,
)
from lakehouse.contract import (
    check_region,
    parse_ts,
)
from lakehouse.durable import replace_durably
from lakehouse.landing import EVENT, LandingLines, landing_backlog, landing_url
from lakehouse.paths import checkpoint_dir
from lakehouse.storage import check_bucket, ensure_folder, lake_url, spark_url

from ..schema import spark_schema
from ..spark import spark_session
from . import gold
from .books import NetworkBooks
from .derived import DerivedWriter
from .fold import RegionState
from .history import HistoryLog, PipelineWindow, history_row, jvm_pid
from .metrics import METRICS, serve_stream_metrics
from .record import TRACE, RecordWriter, txn_version
from .source import SOURCE_FORMAT
from .source import register as register_source
from .steps import MicroBatch, batch_files_logged, check_events, read_landing, spill_lines
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
    """Landing batches taken per micro-batch (the region's rate limit). A byte limit of
    about 2,000 events per trigger was tried for the burst (README, "Burst"): drain took
    25.7-45.6 s instead of 20.7-22.9 s, and the other regions' p99 did not improve
    beyond the run-to-run noise."""
    status_every_s: float = 2.0
    """How often gold region_status is rewritten."""
    history_every_s: float = 30.0
    """How often a row is appended to gold pipeline_history (0: never)."""
    replay_backlog_events: int = 2000
    """Landing backlog above which a region is reported as syncing."""
    replay_behind_minutes: float = 5.0
    """Median event age (minutes) above which a region is reported as syncing."""
    derived_every_s: float = 2.0
    """How often review items, conflicts, gaps, variances and the catalogue are written
    (when changed); trends, availability and business metrics every 10 s."""
    record_every_s: float = 10.0
    """How often spilled batches are written to bronze and silver."""
    state_every_s: float = 10.0
    """How often the region's whole state (review items, gaps, daily totals, pending
    judgements and logs, not only stock) is saved, so a hard kill loses none of it: a
    restart loads the last save and re-applies the batches after it from bronze."""


class RegionStream:
    """One region's query and the live state its batches keep on the driver; ``books``
    are the stream process's network-wide books, shared with the other regions."""

    def __init__(self, spark: SparkSession, region: str, config: StreamConfig,
                 books: NetworkBooks) -> None:
        self.spark = spark
        self.region = check_region(region)
        self.config = config
        self.books = books
        self.root = lake_url(config.lakehouse)
        self.checkpoint = checkpoint_dir(f"stream-{region}", self.root)
        self.app_id = self._app_id()
        self.paths = {t.name: t.uri(self.root)
                      for t in (*STREAM_TABLES, FORECAST_ACCURACY, TRANSFER_OUTCOMES)}
        self.record = RecordWriter(region, self.checkpoint / "pending", self.paths,
                                   self.app_id, every_s=config.record_every_s)
        self.record.flush()  # spills a crash left behind go to bronze/silver first
        # Last batch each gold table holds: a crash between the two writes leaves
        # cohorts one batch ahead of levels, and the replayed batch must not be applied
        # to cohorts twice.
        self.cohorts_batch = txn_version(self.paths["stock_cohorts"],
                                         f"{self.app_id}-stock_cohorts")
        self.levels_batch = txn_version(self.paths["stock_levels"],
                                        f"{self.app_id}-stock_levels")
        self.lock = threading.Lock()
        """Held while a batch changes the state, so the derived writer reads it whole."""
        self.state_dir = self.checkpoint / "state"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._state_saved_at = time.monotonic()
        self.restored_from: int | None = None
        """The batch of the state save this run started from (None: rebuilt from gold)."""
        self.state = self._load_state()
        self.applied_batch = self.levels_batch
        """Last batch applied to the state (under ``lock``); ahead of ``levels_batch``
        until that batch's gold is written."""
        self.derived = DerivedWriter(self.state, self.lock, self.paths, self.app_id,
                                     lambda: self.state.level_rows(self.region),
                                     self._settled_batch,
                                     every_s=config.derived_every_s,
                                     on_tick=self._tick)
        self.events_total = self._silver().count()
        self.last_event_at: datetime | None = None
        self._status_written = 0.0
        self._status_events = self.events_total
        self.landing = landing_url(self.region, self.root)
        self.backlog = landing_backlog(self.region, self.root)
        self.behind_s = 0.0
        """How old, at the median, the events of the worst batch since the last status
        row were."""
        self.mode = "live"
        self._figures_lock = threading.Lock()
        """Held briefly while a batch updates, or the status writer takes, the figures a
        status row reports (``behind_s`` is reset when it is taken)."""
        self._status_wake = threading.Event()
        self._status_thread: threading.Thread | None = None
        self.window = PipelineWindow()
        """What the batches did since the last pipeline_history row."""
        self.history = HistoryLog(self.paths["pipeline_history"])
        self._history_at = time.time()
        self._backlog_events = 0
        self.state_bytes = 0
        """Size of the last state save (the region's state, pickled)."""
        self._jvm_pid = jvm_pid(spark)
        self.last_batch: dict[str, object] = {}
        self.query: StreamingQuery | None = None
        self._stopped = False

    def _app_id(self) -> str:
        """Idempotent-write id tied to this checkpoint: a new checkpoint gets a new id."""
        self.checkpoint.mkdir(parents=True, exist_ok=True)
        marker = self.checkpoint / "shelflife-app-id"
        if not marker.exists():
            marker.write_text(f"shelflife-{self.region}-{uuid.uuid4().hex[:12]}")
        return marker.read_text().strip()

    def _settled_batch(self) -> int | None:
        """The batch the state and gold levels both hold, or None between a batch's apply
        and its levels write. Daily totals are saved with this batch id, and a restart
        adds back the bronze batches after it: saved while a batch was applied but its
        levels not yet written, that batch would be counted twice (called under ``lock``,
        which the apply holds)."""
        return self.levels_batch if self.applied_batch <= self.levels_batch else None

    def _silver(self) -> DataFrame:
        return (self.spark.read.format("delta").load(spark_url(self.paths["events"]))
                .where(F.col("region") == self.region))

    def _load_state(self) -> RegionState:
        """The region's state as it was after the last batch gold holds: the last state
        save plus the batches after it, re-applied from bronze; without a save, rebuilt
        from gold (see ``_state_from_gold``)."""
        saved = self._saved_state()
        if saved is None:
            state = self._state_from_gold()
        else:
            batch, state = saved
            self._replay(state, batch)
            self.restored_from = batch
            # The state's cohorts are at levels_batch now, even where gold cohorts are a
            # batch ahead: that batch is re-applied in full when Spark replays it.
            self.cohorts_batch = self.levels_batch
        self._restore_dead(state)
        return state

    # --- state saves ---------------------------------------------------------------------

    def _saved_state(self) -> tuple[int, RegionState] | None:
        """The newest readable state save at or below the batch gold levels hold."""
        for path in sorted(self.state_dir.glob("*.pkl"), reverse=True):
            batch = int(path.stem)
            if batch > self.levels_batch:
                continue
            try:
                state = pickle.loads(path.read_bytes())
            except Exception:  # noqa: BLE001 - a torn or old save: try the one before
                log.exception("stream %s: state save %s unreadable", self.region, path)
                continue
            if not isinstance(state, RegionState) or state.region != self.region:
                continue
            state.books = self.books
            return batch, state
        return None

    def save_state(self) -> int | None:
        """Save the whole state at a batch that gold levels also hold; returns the batch.

        Pickled under the lock (a batch cannot change it meanwhile), then written to a
        temporary file, fsynced, renamed and the folder fsynced, so a save is whole or
        absent after a crash or a power cut. The folder is the query's own checkpoint
        (mode 0700 files, 0600 saves): whoever can write there can already rewrite the
        checkpoint, so reading a pickle from it trusts no one new.
        """
        with self.lock:
            batch = self._settled_batch()
            if batch is None or batch < 0:
                return None
            blob = pickle.dumps(self.state, protocol=pickle.HIGHEST_PROTOCOL)
        self.state_bytes = len(blob)
        replace_durably(self.state_dir / f"{batch:012d}.pkl", blob, mode=0o600)
        for old in sorted(self.state_dir.glob("*.pkl"))[:-2]:
            old.unlink(missing_ok=True)
        self._state_saved_at = time.monotonic()
        return batch

    def _replay(self, state: RegionState, after_batch: int) -> None:
        """Re-apply the batches after a state save, up to the one gold levels hold, from
        bronze (spills were written there at start). Review items, gaps, variances and
        daily totals come out as the first run made them; log entries the first run
        already appended are dropped so none is written twice."""
        batches: dict[int, list[dict]] = {}
        if self.levels_batch > after_batch:
            raws = (self.spark.read.format("delta").load(spark_url(self.paths["events_raw"]))
                    .where((F.col("region") == self.region)
                           & (F.col("stream_batch_id") > after_batch)
                           & (F.col("stream_batch_id") <= self.levels_batch))
                    .select("stream_batch_id", "payload").collect())
            for r in raws:
                batches.setdefault(int(r["stream_batch_id"]), []).append(
                    json.loads(bytes(r["payload"])))
        for batch_id in sorted(batches):
            events = batches[batch_id]
            state.apply(events, history=self._history(batch_id))
            state.dirty_days.update(e["occurred_at"][:10] for e in events)
        state.rejected.clear()
        state.dirty |= {"review_queue", "sequence_gaps", "items", "daily"}
        self._drop_logged(state)
        log.info("stream %s: state from batch %d + %d batch(es) from bronze", self.region,
                 after_batch, len(batches))

    def _drop_logged(self, state: RegionState) -> None:
        """Conflict and variance entries already in silver (the first run wrote them
        after the save, or before a crash that the replay repeats)."""
        def keys(table: str, cols: list[str]) -> set[tuple]:
            df = (self.spark.read.format("delta").load(spark_url(self.paths[table]))
                  .where(F.col("region") == self.region).select(*cols))
            return {tuple(r) for r in df.collect()}

        conflict_cols = ["item_id", "status", "cause", "note"]
        if state.conflict_log:
            have = keys("quantity_conflicts", conflict_cols)
            state.conflict_log = [c for c in state.conflict_log
                                  if tuple(c[k] for k in conflict_cols) not in have]
        variance_cols = ["event_id", "sku"]
        if state.variance_log:
            have = keys("count_variances", variance_cols)
            state.variance_log = [v for v in state.variance_log
                                  if tuple(v[k] for k in variance_cols) not in have]

    def _tick(self) -> None:
        """Every derived-writer round: a state save when one is due."""
        if time.monotonic() - self._state_saved_at >= self.config.state_every_s:
            self.save_state()

    def _state_from_gold(self) -> RegionState:
        """The region's stock as gold holds it, with its review items, gaps and daily
        totals; daily totals of batches gold has but the daily table missed come back
        from bronze. Review items and gaps since the last derived write are lost this
        way: it serves a lakehouse with no state save yet."""
        def rows(table: str) -> list[dict]:
            df = (self.spark.read.format("delta").load(spark_url(self.paths[table]))
                  .where(F.col("region") == self.region))
            return [r.asDict(recursive=True) for r in df.collect()]

        state = RegionState.from_gold(rows("stock_cohorts"), rows("stock_levels"),
                                      region=self.region, books=self.books)
        state.restore(rows("review_queue"), rows("sequence_gaps"), rows("daily_movements"))
        daily_batch = txn_version(self.paths["daily_movements"],
                                  f"{self.app_id}-daily_movements")
        if daily_batch < self.levels_batch:
            raws = (self.spark.read.format("delta").load(spark_url(self.paths["events_raw"]))
                    .where((F.col("region") == self.region)
                           & (F.col("stream_batch_id") > daily_batch)
                           & (F.col("stream_batch_id") <= self.levels_batch))
                    .select("payload").collect())
            state.replay_daily([json.loads(bytes(r["payload"])) for r in raws])
        return state

    def _restore_dead(self, state: RegionState) -> None:
        """Seqs this region's stream dead-lettered and no corrected event has filled yet:
        still open to a re-driven event after a restart (gold keeps only the seq
        tracker, which counts them as filled)."""
        dead = (self.spark.read.format("delta").load(spark_url(self.paths["dead_letters"]))
                .where((F.col("region") == self.region) & (F.col("source") == "stream"))
                .select("raw").collect())
        keys: set[tuple[str, int]] = set()
        for r in dead:
            try:
                e = json.loads(bytes(r["raw"]))
                loc, seq = e["location_id"], e["seq"]
            except (ValueError, TypeError, KeyError):
                continue
            if isinstance(loc, str) and isinstance(seq, int) and not isinstance(seq, bool):
                keys.add((loc, seq))
        if not keys:
            return
        applied = {r["event_id"] for r in self._silver()
                   .where(F.col("event_id").isin([f"{loc}:{seq}" for loc, seq in keys]))
                   .select("event_id").collect()}
        for loc, seq in keys:
            if f"{loc}:{seq}" in applied:
                continue
            st = state.location(loc)
            if st.seen(seq):
                st.dead.add(seq)
            else:  # refused after the last state save: fill it and flag it again
                state.reject({"location_id": loc, "seq": seq}, "refused by the stream "
                             "(see silver/dead_letters)")
        state.rejected.clear()

    def _history(self, batch_id: int) -> Callable[[str, int], list[dict]]:
        """Already-applied events of a location after a seq (needed for a late count)."""
        return lambda loc, after_seq: self._history_of(loc, after_seq, batch_id)

    def _history_of(self, loc: str, after_seq: int, batch_id: int) -> list[dict]:
        # The spill first: a flush that moves a spill into bronze meanwhile then shows
        # its events twice (deduplicated below) rather than not at all.
        events = self.record.pending_events(batch_id)
        raws = (self.spark.read.format("delta").load(spark_url(self.paths["events_raw"]))
                .where((F.col("region") == self.region)
                       & (F.col("stream_batch_id") < batch_id)
                       & F.col("topic").endswith(f"/{loc}/events"))
                .select("payload").collect())
        events += [json.loads(bytes(r["payload"])) for r in raws]
        unique = {e["seq"]: e for e in events
                  if e["location_id"] == loc and e["seq"] > after_seq}
        return list(unique.values())

    # --- the query ---------------------------------------------------------------------

    def start(self) -> StreamingQuery:
        src = self.landing
        ensure_folder(src)
        # Lines are read and parsed on the driver, which needs every event as a dict
        # anyway, from the files the landing source names in the batch's offset
        # (``.source``: no listing through Hadoop, no file-source metadata log).
        register_source(self.spark)
        stream = (self.spark.readStream.format(SOURCE_FORMAT)
                  .option("path", src)
                  .option("maxFilesPerTrigger", self.config.max_files_per_trigger)
                  .load())
        self.query = (stream.writeStream.queryName(f"shelflife-{self.region}")
                      .foreachBatch(self.process_batch)
                      .option("checkpointLocation", str(self.checkpoint / "query"))
                      .trigger(processingTime=f"{self.config.trigger_s} seconds")
                      .start())
        if self._status_thread is None:
            self._status_thread = threading.Thread(
                target=self._status_loop, name=f"shelflife-status-{self.region}",
                daemon=True)
            self._status_thread.start()
        return self.query

    def process_batch(self, frame: DataFrame, batch_id: int) -> None:
        """Spill the batch durably, then bring gold up to date; the record follows."""
        started = time.time()
        frame.sparkSession.sparkContext.setLocalProperty("spark.scheduler.pool", self.region)
        run = MicroBatch(batch_id, started, self._read(frame, batch_id))
        run.step("collect")
        if not run.lines.rows:
            return
        run.parsed, run.refused = check_events(run.lines)
        self._fold(run)
        self._count_dead(run)
        self._spill(run)
        self._write_gold(run)
        self._account(run)
        self._report(run)

    # --- the steps of a batch ----------------------------------------------------------

    def _read(self, frame: DataFrame, batch_id: int) -> LandingLines:
        """The batch's landing lines, decoded; their files no longer count as backlog."""
        files = batch_files_logged(self.checkpoint / "query", batch_id, self.landing)
        lines = read_landing(frame, files=files)
        self.backlog.taken(lines.files())
        return lines

    def _fold(self, run: MicroBatch) -> None:
        """Apply the batch to the state under ``lock``: refused events fill their seqs,
        the others fold in with each location isolated (an event that fails on its own
        is undone and joins the refused). A batch gold levels already hold changes
        nothing: only the record may be missing it."""
        if run.batch_id <= self.levels_batch:
            return
        run.redo = run.batch_id <= self.cohorts_batch  # cohorts already hold this batch
        with self.lock:
            for r, reason in run.refused:  # fills the seq, raises a review item
                self.state.reject(r["_event"] if r.get("_owned") else {}, reason)
            self.state.rejected.clear()
            run.touched, run.events = self.state.apply([e for _, e, _ in run.parsed],
                                                       history=self._history(run.batch_id),
                                                       bookkeeping_only=run.redo)
            if self.state.rejected:
                by_id = {id(r["_event"]): r for r in run.lines.rows if r["_event"] is not None}
                run.refused += [(by_id[id(e)], reason) for e, reason in self.state.rejected]
                self.state.rejected.clear()
            self.applied_batch = max(self.applied_batch, run.batch_id)

    def _count_dead(self, run: MicroBatch) -> None:
        """Count and log the refused events; the spill carries them to dead letters."""
        if run.refused:
            METRICS.dead_letters.labels(region=self.region).inc(len(run.refused))
            log.warning("stream %s batch %d: %d event(s) dead-lettered, first: %s",
                        self.region, run.batch_id, len(run.refused), run.refused[0][1])

    def _spill(self, run: MicroBatch) -> None:
        """Make what is new (plus dead letters) durable before gold moves: bronze and
        silver are written from the spill. A replayed batch keeps its first spill."""
        keep, rows = spill_lines(run, self.region)
        if keep:
            self.record.spill(run.batch_id, keep, rows=rows)
        run.step("spill")

    def _write_gold(self, run: MicroBatch) -> None:
        """Rewrite the region's gold cohorts, then levels, from the state. Each write
        carries the batch id: a crash between the two replays the batch with cohorts
        skipped (``redo``)."""
        if run.touched:
            now = datetime.now(UTC).replace(tzinfo=None)
            for loc in run.touched:
                self.state.locations[loc].updated_at = now
            with self.lock:
                cohort_rows = self.state.cohort_rows(self.region)
                level_rows = self.state.level_rows(self.region)
            if not run.redo:
                gold.write_region(self.paths["stock_cohorts"], cohort_rows, STOCK_COHORTS.schema,
                                  self.region, app_id=f"{self.app_id}-stock_cohorts",
                                  batch_id=run.batch_id)
                self.cohorts_batch = run.batch_id
                run.step("cohorts")
            gold.write_region(self.paths["stock_levels"], level_rows,
                              STOCK_LEVELS.schema, self.region,
                              app_id=f"{self.app_id}-stock_levels", batch_id=run.batch_id)
            run.step("levels")
        self.levels_batch = max(self.levels_batch, run.batch_id)

    def _account(self, run: MicroBatch) -> None:
        """The totals and event-time lag that region status reports."""
        self.events_total += len(run.events)
        ages = sorted(e["occurred_at"] for e in run.events)
        if ages:  # the worst batch since the last status row, so a short replay shows
            behind = run.started - parse_ts(ages[len(ages) // 2]).timestamp()
            with self._figures_lock:
                self.behind_s = max(self.behind_s, behind)
        if run.events:
            newest = max(e["occurred_at"] for e in run.events)
            moment = datetime.fromisoformat(newest[:-1])
            self.last_event_at = max(moment, self.last_event_at or moment)

    def _report(self, run: MicroBatch) -> None:
        """The batch's summary and metrics; the status writer is woken when the region
        may have caught up."""
        self.last_batch = {"batch_id": run.batch_id, "events": len(run.events),
                           "duration_s": round(time.time() - run.started, 3),
                           "finished_at": time.time(), "steps": run.timings}
        if TRACE:
            print(f"batch {self.region} {run.batch_id} t={run.started:.3f} "
                  f"{json.dumps(self.last_batch)}", flush=True)
        # A syncing region whose batches since the last status row were all fresh may be
        # live again: say so now rather than up to two status periods later (the row
        # that showed the old events has been written already).
        if (self.mode == "syncing"
                and time.time() - self._status_written >= self.config.trigger_s
                and self.behind_s <= 60.0 * self.config.replay_behind_minutes):
            self._status_wake.set()
        latencies = METRICS.observe_batch(self.region, run.events, started=run.started)
        dead = len(run.refused) + sum(1 for r in run.lines.rows if r[EVENT] is None)
        self.window.add_batch(latencies, len(run.events), dead,
                              float(self.last_batch["duration_s"]))

    # --- writes ------------------------------------------------------------------------

    def _status_loop(self) -> None:
        """Write region_status every ``status_every_s``, and at once when woken, beside
        the batches rather than inside them.

        A status row scans the landing backlog and makes a commit: on S3 that is a LIST
        and a few GETs plus a commit's round trips, which took over half of a batch's
        time when the batch wrote it. A row that cannot be written is logged and tried
        again next period; the batches go on."""
        every = self.config.status_every_s
        while not self._stopped:
            # On the clock's multiples of the period, so the regions' rows are ready
            # together and go out in one commit (gold._GroupCommit), not three.
            self._status_wake.wait(every - time.time() % every)
            self._status_wake.clear()
            if self._stopped:
                return
            try:
                self._write_status()
            except Exception:  # noqa: BLE001 - status is retried; the stream goes on
                log.exception("region %s: writing region_status", self.region)
            every_h = self.config.history_every_s
            if every_h and time.time() - self._history_at >= every_h:
                try:
                    self._write_history()
                except Exception:  # noqa: BLE001 - a lost history row costs one point
                    log.exception("region %s: writing pipeline_history", self.region)

    def _write_status(self) -> None:
        """Gold region_status, and the region's mode.

        A region is *syncing* while its landing backlog is over
        ``replay_backlog_events`` or the events it applies are, at the median, more than
        ``replay_behind_minutes`` old (stores replaying hours of outbox after an outage);
        it is *live* again by itself once both drop below. The median keeps one store
        replaying a few minutes of offline sales from flipping a whole region.
        """
        now = time.time()
        last = self.last_batch
        finished = float(last.get("finished_at", 0.0) or 0.0)
        with self._figures_lock:
            behind_s, self.behind_s = self.behind_s, 0.0
        if now - finished >= 3 * self.config.trigger_s:
            behind_s = 0.0  # no batch ran lately: nothing is behind (an idle region)
        lag = None
        if self.last_event_at is not None:
            lag = round(max(0.0, now - self.last_event_at.replace(tzinfo=UTC).timestamp()), 3)
        try:
            backlog = self.backlog.scan()
            minutes = round(behind_s / 60.0, 2)
            syncing = (backlog.events > self.config.replay_backlog_events
                       or minutes > self.config.replay_behind_minutes)
            self.mode = "syncing" if syncing else "live"
            elapsed = max(1e-3, now - self._status_written) if self._status_written else None
            total = self.events_total
            rate = ((total - self._status_events) / elapsed) if elapsed else 0.0
            row = (self.region, self.mode, int(total), int(last.get("events", 0)),
                   float(last.get("duration_s", 0.0)), self.last_event_at, lag,
                   datetime.now(UTC).replace(tzinfo=None), minutes, int(backlog.events),
                   int(backlog.files), round(rate, 1))
            gold.write_region(self.paths["region_status"], [row], REGION_STATUS.schema,
                              self.region, app_id=f"{self.app_id}-region_status",
                              batch_id=int(last.get("batch_id", 0)))
        except BaseException:
            # The row was not written: what it would have said is still owed to the next
            # one, or a replay that peaked just now would never show as syncing.
            with self._figures_lock:
                self.behind_s = max(self.behind_s, behind_s)
            raise
        self._status_events = total
        self._status_written = now
        self._backlog_events = int(backlog.events)

    def _write_history(self) -> None:
        """Append the window since the last row to gold pipeline_history."""
        now = time.time()
        elapsed, self._history_at = now - self._history_at, now
        window = self.window.take()
        with self.lock:  # a batch may be changing them
            locations = len(self.state.locations)
            cohorts = sum(len(loc.cohorts) for loc in self.state.locations.values())
        lag = None
        if self.last_event_at is not None:
            lag = round(max(0.0, now - self.last_event_at.replace(tzinfo=UTC).timestamp()), 3)
        self.history.append(history_row(
            self.region, window, elapsed_s=elapsed, mode=self.mode, lag_s=lag,
            backlog_events=self._backlog_events, locations=locations, cohorts=cohorts,
            state_bytes=self.state_bytes, jvm_pid=self._jvm_pid))

    def stop(self, *, failed: bool = False) -> None:
        """Stop the query, then write what is still spilled or derived (not the derived
        tables after a failed batch: the state may hold half of it). Once only."""
        if self._stopped:
            return
        self._stopped = True
        self._status_wake.set()
        if self.query is not None:
            self.query.stop()
        if self._status_thread is not None:
            self._status_thread.join(timeout=30)  # a row being written finishes first
        self.record.stop()
        self.derived.stop(write=not failed)
        if not failed:
            self.save_state()  # a clean restart then re-applies nothing


def rebuild_books(spark: SparkSession, root, books: NetworkBooks,
                  transit_days: int = 14) -> None:
    """Fill ``books`` with the catalogue and open transfers from bronze, before any region
    starts.

    Bronze holds every applied event (a batch is spilled before gold moves, and spills
    are written at start). Item updates are few and all taken; transfers are paired in
    Spark so only the open ones (shipped in the last ``transit_days``) come back.
    """
    books.clear()
    raw = spark.read.format("delta").load(spark_url(EVENTS_RAW.uri(root)))
    ev = raw.select(F.from_json(F.col("payload").cast("string"),
                                spark_schema(EVENT_ENVELOPE)).alias("e"),
                    "payload", "received_at")
    for r in (ev.where(F.col("e.event_type") == "item_updated").select("payload")
              .collect()):
        books.items.apply(json.loads(bytes(r["payload"])))
    since = F.current_timestamp() - F.expr(f"INTERVAL {int(transit_days)} DAYS")
    moves = (ev.where(F.col("e.event_type").isin("transfer_out", "transfer_in")
                      & (F.col("received_at") >= since))
             .groupBy(F.col("e.payload.transfer_id").alias("tid"))
             .agg(F.max(F.when(F.col("e.event_type") == "transfer_in", 1).otherwise(0))
                  .alias("arrived"),
                  F.max(F.when(F.col("e.event_type") == "transfer_out",
                               F.col("payload").cast("string"))).alias("out")))
    for r in moves.where((F.col("arrived") == 0) & F.col("out").isNotNull()).collect():
        books.transit.apply(json.loads(r["out"]))


RESTART_BACKOFF_S = (0.0, 5.0, 15.0, 60.0)
"""Wait before restarting a region whose query failed, by how often it failed in the last
ten minutes: a disk that is full stays visible in the log instead of spinning."""


@dataclass
class _Restart:
    failures: list[float]
    next_at: float = 0.0
    pending: bool = False


def restart_region(spark: SparkSession, failed: RegionStream, config: StreamConfig,
                   restarts: dict[str, _Restart]) -> RegionStream:
    """Start a failed region again from its checkpoint and state save, leaving the
    others alone; returns the new stream, or ``failed`` while it waits or cannot start.

    A query fails on what is not an event's fault (a disk, a commit, a Spark error): the
    events themselves are isolated in ``state.apply``. The first call stops the failed
    query and sets when to try; later calls (the runner's loop, once a second) start it
    when that time comes, and back off again if the start itself fails.
    """
    region = failed.region
    now = time.monotonic()
    r = restarts.setdefault(region, _Restart([]))
    if not r.pending:
        error = failed.query.exception() if failed.query is not None else None
        r.failures = [t for t in r.failures if now - t < 600.0] + [now]
        wait = RESTART_BACKOFF_S[min(len(r.failures), len(RESTART_BACKOFF_S)) - 1]
        r.next_at, r.pending = now + wait, True
        first = str(error).strip().splitlines()[0] if error else "?"
        log.error("region %s query failed (%d in 10 min); restarting in %.0f s: %s",
                  region, len(r.failures), wait, error)
        print(f"stream {region}: query failed, restarting in {wait:.0f}s: {first}",
              flush=True)
        METRICS.restarts.labels(region=region).inc()
        try:
            failed.stop(failed=True)
        except Exception:  # noqa: BLE001 - the restart below is what matters
            log.exception("region %s: stopping the failed query", region)
    if now < r.next_at:
        return failed
    try:
        stream = RegionStream(spark, region, config, failed.books)
        stream.start()
    except Exception as exc:  # noqa: BLE001 - try again later; the others go on
        r.failures = [t for t in r.failures if now - t < 600.0] + [now]
        wait = RESTART_BACKOFF_S[min(len(r.failures), len(RESTART_BACKOFF_S)) - 1]
        r.next_at = now + max(wait, 5.0)
        log.exception("region %s could not start again; next try in %.0f s", region,
                      r.next_at - now)
        print(f"stream {region}: could not start again ({exc!r}); next try in "
              f"{r.next_at - now:.0f}s", flush=True)
        return failed
    stream.record.start()
    stream.derived.start()
    r.pending = False
    print(f"stream {region}: running again", flush=True)
    return stream


def start_streams(spark: SparkSession, regions: list[str], config: StreamConfig
                  ) -> list[RegionStream]:
    """Create missing tables, then start one query per region, all sharing one set of
    network-wide books."""
    root = lake_url(config.lakehouse)
    ensure_tables(root)
    books = NetworkBooks()
    # Each region writes the spills a crash left behind to bronze first; the books are
    # then read from a bronze that holds every applied event.
    streams = [RegionStream(spark, r, config, books) for r in regions]
    rebuild_books(spark, root, books)
    for i, s in enumerate(streams):
        s.start()
        s.record.start(delay_s=i * config.record_every_s / len(streams))
        s.derived.start()
    return streams


def run_streams(regions: list[str], config: StreamConfig, *,
                stop: threading.Event | None = None, metrics_port: int = 0,
                metrics_host: str = "127.0.0.1", master: str | None = None) -> None:
    """Run until ``stop`` is set (or forever), printing a line per region every 10 s.

    ``master`` is the Spark the queries run on (default $SHELFLIFE_SPARK_MASTER or
    local[2]); the landing source's offsets, the reads, the fold and the gold commits run
    here, on the driver, whatever it is."""
    progress = startup.Progress(config.lakehouse, "stream", 5)
    progress.step(1, "checking the lakehouse's storage")
    check_bucket(lake_url(config.lakehouse))  # a clear error before Spark starts
    progress.step(2, "starting Spark" + (
        " (first run on this machine: downloading the Delta jars from Maven Central)"
        if startup.first_run_downloads() else ""))
    spark = spark_session("shelflife-streaming", master=master, lakehouse=config.lakehouse)
    progress.step(3, "creating missing tables and rebuilding each region's state")
    streams = start_streams(spark, regions, config)
    serve_stream_metrics(regions, config.lakehouse, metrics_port, host=metrics_host)
    progress.step(4, f"waiting for the first batch of {', '.join(regions)}")
    stop = stop or threading.Event()
    restarts: dict[str, _Restart] = {}
    started = False
    try:
        last = time.monotonic()
        while not stop.wait(1.0):
            for i, s in enumerate(streams):
                if s.query is None or s.query.exception() is not None:
                    streams[i] = restart_region(spark, s, config, restarts)
            if not started and all(s.last_batch for s in streams):
                started = True
                progress.step(5, "running: every region has applied a batch")
            if time.monotonic() - last >= 10:
                last = time.monotonic()
                for s in streams:
                    b = s.last_batch
                    print(f"stream {s.region}: events={s.events_total} last batch "
                          f"{b.get('events', 0)} in {b.get('duration_s', 0):.2f}s "
                          f"{b.get('steps', '')}", flush=True)
    finally:
        for s in streams:
            s.stop()

