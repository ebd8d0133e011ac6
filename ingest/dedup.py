"""Which seqs of each location are already durable in the landing zone.

Kept in a small SQLite file so a restarted ingest worker still drops what it landed
before. Losing this file is safe (the lakehouse deduplicates again by
``(location_id, seq)``); it only saves work and gives the contiguous ack.

Durability: WAL mode with ``synchronous=FULL``, so a committed transaction has had its
WAL frames fsynced and survives a power cut (SQLite's own guarantee; ``NORMAL`` would
allow the last commits to roll back). Each landing batch is bracketed by two commits: an
*intent* (batch id and its seqs) before the file is renamed into place, and the *mark*
(seqs landed, intent dropped) after. A worker killed between the two finds the intent on
restart and settles it by looking at the landing folder (:mod:`ingest.worker`), so a
batch that reached the landing zone is never landed a second time when its agent re-sends.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

BUSY_TIMEOUT_S = 5.0
"""How long a write waits for another holder of the file's lock before failing."""


class SeqTracker:
    """Per location: every seq <= ``contiguous`` is landed, plus a set of later ones."""

    def __init__(self, path: Path, *, busy_timeout_s: float = BUSY_TIMEOUT_S) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                    timeout=busy_timeout_s)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("CREATE TABLE IF NOT EXISTS landed (location_id TEXT PRIMARY KEY, "
                          "contiguous INTEGER NOT NULL, above TEXT NOT NULL)")
        self.conn.execute("CREATE TABLE IF NOT EXISTS pending (batch_id TEXT PRIMARY KEY, "
                          "landed TEXT NOT NULL)")
        self.contiguous: dict[str, int] = {}
        self.above: dict[str, set[int]] = {}
        for loc, contig, above in self.conn.execute("SELECT * FROM landed"):
            self.contiguous[loc] = contig
            self.above[loc] = set(json.loads(above))

    def seen(self, location_id: str, seq: int) -> bool:
        return seq <= self.contiguous.get(location_id, 0) or seq in self.above.get(
            location_id, ())

    def intend(self, batch_id: str, landed: dict[str, list[int]]) -> None:
        """Record that ``batch_id`` (holding these seqs) is about to be renamed into place."""
        self.conn.execute("INSERT OR REPLACE INTO pending VALUES (?, ?)",
                          (batch_id, json.dumps(landed)))

    def pending(self) -> dict[str, dict[str, list[int]]]:
        """Intents left by a worker that stopped before marking their batch."""
        return {batch: json.loads(landed)
                for batch, landed in self.conn.execute("SELECT * FROM pending")}

    def forget(self, batch_id: str) -> None:
        """Drop an intent whose batch never reached the landing zone."""
        self.conn.execute("DELETE FROM pending WHERE batch_id = ?", (batch_id,))

    def mark(self, landed: dict[str, list[int]], *, batch_id: str | None = None
             ) -> dict[str, int]:
        """Record landed seqs (and drop ``batch_id``'s intent) in one transaction; returns
        locations whose contiguous seq moved, with it.

        Memory changes only once the transaction has committed, so a failed commit (a
        locked or full disk) can be retried with the same arguments and gives the same
        answer.
        """
        moved: dict[str, int] = {}
        contiguous: dict[str, int] = {}
        aboves: dict[str, set[int]] = {}
        for loc, seqs in landed.items():
            contig = self.contiguous.get(loc, 0)
            above = set(self.above.get(loc, ()))
            above.update(s for s in seqs if s > contig)
            start = contig
            while contig + 1 in above:
                contig += 1
                above.discard(contig)
            contiguous[loc], aboves[loc] = contig, above
            if contig != start:
                moved[loc] = contig
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self.conn.executemany(
                "INSERT INTO landed VALUES (?, ?, ?) ON CONFLICT(location_id) DO UPDATE SET "
                "contiguous = excluded.contiguous, above = excluded.above",
                [(loc, contiguous[loc], json.dumps(sorted(aboves[loc]))) for loc in landed])
            if batch_id is not None:
                self.conn.execute("DELETE FROM pending WHERE batch_id = ?", (batch_id,))
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise
        self.contiguous.update(contiguous)
        self.above.update(aboves)
        return moved

    def close(self) -> None:
        self.conn.close()
