"""JVM-free reads of the Delta tables, for the dashboard and notebooks.

The dashboard must never start Spark, so it reads gold through ``deltalake`` (delta-rs)
and pyarrow. A table that does not exist yet (the demo has just started, Spark has not
committed its first batch) reads as ``None`` so callers can say "waiting" instead of
failing. Timestamps come back UTC-aware whatever the writer stored, because every time
in Shelflife is UTC and naive values invite local-time mistakes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pyarrow as pa
from deltalake import DeltaTable, QueryBuilder
from deltalake.exceptions import TableNotFoundError

from lakehouse.catalogue import Table
from lakehouse.storage import delta_options

Filters = Sequence[tuple[str, str, Any]]
"""Row filters in pyarrow's DNF form, e.g. ``[("region", "=", "east")]`` (ANDed)."""


def _open(
    table: Table, root: str | os.PathLike[str] | None, version: int | None = None
) -> DeltaTable | None:
    """The table, or None while it has no commit yet (not created, or still being created)."""
    url = table.uri(root)
    options = delta_options(url)
    if not DeltaTable.is_deltatable(url, storage_options=options):
        return None
    try:
        return DeltaTable(url, version=version, storage_options=options)
    except TableNotFoundError:
        return None


def is_table(url: str) -> bool:
    """True once a Delta table has its first commit at ``url`` (a folder or S3)."""
    return DeltaTable.is_deltatable(url, storage_options=delta_options(url))


def _utc_timestamps(data: pa.Table) -> pa.Table:
    """Mark every timestamp column as UTC (naive values are UTC by Shelflife convention)."""
    for index, field in enumerate(data.schema):
        if pa.types.is_timestamp(field.type) and field.type.tz != "UTC":
            # Arrow stores timestamps as UTC instants: a naive column already holds UTC
            # wall time and an aware one only needs relabelling, so a cast is enough.
            utc = data.column(index).cast(pa.timestamp(field.type.unit, tz="UTC"))
            data = data.set_column(index, field.with_type(utc.type), utc)
    return data


def _match_timestamps(delta: DeltaTable, filters: Filters) -> list[tuple[str, str, Any]]:
    """Filters on a timestamp column with a ``datetime``, made naive or UTC-aware as the
    column is (a Spark-written table stores UTC-aware times, a delta-rs one may not),
    so a caller passes a UTC time either way."""
    types = {f.name: f.type for f in pa.schema(delta.schema().to_arrow())}
    out = []
    for column, op, value in filters:
        kind = types.get(column)
        if isinstance(value, datetime) and kind is not None and pa.types.is_timestamp(kind):
            moment = value if value.tzinfo else value.replace(tzinfo=UTC)
            value = moment.astimezone(UTC)
            if kind.tz is None:
                value = value.replace(tzinfo=None)
        out.append((column, op, value))
    return out


def read_table(
    table: Table,
    root: str | os.PathLike[str] | None = None,
    *,
    filters: Filters | None = None,
    columns: Sequence[str] | None = None,
    version: int | None = None,
) -> pd.DataFrame | None:
    """Read one catalogue table into pandas, or None when it does not exist yet.

    ``filters`` are pushed down (partition pruning on ``region``, file statistics), so a
    regional view reads only its region. ``version`` pins the snapshot, which lets a
    cache keyed on :func:`table_version` hold exactly the data of that version. Dates
    come back as ``datetime.date`` objects; timestamps as ``datetime64[..., UTC]``.
    """
    delta = _open(table, root, version)
    if delta is None:
        return None
    data = delta.to_pyarrow_table(
        columns=list(columns) if columns is not None else None,
        filters=_match_timestamps(delta, filters) if filters else None,
    )
    return _utc_timestamps(data).to_pandas()


def _plain_types(data: pa.Table) -> pa.Table:
    """DataFusion's string and binary views as the plain types the catalogue declares."""
    views = {pa.string_view(): pa.string(), pa.binary_view(): pa.binary()}
    fields = [f.with_type(views.get(f.type, f.type)) for f in data.schema]
    return data.cast(pa.schema(fields)) if fields != list(data.schema) else data


def read_since(
    table: Table,
    root: str | os.PathLike[str] | None,
    column: str,
    since: datetime,
    *,
    columns: Sequence[str] | None = None,
    version: int | None = None,
) -> pd.DataFrame | None:
    """Rows of an append-only log whose timestamp ``column`` is at or after ``since``
    (UTC), or None when the table does not exist yet.

    Read with delta-rs's own query engine (DataFusion), which skips files by their
    statistics in Rust: a log appended every few seconds has hundreds of small files
    between compactions, and building a pyarrow dataset of them took most of a second
    (0.55 s for 864 files where this takes 0.03 s)."""
    delta = _open(table, root, version)
    if delta is None:
        return None
    moment = (since if since.tzinfo else since.replace(tzinfo=UTC)).astimezone(UTC)
    names = ", ".join(f'"{c}"' for c in columns) if columns else "*"
    result = QueryBuilder().register("log", delta).execute(
        f'SELECT {names} FROM log WHERE "{column}" >= '
        f"'{moment.strftime('%Y-%m-%dT%H:%M:%S.%f')}+00:00'")
    return _utc_timestamps(_plain_types(pa.table(result.read_all()))).to_pandas()


def table_version(table: Table, root: str | os.PathLike[str] | None = None) -> int | None:
    """The table's latest committed version, or None when it does not exist yet.

    Cheap next to a full read: callers use it as a cache key and re-read only on change.
    """
    delta = _open(table, root)
    return None if delta is None else delta.version()
