"""The dead-letter table as ``shelflife deadletters`` reads it: listed, shown, exported.

Kept apart from :mod:`apps.deadletters` because it needs pandas and delta-rs, which a
store machine running only ``shelflife agent`` does not have.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import pandas as pd

from lakehouse.catalogue import DEAD_LETTERS
from lakehouse.contract import REGIONS, check_region
from lakehouse.readers import read_table

RAW_SHOWN = 40
REASON_SHOWN = 70


def read_dead_letters(root: str | os.PathLike[str] | None, *, region: str | None = None,
                      since: datetime | None = None, limit: int | None = 20
                      ) -> pd.DataFrame:
    """Newest first; empty (not an error) while the table does not exist yet."""
    filters = [("region", "=", check_region(region))] if region else None
    dead = read_table(DEAD_LETTERS, root, filters=filters)
    if dead is None or dead.empty:
        return pd.DataFrame(columns=["received_at", "region", "topic", "reason", "raw",
                                     "ingest_batch_id", "line"])
    if since is not None:
        dead = dead[dead["received_at"] >= pd.Timestamp(since)]
    dead = dead.sort_values("received_at", ascending=False, kind="stable")
    if limit is not None:
        dead = dead.head(limit)
    return dead.reset_index(drop=True)


def dead_letter_id(row: Mapping[str, Any]) -> str:
    """``<ingest batch>:<line>``: where the dead letter sits in the landing zone."""
    batch, line = row.get("ingest_batch_id"), row.get("line")
    if batch is None or pd.isna(batch):
        return "-"
    return f"{batch}:{'' if line is None or pd.isna(line) else int(line)}"


def show_time(value: Any) -> str:
    """A time as the contract writes it (UTC, milliseconds), or "-" when there is none."""
    if value is None or pd.isna(value):
        return "-"
    return pd.Timestamp(value).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _raw_preview(raw: bytes | None) -> str:
    if raw is None:
        return ""
    shown = bytes(raw[:RAW_SHOWN]).decode("utf-8", errors="backslashreplace")
    shown = shown.replace("\n", "\\n").replace("\t", "\\t")
    return shown + ("..." if len(raw) > RAW_SHOWN else "")


def _cut(text: Any, width: int) -> str:
    text = "" if text is None or (not isinstance(text, str) and pd.isna(text)) else str(text)
    return text if len(text) <= width else text[:width - 3] + "..."


def format_table(dead: pd.DataFrame) -> str:
    """A fixed-width table: time, region, topic, reason, first bytes of raw."""
    rows = [(show_time(r["received_at"]), str(r["region"]), str(r.get("topic") or "-"),
             _cut(r.get("reason"), REASON_SHOWN), _raw_preview(r.get("raw")))
            for r in dead.to_dict("records")]
    head = ("time", "region", "topic", "reason", "raw")
    widths = [max(len(head[i]), *(len(r[i]) for r in rows)) if rows else len(head[i])
              for i in range(5)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
              for r in rows]
    return "\n".join(lines)


def to_jsonl(dead: pd.DataFrame) -> Iterable[str]:
    """Editable lines for ``redrive --file``: the payload parsed into ``event``."""
    for r in dead.to_dict("records"):
        raw = bytes(r.get("raw") or b"")
        line = {"id": dead_letter_id(r), "received_at": show_time(r["received_at"]),
                "region": r["region"], "topic": r.get("topic"), "reason": r.get("reason")}
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            line["event"] = raw.decode("utf-8", errors="replace")
            line["raw_b64"] = base64.b64encode(raw).decode("ascii")
        else:
            try:
                line["event"] = json.loads(text)
            except ValueError:
                line["event"] = text
        yield json.dumps(line, separators=(",", ":"), default=str)


def known_regions(root: str | os.PathLike[str] | None) -> dict[str, str]:
    """Location -> region, from the topics of the dead letters (where they came from)."""
    dead = read_table(DEAD_LETTERS, root, columns=["region", "topic"])
    out: dict[str, str] = {}
    if dead is None:
        return out
    for region, name in zip(dead["region"], dead["topic"], strict=True):
        parts = str(name or "").split("/")
        if len(parts) == 5 and region in REGIONS:
            out.setdefault(parts[3], region)
    return out


def stream_refused(root: str | os.PathLike[str] | None) -> set[str]:
    """Event ids the stream dead-lettered (ingest had landed them)."""
    dead = read_table(DEAD_LETTERS, root, columns=["source", "raw"])
    out: set[str] = set()
    if dead is None:
        return out
    for source, raw in zip(dead["source"], dead["raw"], strict=True):
        if source != "stream" or raw is None:
            continue
        try:
            event = json.loads(bytes(raw))
        except ValueError:
            continue
        if isinstance(event, dict) and isinstance(event.get("event_id"), str):
            out.add(event["event_id"])
    return out
