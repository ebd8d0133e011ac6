"""Who approved or rejected which transfer, and how far each approved one has got.

Silver ``transfer_decisions`` is an append-only log: the dashboard and ``shelflife
transfers approve|reject`` add rows, the transfers job reads the latest one per
recommendation, and the order dispatcher reads the whole history. All of them read and
write it with ``deltalake`` alone, so approving a transfer or sending its order never
needs a JVM.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pyarrow as pa
from deltalake import write_deltalake

from lakehouse.catalogue import EVENTS, TRANSFER_DECISIONS, TRANSFER_RECOMMENDATIONS
from lakehouse.readers import read_table
from lakehouse.storage import delta_options, ensure_parent
from lakehouse.transfer_status import DECISIONS, Decision

Root = str | os.PathLike[str] | None
SHIP_AFTER_APPROVAL_SLACK = timedelta(days=1)
"""How much earlier than its approval a shipment's ``occurred_at`` may read (store clocks
drift); older events are not searched for it."""


def decision_history(root: Root = None) -> pd.DataFrame | None:
    """Every decision ever recorded, oldest first; None while there are none."""
    frame = read_table(TRANSFER_DECISIONS, root)
    if frame is None or frame.empty:
        return None
    return frame.sort_values("decided_at")


def read_decisions(root: Root = None) -> pd.DataFrame:
    """The latest approval or rejection of each recommendation."""
    history = decision_history(root)
    if history is None:
        return TRANSFER_DECISIONS.schema.empty_table().to_pandas()
    return history.drop_duplicates("recommendation_id", keep="last")


def record_decision(recommendation_id: str, decision: Decision, decided_by: str, *,
                    note: str = "", root: Root = None) -> None:
    """Append who approved or rejected a recommendation; nothing is edited in place, and
    the next transfers run shows it (the dashboard shows it at once)."""
    record_decisions([recommendation_id], decision, decided_by, note=note, root=root)


def record_decisions(recommendation_ids: list[str], decision: Decision, decided_by: str, *,
                     note: str = "", root: Root = None) -> int:
    """Append who approved or rejected these recommendations, in one commit (a person's
    one, or a transfers run's auto-approvals); ids not in gold
    ``transfer_recommendations`` are refused together, and nothing is written then."""
    if decision not in DECISIONS:
        raise ValueError(f"decision: expected one of {', '.join(DECISIONS)} "
                         f"(got {decision!r})")
    if not decided_by.strip():
        raise ValueError(f"decided_by: expected a name (got {decided_by!r})")
    if not recommendation_ids:
        return 0
    recs = read_table(TRANSFER_RECOMMENDATIONS, root)
    unknown = sorted(set(recommendation_ids) - set(() if recs is None
                                                   else recs["recommendation_id"]))
    if unknown:
        raise ValueError(f"recommendation_id: no such transfer recommendation "
                         f"(got {', '.join(map(repr, unknown[:5]))})")
    now = datetime.now(UTC)
    rows = pa.Table.from_pylist([{"recommendation_id": r, "decision": decision,
                                  "decided_by": decided_by.strip(), "decided_at": now,
                                  "note": note} for r in recommendation_ids],
                                schema=TRANSFER_DECISIONS.schema)
    url = TRANSFER_DECISIONS.uri(root)
    ensure_parent(url)
    write_deltalake(url, rows, mode="append", storage_options=delta_options(url))
    return len(recommendation_ids)


def approved_since(decisions: pd.DataFrame, ids: Any) -> tuple[list[str], datetime | None]:
    """The ids approved in ``decisions`` (latest ones, or the whole history), and how far
    back in silver their shipments can be: the earliest of those approvals, less
    :data:`SHIP_AFTER_APPROVAL_SLACK`."""
    rows = decisions[(decisions["decision"] == "approved")
                     & decisions["recommendation_id"].isin(set(ids))]
    if rows.empty:
        return [], None
    earliest = pd.Timestamp(rows["decided_at"].min()).to_pydatetime()
    return rows["recommendation_id"].tolist(), earliest - SHIP_AFTER_APPROVAL_SLACK


def transfer_progress(root: Root, transfer_ids: Any, since: datetime | None = None
                      ) -> dict[str, str]:
    """How far each approved transfer has got, from silver ``events``: ``shipped`` (its
    ``transfer_out`` is in) or ``arrived`` (its ``transfer_in`` too); absent = neither.

    An approved transfer ships with ``transfer_id`` = its recommendation id (see
    ``ingest.orders``), which is what ties the events to the row a person approved.
    ``since`` bounds the search to events that occurred from then on, so a round reads the
    files of recent days, not all of silver."""
    wanted = set(transfer_ids)
    if not wanted:
        return {}
    filters: list[tuple[str, str, Any]] = [
        ("category", "=", "transactional"),
        ("event_type", "in", ["transfer_out", "transfer_in"])]
    if since is not None:
        filters.append(("occurred_at", ">=", since))
    moves = read_table(EVENTS, root, columns=["event_type", "payload"],
                       filters=filters)
    progress: dict[str, str] = {}
    if moves is None:
        return progress
    for event_type, payload in zip(moves["event_type"], moves["payload"], strict=True):
        tid = payload.get("transfer_id") if isinstance(payload, dict) else None
        if tid in wanted:
            if event_type == "transfer_in":
                progress[tid] = "arrived"
            else:
                progress.setdefault(tid, "shipped")
    return progress
