"""Silver ``events`` as the stream writes them: landing lines shaped by the record
writer's own shaper and committed with delta-rs, for the jobs that read silver."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import pyarrow as pa
from deltalake import write_deltalake

from lakehouse.catalogue import EVENTS
from lakehouse.contract import encode_event, topic
from lakehouse.storage import delta_options, ensure_parent
from spark_jobs.stream.record import silver_rows


def landing_lines(events: list[dict], *, received_at: str, region: str = "east",
                  batch_id: str = "b1", first_line: int = 0) -> list[dict]:
    """The landing lines ingest writes for ``events``."""
    return [{"kind": "event", "topic": topic(region, e["location_id"], "events"),
             "region": region, "received_at": received_at, "batch_id": batch_id,
             "line": first_line + i, "raw": encode_event(e).decode()}
            for i, e in enumerate(events)]


def write_silver_events(root: Path | str, events: list[dict], *, received_at: str,
                        mode: Literal["append", "overwrite"] = "overwrite",
                        batch_id: str = "b1") -> str:
    """Commit ``events`` to silver ``events`` under ``root`` (a folder or an ``s3://``
    lakehouse); returns the table's location."""
    lines = landing_lines(events, received_at=received_at, batch_id=batch_id)
    rows = silver_rows([(0, line) for line in lines], datetime.now(UTC))
    url = EVENTS.uri(root)
    ensure_parent(url)
    write_deltalake(url, pa.Table.from_pylist(rows, schema=EVENTS.schema), mode=mode,
                    partition_by=list(EVENTS.partitions), storage_options=delta_options(url))
    return url
