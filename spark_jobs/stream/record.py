"""Bronze and silver, written behind the live path through a durable spill.

Each micro-batch's lines are fsynced to ``<checkpoint>/pending/<batch>.jsonl`` before the
batch returns; this writer turns pending spills into bronze ``events_raw``, silver
``events`` and ``dead_letters`` every few seconds, several batches in one Delta commit,
then deletes them. The rows are shaped here with Arrow and committed with delta-rs: a
Spark job plus a Spark Delta commit per table cost 2-4 s of CPU per flush on two cores,
and while three regions flushed, the one-second live path stalled (measured with
``bench/latency.py``). Each table's schema and partitions are its catalogue entry's.
Exactly once: every commit carries ``(app id, highest batch in it)``; spills at or below
a table's recorded version are skipped, and leftovers are written on restart.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import deltalake
import pyarrow as pa
from deltalake import CommitProperties, Transaction, write_deltalake

from lakehouse.catalogue import DEAD_LETTERS, EVENTS, EVENTS_RAW
from lakehouse.contract import parse_ts
from lakehouse.durable import fsync_dir
from lakehouse.landing import encode_line, parse_line, read_event, split_lines
from lakehouse.logtidy import HOOKS, LogTidy
from lakehouse.storage import delta_options

log = logging.getLogger(__name__)

TRACE = bool(os.environ.get("SHELFLIFE_TRACE_BATCHES"))
PARSED_MAX_LINES = 200_000
"""Spilled lines kept parsed in memory for the next flush (a few hundred MB at most; past
it, a writer that cannot flush reads its spills back from disk)."""


def txn_version(path: str, app_id: str) -> int:
    """The highest batch id written to a Delta table under ``app_id`` (-1 when none)."""
    version = deltalake.DeltaTable(
        path, storage_options=delta_options(path)).transaction_version(app_id)
    return -1 if version is None else int(version)


def _ts(value: str | None) -> datetime | None:
    """Contract timestamps (``...sss'Z'``), as Spark's ``to_timestamp`` reads them."""
    if not value:
        return None
    try:
        return parse_ts(value)
    except ValueError:
        return None


def spill_texts(path: Path) -> list[str]:
    """A spill file's lines, split as the landing zone's are (not ``str.splitlines``)."""
    return split_lines(path.read_text(encoding="utf-8"))


def bronze_rows(lines: list[tuple[int, dict]], processed_at: datetime) -> list[dict]:
    """Bronze ``events_raw``: every accepted payload, byte for byte."""
    return [{"region": line["region"], "topic": line.get("topic"),
             "payload": (line.get("raw") or "").encode("utf-8"),
             "received_at": _ts(line.get("received_at")),
             "ingest_batch_id": line.get("batch_id"), "line": line.get("line"),
             "stream_batch_id": batch}
            for batch, line in lines if line.get("kind") == "event"]


def silver_rows(lines: list[tuple[int, dict]], processed_at: datetime) -> list[dict]:
    """Silver ``events``: typed, one row per ``(location_id, seq)`` (the live path has
    already dropped repeats before spilling)."""
    out = []
    for _, line in lines:
        ev = read_event(line)
        if ev is None:
            continue
        payload = ev.get("payload") or {}
        clock = ev.get("clock")
        out.append({
            "event_id": ev["event_id"], "region": line["region"],
            "location_id": ev.get("location_id"), "seq": ev.get("seq"),
            "event_type": ev.get("event_type"), "category": ev.get("category"),
            "occurred_at": _ts(ev.get("occurred_at")), "offline": ev.get("offline"),
            "causation_id": ev.get("causation_id"),
            "clock": list(clock.items()) if isinstance(clock, dict) else None,
            "agent_version": ev.get("agent_version"), "sku": payload.get("sku"),
            "quantity": payload.get("quantity"), "stock_before": payload.get("stock_before"),
            "payload": payload, "topic": line.get("topic"),
            "received_at": _ts(line.get("received_at")),
            "ingest_batch_id": line.get("batch_id"), "processed_at": processed_at})
    return out


def dead_letter_rows(lines: list[tuple[int, dict]], processed_at: datetime) -> list[dict]:
    """Ingest's dead letters, plus any event line the stream could not read."""
    out = []
    for _, line in lines:
        if line.get("kind") == "dead":
            raw, reason, source = (base64.b64decode(line.get("raw_b64") or ""),
                                   line.get("reason"), line.get("source") or "ingest")
        elif read_event(line) is None:
            raw, reason, source = ((line.get("raw") or "").encode("utf-8"),
                                   "the stream could not parse the event", "stream")
        else:
            continue
        out.append({"region": line.get("region"), "topic": line.get("topic"), "raw": raw,
                    "reason": reason, "received_at": _ts(line.get("received_at")),
                    "source": source, "ingest_batch_id": line.get("batch_id"),
                    "line": line.get("line")})
    return out


SHAPERS = {EVENTS_RAW: bronze_rows, EVENTS: silver_rows, DEAD_LETTERS: dead_letter_rows}
RECORDED = {table.name: table for table in SHAPERS}
"""The tables this writer appends to, by name."""


class RecordWriter:
    """One region's spill folder and the thread that drains it into Delta."""

    def __init__(self, region: str, spill_dir: Path,
                 paths: dict[str, str], app_id: str, *, every_s: float = 10.0) -> None:
        self.region = region
        self.dir = spill_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.paths = paths
        self.app_id = app_id
        self.every_s = every_s
        self._schemas: dict[str, pa.Schema] = {}
        self._open: dict[str, deltalake.DeltaTable] = {}
        self._tidy: dict[str, LogTidy] = {}
        self.written = {t: txn_version(paths[t], self._app(t)) for t in RECORDED}
        self._parsed: dict[int, list[dict]] = {}
        self._parsed_lines = 0
        self._parsed_lock = threading.Lock()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def _app(self, table: str) -> str:
        return f"{self.app_id}-{table}"

    # --- the live side -------------------------------------------------------------------

    def spill(self, batch_id: int, lines: Iterable[dict | str], *,
              rows: list[dict] | None = None) -> None:
        """Make a batch's lines durable before the stream moves past it.

        A line is a dict of :data:`lakehouse.landing.LINE_FIELDS`, or a landing line's
        JSON text as it is (the live path spills readable event lines so, instead of
        serialising them again). ``rows``, when given, are the same lines as
        :func:`lakehouse.landing.parse_line` reads them back: the next flush takes them
        from memory instead of parsing the file (two JSON decodes a line, a third of a
        flush's CPU). The file stays the record; after a restart it is read.
        A batch replayed after a crash keeps the spill (or the record) of its first run:
        the replay sees its own events as already applied.
        """
        final = self.dir / f"{batch_id:012d}.jsonl"
        if final.exists() or batch_id <= min(self.written[EVENTS_RAW.name],
                                             self.written[EVENTS.name]):
            return
        tmp = self.dir / f".{batch_id:012d}.tmp"
        if rows is not None:
            with self._parsed_lock:  # the writer thread forgets them meanwhile
                if self._parsed_lines + len(rows) <= PARSED_MAX_LINES:
                    # Kept before the file appears, so a flush that sees the file finds them.
                    self._parsed[batch_id] = rows
                    self._parsed_lines += len(rows)
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                for line in lines:
                    fh.write((line if isinstance(line, str) else encode_line(line)) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        except BaseException:
            self._forget(batch_id)
            raise
        # The rename must be durable before gold moves past this batch: otherwise a power
        # cut could leave gold holding events that bronze and silver never get.
        fsync_dir(self.dir)

    def _forget(self, batch_id: int) -> None:
        with self._parsed_lock:
            rows = self._parsed.pop(batch_id, None)
            if rows is not None:
                self._parsed_lines -= len(rows)

    def _lines_of(self, f: Path) -> list[dict]:
        """A spill's lines, parsed: from memory when this writer spilled it."""
        rows = self._parsed.get(int(f.stem))
        if rows is not None:
            return rows
        return [parse_line(t) for t in spill_texts(f) if t]

    def pending(self) -> list[Path]:
        return sorted(self.dir.glob("*.jsonl"))

    def pending_events(self, before_batch: int) -> list[dict]:
        """Events spilled but maybe not yet in bronze (for a late count's history)."""
        out = []
        for f in self.pending():
            if int(f.stem) >= before_batch:
                continue
            try:
                texts = spill_texts(f)
            except FileNotFoundError:  # written to bronze meanwhile (the caller reads
                continue               # the spill before bronze, so it is there)
            events = (read_event(parse_line(text)) for text in texts)
            out += [event for event in events if event is not None]
        return out

    # --- the writer ----------------------------------------------------------------------

    def start(self, delay_s: float = 0.0) -> None:
        """Drain spills every ``every_s``; regions pass different delays so that their
        flushes do not all land on the same live batch."""
        self._thread = threading.Thread(target=self._run, args=(delay_s,), daemon=True,
                                        name=f"record-{self.region}")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=120)
        self.flush()

    def _run(self, delay_s: float) -> None:
        if self._stop.wait(delay_s):
            return
        while not self._stop.wait(self.every_s):
            try:
                self.flush()
            except Exception as exc:  # noqa: BLE001 - keep the spill, report, retry
                self.error = exc
                log.exception("record %s: writing bronze/silver failed; will retry",
                              self.region)

    def flush(self) -> int:
        """Write every pending spill now; returns the number of batches written."""
        t0 = time.time()
        try:
            return self._flush()
        finally:
            if TRACE:
                print(f"record {self.region} t={t0:.3f} took {time.time() - t0:.3f}",
                      flush=True)

    def _flush(self) -> int:
        with self._lock:
            files = self.pending()
            if not files:
                return 0
            top = int(files[-1].stem)
            lines: list[tuple[int, dict]] = []
            for f in files:
                batch = int(f.stem)
                lines += [(batch, line) for line in self._lines_of(f)]
            processed_at = datetime.now(UTC)
            unstorable: list[dict] = []
            for table in RECORDED:
                low = self.written[table]
                if top <= low:
                    continue
                mine = [(b, line) for b, line in lines if b > low]
                rows = SHAPERS[RECORDED[table]](mine, processed_at)
                data = None
                if table == DEAD_LETTERS.name:
                    rows += unstorable
                else:
                    rows, bad, data = self._storable(table, rows)
                    unstorable += bad
                if table == DEAD_LETTERS.name and not rows:
                    continue  # most flushes have none; an empty commit would only cost time
                self._append(table, rows, top, data)
            for f in files:
                f.unlink()
                self._forget(int(f.stem))
            return len(files)

    def _storable(self, table: str, rows: list[dict]
                  ) -> tuple[list[dict], list[dict], pa.Table]:
        """Rows the table can hold, and dead-letter rows for those it cannot.

        The live path checks every event against the contract first, so this only
        catches a spill written before a bound existed; without it, that spill would fail
        every flush and every restart.
        """
        schema = self._schema(table)
        try:
            return rows, [], pa.Table.from_pylist(rows, schema=schema)
        except (pa.ArrowException, OverflowError, TypeError, ValueError):
            pass
        good, bad = [], []
        for row in rows:
            try:
                pa.Table.from_pylist([row], schema=schema)
                good.append(row)
            except (pa.ArrowException, OverflowError, TypeError, ValueError) as exc:
                log.error("record %s: %s row the table cannot hold: %s", self.region,
                          table, exc)
                raw = row.get("payload")
                if not isinstance(raw, bytes):
                    raw = json.dumps({k: row.get(k) for k in ("event_id", "payload")},
                                     default=str).encode("utf-8", "surrogatepass")
                bad.append({"region": row.get("region"), "topic": row.get("topic"),
                            "raw": raw, "reason": f"{table} cannot hold it: {exc}"[:500],
                            "received_at": row.get("received_at"), "source": "stream",
                            "ingest_batch_id": row.get("ingest_batch_id"),
                            "line": row.get("line")})
        return good, bad, pa.Table.from_pylist(good, schema=schema)

    def _append(self, table: str, rows: list[dict], top: int,
                data: pa.Table | None = None) -> None:
        if data is None:
            data = pa.Table.from_pylist(rows, schema=self._schema(table))
        if table not in self._open:  # kept open: reopening replays the log each time
            self._open[table] = deltalake.DeltaTable(
                self.paths[table], storage_options=delta_options(self.paths[table]))
        handle = self._open[table]
        try:
            write_deltalake(handle, data, mode="append",
                            partition_by=list(RECORDED[table].partitions),
                            commit_properties=CommitProperties(
                                app_transactions=[Transaction(self._app(table), top)],
                                max_commit_retries=20),
                            post_commithook_properties=HOOKS)
        except Exception:
            self._open.pop(table, None)
            raise
        self._tidy.setdefault(table, LogTidy(self.paths[table])).committed(handle)
        self.written[table] = top

    def _schema(self, table: str):
        """The table's own Arrow schema (nullability included), read once."""
        if table not in self._schemas:
            arrow = deltalake.DeltaTable(
                self.paths[table], storage_options=delta_options(self.paths[table])
            ).schema().to_arrow()
            self._schemas[table] = pa.schema(arrow)
        return self._schemas[table]

