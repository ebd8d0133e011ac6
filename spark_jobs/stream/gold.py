"""The per-region rewrite of the gold tables the streaming job keeps live.

``stock_cohorts`` and ``stock_levels`` are rewritten per region partition from the
region's :class:`~spark_jobs.stream.fold.RegionState` on every micro-batch that changes it.
That rewrite is committed from the Spark driver with delta-rs, the regions of one process
together when they are ready together (:class:`_GroupCommit`): it is a few thousand rows,
and a delta-rs commit takes tens of milliseconds where a Spark Delta commit takes a few
hundred, which is the difference between one-second and several-second freshness on a
two-core machine. delta-rs creates the tables (``tables.py``); Spark reads them like any
other Delta table.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake

from lakehouse.logtidy import HOOKS, LogTidy
from lakehouse.storage import delta_options

log = logging.getLogger(__name__)


@dataclass
class _Replacement:
    region: str
    data: pa.Table
    txn: Transaction
    done: Future = field(default_factory=Future)


class _GroupCommit:
    """The process's one writer of a gold table: the regions' partition replacements that
    wait while a commit is in flight go out together in the next commit.

    Three regions committing to one table each second race each other for its next
    version; on S3, where a try is several round trips, the losers' retries took most of
    a second (bench/commits.py: one table took 3-6 commits/s from 2-4 racing writers).
    One commit replacing every waiting region's partition, with each region's app
    transaction, keeps the table at one writer per process and idempotent per region. A
    combined commit that fails is retried region by region, so one region's trouble does
    not fail another's batch."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._pending: dict[str, _Replacement] = {}
        self._lock = threading.Lock()
        self._committing = threading.Lock()
        self._handle: DeltaTable | None = None
        self._tidy = LogTidy(path)

    def replace(self, region: str, data: pa.Table, txn: Transaction) -> None:
        """Replace ``region``'s partition with ``data``; returns once committed."""
        mine = _Replacement(region, data, txn)
        with self._lock:
            self._pending[region] = mine  # a region's batches run one at a time
        with self._committing:
            if not mine.done.done():
                with self._lock:
                    group, self._pending = list(self._pending.values()), {}
                self._commit(group)
        mine.done.result()

    def _commit(self, group: list[_Replacement]) -> None:
        try:
            self._write(group)
        except Exception as exc:
            if len(group) == 1:
                group[0].done.set_exception(exc)
                return
            log.warning("gold %s: a commit of %d regions failed (%s); one by one",
                        self.path, len(group), exc)
            for one in group:
                try:
                    self._write([one])
                except Exception as alone:  # noqa: BLE001 - handed to that region's batch
                    one.done.set_exception(alone)
                else:
                    one.done.set_result(None)
            return
        for one in group:
            one.done.set_result(None)

    def _write(self, group: list[_Replacement]) -> None:
        if self._handle is None:  # kept open: reopening replays the log each time
            self._handle = DeltaTable(self.path, storage_options=delta_options(self.path))
        regions = ", ".join(f"'{r.region}'" for r in group)
        try:
            write_deltalake(self._handle, pa.concat_tables([r.data for r in group]),
                            mode="overwrite", predicate=f"region IN ({regions})",
                            commit_properties=CommitProperties(
                                app_transactions=[r.txn for r in group],
                                max_commit_retries=20),
                            post_commithook_properties=HOOKS)
        except Exception:
            self._handle = None  # reopen from the log next time
            raise
        self._tidy.committed(self._handle)


_TABLES: dict[str, _GroupCommit] = {}
_TABLES_LOCK = threading.Lock()


def _writer(path: str) -> _GroupCommit:
    with _TABLES_LOCK:
        if path not in _TABLES:
            _TABLES[path] = _GroupCommit(path)
        return _TABLES[path]


def write_region(path: str, rows: list[tuple], schema: pa.Schema, region: str, *,
                 app_id: str, batch_id: int) -> None:
    """Replace one region's partition, recording ``(app_id, batch_id)`` in the commit;
    ``rows`` are tuples in the order of ``schema`` (the table's catalogue schema)."""
    columns = list(zip(*rows, strict=True)) if rows else [[] for _ in schema]
    table = pa.Table.from_arrays([pa.array(c, type=f.type) for c, f in
                                  zip(columns, schema, strict=True)], schema=schema)
    _writer(path).replace(region, table, Transaction(app_id, batch_id))
