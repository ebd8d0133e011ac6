"""Recalls: one lot of one SKU put on hold across the network, until released.

A supplier's recall names a lot. Putting it on hold (the *Recall* page or ``shelflife
recall hold``, as the signed-in operator) does four things:

* **The log.** A row in silver ``lot_holds`` (who, when, why); a release is another row.
  The latest row per lot is its state.
* **The stores.** The order dispatcher (:mod:`ingest.orders`) sends the hold, signed like
  a transfer order, to every location's order channel, retained, so a store that is
  offline takes it in when it reconnects. From then on its agent's FEFO never draws that
  lot for a sale, a transfer naming it is refused, and pending transfer orders for it are
  withdrawn; what is left leaves as waste with reason ``recall``. A sale is still never
  refused: it draws the other lots, or the unallocated lot when nothing else is left (the
  shelf is what it is; the variance shows up for review).
* **Confirmation.** Every heartbeat lists the holds an agent has applied
  (``Heartbeat.holds``); :func:`confirmations` reads them back, so the page shows which
  stores have the hold in force and which have not heard of it yet.
* **The decisions.** Transfers and reorders leave lots on hold out of the stock they
  plan with (:func:`without_held`), and the dispatcher withdraws approved transfers of
  them that have not shipped.

The hold ends with its release (a mistaken recall, or the supplier clears the lot); a lot
wasted everywhere stays on hold, with nothing left to hold, until someone releases it.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

import pandas as pd
import pyarrow as pa
from deltalake import write_deltalake

from lakehouse.catalogue import EVENTS, LOT_HOLDS, STOCK_COHORTS, STORE_HEARTBEATS
from lakehouse.contract import build_hold, hold_id
from lakehouse.readers import read_since, read_table
from lakehouse.storage import delta_options, ensure_parent

Root = str | os.PathLike[str] | None

__all__ = ["HoldError", "confirmations", "current_holds", "hold_id", "holders",
           "lots_on_hold", "place_hold", "recall_waste", "release_hold", "without_held"]


CONFIRM_WINDOW = pd.Timedelta(hours=1)
"""How far back the page looks for a store's heartbeat listing a hold."""


class HoldError(ValueError):
    """A hold that cannot be placed or released as asked (already on hold, not on hold)."""


def hold_log(root: Root = None) -> pd.DataFrame | None:
    """Every hold and release, oldest first; None before the first."""
    log = read_table(LOT_HOLDS, root)
    return None if log is None else log.sort_values("decided_at", kind="stable")


def current_holds(root: Root = None, *, log: pd.DataFrame | None = None) -> pd.DataFrame:
    """The latest row per lot (on hold or released), newest first; empty with the table's
    columns before the first hold."""
    log = hold_log(root) if log is None else log
    if log is None or log.empty:
        return pd.DataFrame(columns=LOT_HOLDS.schema.names)
    latest = log.drop_duplicates("hold_id", keep="last")
    return latest.sort_values("decided_at", ascending=False).reset_index(drop=True)


def lots_on_hold(root: Root = None) -> set[tuple[str, str]]:
    """(sku, lot) of every lot on hold now."""
    cur = current_holds(root)
    held = cur[cur["on_hold"].astype(bool)] if len(cur) else cur
    return set(zip(held["sku"], held["lot"], strict=True))


def without_held(cohorts: pd.DataFrame, held: set[tuple[str, str]]) -> pd.DataFrame:
    """``cohorts`` less the rows of lots on hold: stock nobody may sell or move."""
    if not held or cohorts.empty:
        return cohorts
    keys = pd.MultiIndex.from_frame(cohorts[["sku", "lot"]])
    return cohorts[~keys.isin(list(held))].reset_index(drop=True)


def _append(root: Root, row: dict) -> None:
    url = LOT_HOLDS.uri(root)
    ensure_parent(url)
    write_deltalake(url, pa.Table.from_pylist([row], schema=LOT_HOLDS.schema),
                    mode="append", storage_options=delta_options(url))


def _decide(root: Root, sku: str, lot: str, *, on_hold: bool, by: str, reason: str,
            now: datetime | None) -> dict:
    now = now or datetime.now(UTC)
    message = build_hold(sku=sku, lot=lot, on_hold=on_hold, reason=reason, by=by, at=now)
    cur = current_holds(root)
    mine = cur[cur["hold_id"] == message["order_id"]]
    held = bool(len(mine)) and bool(mine["on_hold"].iloc[0])
    if on_hold and held:
        raise HoldError(f"{sku} lot {lot} is already on hold (since "
                        f"{mine['decided_at'].iloc[0]:%Y-%m-%d %H:%M} UTC, by "
                        f"{mine['decided_by'].iloc[0]})")
    if not on_hold and not held:
        raise HoldError(f"{sku} lot {lot} is not on hold")
    row = {"hold_id": message["order_id"], "sku": sku, "lot": lot, "on_hold": on_hold,
           "reason": reason, "decided_by": by, "decided_at": now}
    _append(root, row)
    return row


def place_hold(root: Root, sku: str, lot: str, *, by: str, reason: str,
               now: datetime | None = None) -> dict:
    """Put ``sku`` lot ``lot`` on hold everywhere; HoldError if it already is, ContractError
    for a SKU, lot or reason the order channel could not carry."""
    return _decide(root, sku, lot, on_hold=True, by=by, reason=reason, now=now)


def release_hold(root: Root, sku: str, lot: str, *, by: str, reason: str,
                 now: datetime | None = None) -> dict:
    """Lift a hold: the lot may be sold and moved again; HoldError if it is not on hold."""
    return _decide(root, sku, lot, on_hold=False, by=by, reason=reason, now=now)


def holders(root: Root, sku: str, lot: str) -> pd.DataFrame:
    """Every location holding units of the lot now (gold): ``region``, ``location_id``,
    ``units``, ``expires_on``, most units first."""
    cols = ["region", "location_id", "units", "expires_on"]
    cohorts = read_table(STOCK_COHORTS, root, filters=[("sku", "=", sku), ("lot", "=", lot)],
                         columns=["region", "location_id", "quantity", "expires_on"])
    if cohorts is None or cohorts.empty:
        return pd.DataFrame(columns=cols)
    out = cohorts[cohorts["quantity"] > 0].rename(columns={"quantity": "units"})
    return out[cols].sort_values(["units", "location_id"], ascending=[False, True]
                                 ).reset_index(drop=True)


def confirmations(root: Root, holds: pd.DataFrame) -> pd.DataFrame:
    """Which locations have each hold in force: one row per hold and per location heard
    from in the last :data:`CONFIRM_WINDOW` since its decision (``hold_id``,
    ``location_id``, ``region``, ``confirmed_at``: the first of those heartbeats that lists
    it, NaT while none has). Only that window is read, so a hold open for weeks does not
    make every look read weeks of heartbeats; a store beats every 30 s, so one that has
    the hold lists it there."""
    cols = ["hold_id", "location_id", "region", "confirmed_at"]
    if holds.empty:
        return pd.DataFrame(columns=cols)
    since = max(pd.Timestamp(holds["decided_at"].min()),
                pd.Timestamp.now(tz="UTC") - CONFIRM_WINDOW).to_pydatetime()
    beats = read_since(STORE_HEARTBEATS, root, "received_at", since,
                       columns=["region", "location_id", "received_at", "holds"])
    if beats is None or beats.empty:
        return pd.DataFrame(columns=cols)
    out = []
    for h in holds[["hold_id", "decided_at"]].itertuples(index=False):
        after = beats[beats["received_at"] >= h.decided_at]
        lists = after["holds"].fillna("").str.split(",")
        listed = after.loc[[h.hold_id in ids for ids in lists]]
        first = listed.groupby("location_id")["received_at"].min()
        heard = after.drop_duplicates("location_id")[["location_id", "region"]]
        out.append(heard.assign(hold_id=h.hold_id,
                                confirmed_at=heard["location_id"].map(first)))
    return pd.concat(out, ignore_index=True)[cols]


def recall_waste(root: Root, sku: str, lot: str, since: datetime) -> pd.DataFrame:
    """Units of the lot wasted with reason ``recall`` since the hold, per location."""
    cols = ["location_id", "units"]
    events = read_table(EVENTS, root, filters=[("event_type", "=", "wasted"),
                                                ("sku", "=", sku),
                                                ("occurred_at", ">=", since)],
                        columns=["location_id", "quantity", "payload"])
    if events is None or events.empty:
        return pd.DataFrame(columns=cols)
    pay = pd.DataFrame(list(events["payload"]))
    mask = (pay.get("lot") == lot) & (pay.get("reason_code") == "recall")
    hit = events[mask.to_numpy()]
    return (hit.groupby("location_id", as_index=False)["quantity"].sum()
            .rename(columns={"quantity": "units"}))
