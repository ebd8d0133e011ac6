"""Reorder suggestions per store and SKU: enough to sell, never more than will sell.

Pure pandas/numpy on frames shaped like the gold tables; the batch runner writes gold
``reorder_suggestions``. Numbers come from :mod:`spark_jobs.decisions.shelf`'s FEFO Monte Carlo.

For each store and SKU with a forecast, an order placed ``now`` arrives after the SKU's
``lead_time_days`` (default 1) as a fresh lot of ``shelf_life_days``, and must cover demand
from its arrival until the next order can arrive (``review_days`` later):

* **Need.** Existing cohorts (sold FEFO, each with its own expiry, so a cohort that stops
  being sellable before the order arrives covers nothing) and stock in transit (sellable
  now: with its lot's expiry when the input gives one, a shipped transfer's, else as a fresh
  receipt) are simulated up to the end of the cover window. The need is
  the ``service_level`` quantile of the demand they leave unmet inside the window.
  The service level is a stated target (0.9 by default), not a newsvendor ratio: a unit
  the window does not sell is not lost but sold later, so over the window the ratio of a
  sale's margin to a day's carrying cost would ask for nearly every path. What a unit
  costs when it is wasted is weighed where it can be wasted, in the cap below.
* **Sell-through cap.** The new lot sells only what older stock leaves, and only until it
  stops being sellable (its shelf life minus the SKU's ``min_sellable_days``): its
  *capacity* on a path. The k-th unit of the order either sells (earning the margin
  ``price - unit_cost``) or is wasted (losing ``unit_cost``), so it is worth ordering while
  the probability that it is wasted stays at most the newsvendor critical ratio
  ``margin / (margin + unit_cost)``: the order is capped at that quantile of the capacity.
  A SKU without a unit cost (the reference data has none) values a sale and a wasted unit
  alike at its price, as the transfer job and the outcome simulation do: the ratio is 1/2,
  so the cap is the median capacity. A lot selling for more than :data:`MAX_MODEL_DAYS`
  days after now is taken not to spoil.
* **Cases.** A part case is decided by expected value on the same demand paths: the margin
  of the units the order sells before it stops being sellable, less the cost of the units
  it wastes, rounded down and rounded up to whole cases; the better one is suggested
  (down on a tie), and a suggestion of zero units is left out. Rounding down whenever a
  whole case *might* waste left slow sellers of short-lived SKUs with an empty shelf day
  after day: a case of 10 rolls with 2 days of life at 3 a day sells 6 and wastes 4, which
  is worth more than selling none.

``safety_stock`` is how far the service-level need exceeds the plain expected shortfall
(``demand_forecast - sellable_at_arrival``); ``expected_waste_units`` and ``waste_prob`` are
the suggested order's own (its units left when it stops being sellable).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from lakehouse.catalogue import REORDER_SUGGESTIONS

from .shelf import (
    IN_TRANSIT_LOT,
    SERVICE_LEVEL,
    WASTE_EPS,
    Lot,
    ServiceLevels,
    ShelfModel,
    check_now,
    check_service_levels,
    clean_items,
    service_level_of,
)

COLUMNS = REORDER_SUGGESTIONS.schema.names
MAX_MODEL_DAYS = 28
"""Longest horizon simulated (days after now); longer-lived lots are taken not to spoil."""
SERVICE_LEVELS_ENV = "SHELFLIFE_SERVICE_LEVELS"
"""The reorders job's service levels: ``0.85`` for every category, or
``dairy=0.85,bakery=0.8`` per category (the rest :data:`SERVICE_LEVEL`), e.g. as the
outcome simulation tuned them on the network's own demand."""


def service_levels_from_env() -> ServiceLevels:
    """The levels :data:`SERVICE_LEVELS_ENV` sets (:data:`SERVICE_LEVEL` when unset); a
    value that is not a level between 0 and 1 stops the job with the variable named."""
    text = os.environ.get(SERVICE_LEVELS_ENV, "").strip()
    if not text:
        return SERVICE_LEVEL
    try:
        if "=" not in text:
            return check_service_levels(float(text))
        levels: dict[str, float] = {}
        for part in text.split(","):
            category, _, value = (x.strip() for x in part.partition("="))
            if not category or not value:
                raise ValueError(f"{part.strip()!r} is not category=level")
            if category in levels:
                raise ValueError(f"{category} is given twice")
            levels[category] = float(value)
        return check_service_levels(levels)
    except ValueError as exc:
        raise ValueError(f"{SERVICE_LEVELS_ENV}: expected a level between 0 and 1, or "
                         f"category=level pairs separated by commas (got {text!r}: "
                         f"{exc})") from None


def unknown_categories(levels: ServiceLevels, items: pd.DataFrame) -> list[str]:
    """The categories ``levels`` names that no SKU in ``items`` has: a misspelt name
    (``diary``) would otherwise leave its category at the default without a word."""
    if not isinstance(levels, Mapping):
        return []
    known = set(items["category"].dropna().astype(str)) if "category" in items else set()
    return sorted(set(levels) - known)


def unit_values(price: float, unit_cost: float) -> tuple[float, float]:
    """(value of a sale, loss of a wasted unit) of one unit of a SKU: its margin and its
    cost; both its price when the unit cost is unknown (or not below the price), and one
    unit each when the price is unknown too."""
    if not (np.isfinite(price) and price >= 0):
        return 1.0, 1.0
    if not (np.isfinite(unit_cost) and 0 <= unit_cost < price):
        return price, price
    return price - unit_cost, unit_cost


def critical_ratio(price: float, unit_cost: float) -> float:
    """The newsvendor critical ratio ``margin / (margin + cost)``: ordering one more unit
    pays while the probability that it is wasted stays at most this (1/2 when a sale and
    a waste are valued alike, or the SKU has no price)."""
    sale, loss = unit_values(price, unit_cost)
    return sale / (sale + loss) if sale + loss > 0 else 0.5


def empty_reorders() -> pd.DataFrame:
    """A frame with the output columns and no rows."""
    return REORDER_SUGGESTIONS.schema.empty_table().to_pandas()


def suggest_reorders(cohorts: pd.DataFrame, forecasts: pd.DataFrame,
                     locations: pd.DataFrame, items: pd.DataFrame, *,
                     in_transit: pd.DataFrame | None = None, now: datetime,
                     review_days: float = 1, service_level: ServiceLevels = SERVICE_LEVEL,
                     paths: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row per store and SKU that should order now (the columns of gold
    ``reorder_suggestions``). ``service_level`` is one level or one per category."""
    now = check_now(now)
    if not (isinstance(review_days, int | float) and math.isfinite(review_days)
            and review_days > 0):
        raise ValueError(f"review_days: must be a number > 0 (got {review_days!r})")
    check_service_levels(service_level)
    cleaned = clean_items(items)
    longest = float(cleaned["lead_time_days"].max()) if len(cleaned) else 0.0
    model = ShelfModel(cohorts, forecasts, locations, items, in_transit=in_transit, now=now,
                       horizon_days=max(MAX_MODEL_DAYS, longest + review_days), paths=paths,
                       seed=seed, service_level=service_level)
    s = model.series
    item = model.items.set_index("sku")
    rows = [i for i in range(len(s)) if s["kind"].iat[i] == "store" and model.has_forecast[i]
            and s["sku"].iat[i] in item.index
            and np.isfinite(s["shelf_life_days"].iat[i])]
    if not rows:
        return empty_reorders()
    plans = []
    for i in rows:
        sku = item.loc[s["sku"].iat[i]]
        lead = float(sku["lead_time_days"])
        sellable_for = float(sku["shelf_life_days"]) - float(s["sell_min_days"].iat[i])
        lot_end = lead + sellable_for
        window_end = lead + review_days
        horizon = max(window_end, min(lot_end, float(MAX_MODEL_DAYS)))
        plans.append((i, lead, window_end, lot_end, horizon))
    out_rows = []
    for days in sorted({math.ceil(p[4] - 1e-9) for p in plans}):
        group = [p for p in plans if math.ceil(p[4] - 1e-9) == days]
        checks = [[p[1], p[2], min(p[3], p[4])] for p in group]
        result = model.run([(p[0], model.lots[p[0]]) for p in group], horizon=days,
                           checkpoints=checks)
        for j, plan in enumerate(group):
            row = _suggest(model, item, plan, result.checkpoint_unmet[j],
                           result.checkpoint_stock[j], review_days=review_days,
                           service_level=service_level_of(
                               service_level, model.series["category"].iat[plan[0]]))
            if row is not None:
                out_rows.append(row)
    if not out_rows:
        return empty_reorders()
    frame = pd.DataFrame(out_rows, columns=COLUMNS)
    frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True)
    return frame.astype({"on_hand": "int64", "in_transit": "int64", "order_quantity": "int64",
                         "case_size": "int64", "shelf_life_days": "int64"})


def _suggest(model: ShelfModel, item: pd.DataFrame, plan: tuple, unmet: np.ndarray,
             stock: np.ndarray, *, review_days: float,
             service_level: float) -> dict[str, object] | None:
    i, lead, window_end, lot_end, horizon = plan
    s = model.series.iloc[i]
    sku = item.loc[s["sku"]]
    short = np.asarray(unmet[1] - unmet[0], dtype=float)
    need = int(math.floor(float(np.quantile(short, service_level)) + 0.5))
    price, unit_cost = float(sku["price"]), float(sku["unit_cost"])
    ratio = critical_ratio(price, unit_cost)
    if lot_end <= horizon:
        capacity = np.asarray(unmet[2] - unmet[0], dtype=float)
        cap = int(math.floor(float(np.quantile(capacity, ratio)) + 0.5))
    else:
        capacity, cap = None, need
    quantity = max(0, min(need, cap))
    case = int(sku["case_size"])

    def waste(q: int) -> tuple[float, float]:
        if capacity is None or q <= 0:
            return 0.0, 0.0
        left = np.maximum(q - capacity, 0.0)
        return float(left.mean()), float((left >= WASTE_EPS).mean())

    sale_value, waste_loss = unit_values(price, unit_cost)

    def value(q: int) -> float:
        """Expected margin of what ``q`` units sell, less the cost of what they waste."""
        wasted = waste(q)[0]
        return sale_value * (q - wasted) - waste_loss * wasted

    rounding = ""
    if quantity and quantity % case:
        down = (quantity // case) * case
        up = down + case
        if value(up) > value(down):
            quantity, rounding = up, f"rounded up to {up // case} case(s) of {case}"
        else:
            quantity = down
            rounding = (f"rounded down to {down // case} case(s) of {case}: the part case "
                        f"would waste more than its sales are worth")
    if quantity <= 0:
        return None
    expected_waste, waste_prob = waste(quantity)
    demand = model.expected_demand(i, lead, window_end)
    sellable = float(stock[0].mean())
    lots: tuple[Lot, ...] = model.lots[i]
    on_hand = int(round(sum(lot.quantity for lot in lots if lot.lot != IN_TRANSIT_LOT)))
    moving = int(round(sum(lot.quantity for lot in lots if lot.lot == IN_TRANSIT_LOT)))
    now = model.now
    arrives_on = (now + timedelta(days=lead)).date()
    cover_until = (now + timedelta(days=window_end)).date()
    parts = [f"{demand:.0f} expected demand {arrives_on}..{cover_until} with "
             f"{sellable:.0f} still sellable then: {need} covers it at "
             f"{service_level:.0%} service"]
    if cap < need:
        parts.append(f"capped at {cap}: a further unit would be wasted with probability "
                     f"over {ratio:.2f}, where its cost outweighs its margin")
    if rounding:
        parts.append(rounding)
    parts.append(f"order waste p={waste_prob:.2f}")
    return {
        "region": s["region"], "location_id": s["location_id"], "sku": s["sku"],
        "category": None if pd.isna(s["category"]) else str(s["category"]),
        "on_hand": on_hand, "sellable_at_arrival": sellable, "in_transit": moving,
        "lead_time_days": lead, "arrives_on": arrives_on, "cover_until": cover_until,
        "demand_forecast": demand,
        "safety_stock": max(0.0, need - max(0.0, demand - sellable)),
        "order_quantity": quantity, "case_size": case,
        "shelf_life_days": int(sku["shelf_life_days"]),
        "expected_waste_units": expected_waste, "waste_prob": waste_prob,
        "reason": "; ".join(parts), "created_at": now,
    }
