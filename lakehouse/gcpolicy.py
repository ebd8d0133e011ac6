"""How often the long-running services collect reference cycles.

Ingest and the stream allocate several small containers per event (the decoded event,
its landing line, the fold's rows, the bronze/silver rows) and keep large, long-lived
structures beside them (every location's state, Spark's Python objects). With Python's
default thresholds a young-generation collection runs every 700 net allocations and each
older collection walks those long-lived structures again: on the stream's own steps at
1,000 events per region batch that was a quarter of its CPU (``bench/stream_cpu.py``:
about 160 µs an event with the defaults, 120 µs with these thresholds, two runs each).
Almost nothing in these processes forms cycles, so collecting less often frees the same
memory later, not more of it.
"""

from __future__ import annotations

import gc

SERVICE_THRESHOLDS = (50_000, 20, 50)
"""``gc.set_threshold`` of ingest and the stream (the defaults are 700, 10, 10)."""


def tune_for_service() -> None:
    """Freeze what startup made (modules, configuration: never collected again) and
    collect young objects every :data:`SERVICE_THRESHOLDS`\\[0] allocations."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*SERVICE_THRESHOLDS)
