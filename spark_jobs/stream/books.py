"""Network-wide books the regional streams share in one driver: the catalogue (silver
``items``, last writer wins) and the transfers still on the road.

They are shared because an item can be updated from any location and a transfer can
leave one region and arrive in another; each region's stream applies its own events to
them under one lock. Both are rebuilt from bronze when the stream process starts, so
they are caches too; the process owns them (``NetworkBooks``) and passes them on.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from lakehouse.contract import ITEM_FIELDS, parse_ts

WriterKey = tuple[str, str, int]  # (occurred_at, location_id, seq): the LWW order


@dataclass
class Item:
    """One SKU of the catalogue; each field keeps the key of the event that set it."""

    sku: str
    values: dict[str, Any] = field(default_factory=dict)
    keys: dict[str, WriterKey] = field(default_factory=dict)

    def latest(self) -> WriterKey | None:
        return max(self.keys.values()) if self.keys else None


class ItemsBook:
    """The catalogue, last writer wins per field on ``(occurred_at, location_id, seq)``.

    Per field, because an ``item_updated`` carries only the fields that changed: a price
    change from one store must not undo a shelf-life change made elsewhere a minute
    earlier. The order is total, so any arrival order gives the same catalogue.
    """

    def __init__(self) -> None:
        self.items: dict[str, Item] = {}
        self.lock = threading.RLock()
        self.version = 0
        """Bumped on every change, so writers know when to rewrite the table."""

    def clear(self) -> None:
        with self.lock:
            self.items.clear()
            self.version += 1

    def apply(self, event: dict[str, Any]) -> bool:
        """Take one ``item_updated``; True when the catalogue changed."""
        p = event["payload"]
        key: WriterKey = (event["occurred_at"], event["location_id"], int(event["seq"]))
        changed = False
        with self.lock:
            item = self.items.setdefault(p["sku"], Item(p["sku"]))
            for name in ITEM_FIELDS:
                if p.get(name) is None:
                    continue
                if name not in item.keys or key > item.keys[name]:
                    item.values[name] = p[name]
                    item.keys[name] = key
                    changed = True
            if changed:
                self.version += 1
        return changed

    def get(self, sku: str, name: str, default: Any = None) -> Any:
        item = self.items.get(sku)
        return default if item is None else item.values.get(name, default)

    def rows(self) -> list[dict[str, Any]]:
        with self.lock:
            out = []
            for sku, item in sorted(self.items.items()):
                latest = item.latest()
                out.append({
                    "sku": sku, **{f: item.values.get(f) for f in ITEM_FIELDS},
                    "updated_at": parse_ts(latest[0]) if latest else None,
                    "updated_by": f"{latest[1]}:{latest[2]}" if latest else None,
                    "field_keys": {f: f"{k[0]}|{k[1]}|{k[2]}" for f, k in item.keys.items()},
                })
            return out

    def load(self, rows: list[dict[str, Any]]) -> None:
        """Restore from silver ``items`` rows (as :meth:`rows` wrote them)."""
        with self.lock:
            for r in rows:
                item = self.items.setdefault(r["sku"], Item(r["sku"]))
                keys = dict(r.get("field_keys") or {})
                for name in ITEM_FIELDS:
                    if r.get(name) is None or name not in keys:
                        continue
                    at, loc, seq = keys[name].split("|")
                    key = (at, loc, int(seq))
                    if name not in item.keys or key > item.keys[name]:
                        item.values[name] = r[name]
                        item.keys[name] = key
            self.version += 1


@dataclass
class Transfer:
    transfer_id: str
    sku: str
    quantity: int
    source: str | None = None
    destination: str | None = None
    shipped_at: datetime | None = None
    arrived: bool = False


class TransitBook:
    """Transfers shipped (``transfer_out`` seen) and not yet booked in (``transfer_in``).

    Either half may arrive first (different stores, different regions, different
    delays); a transfer is in transit only while the out half is known and the in half
    is not.
    """

    def __init__(self) -> None:
        self.transfers: dict[str, Transfer] = {}
        self.lock = threading.RLock()

    def clear(self) -> None:
        with self.lock:
            self.transfers.clear()

    def apply(self, event: dict[str, Any]) -> None:
        et, p = event["event_type"], event["payload"]
        if et not in ("transfer_out", "transfer_in"):
            return
        with self.lock:
            t = self.transfers.get(p["transfer_id"])
            if t is None:
                t = self.transfers[p["transfer_id"]] = Transfer(p["transfer_id"], p["sku"],
                                                                int(p["quantity"]))
            if et == "transfer_out":
                t.source, t.destination = event["location_id"], p["destination"]
                t.quantity = int(p["quantity"])
                t.shipped_at = parse_ts(event["occurred_at"])
            else:
                t.arrived = True
                t.destination = event["location_id"]
                t.source = t.source or p.get("source")

    def in_transit(self) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str], int]]:
        """(outbound, inbound) quantities per (location, sku)."""
        out: dict[tuple[str, str], int] = {}
        inbound: dict[tuple[str, str], int] = {}
        with self.lock:
            for t in self.transfers.values():
                if t.arrived or t.shipped_at is None:
                    continue
                out[(t.source, t.sku)] = out.get((t.source, t.sku), 0) + t.quantity
                key = (t.destination, t.sku)
                inbound[key] = inbound.get(key, 0) + t.quantity
        return out, inbound

    def forget_arrived(self) -> None:
        """Drop completed transfers (both halves seen); keeps the book small."""
        with self.lock:
            for tid in [k for k, t in self.transfers.items()
                        if t.arrived and t.shipped_at is not None]:
                del self.transfers[tid]


@dataclass
class NetworkBooks:
    """The books of one stream process (one streaming driver per network, as the design
    says): created by the runner, filled from bronze before the regions start, and handed
    to every region's state, whose batches apply to them and whose derived writer
    writes the catalogue from them."""

    items: ItemsBook = field(default_factory=ItemsBook)
    transit: TransitBook = field(default_factory=TransitBook)
    items_written: int = -1
    """Catalogue version last written to silver ``items``: every region's writer rewrites
    that one table, so only the first to see a new version does."""
    items_write_lock: threading.Lock = field(default_factory=threading.Lock)
    """Held while the catalogue is written (not ``items.lock``, which a batch's apply
    needs meanwhile)."""

    def clear(self) -> None:
        self.items.clear()
        self.transit.clear()
