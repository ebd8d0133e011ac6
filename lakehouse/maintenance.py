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
  compaction merged, so keeping them a week costs little and keeps any long-running
  reader (a notebook, a Spark job mid-scan) working. How far back time travel reaches is
  set by each table's log retention (the catalogue's ``FREQUENT``, ``REWRITTEN`` and
  ``LIVE``), which the writers apply every few hundred commits or five minutes
  (``lakehouse.logtidy``).

Safe beside the writers: delta-rs commits with S3 conditional PUTs, and compaction
commits ``dataChange=false``, so appends (the record writer, heartbeats, decision logs)
never conflict with it in either order. A compaction or vacuum that loses a race to a
writer that removed the files it read (a partition or whole-table overwrite) is retried
on a fresh snapshot up to :data:`COMMIT_RETRIES` times and otherwise reported and left
for the next round. Nothing here raises out of the loop over tables, and no writer is
ever paused.

One compactor per lakehouse: delta-rs (1.6) leaves ``dataChange=false`` removes out of
its conflict check, so two compactions of the same files made at once both commit and
every row in them is then there twice. No writer compacts its own table any more, and
a round holds a lease (:class:`Lease`, ``_maintenance/lease-<n>.json`` beside the
tables, taken with a create-if-absent PUT): a second ``shelflife maintain`` on the same
lakehouse skips its round while the first one's lease is live.

The one table Spark commits (gold ``demand_forecasts``, a single-driver writer on S3) is
not touched by delta-rs: the forecast job vacuums it with Spark after each overwrite.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from deltalake import DeltaTable
from deltalake.exceptions import CommitFailedError

from lakehouse.catalogue import REWRITTEN_TABLES, TABLES, Table
from lakehouse.storage import delta_options, is_s3, join, lake_url, s3_client, split_s3

DEFAULT_RETAIN_HOURS = 168
"""Retention of replaced files for tables that declare none (a week, as Delta's default)."""
COMMIT_RETRIES = 3
"""Fresh-snapshot attempts of one partition's compaction, or of a vacuum, after a lost
commit race."""
LEASE_TTL_S = 1800.0
"""A round's lease lasts this long from its last renewal (before each table): a
maintainer that died is taken over after it, one that lives renews long before."""
LEASES_KEPT = 5
"""Spent lease objects kept (for a look at who maintained lately); older ones go."""

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
                 else f"{_files(self.files_after)}, nothing to compact")
        text = (f"{files}, vacuumed {_files(self.vacuumed)} (older than "
                f"{self.retain_hours} h), {self.seconds:.1f} s")
        if self.retries:
            text += f", {self.retries} retries after lost commit races"
        if self.note:
            text += f"; {self.note}"
        return head + text


class Lease:
    """The right to compact a lakehouse for one round, shared by every maintainer.

    Leases are numbered objects ``_maintenance/lease-<n>.json`` under the lakehouse,
    each created at most once (a create-if-absent PUT on S3, an exclusive create on a
    disk), so of two maintainers reaching for the same number one wins. The highest
    number is the lease; it is free once released or expired, and then taken by creating
    the next number. Its holder renews it before each table (:meth:`renew`)."""

    def __init__(self, root: str | os.PathLike[str] | None = None, *,
                 ttl_s: float = LEASE_TTL_S) -> None:
        self.url = join(lake_url(root), "_maintenance")
        self.ttl_s = ttl_s
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.number: int | None = None

    # --- the objects ----------------------------------------------------------------------

    def _name(self, n: int) -> str:
        return f"lease-{n:012d}.json"

    def _numbers(self) -> list[int]:
        if is_s3(self.url):
            bucket, prefix = split_s3(self.url)
            pages = s3_client().get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=f"{prefix}/lease-")
            names = [o["Key"].rsplit("/", 1)[-1] for page in pages
                     for o in page.get("Contents", [])]
        else:
            names = os.listdir(self.url) if os.path.isdir(self.url) else []
        return sorted(int(n[6:18]) for n in names
                      if re.fullmatch(r"lease-\d{12}\.json", n))

    def _read(self, n: int) -> dict:
        if is_s3(self.url):
            bucket, prefix = split_s3(self.url)
            body = s3_client().get_object(Bucket=bucket,
                                          Key=f"{prefix}/{self._name(n)}")["Body"].read()
        else:
            with open(os.path.join(self.url, self._name(n)), "rb") as fh:
                body = fh.read()
        return json.loads(body)

    def _put(self, n: int, *, create: bool) -> bool:
        """Write lease ``n``; with ``create``, only if no one has (False when taken)."""
        body = json.dumps({"owner": self.owner, "expires_at": time.time() + self.ttl_s,
                           "released": False}).encode()
        if is_s3(self.url):
            bucket, prefix = split_s3(self.url)
            extra = {"IfNoneMatch": "*"} if create else {}
            try:
                s3_client().put_object(Bucket=bucket, Key=f"{prefix}/{self._name(n)}",
                                       Body=body, **extra)
            except sys.modules["botocore.exceptions"].ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                if create and code in ("PreconditionFailed", "412",
                                       "ConditionalRequestConflict", "409"):
                    return False
                raise
            return True
        os.makedirs(self.url, exist_ok=True)
        try:
            with open(os.path.join(self.url, self._name(n)), "xb" if create else "wb") as fh:
                fh.write(body)
        except FileExistsError:
            return False
        return True

    def _delete(self, n: int) -> None:
        if is_s3(self.url):
            bucket, prefix = split_s3(self.url)
            s3_client().delete_object(Bucket=bucket, Key=f"{prefix}/{self._name(n)}")
        else:
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(self.url, self._name(n)))

    # --- the lease ------------------------------------------------------------------------

    def acquire(self) -> str | None:
        """Take the lease: None when taken, else who holds it (to say why we wait)."""
        numbers = self._numbers()
        top = numbers[-1] if numbers else 0
        if numbers:
            held = self._read(top)
            if not held.get("released") and held.get("expires_at", 0) > time.time():
                return str(held.get("owner"))
        if not self._put(top + 1, create=True):
            return "another maintainer, just now"
        self.number = top + 1
        for old in numbers[:-LEASES_KEPT]:
            self._delete(old)
        return None

    def renew(self) -> bool:
        """Extend our lease; False when it was taken over (ours had expired)."""
        if self.number is None or self._numbers()[-1:] != [self.number]:
            self.number = None
            return False
        self._put(self.number, create=False)
        return True

    def release(self) -> None:
        """Free the lease for the next round (ours or another maintainer's)."""
        if self.number is None:
            return
        held = {"owner": self.owner, "expires_at": 0, "released": True}
        if is_s3(self.url):
            bucket, prefix = split_s3(self.url)
            s3_client().put_object(Bucket=bucket, Key=f"{prefix}/{self._name(self.number)}",
                                   Body=json.dumps(held).encode())
        else:
            with open(os.path.join(self.url, self._name(self.number)), "w",
                      encoding="utf-8") as fh:
                json.dump(held, fh)
        self.number = None


def _files(n: int) -> str:
    return f"{n} file" if n == 1 else f"{n} files"


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


def compact(dt: DeltaTable, table: Table, *, retries: int = COMMIT_RETRIES) -> tuple[int, str]:
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


def vacuum(dt: DeltaTable, retain_hours: int, *, retries: int = COMMIT_RETRIES
           ) -> tuple[int, int]:
    """Delete files removed from ``dt`` over ``retain_hours`` ago; (files deleted, commit
    races retried). delta-rs records a vacuum as two commits, which a concurrent
    overwrite can make fail like any other; the last failure is raised."""
    for attempt in range(retries + 1):
        try:
            return len(dt.vacuum(retention_hours=retain_hours, dry_run=False,
                                 enforce_retention_duration=False)), attempt
        except CommitFailedError:
            if attempt == retries:
                raise
            time.sleep(0.05 * (attempt + 1))
            dt.update_incremental()
    raise AssertionError("unreachable")


def maintain_table(table: Table, root: str | os.PathLike[str] | None = None, *,
                   retain_hours: int = DEFAULT_RETAIN_HOURS,
                   rewritten_retain_hours: int | None = None) -> TableReport:
    """Compact (unless rewritten) and vacuum one table; never raises, the report says
    what went wrong. ``rewritten_retain_hours`` replaces the declared retention of
    rewritten gold (tests use 0 to see replaced files go at once)."""
    rewritten = id(table) in _REWRITTEN
    hours = (rewritten_retain_hours if rewritten and rewritten_retain_hours is not None
             else retention_hours(table, retain_hours))
    report = TableReport(str(table), "maintained", retain_hours=hours)
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
        if rewritten:
            report.note = "rewritten by its writers every batch: vacuumed, not compacted"
        else:
            report.retries, report.note = compact(dt, table)
            dt.update_incremental()
        report.files_after = len(dt.file_uris())
        vacuumed, retried = vacuum(dt, report.retain_hours)
        report.vacuumed, report.retries = vacuumed, report.retries + retried
    except Exception as exc:  # noqa: BLE001 - one table's trouble must not stop the round
        report.status = "failed"
        report.note = f"failed, left for next round: {type(exc).__name__}: {exc}"
    report.seconds = time.monotonic() - started
    return report


def maintain(root: str | os.PathLike[str] | None = None, *,
             retain_hours: int = DEFAULT_RETAIN_HOURS,
             say: Callable[[str], object] = print,
             tables: Iterable[Table] | None = None,
             rewritten_retain_hours: int | None = None) -> list[TableReport]:
    """One round over the catalogue (or ``tables``): compact and vacuum every table
    delta-rs commits, print a line per table, and return the reports."""
    chosen = list(TABLES if tables is None else tables)
    lease = Lease(root)
    try:
        holder = lease.acquire()
    except Exception as exc:  # noqa: BLE001 - storage trouble: say so, try next round
        say(f"maintain: cannot take the maintenance lease ({type(exc).__name__}: {exc}); "
            "this round is skipped")
        return []
    if holder is not None:
        say(f"maintain: another maintainer holds this lakehouse ({holder}); "
            "this round is skipped")
        return []
    reports: list[TableReport] = []
    try:
        for i, table in enumerate(chosen, start=1):
            try:
                ours = lease.renew()
            except Exception as exc:  # noqa: BLE001 - never compact without the lease
                say(f"maintain: cannot renew the lease ({type(exc).__name__}: {exc}); "
                    "this round stops here")
                break
            if not ours:
                say("maintain: the lease was taken over; this round stops here")
                break
            report = maintain_table(table, root, retain_hours=retain_hours,
                                    rewritten_retain_hours=rewritten_retain_hours)
            say(report.line(i, len(chosen)))
            reports.append(report)
    finally:
        with contextlib.suppress(Exception):  # it expires by itself if not released
            lease.release()
    return reports
