"""The per-region rewrite of the gold tables the streaming job keeps live.

``stock_cohorts`` and ``stock_levels`` are rewritten per region partition from the
region's :class:`~spark_jobs.stream.fold.RegionState` on every micro-batch that changes it.
That rewrite is committed from the Spark driver with delta-rs: it is a few thousand rows,
and a delta-rs commit takes tens of milliseconds where a Spark Delta commit takes a few
hundred, which is the difference between one-second and several-second freshness on a
two-core machine. Spark creates the tables and reads them like any other Delta table.
"""

from __future__ import annotations

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake

from lakehouse.storage import delta_options

_OPEN: dict[tuple[str, str], DeltaTable] = {}


def _table(path: str, region: str) -> DeltaTable:
    """The writer's own handle on a gold table, kept between batches.

    Opening a table replays its log since the last checkpoint, which at one commit a
    second is most of a small write's cost. Each region keeps its own handle (its batches
    run one at a time), and a commit by another region is resolved by delta-rs's conflict
    check: the regions overwrite disjoint partitions.
    """
    key = (path, region)
    if key not in _OPEN:
        _OPEN[key] = DeltaTable(path, storage_options=delta_options(path))
    return _OPEN[key]


def write_region(path: str, rows: list[tuple], schema: pa.Schema, region: str, *,
                 app_id: str, batch_id: int) -> None:
    """Replace one region's partition, recording ``(app_id, batch_id)`` in the commit;
    ``rows`` are tuples in the order of ``schema`` (the table's catalogue schema)."""
    columns = list(zip(*rows, strict=True)) if rows else [[] for _ in schema]
    table = pa.Table.from_arrays([pa.array(c, type=f.type) for c, f in
                                  zip(columns, schema, strict=True)], schema=schema)
    try:
        write_deltalake(_table(path, region), table, mode="overwrite",
                        predicate=f"region = '{region}'",
                        commit_properties=CommitProperties(
                            app_transactions=[Transaction(app_id, batch_id)],
                            max_commit_retries=20))
    except Exception:
        _OPEN.pop((path, region), None)  # reopen from the log next time
        raise
