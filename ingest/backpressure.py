"""How far the stream is behind a region's landing folder, and when ingest should wait.

The landing folder is the queue between ingest and Spark: files there are landed but not
yet consumed (Spark deletes each file once its micro-batch is committed). When a region's
stream falls behind, that folder grows without limit and the disk, not the broker,
becomes the buffer. Ingest therefore stops taking messages once the backlog passes a
high-water mark and resumes below a low-water mark; how the messages stay safe
meanwhile is explained in :mod:`ingest.worker`.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Backlog:
    """Landed files (and the events in them) waiting for the stream."""

    files: int = 0
    events: int = 0


class LandingBacklog:
    """Counts ``b-*.jsonl`` files in one landing folder and the lines they hold.

    Lines are counted once per file (files are immutable once renamed into place), so a
    scan costs one ``scandir`` plus reading only the files it has not seen before.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._lines: dict[str, int] = {}
        self._lock = threading.Lock()

    def note(self, name: str, lines: int) -> None:
        """Tell the scanner how many lines a file just written holds (saves a read)."""
        with self._lock:
            self._lines[name] = lines

    def scan(self) -> Backlog:
        try:
            names = [e.name for e in os.scandir(self.directory)
                     if e.name.startswith("b-") and e.name.endswith(".jsonl")]
        except FileNotFoundError:
            names = []
        with self._lock:
            known = {n: self._lines[n] for n in names if n in self._lines}
        for name in names:
            if name not in known:
                known[name] = self._count_lines(self.directory / name)
        with self._lock:
            self._lines = {n: known[n] for n in names if known[n] >= 0}
        return Backlog(files=len(names), events=sum(max(0, n) for n in known.values()))

    @staticmethod
    def _count_lines(path: Path) -> int:
        try:
            with open(path, "rb") as fh:
                return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
        except FileNotFoundError:  # consumed while we looked
            return -1


@dataclass
class IntakeGate:
    """Hysteresis between a high- and a low-water mark of backlog events.

    Paused at ``high`` or more; resumed only once the backlog is below ``low``, so intake
    does not flap around one number.
    """

    high: int
    low: int
    paused: bool = False
    pauses: int = 0

    def __post_init__(self) -> None:
        if self.high < 1:
            raise ValueError(f"backlog_high_events: must be >= 1, got {self.high!r}")
        if not 0 <= self.low < self.high:
            raise ValueError(f"backlog_low_events: must be >= 0 and below the high-water "
                             f"mark {self.high}, got {self.low!r}")

    def update(self, backlog_events: int) -> bool:
        """Whether intake is paused given the backlog now."""
        if not self.paused and backlog_events >= self.high:
            self.paused = True
            self.pauses += 1
        elif self.paused and backlog_events < self.low:
            self.paused = False
        return self.paused
