"""Which seqs of each location are already durable in the landing zone.

Kept in a small SQLite file so a restarted ingest worker still drops what it landed
before. Losing this file is safe (the lakehouse deduplicates again by
``(location_id, seq)``); it only saves work and gives the contiguous ack.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path


class SeqTracker:
    """Per location: every seq <= ``contiguous`` is landed, plus a set of later ones."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("CREATE TABLE IF NOT EXISTS landed (location_id TEXT PRIMARY KEY, "
                          "contiguous INTEGER NOT NULL, above TEXT NOT NULL)")
        self.contiguous: dict[str, int] = {}
        self.above: dict[str, set[int]] = {}
        for loc, contig, above in self.conn.execute("SELECT * FROM landed"):
            self.contiguous[loc] = contig
            self.above[loc] = set(json.loads(above))

    def seen(self, location_id: str, seq: int) -> bool:
        return seq <= self.contiguous.get(location_id, 0) or seq in self.above.get(
            location_id, ())

    def mark(self, landed: dict[str, list[int]]) -> dict[str, int]:
        """Record landed seqs; returns locations whose contiguous seq moved, with it."""
        moved: dict[str, int] = {}
        for loc, seqs in landed.items():
            contig = self.contiguous.get(loc, 0)
            above = self.above.setdefault(loc, set())
            above.update(s for s in seqs if s > contig)
            start = contig
            while contig + 1 in above:
                contig += 1
                above.discard(contig)
            self.contiguous[loc] = contig
            if contig != start:
                moved[loc] = contig
        self.conn.execute("BEGIN")
        self.conn.executemany(
            "INSERT INTO landed VALUES (?, ?, ?) ON CONFLICT(location_id) DO UPDATE SET "
            "contiguous = excluded.contiguous, above = excluded.above",
            [(loc, self.contiguous[loc], json.dumps(sorted(self.above[loc])))
             for loc in landed])
        self.conn.execute("COMMIT")
        return moved

    def close(self) -> None:
        self.conn.close()
