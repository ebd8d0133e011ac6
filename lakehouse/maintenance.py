"""Table upkeep: merge small files and delete replaced ones, beside the running writers.

Every writer of Shelflife commits small and often (the record writer every few seconds,
gold every second, heartbeats every five), so left alone a table becomes thousands of
small files that every reader lists and opens, plus every file a rewrite replaced.
:func:`maintain` goes through the catalogue once and, for each table delta-rs commits:

* **compacts** it (``optimize.compact``) one partition at a time, so a compaction only
  ever touches the files of one region (and category) and cannot collide with a writer
  of another partition. delta-rs bin-packs only partitions holding two or more small
  files: a partition already in one file costs nothing and commits nothing.
  Rewritten gold (``REWRITTEN_TABLES``) is *not* compacted: its writers replace each
  region partition every batch with a fresh file, so there is nothing lasting to merge,
  and a compaction committed between a writer's read and its commit makes that writer's
  predicate overwrite fail (the stream's batch would fail and its region restart).
* **vacuums** it (``vacuum(dry_run=False, enforce_retention_duration=False)``): deletes
  the files no longer in the table whose removal is older than the retention.

Retention, decided per table:

* rewritten gold: the table's own ``delta.deletedFileRetentionDuration`` (1 hour). It is
  replaced every second or two, so a day of history would be ~100,000 dead files; no
  reader holds a version for an hour.
* every other table (append-only logs, the derived logs, the decision jobs' outputs,
  reference tables): ``retain_hours``, default :data:`DEFAULT_RETAIN_HOURS` = 168 (a
  week, Delta's own default). Their replaced files are mostly the small files a
  compaction merged, so keeping them a week costs little and keeps time travel a week
  deep and any long-running reader (a notebook, a Spark job mid-scan) working.

Safe beside the writers: delta-rs commits with S3 conditional PUTs, and compaction
commits ``dataChange=false``, so appends (the record writer, heartbeats, decision logs)
never conflict with it in either order. A compaction that loses a race to a writer that
removed the same files (a partition overwrite) is retried on a fresh snapshot up to
:data:`COMPACT_RETRIES` times and otherwise reported and left for the next round.
Nothing here raises out of the loop over tables, and no writer is ever paused.

The one table Spark commits (gold ``demand_forecasts``, a single-driver writer on S3) is
not touched by delta-rs: the forecast job vacuums it with Spark after each overwrite.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from deltalake import DeltaTable
from deltalake.exceptions import CommitFailedError

from lakehouse.catalogue import REWRITTEN_TABLES, TABLES, Table
from lakehouse.storage import delta_options

DEFAULT_RETAIN_HOURS = 168
"""Retention of replaced files for tables that declare none (a week, as Delta's default)."""
COMPACT_RETRIES = 3
"""Fresh-snapshot attempts of one partition's compaction after a lost commit race."""
DEFAULT_EVERY_S = 3600.0
"""How often ``shelflife maintain`` goes round the lakehouse."""

_REWRITTEN = frozenset(id(t) for t in REWRITTEN_TABLES)
_INTERVAL = re.compile(r"^\s*interval\s+(\d+)\s+(hour|hours|day|days)\s*$", re.IGNORECASE)


@dataclass
class TableReport:
    """What one round did to one table; ``status`` is maintained, missing, spark or
    failed."""

    table: str
    status: str
    files_before: int = 0
    files_after: int = 0
    vacuumed: int = 0
    retain_hours: int = 0
    seconds: float = 0.0
    retries: int = 0
    note: str = ""

    def line(self, index: int, total: int) -> str:
        """The progress line printed for this table, ``[3/27] silver/events: ...``."""
        head = f"[{index}/{total}] {self.table}: "
        if self.status == "missing":
            return head + "no table yet, skipped"
        if self.status == "spark":
            return head + "committed by Spark; maintained by the forecast job"
        files = (f"{self.files_before} files -> {self.files_after}"
                 if self.files_before != self.files_after
                 else f"{self.files_after} files, nothing to compact")
        text = (f"{files}, vacuumed {self.vacuumed} files (older than "
                f"{self.retain_hours} h), {self.seconds:.1f} s")
        if self.retries:
            text += f", {self.retries} compaction retries"
        if self.note:
            text += f"; {self.note}"
        return head + text


def retention_hours(table: Table, default: int = DEFAULT_RETAIN_HOURS) -> int:
    """How long a replaced file of ``table`` is kept: its declared
    ``delta.deletedFileRetentionDuration`` when it has one, else ``default``."""
    declared = table.properties.get("delta.deletedFileRetentionDuration")
    match = _INTERVAL.match(declared) if declared else None
    if match is None:
        return int(default)
    amount, unit = int(match.group(1)), match.group(2).lower()
    return amount * 24 if unit.startswith("day") else amount


def _partition_filters(dt: DeltaTable, table: Table) -> list[list[tuple[str, str, str]] | None]:
    """One filter per partition of the table (``[None]``, the whole table, when it is
    not partitioned or a partition value is null and cannot be named in a filter)."""
    if not table.partitions:
        return [None]
    parts = dt.partitions()
    if any(v is None for p in parts for v in p.values()):
        return [None]
    return [[(k, "=", str(v)) for k, v in sorted(p.items())] for p in parts]


def compact(dt: DeltaTable, table: Table, *, retries: int = COMPACT_RETRIES) -> tuple[int, str]:
    """Compact ``table`` partition by partition; (commit races retried, what was left).

    A partition whose compaction keeps losing races is left as it is for the next round
    and named in the returned note; the other partitions are still compacted."""
    retried, left = 0, []
    for filters in _partition_filters(dt, table):
        for attempt in range(retries + 1):
            try:
                dt.optimize.compact(partition_filters=filters)
                break
            except CommitFailedError:
                if attempt == retries:
                    left.append(",".join(f"{k}={v}" for k, _, v in filters or []) or "all")
                    break
                retried += 1
                time.sleep(0.05 * (attempt + 1))
                dt.update_incremental()
    if not left:
        return retried, ""
    return retried, f"compaction left for next round (writers kept winning): {'; '.join(left)}"


def maintain_table(table: Table, root: str | os.PathLike[str] | None = None, *,
                   retain_hours: int = DEFAULT_RETAIN_HOURS) -> TableReport:
    """Compact (unless rewritten) and vacuum one table; never raises, the report says
    what went wrong."""
    report = TableReport(str(table), "maintained",
                         retain_hours=retention_hours(table, retain_hours))
    if table.engine != "delta-rs":
        report.status = "spark"
        return report
    started = time.monotonic()
    url = table.uri(root)
    options = delta_options(url)
    try:
        if not DeltaTable.is_deltatable(url, storage_options=options):
            report.status = "missing"
            return report
        dt = DeltaTable(url, storage_options=options)
        report.files_before = len(dt.file_uris())
        if id(table) in _REWRITTEN:
            report.note = "rewritten by its writers every batch: vacuumed, not compacted"
        else:
            report.retries, report.note = compact(dt, table)
            dt.update_incremental()
        report.files_after = len(dt.file_uris())
        report.vacuumed = len(dt.vacuum(retention_hours=report.retain_hours,
                                        dry_run=False, enforce_retention_duration=False))
    except Exception as exc:  # noqa: BLE001 - one table's trouble must not stop the round
        report.status = "failed"
        report.note = f"failed, left for next round: {type(exc).__name__}: {exc}"
    report.seconds = time.monotonic() - started
    return report


def maintain(root: str | os.PathLike[str] | None = None, *,
             retain_hours: int = DEFAULT_RETAIN_HOURS,
             say: Callable[[str], object] = print,
             tables: Iterable[Table] | None = None) -> list[TableReport]:
    """One round over the catalogue (or ``tables``): compact and vacuum every table
    delta-rs commits, print a line per table, and return the reports."""
    chosen = list(TABLES if tables is None else tables)
    reports = []
    for i, table in enumerate(chosen, start=1):
        report = maintain_table(table, root, retain_hours=retain_hours)
        say(report.line(i, len(chosen)))
        reports.append(report)
    return reports
