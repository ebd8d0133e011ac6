"""Durable landing batches: write, fsync, rename, fsync the folder.

A batch file is either wholly present under its final name or absent, so the streaming
job never reads half a batch, and ingest acks a seq only after the file holding it (and
every lower seq) has been made durable here.
"""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lakehouse.contract import utc_now_ms


@dataclass(frozen=True)
class LandedRecord:
    """One line of a landing batch: an accepted event or a dead letter."""

    kind: str  # "event" or "dead"
    topic: str
    region: str
    received_at: str
    raw: bytes
    reason: str | None = None

    def to_line(self, batch_id: str, line_no: int) -> str:
        row: dict[str, Any] = {
            "kind": self.kind, "topic": self.topic, "region": self.region,
            "received_at": self.received_at, "batch_id": batch_id, "line": line_no,
        }
        if self.kind == "event":
            row["raw"] = self.raw.decode("utf-8")
        else:
            row["raw_b64"] = base64.b64encode(self.raw).decode("ascii")
            row["reason"] = self.reason
        return json.dumps(row, separators=(",", ":"))


class LandingWriter:
    """Writes one region's batches into ``<lakehouse>/landing/<region>/``."""

    def __init__(self, directory: Path, worker: str) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.worker = worker
        self._n = 0

    def write(self, records: list[LandedRecord]) -> tuple[str, Path]:
        """Make ``records`` durable as one batch file; returns (batch_id, path)."""
        self._n += 1
        batch_id = f"{int(time.time() * 1000):013d}-{self.worker}-{self._n:06d}-" \
                   f"{uuid.uuid4().hex[:6]}"
        final = self.directory / f"b-{batch_id}.jsonl"
        # Spark's file source ignores names starting with '.', so the temporary file
        # is never picked up half-written.
        tmp = self.directory / f".tmp-{batch_id}.jsonl"
        data = "".join(r.to_line(batch_id, i) + "\n" for i, r in enumerate(records))
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.rename(tmp, final)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return batch_id, final


def now_ts() -> str:
    return utc_now_ms()
