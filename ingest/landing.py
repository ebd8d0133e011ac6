"""Durable landing batches: write, fsync, rename, fsync the folder.

A batch file is either wholly present under its final name or absent, so the streaming
job never reads half a batch, and ingest acks a seq only after the file holding it (and
every lower seq) has been made durable here. Each step and the guarantee it rests on:

1. :meth:`LandingWriter.prepare` writes the lines to ``.tmp-<batch>.jsonl`` and
   ``fsync``\\ s it: after a power cut the file's *contents* are on disk (POSIX fsync),
   but its name may not be yet. Spark's file source ignores names starting with ``.``.
2. The worker records its intent to publish the batch (:meth:`SeqTracker.intend`), so a
   crash between here and step 4 can be told apart from one before step 1.
3. :meth:`LandingWriter.publish` renames it to ``b-<batch>.jsonl`` (``rename(2)`` is
   atomic within a file system: a reader sees the old name or the new one, never a half
   file) and then ``fsync``\\ s the folder, which makes the rename itself durable (on
   ext4/xfs a rename lives in the directory's metadata, lost with the page cache unless
   the directory is synced). Only now may anything that depends on the batch happen.
4. The worker marks the seqs landed (and drops the intent) in one SQLite transaction,
   then publishes acks.

:func:`lakehouse.durable.replace_durably` is the same write, fsync, rename, fsync-folder
sequence for small state files (credentials, the stream's state saves, operators).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lakehouse.contract import utc_now_ms
from lakehouse.durable import fsync_dir


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


@dataclass(frozen=True)
class PreparedBatch:
    """A batch written and synced under its temporary name, not yet visible."""

    batch_id: str
    tmp: Path
    final: Path
    lines: int


class LandingWriter:
    """Writes one region's batches into ``<lakehouse>/landing/<region>/``."""

    def __init__(self, directory: Path, worker: str) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        fsync_dir(self.directory.parent)  # the landing folder itself must not vanish
        self.worker = worker
        self._n = 0

    def tmp_path(self, batch_id: str) -> Path:
        return self.directory / f".tmp-{batch_id}.jsonl"

    def final_path(self, batch_id: str) -> Path:
        return self.directory / f"b-{batch_id}.jsonl"

    def prepare(self, records: list[LandedRecord]) -> PreparedBatch:
        """Step 1: the batch's bytes durable under a name no reader picks up."""
        self._n += 1
        batch_id = f"{int(time.time() * 1000):013d}-{self.worker}-{self._n:06d}-" \
                   f"{uuid.uuid4().hex[:6]}"
        tmp = self.tmp_path(batch_id)
        data = "".join(r.to_line(batch_id, i) + "\n" for i, r in enumerate(records))
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        return PreparedBatch(batch_id, tmp, self.final_path(batch_id), len(records))

    def publish(self, batch: PreparedBatch) -> Path:
        """Step 3: rename into place and sync the folder. Safe to call again after a
        failure: a batch already renamed (or already consumed by the stream) is only
        synced again."""
        if batch.tmp.exists():
            os.rename(batch.tmp, batch.final)
        fsync_dir(self.directory)
        return batch.final

    def discard(self, batch: PreparedBatch | str) -> None:
        """Forget a prepared batch that will not be published."""
        tmp = batch.tmp if isinstance(batch, PreparedBatch) else self.tmp_path(batch)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()

    def stray_batches(self) -> list[str]:
        """Batch ids of this worker's temporary files (left by a crash)."""
        return sorted(p.name[len(".tmp-"):-len(".jsonl")]
                      for p in self.directory.glob(f".tmp-*-{self.worker}-*.jsonl"))

    def write(self, records: list[LandedRecord]) -> tuple[str, Path]:
        """Make ``records`` durable as one batch file; returns (batch_id, path)."""
        batch = self.prepare(records)
        return batch.batch_id, self.publish(batch)


def now_ts() -> str:
    return utc_now_ms()
