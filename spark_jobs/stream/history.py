"""Gold ``pipeline_history``: each region's stream every 30 s, kept over time.

``region_status`` holds only each region's latest figures, and Prometheus keeps history
only where someone runs a Prometheus. Operators asked two questions the latest figures
cannot answer: "since when is it slow?" and "is it growing?" (a stream whose state or
memory grows without bound is a runaway, and it shows here hours before it stops the
network). So every ``every_s`` each region appends one row: latency percentiles of the
events it applied since the last row (store clock to gold), its lag and backlog, batch
time, dead letters, the size of its state, and the stream process's memory.

One small append per region per 30 s is about 8,600 rows a day for three regions;
``shelflife maintain`` compacts the files like any appended table.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import deltalake
import pyarrow as pa
from deltalake import write_deltalake

from lakehouse.catalogue import PIPELINE_HISTORY
from lakehouse.logtidy import HOOKS, LogTidy
from lakehouse.storage import delta_options

MAX_SAMPLES = 200_000
"""Latencies kept per window (over three minutes at 1,000 events/s): a status thread that
fails for a long time must not make the window grow without bound."""


def percentile(values: list[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) by nearest rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def rss_mb(pid: int | None = None) -> float | None:
    """Resident memory of a process in MB, from ``/proc`` (None where there is none)."""
    try:
        with open(f"/proc/{pid or 'self'}/statm", encoding="ascii") as fh:
            pages = int(fh.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 1e6, 1)


class PipelineWindow:
    """What a region's batches did since the last history row (thread-safe: batches add,
    the status thread takes)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self.latencies: list[float] = []
        self.batch_s: list[float] = []
        self.events = 0
        self.dead_letters = 0

    def add_batch(self, latencies: Iterable[float], events: int, dead_letters: int,
                  duration_s: float) -> None:
        with self._lock:
            room = MAX_SAMPLES - len(self.latencies)
            if room > 0:
                self.latencies.extend(list(latencies)[:room])
            self.batch_s.append(duration_s)
            self.events += events
            self.dead_letters += dead_letters

    def take(self) -> dict[str, Any]:
        """The window's figures, and a fresh window."""
        with self._lock:
            lat, batch_s = self.latencies, self.batch_s
            out = {"events": self.events, "dead_letters": self.dead_letters,
                   "latency_p50_s": percentile(lat, 0.50),
                   "latency_p95_s": percentile(lat, 0.95),
                   "latency_p99_s": percentile(lat, 0.99),
                   "batch_p95_s": percentile(batch_s, 0.95)}
            self._reset()
        return out


class HistoryLog:
    """Appends a region's history rows to gold ``pipeline_history``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._table: deltalake.DeltaTable | None = None
        self._tidy = LogTidy(path)

    def append(self, row: Mapping[str, Any]) -> None:
        data = pa.Table.from_pylist([dict(row)], schema=PIPELINE_HISTORY.schema)
        if self._table is None:  # kept open: reopening replays the log each time
            self._table = deltalake.DeltaTable(self.path,
                                               storage_options=delta_options(self.path))
        try:
            write_deltalake(self._table, data, mode="append", post_commithook_properties=HOOKS)
        except Exception:
            self._table = None
            raise
        self._tidy.committed(self._table)


def history_row(region: str, window: Mapping[str, Any], *, elapsed_s: float, mode: str,
                lag_s: float | None, backlog_events: int, locations: int, cohorts: int,
                state_bytes: int, jvm_pid: int | None) -> dict[str, Any]:
    """One ``pipeline_history`` row from a window's figures and the region's now."""
    return {"region": region, "at": datetime.now(UTC).replace(tzinfo=None), "mode": mode,
            "lag_s": lag_s, "backlog_events": int(backlog_events),
            "events_per_s": round(window["events"] / max(elapsed_s, 1e-3), 2),
            "locations": locations, "cohorts": cohorts,
            "state_mb": round(state_bytes / 1e6, 2) if state_bytes else None,
            "driver_rss_mb": rss_mb(), "jvm_rss_mb": rss_mb(jvm_pid) if jvm_pid else None,
            **window}


def jvm_pid(spark: Any) -> int | None:
    """The pid of the driver's JVM when this Python process launched it (not on Spark
    Connect, nor when the JVM was started by ``spark-submit`` before Python)."""
    proc = getattr(getattr(getattr(spark, "sparkContext", None), "_gateway", None),
                   "proc", None)
    return getattr(proc, "pid", None)
