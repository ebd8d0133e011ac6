"""Reference data the decision jobs need: locations, transit times, sellable-life policy
and SKU attributes, each an ordinary Delta table in silver that a person can edit.

* ``silver/locations`` - ``location_id, region, kind`` (store | warehouse). Locations
  seen in gold but not listed are taken as warehouses when their id starts with ``WH-``
  and as stores otherwise (the simulator's naming).
* ``silver/transit_times`` - ``source, destination, transit_hours, cost_per_unit``: the
  location-pair matrix. A pair not listed gets :data:`DEFAULT_TRANSIT` for its kind of
  route (inside a region, or across); list a pair with ``transit_hours`` < 0 to forbid it.
* ``silver/sellable_policy`` - ``category, destination_kind, min_sellable_days,
  handling_hours``: how much life a product must have left once it is on the
  destination's shelf (after transit and ``handling_hours`` of unloading, checking and
  shelving), per category and destination kind. A chilled-dairy store wants 1.5 days
  (36 hours): yogurt with two days left on a six-hour truck arrives too late.

SKU attributes (category, price, shelf life) come from the catalogue ``silver/items``
(built from ``item_updated`` events); what the catalogue does not say falls back to
:data:`CATEGORY_DEFAULTS` for the SKU's category, which is taken from the SKU prefix
(``DAIRY-...`` -> dairy) when the catalogue has none.

Everything here reads and writes with ``deltalake`` (no JVM): the CLI edits these tables
and the dashboard shows them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd
import pyarrow as pa
from deltalake import write_deltalake

from lakehouse.catalogue import ITEMS, LOCATIONS, SELLABLE_POLICY, TRANSIT_TIMES
from lakehouse.naming import LOCATION_KINDS, category_of_sku, kind_of
from lakehouse.readers import read_table
from lakehouse.storage import delta_options, ensure_parent

Root = str | os.PathLike[str] | None
KINDS = LOCATION_KINDS

TABLES = {t.name: t for t in (LOCATIONS, TRANSIT_TIMES, SELLABLE_POLICY)}
"""The reference tables people edit, by name."""
KEYS = {"locations": ["location_id"], "transit_times": ["source", "destination"],
        "sellable_policy": ["category", "destination_kind"]}


@dataclass(frozen=True)
class Route:
    """Transit time and cost of a kind of route, when the matrix does not list the pair."""

    transit_hours: float
    cost_per_unit: float


DEFAULT_TRANSIT = {
    "same_region": Route(transit_hours=6.0, cost_per_unit=0.12),
    "cross_region": Route(transit_hours=14.0, cost_per_unit=0.30),
}
"""A refrigerated truck inside a region takes 4-8 hours; across regions it is an overnight
trunk route. Costs are per selling unit (fuel, driver, handling)."""


@dataclass(frozen=True)
class CategoryDefaults:
    """What a category's SKUs get when the catalogue is silent."""

    shelf_life_days: int
    store_min_sellable_days: int
    """A store pulls the item from sale with fewer days left (0 = sellable to its date)."""
    arrival_min_days: dict[str, float]
    """Life that must be left on the destination's shelf, per destination kind."""
    lead_time_days: int = 1
    case_size: int = 6
    price: float = 2.0


CATEGORY_DEFAULTS: dict[str, CategoryDefaults] = {
    "dairy": CategoryDefaults(12, 1, {"store": 1.5, "warehouse": 5.0}, 1, 12, 1.5),
    "bakery": CategoryDefaults(2, 0, {"store": 0.5, "warehouse": 1.0}, 1, 10, 2.0),
    "produce": CategoryDefaults(6, 1, {"store": 1.5, "warehouse": 3.0}, 1, 12, 1.7),
    "meat": CategoryDefaults(5, 1, {"store": 1.5, "warehouse": 3.0}, 1, 8, 4.5),
    "seafood": CategoryDefaults(3, 1, {"store": 1.0, "warehouse": 2.0}, 1, 6, 4.8),
    "deli": CategoryDefaults(8, 1, {"store": 1.5, "warehouse": 4.0}, 1, 10, 1.6),
    "ready_meals": CategoryDefaults(4, 0, {"store": 0.75, "warehouse": 1.0}, 1, 6, 3.0),
}
FALLBACK_CATEGORY = CategoryDefaults(5, 1, {"store": 1.5, "warehouse": 3.0})
HANDLING_HOURS = {"store": 8.0, "warehouse": 2.0}
"""Unload, check temperature and shelve (store) or put away (warehouse) after arrival."""
def defaults_for(category: str) -> CategoryDefaults:
    return CATEGORY_DEFAULTS.get(category, FALLBACK_CATEGORY)


def _bad(field: str, value: object, reason: str) -> ValueError:
    return ValueError(f"{field}: {reason} (got {value!r})")


def _check_kind(field: str, value: object) -> str:
    if value not in KINDS:
        raise _bad(field, value, f"expected one of {', '.join(KINDS)}")
    return str(value)


def _check_number(field: str, value: object, *, minimum: float | None = 0.0) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise _bad(field, value, "expected a number") from None
    if not math.isfinite(number) or (minimum is not None and number < minimum):
        raise _bad(field, value, f"expected a finite number >= {minimum}")
    return number


# --- reading ---------------------------------------------------------------------------

def read_reference(name: str, root: Root = None) -> pd.DataFrame:
    """One reference table as edited (empty, with its columns, when never edited)."""
    frame = read_table(TABLES[name], root)
    if frame is None:
        return TABLES[name].schema.empty_table().to_pandas()
    return frame


def locations(seen: pd.DataFrame, root: Root = None) -> pd.DataFrame:
    """``location_id, region, kind`` for every location in ``seen`` (``location_id,
    region``) and every one listed in ``silver/locations``; the table wins."""
    listed = read_reference("locations", root)[["location_id", "region", "kind"]]
    derived = seen[["location_id", "region"]].drop_duplicates("location_id")
    derived = derived.assign(kind=derived["location_id"].map(kind_of))
    out = pd.concat([listed, derived[~derived["location_id"].isin(listed["location_id"])]])
    return out.reset_index(drop=True)


def transit_matrix(locs: pd.DataFrame, root: Root = None, *,
                   pairs: Iterable[tuple[str, str]] | None = None) -> pd.DataFrame:
    """``source, destination, transit_hours, cost_per_unit`` for every ordered pair of
    ``locs`` (or just ``pairs``): the table's entries, else :data:`DEFAULT_TRANSIT`.
    Pairs listed with a negative ``transit_hours`` are left out (not a route)."""
    region = dict(zip(locs["location_id"], locs["region"], strict=True))
    if pairs is None:
        ids = list(region)
        grid = pd.MultiIndex.from_product([ids, ids], names=["source", "destination"])
        frame = grid.to_frame(index=False)
    else:
        frame = pd.DataFrame(list(pairs), columns=["source", "destination"])
    frame = frame[frame["source"] != frame["destination"]]
    same = frame["source"].map(region).to_numpy() == frame["destination"].map(region).to_numpy()
    frame = frame.assign(
        transit_hours=[DEFAULT_TRANSIT["same_region" if s else "cross_region"].transit_hours
                       for s in same],
        cost_per_unit=[DEFAULT_TRANSIT["same_region" if s else "cross_region"].cost_per_unit
                       for s in same])
    listed = read_reference("transit_times", root)[["source", "destination",
                                                     "transit_hours", "cost_per_unit"]]
    if len(listed):
        frame = frame.merge(listed, on=["source", "destination"], how="left",
                            suffixes=("", "_listed"))
        for col in ("transit_hours", "cost_per_unit"):
            frame[col] = frame[f"{col}_listed"].fillna(frame[col])
        frame = frame.drop(columns=["transit_hours_listed", "cost_per_unit_listed"])
    return frame[frame["transit_hours"] >= 0].reset_index(drop=True)


def sellable_policy(categories: Iterable[str], root: Root = None) -> pd.DataFrame:
    """``category, destination_kind, min_sellable_days, handling_hours`` for each category
    and both kinds: the table's rows, else :data:`CATEGORY_DEFAULTS`."""
    rows = [{"category": c, "destination_kind": k,
             "min_sellable_days": defaults_for(c).arrival_min_days[k],
             "handling_hours": HANDLING_HOURS[k]}
            for c in sorted(set(categories)) for k in KINDS]
    frame = pd.DataFrame(rows, columns=["category", "destination_kind", "min_sellable_days",
                                        "handling_hours"])
    listed = read_reference("sellable_policy", root)
    if len(listed):
        listed = listed[["category", "destination_kind", "min_sellable_days",
                         "handling_hours"]]
        frame = pd.concat([listed, frame]).drop_duplicates(["category", "destination_kind"])
    return frame.reset_index(drop=True)


def sku_attributes(skus: Iterable[str], root: Root = None) -> pd.DataFrame:
    """``sku, category, price, unit_cost, shelf_life_days, min_sellable_days, case_size,
    lead_time_days``: the catalogue's values where it has them, else the category's."""
    catalogue = read_table(ITEMS, root)
    known = {} if catalogue is None else {r["sku"]: r for r in catalogue.to_dict("records")}
    rows = []
    for sku in sorted(set(skus)):
        item = known.get(sku, {})
        category = category_of_sku(sku, item.get("category"))
        d = defaults_for(category)

        def pick(name: str, default: float, item: dict = item) -> float:
            value = item.get(name)
            return default if value is None or pd.isna(value) else value

        rows.append({"sku": sku, "category": category, "price": float(pick("price", d.price)),
                     "unit_cost": math.nan,
                     "shelf_life_days": int(pick("shelf_life_days", d.shelf_life_days)),
                     "min_sellable_days": int(pick("min_sellable_days",
                                                   d.store_min_sellable_days)),
                     "case_size": d.case_size, "lead_time_days": d.lead_time_days})
    return pd.DataFrame(rows, columns=["sku", "category", "price", "unit_cost",
                                       "shelf_life_days", "min_sellable_days", "case_size",
                                       "lead_time_days"])


# --- editing ---------------------------------------------------------------------------

def upsert(name: str, rows: list[dict], root: Root = None) -> int:
    """Add or replace rows of a reference table by its key; returns the table's size."""

    if name not in TABLES:
        raise _bad("table", name, f"expected one of {', '.join(TABLES)}")
    now = datetime.now(UTC)
    rows = [_checked(name, r) | {"updated_at": now} for r in rows]
    current = read_reference(name, root)
    keys = KEYS[name]
    schema = TABLES[name].schema
    new = pd.DataFrame(rows, columns=schema.names)
    if len(current):
        drop = current.set_index(keys).index.isin(new.set_index(keys).index)
        new = pd.concat([current[~drop], new], ignore_index=True)
    table = pa.Table.from_pandas(new, schema=schema, preserve_index=False)
    url = TABLES[name].uri(root)
    ensure_parent(url)
    write_deltalake(url, table, mode="overwrite", schema_mode="overwrite",
                    storage_options=delta_options(url))
    return len(new)


def _checked(name: str, row: dict) -> dict:
    """Validate one edited row; the error names the field and the value."""
    out = dict(row)
    for key in KEYS[name]:
        if not isinstance(out.get(key), str) or not out[key].strip():
            raise _bad(key, out.get(key), "expected a non-empty string")
    if name == "locations":
        _check_kind("kind", out.get("kind"))
    elif name == "transit_times":
        out["transit_hours"] = _check_number("transit_hours", out.get("transit_hours"),
                                             minimum=None)
        cost = out.get("cost_per_unit")
        out["cost_per_unit"] = (DEFAULT_TRANSIT["same_region"].cost_per_unit if cost is None
                                else _check_number("cost_per_unit", cost))
    else:
        _check_kind("destination_kind", out.get("destination_kind"))
        out["category"] = out["category"].strip().lower()
        out["min_sellable_days"] = _check_number("min_sellable_days",
                                                 out.get("min_sellable_days"))
        handling = out.get("handling_hours")
        out["handling_hours"] = (HANDLING_HOURS[out["destination_kind"]] if handling is None
                                 else _check_number("handling_hours", handling))
    return out
