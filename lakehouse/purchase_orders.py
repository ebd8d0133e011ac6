"""Reorder suggestions approved into purchase orders, within a daily spend limit.

A suggestion is only advice; an approver turns the ones worth buying into purchase
orders (the reorders page, as the signed-in operator). Three rules:

* **A spend limit per region and UTC day** (:data:`DEFAULT_SPEND_LIMIT`, or
  ``SHELFLIFE_PO_SPEND_LIMIT``). Orders are valued at the catalogue's shelf price: the
  catalogue holds no supplier prices, and the shelf price is an upper bound of what a unit
  costs, so the money actually committed never exceeds the limit. An approval that would
  pass it is refused whole, with what is left today; the page offers the most urgent
  suggestions that fit. A SKU without a price cannot be checked and is refused.
* **The log first, then the document.** Approved lines are appended to silver
  ``purchase_orders`` (who, when, what, the value), then :func:`export_pending` writes one
  JSON document per approval under ``<lakehouse>/outbox/purchase_orders/`` for the supplier
  or ERP integration to pick up. The document's name is the approval's batch id and export
  writes only what is missing, so a crash between the two is mended by the next export
  (``shelflife reorders export``, or the next approval) and no order is sent twice.
* **An order is on order until its receipt.** The reorders job counts every approved
  line of the last :data:`OPEN_DAYS` days whose receipt (``supplier_ref`` = its ``po_id``)
  is not in silver as stock on its way (:func:`open_orders`), so it does not suggest the
  same units again.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pyarrow as pa
from deltalake import write_deltalake

from lakehouse.catalogue import EVENTS, ITEMS, PURCHASE_ORDERS
from lakehouse.durable import replace_durably
from lakehouse.readers import read_table
from lakehouse.storage import (
    delta_options,
    ensure_parent,
    is_s3,
    join,
    lake_url,
    s3_client,
    split_s3,
)

Root = str | os.PathLike[str] | None
ENV_SPEND_LIMIT = "SHELFLIFE_PO_SPEND_LIMIT"
DEFAULT_SPEND_LIMIT = 5000.0
"""Per region and UTC day, in the catalogue's currency."""
OPEN_DAYS = 7
"""An approved line whose receipt has not come in this many days is no longer counted as
on its way (the page lists it as overdue instead)."""


class SpendLimitError(ValueError):
    """An approval that would take a region past its spend limit today."""


def spend_limit() -> float:
    """The daily spend limit per region: ``SHELFLIFE_PO_SPEND_LIMIT`` or the default."""
    text = os.environ.get(ENV_SPEND_LIMIT)
    if text is None:
        return DEFAULT_SPEND_LIMIT
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise ValueError(f"{ENV_SPEND_LIMIT}: expected an amount >= 0 (got {text!r})")
    return value


def outbox(root: Root = None) -> str:
    """Where approved orders leave the lakehouse: a folder, or a prefix in the bucket."""
    return join(lake_url(root), "outbox", "purchase_orders")


def priced(suggestions: pd.DataFrame, items: pd.DataFrame | None) -> pd.DataFrame:
    """Suggestions with ``unit_price`` and ``value`` (NaN where the SKU has no price), and
    ``cover``: the share of the forecast the store's stock and what is on its way cover,
    lowest (emptiest shelf) first."""
    out = suggestions.copy()
    prices = ({} if items is None or items.empty
              else items.dropna(subset=["price"]).set_index("sku")["price"].to_dict())
    out["unit_price"] = out["sku"].map(prices).astype("float64")
    out["value"] = out["unit_price"] * out["order_quantity"]
    demand = out["demand_forecast"].where(out["demand_forecast"] > 0)
    out["cover"] = ((out["on_hand"] + out["in_transit"]) / demand).fillna(float("inf"))
    return out.sort_values(["cover", "value", "location_id", "sku"],
                           ascending=[True, False, True, True]).reset_index(drop=True)


SUGGESTION_MAX_AGE = timedelta(days=2)
"""Older approvals cannot match a suggestion still in gold (the reorders job rewrites them
every few minutes): the check reads the log from then on, not its whole history."""


def _approved_keys(root: Root, now: datetime | None = None
                   ) -> set[tuple[str, str, pd.Timestamp]]:
    since = (now or datetime.now(UTC)) - SUGGESTION_MAX_AGE
    orders = read_table(PURCHASE_ORDERS, root,
                        columns=["location_id", "sku", "suggestion_created_at"],
                        filters=[("approved_at", ">=", since)])
    if orders is None:
        return set()
    return {(loc, sku, pd.Timestamp(at)) for loc, sku, at in zip(
        orders["location_id"], orders["sku"], orders["suggestion_created_at"], strict=True)}


def not_yet_ordered(suggestions: pd.DataFrame, root: Root = None,
                    now: datetime | None = None) -> pd.DataFrame:
    """The suggestions no approval has taken yet (a suggestion stays in gold until the next
    reorders run, which then counts the order as on its way)."""
    done = _approved_keys(root, now)
    if not done:
        return suggestions
    keep = [(loc, sku, pd.Timestamp(at)) not in done for loc, sku, at in zip(
        suggestions["location_id"], suggestions["sku"], suggestions["created_at"],
        strict=True)]
    return suggestions[keep]


def spent_today(root: Root = None, now: datetime | None = None) -> dict[str, float]:
    """What each region approved so far today (UTC), by value."""
    now = now or datetime.now(UTC)
    start = datetime(now.year, now.month, now.day, tzinfo=UTC)
    orders = read_table(PURCHASE_ORDERS, root, columns=["region", "value"],
                        filters=[("approved_at", ">=", start)])
    if orders is None or orders.empty:
        return {}
    return {str(k): float(v) for k, v in orders.groupby("region")["value"].sum().items()}


def that_fit(ranked: pd.DataFrame, spent: dict[str, float], limit: float) -> pd.DataFrame:
    """The rows of ``ranked`` (as :func:`priced` orders them) taken in turn while each
    region stays within ``limit`` with what it ``spent`` today; rows without a price are
    left out."""
    left = {r: limit - spent.get(r, 0.0) for r in ranked["region"].unique()}
    keep = []
    for i, row in enumerate(ranked.itertuples(index=False)):
        if pd.notna(row.value) and row.value <= left[row.region] + 1e-9:
            left[row.region] -= row.value
            keep.append(i)
    return ranked.iloc[keep]


@dataclass(frozen=True)
class Approval:
    """One approval: its batch id, its lines, and where its document went."""

    batch_id: str
    lines: pd.DataFrame
    document: str


def approve(rows: pd.DataFrame, approved_by: str, *, root: Root = None,
            limit: float | None = None, now: datetime | None = None) -> Approval:
    """Approve suggestion ``rows`` (as :func:`priced` returns them) as purchase orders.

    Refused whole (:class:`SpendLimitError`, :class:`ValueError`) when a row has no price
    or a region would pass its limit today; otherwise the lines are logged, then exported.
    """
    if not approved_by.strip():
        raise ValueError(f"approved_by: expected a name (got {approved_by!r})")
    if rows.empty:
        raise ValueError("nothing to approve: no suggestion chosen")
    unpriced = sorted(set(rows.loc[rows["value"].isna(), "sku"]))
    if unpriced:
        raise ValueError(f"no price in the catalogue for {', '.join(unpriced)}: the spend "
                         "limit cannot be checked (a SKU's price comes with its item update)")
    now = now or datetime.now(UTC)
    taken = len(rows) - len(not_yet_ordered(rows, root, now))
    if taken:
        raise ValueError(f"{taken} of these suggestions were approved already; refresh")
    limit = spend_limit() if limit is None else limit
    spent = spent_today(root, now)
    for region, value in rows.groupby("region")["value"].sum().items():
        if spent.get(region, 0.0) + value > limit + 1e-9:
            raise SpendLimitError(
                f"{region}: these orders come to {value:,.2f}, and {spent.get(region, 0):,.2f}"
                f" of today's {limit:,.2f} limit is spent ({limit - spent.get(region, 0):,.2f}"
                " left); approve fewer")
    key = "|".join(f"{r.location_id}/{r.sku}/{r.order_quantity}"
                   for r in rows.itertuples(index=False))
    batch_id = "po-" + now.strftime("%Y%m%d-%H%M%S-") + hashlib.sha256(
        f"{approved_by}|{now.isoformat()}|{key}".encode()).hexdigest()[:8]
    lines = pd.DataFrame({
        "po_id": [f"{batch_id}-{i + 1:03d}" for i in range(len(rows))],
        "batch_id": batch_id, "region": rows["region"].to_numpy(),
        "location_id": rows["location_id"].to_numpy(), "sku": rows["sku"].to_numpy(),
        "quantity": rows["order_quantity"].astype("int64").to_numpy(),
        "unit_price": rows["unit_price"].astype("float64").to_numpy(),
        "value": rows["value"].astype("float64").to_numpy(),
        "arrives_on": rows["arrives_on"].to_numpy(), "approved_by": approved_by.strip(),
        "approved_at": now, "suggestion_created_at": rows["created_at"].to_numpy()})
    url = PURCHASE_ORDERS.uri(root)
    ensure_parent(url)
    write_deltalake(url, pa.Table.from_pandas(lines, schema=PURCHASE_ORDERS.schema,
                                              preserve_index=False),
                    mode="append", storage_options=delta_options(url))
    export_pending(root)
    return Approval(batch_id, lines, join(outbox(root), f"{batch_id}.json"))


def document(lines: pd.DataFrame) -> bytes:
    """One approval as the JSON an ERP or supplier integration reads."""
    first = lines.iloc[0]
    return json.dumps({
        "batch_id": first["batch_id"], "approved_by": first["approved_by"],
        "approved_at": pd.Timestamp(first["approved_at"]).isoformat(),
        "total_value": round(float(lines["value"].sum()), 2),
        "orders": [{"po_id": r.po_id, "region": r.region, "ship_to": r.location_id,
                    "sku": r.sku, "quantity": int(r.quantity),
                    "unit_price": float(r.unit_price), "value": round(float(r.value), 2),
                    "wanted_on": str(r.arrives_on)[:10]}
                   for r in lines.itertuples(index=False)]}, indent=1).encode("utf-8")


def _exported(root: Root) -> set[str]:
    base = outbox(root)
    if is_s3(base):
        bucket, prefix = split_s3(base)
        names: set[str] = set()
        for page in s3_client().get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix + "/"):
            names |= {o["Key"].rsplit("/", 1)[-1] for o in page.get("Contents", [])}
        return names
    return set(os.listdir(base)) if os.path.isdir(base) else set()


def export_pending(root: Root = None) -> list[str]:
    """Write the document of every approval that has none yet; their batch ids."""
    orders = read_table(PURCHASE_ORDERS, root)
    if orders is None or orders.empty:
        return []
    done = _exported(root)
    written = []
    for batch_id, lines in orders.groupby("batch_id", sort=True):
        name = f"{batch_id}.json"
        if name in done:
            continue
        target = join(outbox(root), name)
        body = document(lines.sort_values("po_id"))
        if is_s3(target):
            bucket, key = split_s3(target)
            s3_client().put_object(Bucket=bucket, Key=key, Body=body,
                                   ContentType="application/json")
        else:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            replace_durably(target, body)
        written.append(str(batch_id))
    return written


def open_orders(root: Root = None, now: datetime | None = None) -> pd.DataFrame:
    """Approved lines of the last :data:`OPEN_DAYS` days not yet received: ``po_id``,
    ``location_id``, ``sku``, ``quantity``, ``arrives_on``."""
    now = now or datetime.now(UTC)
    since = now - timedelta(days=OPEN_DAYS)
    cols = ["po_id", "location_id", "sku", "quantity", "arrives_on"]
    orders = read_table(PURCHASE_ORDERS, root, columns=cols,
                        filters=[("approved_at", ">=", since)])
    if orders is None or orders.empty:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in cols})
    received = read_table(EVENTS, root, columns=["payload"],
                          filters=[("category", "=", "transactional"),
                                   ("event_type", "=", "received"),
                                   ("occurred_at", ">=", since)])
    refs: set[Any] = set()
    if received is not None:
        refs = {p.get("supplier_ref") for p in received["payload"] if isinstance(p, dict)}
    return orders[~orders["po_id"].isin(refs)].reset_index(drop=True)


def items_table(root: Root = None) -> pd.DataFrame | None:
    """The catalogue's SKUs and prices (for :func:`priced`)."""
    return read_table(ITEMS, root, columns=["sku", "price"])
