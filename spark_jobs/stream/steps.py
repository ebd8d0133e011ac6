"""One micro-batch of a region's stream: what it carries from step to step, and the
steps that need neither the region's state nor a table.

``RegionStream.process_batch`` runs the steps in order: read (and decode) the landing
lines, check them against the contract, fold them into the region's state, count the
dead letters, spill, write gold, account, report. Read, check and the choice of what to
spill live here; the steps that change the state or write are the stream's own.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field

from pyspark.sql import DataFrame

from lakehouse.contract import ContractError, parse_topic, validate_event

from .record import LINE_FIELDS


@dataclass(frozen=True)
class LandingBatch:
    """A micro-batch's landing lines: ``texts[i]`` as landed, ``rows[i]`` decoded by
    :func:`decode_landing`. Row-wise Python values today; this is the one type a columnar
    decode (an Arrow table from the landing file on) would replace."""

    texts: list[str]
    rows: list[dict]

    def files(self) -> set[str]:
        """The landing files the lines came from: each line names its landing batch, and
        a landing batch is one file."""
        return {f"b-{r['batch_id']}.jsonl" for r in self.rows if r.get("batch_id")}


@dataclass
class MicroBatch:
    """What one micro-batch has found so far, for the steps after it."""

    batch_id: int
    started: float
    """Wall-clock start (``time.time()``): the batch's duration and event-time lag."""
    lines: LandingBatch
    parsed: list[tuple[str, dict]] = field(default_factory=list)
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


def landing_line(text: str) -> dict:
    """One landing line as a dict; ``_event`` holds the parsed event of a readable event
    line, and is None for lines the record writer will file as dead letters."""
    try:
        line = json.loads(text)
    except ValueError:
        return {"kind": "event", "raw": text, "_event": None}
    event = None
    if line.get("kind") == "event":
        try:
            event = json.loads(line.get("raw") or "")
        except ValueError:
            event = None
        if not isinstance(event, dict) or event.get("event_id") is None:
            event = None
    line["_event"] = event
    return line


def read_landing(frame: DataFrame) -> LandingBatch:
    """Read step: the batch's landing lines (Spark reads the files as text), decoded."""
    # Arrow carries the lines to Python in a few buffers; collect() pickles a Row per
    # line, which cost more than parsing them (a replaying region's batch holds tens
    # of thousands).
    return decode_landing(frame.toArrow().column(0).to_pylist())


def decode_landing(texts: list[str]) -> LandingBatch:
    """Decode step: every landing line parsed, its event included."""
    return LandingBatch(texts, [landing_line(t) for t in texts])


def check_events(lines: LandingBatch
                 ) -> tuple[list[tuple[str, dict]], list[tuple[dict, str]]]:
    """Check step: readable event lines that keep the contract, and the refused ones
    with why.

    Ingest checked them already, but a landing file or spill written before a bound
    was added (or by a stranger with access to the landing zone) must not reach the
    state: one such event once stopped every region. ``_owned`` marks a refused
    event whose location matches its topic, so its seq may be counted as filled.
    """
    parsed: list[tuple[str, dict]] = []
    refused: list[tuple[dict, str]] = []
    for t, r in zip(lines.texts, lines.rows, strict=True):
        e = r["_event"]
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
        parsed.append((t, e))
    return parsed, refused


def dead_line(row: dict, region: str, reason: str) -> dict:
    """A spill line that the record writer files in ``silver/dead_letters``."""
    raw = row.get("raw") or ""
    return {"kind": "dead", "topic": row.get("topic"), "region": region,
            "received_at": row.get("received_at"), "batch_id": row.get("batch_id"),
            "line": row.get("line"),
            "raw_b64": base64.b64encode(raw.encode("utf-8", "surrogatepass")).decode(),
            "reason": reason, "source": "stream"}


def spill_lines(run: MicroBatch, region: str) -> list[str | dict]:
    """What the spill holds: each event new to the state once, the unreadable lines and
    the dead letters. A readable event line is spilled as the landing line's own text (it
    holds LINE_FIELDS), which saves serialising every event again."""
    new = {(e["location_id"], e["seq"]) for e in run.events}
    keep: list[str | dict] = []
    for text, e in run.parsed:
        key = (e["location_id"], e["seq"])
        if key in new:
            new.discard(key)  # a repeat inside the batch is kept once
            keep.append(text)
    keep += [{k: r.get(k) for k in LINE_FIELDS} for r in run.lines.rows if r["_event"] is None]
    keep += [dead_line(r, region, reason) for r, reason in run.refused]
    return keep
