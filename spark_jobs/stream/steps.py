"""One micro-batch of a region's stream: what it carries from step to step, and the
steps that need neither the region's state nor a table.

``RegionStream.process_batch`` runs the steps in order: read (and decode) the landing
lines, check them against the contract, fold them into the region's state, count the
dead letters, spill, write gold, account, report. Read, check and the choice of what to
spill live here; the steps that change the state or write are the stream's own.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from pyspark.sql import DataFrame

from lakehouse.contract import ContractError, parse_topic, validate_event
from lakehouse.landing import EVENT, LandingLines, dead_line, read_batches, read_event
from lakehouse.storage import join

from .source import offset_files


@dataclass
class MicroBatch:
    """What one micro-batch has found so far, for the steps after it."""

    batch_id: int
    started: float
    """Wall-clock start (``time.time()``): the batch's duration and event-time lag."""
    lines: LandingLines
    parsed: list[tuple[str, dict, dict]] = field(default_factory=list)
    """Event lines that keep the contract: the landing line's text and its event."""
    refused: list[tuple[dict, str]] = field(default_factory=list)
    """Landing rows refused by the contract or by the fold, with why: dead letters."""
    redo: bool = False
    """Gold cohorts already hold this batch (a crash came between the two gold writes):
    the fold moves seqs and SKUs only."""
    touched: set[str] = field(default_factory=set)
    """Locations whose state the batch changed."""
    events: list[dict] = field(default_factory=list)
    """Events new to the state (repeats dropped)."""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds per step, reported with the batch."""
    _mark: float = field(default=0.0, init=False, repr=False)

    def __post_init__(self) -> None:
        self._mark = self.started

    def step(self, name: str) -> None:
        """Record the time since the previous step ended as step ``name``."""
        now = time.time()
        self.timings[name] = round(now - self._mark, 3)
        self._mark = now


def batch_files_logged(query_checkpoint: Path, batch_id: int, landing: str
                       ) -> list[str] | None:
    """The files the query's source chose for ``batch_id``, from the query's own logs,
    or None when they do not say (Spark then reads the batch itself).

    The landing source (:mod:`.source`) logs the batch's file names as its end offset,
    the last line of ``offsets/<batch>``; they are joined to ``landing``, the zone's URL.

    A query whose last batches Spark's file source logged (a checkpoint from before the
    landing source) covers the file source's log offsets after the previous batch's and
    up to its own (``{"logOffset": N}``). The two numberings start equal but need not
    stay so: a kill after the source logged new files and before the query logged the
    batch leaves the source one ahead for good, and the next batch then covers two log
    offsets. Reading ``sources/0/<batch id>`` alone, as this once did, read the previous
    offset's files (deleted by then: cleanSource) and skipped the batch's own.
    """
    offsets = query_checkpoint / "offsets"
    end_offset = _source_offset(offsets / str(batch_id))
    names = offset_files(end_offset)
    if names is not None:
        return [join(landing, n) for n in names]
    end = _log_offset(end_offset)
    start = -1 if batch_id == 0 else _log_offset(_source_offset(offsets / str(batch_id - 1)))
    if end is None or start is None or end < start:
        return None
    files: list[str] = []
    for log_offset in range(start + 1, end + 1):
        found = source_files_logged(query_checkpoint, log_offset)
        if found is None:
            return None
        files += found
    return files


def _source_offset(path: Path) -> dict | None:
    """The one source's offset an ``offsets/<batch>`` entry ends with (a version line,
    the batch's metadata, then the offset as JSON), or None."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return None
    if len(lines) < 3 or lines[0].strip() != "v1":
        return None
    try:
        offset = json.loads(lines[-1])
    except ValueError:
        return None
    return offset if isinstance(offset, dict) else None


def _log_offset(offset: dict | None) -> int | None:
    """The file source's log offset in a logged offset, or None."""
    try:
        return int(offset["logOffset"]) if offset is not None else None
    except (ValueError, KeyError, TypeError):
        return None


def source_files_logged(query_checkpoint: Path, log_offset: int) -> list[str] | None:
    """The files the file source logged at ``log_offset`` (``sources/0/<offset>``, or the
    ``.compact`` file every hundredth offset, which holds every earlier entry too), or None
    when the log does not say.

    The source logs its files before the batch runs, one JSON object a line (``path``,
    ``batchId`` = the log offset) after a version line; this reads that format and
    nothing else of Spark's checkpoint. A compact file lists every file the query ever
    read, in order, so only its tail is read: after a day at seven files a second it
    holds about 600,000 lines."""
    folder = query_checkpoint / "sources" / "0"
    for name in (str(log_offset), f"{log_offset}.compact"):
        try:
            lines = _tail_from(folder / name, f'"batchId":{log_offset - 1}}}'.encode())
        except FileNotFoundError:
            continue
        if lines is None:
            return None
        files = []
        for line in lines:
            entry = json.loads(line)
            if entry.get("batchId") == log_offset:
                files.append(entry["path"])
        return files
    return None


def _tail_from(path: Path, before: bytes, chunk: int = 1 << 16) -> list[bytes] | None:
    """The entry lines of a source log file after the last one that ends with ``before``
    (the previous batch's entries), or all of them when none does; None when the file
    does not start with the version line this reader knows. Reads from the end, a chunk
    at a time, so a long compact file costs what its last batch's lines cost (a field
    order other than Spark's only makes it read the whole file)."""
    with path.open("rb") as f:
        if f.readline().strip() != b"v1":
            return None
        top = f.tell()
        pos = f.seek(0, os.SEEK_END)
        data = b""
        while pos > top:
            start = max(top, pos - chunk)
            f.seek(start)
            data = f.read(pos - start) + data
            pos = start
            lines = data.split(b"\n")
            body = lines if pos == top else lines[1:]  # the first may be cut at the seek
            for i in range(len(body) - 1, -1, -1):
                if body[i].rstrip().endswith(before):
                    return [x for x in body[i + 1:] if x.strip()]
        return [x for x in data.split(b"\n") if x.strip()]


def read_landing(frame: DataFrame, *, files: list[str] | None = None) -> LandingLines:
    """Read step: the batch's landing lines, each parsed once with its event
    (:class:`lakehouse.landing.LandingLines`, the one type a columnar decode from the
    landing file on would replace).

    When the query's logs name the batch's files (``files``), they are read here
    (:func:`lakehouse.landing.read_batches`) and Spark runs no job for the batch: its
    job to read a few small files and hand their lines to Python cost about 0.08 of a
    core per region, and on S3 its reader opened the objects one after another.
    Otherwise Spark reads the frame (the landing source's ``read``)."""
    if files is not None:
        return LandingLines.parse(read_batches(files))
    # Arrow carries the lines to Python in a few buffers; collect() pickles a Row per
    # line, which cost more than parsing them (a replaying region's batch holds tens
    # of thousands).
    return LandingLines.parse(frame.toArrow().column(0).to_pylist())


def check_events(lines: LandingLines
                 ) -> tuple[list[tuple[str, dict, dict]], list[tuple[dict, str]]]:
    """Check step: readable event lines that keep the contract, as (text, event, parsed
    line), and the refused ones with why.

    Ingest checked them already, but a landing file or spill written before a bound
    was added (or by a stranger with access to the landing zone) must not reach the
    state: one such event once stopped every region. ``_owned`` marks a refused
    event whose location matches its topic, so its seq may be counted as filled.
    """
    parsed: list[tuple[str, dict, dict]] = []
    refused: list[tuple[dict, str]] = []
    for t, r in zip(lines.texts, lines.rows, strict=True):
        e = r[EVENT]
        if e is None:
            continue
        try:
            _, topic_loc, _ = parse_topic(r.get("topic") or "")
            r["_owned"] = e.get("location_id") == topic_loc
            validate_event(e)
            if not r["_owned"]:
                raise ContractError("location_id", e.get("location_id"),
                                    f"location mismatch: topic is for {topic_loc!r}")
        except ContractError as exc:
            refused.append((r, f"refused by the stream: {exc}"[:500]))
            continue
        parsed.append((t, e, r))
    return parsed, refused


def spill_lines(run: MicroBatch, region: str) -> tuple[list[str | dict], list[dict]]:
    """What the spill holds: each event new to the state once, the unreadable lines and
    the dead letters. A readable event line is spilled as the landing line's own text (it
    holds every landing field), which saves serialising every event again.

    Beside each, the line as :func:`lakehouse.landing.parse_line` reads it back, so the
    bronze/silver writer need not parse again what this batch already parsed."""
    new = {(e["location_id"], e["seq"]) for e in run.events}
    keep: list[str | dict] = []
    rows: list[dict] = []
    for text, e, r in run.parsed:
        key = (e["location_id"], e["seq"])
        if key in new:
            new.discard(key)  # a repeat inside the batch is kept once
            keep.append(text)
            rows.append(r)
    plain = run.lines.unreadable() + [dead_line(r, region, reason)
                                      for r, reason in run.refused]
    keep += plain
    rows += [{**line, EVENT: read_event(line)} for line in plain]
    return keep, rows
