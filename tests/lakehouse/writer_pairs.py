"""Every pair of writers that shares a table, run at once against one lakehouse, and a
count of the commits that did not survive.

The pairs follow the catalogue's ``writers``: the record writers of two regions
appending to bronze/silver while ``shelflife maintain`` compacts and vacuums them; two
regions' gold writers overwriting their partitions of ``stock_levels`` while maintenance
vacuums it; the dashboard and the CLI logging decisions; two regions' heartbeat logs;
two stream processes rewriting the catalogue ``items``. Maintenance runs beside every
pair. Each writer is the real component, retried the way the component retries (the
record writer keeps its spill, heartbeats keep their rows, the derived writer puts its
work back); afterwards the table is read back with delta-rs and every commit's rows are
looked for: a commit is lost when one of its rows is missing or there twice.

``bench/writers.py`` reports :func:`run_pairs` against a local S3 server; the tests in
``test_concurrent_writers.py`` assert that nothing is lost.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

from edge_mqtt.agent import StoreAgent
from ingest.heartbeats import HeartbeatLog
from lakehouse.catalogue import (
    DEAD_LETTERS,
    EVENTS,
    EVENTS_RAW,
    ITEMS,
    STOCK_LEVELS,
    STORE_HEARTBEATS,
    TRANSFER_DECISIONS,
    TRANSFER_RECOMMENDATIONS,
    Table,
)
from lakehouse.contract import Heartbeat, encode_event, topic
from lakehouse.decisions import record_decision
from lakehouse.maintenance import maintain
from lakehouse.storage import delta_options, ensure_parent
from spark_jobs.stream import derived
from spark_jobs.stream.books import NetworkBooks
from spark_jobs.stream.fold import RegionState
from spark_jobs.stream.gold import write_region
from spark_jobs.stream.record import RecordWriter
from spark_jobs.stream.tables import ensure_tables

REGIONS = ("east", "west")
ATTEMPTS = 8
"""Tries of one commit by a component that retries (a lost race is tried again)."""


@dataclass
class PairResult:
    """What one pair committed and what the table holds afterwards."""

    pair: str
    table: str
    commits: int = 0
    commits_lost: int = 0
    rows_lost: int = 0
    rows_doubled: int = 0
    writer_retries: int = 0
    maintain_rounds: int = 0
    maintain_failures: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _data(table: Table, root: str) -> list[dict]:
    url = table.uri(root)
    return DeltaTable(url, storage_options=delta_options(url)).to_pyarrow_table().to_pylist()


def _table(table: Table, root: str) -> DeltaTable:
    url = table.uri(root)
    return DeltaTable(url, storage_options=delta_options(url))


def _retrying(result: PairResult, lock: threading.Lock, commit: Callable[[], object]) -> None:
    """Run one commit the way a component does: a failed attempt is made again."""
    for attempt in range(ATTEMPTS):
        try:
            commit()
            return
        except Exception:
            if attempt == ATTEMPTS - 1:
                raise
            with lock:
                result.writer_retries += 1
            time.sleep(0.05 * (attempt + 1))


def _score(result: PairResult, commits: list[list], found: Counter) -> None:
    """Count the commits with a row missing or doubled (``commits``: each one's keys)."""
    for keys in commits:
        if any(found[k] != 1 for k in keys):
            result.commits_lost += 1
        result.rows_lost += sum(1 for k in keys if found[k] == 0)
        result.rows_doubled += sum(1 for k in keys if found[k] > 1)
    result.commits = len(commits)


class _Maintainer:
    """``maintain`` over some tables in a loop beside the writers, replaced files deleted
    at once (retention 0) so a vacuum meets the writers too."""

    def __init__(self, root: str, tables: list[Table]) -> None:
        self.root, self.tables = root, tables
        self.rounds = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="maintain")

    def _run(self) -> None:
        while not self._stop.is_set():
            reports = maintain(self.root, retain_hours=0, rewritten_retain_hours=0,
                               tables=self.tables, say=lambda _line: None)
            self.rounds += 1
            self.failures += [f"{r.table}: {r.note}" for r in reports
                              if r.status == "failed" or "left for next round" in r.note]
            self._stop.wait(0.05)

    def __enter__(self) -> _Maintainer:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=120)
        maintain(self.root, retain_hours=0, rewritten_retain_hours=0, tables=self.tables,
                 say=lambda _line: None)  # one round after the writers, as the next would


def _together(*writers: Callable[[], None]) -> None:
    """Start the writers at once in threads; re-raise the first that failed."""
    barrier = threading.Barrier(len(writers))
    errors: list[BaseException] = []

    def run(fn: Callable[[], None]) -> None:
        barrier.wait()
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in writers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def _run(name: str, table: Table, root: str, tables: list[Table],
         body: Callable[[PairResult, threading.Lock], None], beside: bool) -> PairResult:
    """Run a pair's writers (``body``), with maintenance looping beside them unless
    ``beside`` is False (a bench then times one round over what they left)."""
    result = PairResult(name, str(table))
    lock = threading.Lock()
    started = time.monotonic()
    if beside:
        with _Maintainer(root, tables) as maintainer:
            body(result, lock)
        result.maintain_rounds = maintainer.rounds
        result.maintain_failures = maintainer.failures
    else:
        body(result, lock)
    result.seconds = time.monotonic() - started
    return result


# --- the pairs ---------------------------------------------------------------------------

def record_pair(root: str, commits: int, *, beside: bool = True) -> PairResult:
    """Two regions' record writers append to bronze ``events_raw`` and silver ``events``
    while maintenance compacts and vacuums them."""
    ensure_tables(root)
    paths = {t.name: t.uri(root) for t in (EVENTS_RAW, EVENTS, DEAD_LETTERS)}
    written: list[list[str]] = []

    def body(result: PairResult, lock: threading.Lock) -> None:
        with tempfile.TemporaryDirectory() as work:
            def region(name: str) -> None:
                agent = StoreAgent(f"{name}-1", name, Path(work, f"{name}.sqlite"))
                writer = RecordWriter(name, Path(work, f"spill-{name}"), paths,
                                      f"pair-{name}")
                t = topic(name, f"{name}-1", "events")
                try:
                    for batch in range(1, commits + 1):
                        events = [agent.receive("MILK", 3, lot=f"L{batch}",
                                                expires_on="2026-12-20", supplier_ref="PO",
                                                unit_cost=1.0) for _ in range(2)]
                        writer.spill(batch, [
                            {"kind": "event", "topic": t, "region": name,
                             "received_at": datetime.now(UTC).isoformat(
                                 timespec="milliseconds").replace("+00:00", "Z"),
                             "batch_id": f"b{batch}", "line": i,
                             "raw": encode_event(e).decode()} for i, e in enumerate(events)])
                        _retrying(result, lock, writer.flush)
                        with lock:
                            written.append([e["event_id"] for e in events])
                finally:
                    agent.close()

            _together(*(lambda r=r: region(r) for r in REGIONS))

    result = _run("record writers + maintain", EVENTS, root, [EVENTS_RAW, EVENTS], body,
                  beside)
    silver = Counter(r["event_id"] for r in _data(EVENTS, root))
    bronze = Counter(json.loads(bytes(r["payload"]))["event_id"]
                     for r in _data(EVENTS_RAW, root))
    _score(result, written, silver + Counter({k: v - 1 for k, v in bronze.items()}))
    return result


def _level_rows(region: str, batch: int) -> list[tuple]:
    names = STOCK_LEVELS.schema.names
    rows = []
    for loc in range(3):
        row = dict.fromkeys(names)
        row.update(region=region, location_id=f"{region}-{loc}", sku="MILK", on_hand=batch,
                   cohorts=1, last_seq=batch, updated_at=datetime.now(UTC))
        rows.append(tuple(row[n] for n in names))
    return rows


def gold_pair(root: str, commits: int, *, beside: bool = True) -> PairResult:
    """Two regions rewrite their partitions of gold ``stock_levels`` every batch, with app
    transactions, while maintenance vacuums it."""
    ensure_tables(root)
    path = STOCK_LEVELS.uri(root)

    def body(result: PairResult, lock: threading.Lock) -> None:
        def region(name: str) -> None:
            for batch in range(1, commits + 1):
                # The stream does not retry a gold write: a failure fails the batch and
                # restarts the region, so a failure here fails the pair.
                write_region(path, _level_rows(name, batch), STOCK_LEVELS.schema, name,
                             app_id=f"pair-{name}", batch_id=batch)

        _together(*(lambda r=r: region(r) for r in REGIONS))

    result = _run("gold region writers + maintain", STOCK_LEVELS, root, [STOCK_LEVELS], body,
                  beside)
    dt = _table(STOCK_LEVELS, root)
    rows = dt.to_pyarrow_table().to_pylist()
    writes = [str(h.get("operationParameters", {}).get("predicate", ""))
              for h in dt.history() if h.get("operation") == "WRITE"]
    for name in REGIONS:
        # Every batch is a commit of its own, the last batch id is recorded, and the
        # partition holds exactly the last batch's rows.
        result.commits += commits
        result.commits_lost += max(0, commits - sum(f"'{name}'" in w for w in writes))
        last = {(r[1], r[3]) for r in _level_rows(name, commits)}
        held = Counter((r["location_id"], r["on_hand"]) for r in rows if r["region"] == name)
        result.rows_lost += len(last - set(held))
        result.rows_doubled += sum(v - 1 for v in held.values()) + sum(
            v for k, v in held.items() if k not in last)
        if (dt.transaction_version(f"pair-{name}") != commits or last != set(held)
                or any(v > 1 for v in held.values())):
            result.commits_lost = max(result.commits_lost, 1)
    return result


def decisions_pair(root: str, commits: int, *, beside: bool = True) -> PairResult:
    """The dashboard and ``shelflife transfers approve|reject`` log decisions at once
    (both through ``record_decision``) while maintenance compacts the log."""
    ids = {who: [f"R-{who}-{i}" for i in range(commits)] for who in ("dashboard", "cli")}
    recs = pa.Table.from_pylist(
        [dict.fromkeys(TRANSFER_RECOMMENDATIONS.schema.names) | {"recommendation_id": r}
         for rs in ids.values() for r in rs], schema=TRANSFER_RECOMMENDATIONS.schema)
    url = TRANSFER_RECOMMENDATIONS.uri(root)
    ensure_parent(url)
    write_deltalake(url, recs, storage_options=delta_options(url))
    written: list[list[str]] = []

    def body(result: PairResult, lock: threading.Lock) -> None:
        def decide(who: str) -> None:
            for rec in ids[who]:
                # A person who sees an error clicks again: the component's retry.
                _retrying(result, lock, lambda rec=rec: record_decision(
                    rec, "approved" if who == "dashboard" else "rejected", who, root=root))
                with lock:
                    written.append([rec])

        _together(lambda: decide("dashboard"), lambda: decide("cli"))

    result = _run("dashboard + CLI decisions + maintain", TRANSFER_DECISIONS, root,
                  [TRANSFER_DECISIONS], body,
                  beside)
    _score(result, written, Counter(r["recommendation_id"]
                                    for r in _data(TRANSFER_DECISIONS, root)))
    return result


def heartbeats_pair(root: str, commits: int, *, beside: bool = True) -> PairResult:
    """Two regions' ingest workers append heartbeats while maintenance compacts and
    vacuums the table."""
    written: list[list[tuple]] = []

    def body(result: PairResult, lock: threading.Lock) -> None:
        def region(name: str) -> None:
            beats = HeartbeatLog(name, root, flush_every_s=3600)
            try:
                for seq in range(1, commits + 1):
                    beat = Heartbeat(f"{name}-1", name, "0.1.0", True,
                                     "2026-12-06T12:00:00.000Z", last_seq=seq)
                    beats.add(topic(name, f"{name}-1", "heartbeat"), beat.to_json())
                    # A failed write keeps its rows for the next flush, as the timer would.
                    while beats.flush() == 0:
                        with lock:
                            result.writer_retries += 1
                    with lock:
                        written.append([(name, seq)])
            finally:
                beats.close()

        _together(*(lambda r=r: region(r) for r in REGIONS))

    result = _run("heartbeat logs + maintain", STORE_HEARTBEATS, root, [STORE_HEARTBEATS],
                  body, beside)
    _score(result, written, Counter((r["region"], r["last_seq"])
                                    for r in _data(STORE_HEARTBEATS, root)))
    return result


def items_pair(root: str, commits: int, *, beside: bool = True) -> PairResult:
    """Two stream processes (each its own catalogue book, as with regions split over two
    drivers) rewrite silver ``items`` whole while maintenance compacts it. Each learns
    SKUs of its own and one field of a shared SKU; the table must end with all of them."""
    ensure_tables(root)
    url = ITEMS.uri(root)
    expected: list[list[tuple]] = []

    def body(result: PairResult, lock: threading.Lock) -> None:
        def process(name: str, loc: str, field_name: str) -> None:
            state = RegionState(name, NetworkBooks())
            writer = derived.DerivedWriter(state, threading.Lock(), {ITEMS.name: url},
                                           f"pair-{name}", lambda: [], lambda: None)
            for seq in range(1, commits + 1):
                at = f"2026-12-06T12:{seq:02d}:00.000Z"
                for sku, fields in ((f"{name}-SKU-{seq}", {"price": float(seq)}),
                                    ("SHARED", {field_name: seq})):
                    state.books.items.apply({"occurred_at": at, "location_id": loc,
                                             "seq": seq, "payload": {"sku": sku, **fields}})
                _retrying(result, lock, lambda: writer.write(aggregates=False))
                with lock:
                    expected.append([(f"{name}-SKU-{seq}", "price", float(seq))])
            with lock:
                expected.append([("SHARED", field_name, commits)])

        _together(lambda: process("east", "E-1", "shelf_life_days"),
                  lambda: process("west", "W-1", "min_sellable_days"))

    result = _run("two stream processes' items + maintain", ITEMS, root, [ITEMS], body,
                  beside)
    found: Counter = Counter()
    for row in _data(ITEMS, root):
        for name in ("price", "shelf_life_days", "min_sellable_days"):
            if row[name] is not None:
                found[(row["sku"], name, row[name])] += 1
    _score(result, expected, found)
    return result


PAIRS: dict[str, Callable[..., PairResult]] = {
    "record": record_pair, "gold": gold_pair, "decisions": decisions_pair,
    "heartbeats": heartbeats_pair, "items": items_pair,
}
"""Every pair, by a short name."""


def run_pairs(new_root: Callable[[], str], commits: int = 12,
              say: Callable[[str], object] = print) -> list[PairResult]:
    """Run every pair on a fresh lakehouse each (``new_root()``), saying how it went."""
    results = []
    for name, pair in PAIRS.items():
        result = pair(new_root(), commits)
        say(f"{name}: {result.pair} on {result.table}: {result.commits} commits, "
            f"{result.commits_lost} lost ({result.rows_lost} rows missing, "
            f"{result.rows_doubled} doubled), {result.writer_retries} writer retries, "
            f"{result.maintain_rounds} maintenance rounds, {result.seconds:.1f} s")
        results.append(result)
    return results


def commits_lost(results: list[PairResult]) -> int:
    """Commits lost over all pairs (0 is the only right answer)."""
    return sum(r.commits_lost for r in results)
