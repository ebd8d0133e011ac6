"""Limits the agent holds its own inputs to, before SQLite or the outbox sees them.

The contract says what a valid event looks like; these checks keep what the agent itself
cannot handle out of its database: integers SQLite cannot bind (``10**30``), on-hand
arithmetic beyond :data:`~lakehouse.contract.MAX_STOCK`, strings SQLite cannot encode
(lone surrogates) or that would corrupt logs and topics (control characters). Every
refusal is a :class:`ContractError` naming the field, so HTTP answers 422 and the CLI
exits 2, and nothing is recorded.
"""

from __future__ import annotations

import math
import re
from typing import Any

from lakehouse.contract import (
    MAX_DAYS,
    MAX_HOURS,
    MAX_ITEMS,
    MAX_LOTS,
    MAX_MONEY,
    MAX_QUANTITY,
    MAX_STOCK,
    MAX_STR,
    ContractError,
)

_UNSAFE_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
"""Control characters (C0, DEL, C1) and lone surrogates (not encodable as UTF-8)."""

INT_LIMITS: dict[str, int] = {
    "quantity": MAX_QUANTITY, "counted_quantity": MAX_QUANTITY,
    "system_quantity": MAX_STOCK, "delta": MAX_STOCK, "stock_before": MAX_STOCK,
    "shelf_life_days": MAX_DAYS, "min_sellable_days": MAX_DAYS,
}
"""Largest magnitude of each integer field."""
NUMBER_LIMITS: dict[str, float] = {
    "unit_price": MAX_MONEY, "unit_cost": MAX_MONEY, "price": MAX_MONEY,
    "expected_transit_hours": MAX_HOURS, "transit_hours": MAX_HOURS,
}
"""Largest value of each decimal field."""
LIST_LIMITS: dict[str, int] = {"lots": MAX_LOTS, "items": MAX_ITEMS}
"""Most entries of each list field."""


def check_value(field: str, key: str, value: Any) -> None:
    """Check one value (recursing into lists and objects) against the limit for ``key``.

    ``field`` is how errors name it; nested parts are named after it
    (``payload.lots[2].quantity``). Types are not checked here (the request shape and the
    contract do that); only what would overflow, not encode, or not be a finite number.
    """
    problem = _problem(key, value)
    if problem is not None:
        where, bad, reason = problem
        raise ContractError(field + where, bad, reason)


def check_values(values: dict[str, Any], name: Any = None) -> dict[str, Any]:
    """Check every value of a flat request or payload; ``name(key)`` names a field."""
    for key, value in values.items():
        problem = _problem(key, value)
        if problem is not None:
            where, bad, reason = problem
            raise ContractError((name(key) if name else key) + where, bad, reason)
    return values


def _problem(key: str, value: Any) -> tuple[str, Any, str] | None:
    """(where under the field, value, reason) for the first value out of bounds, or None.

    On the recording path for every event, so names are built only for a refusal.
    """
    if isinstance(value, str):
        if len(value) > MAX_STR:
            return "", value, f"longer than {MAX_STR} characters"
        bad = _UNSAFE_CHARS.search(value)
        if bad:
            return "", value, (f"contains control character or lone surrogate "
                               f"U+{ord(bad.group()):04X} at {bad.start()}")
        return None
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        limit = INT_LIMITS.get(key, MAX_STOCK)
        if -limit <= value <= limit:
            return None
        return "", value, f"beyond the largest allowed magnitude {limit:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "", value, "must be a finite number"
        limit_f = NUMBER_LIMITS.get(key, float(MAX_STOCK))
        return None if abs(value) <= limit_f else ("", value, f"larger than {limit_f:,.0f}")
    if isinstance(value, list):
        most = LIST_LIMITS.get(key, MAX_ITEMS)
        if len(value) > most:
            return "", f"{len(value)} entries", f"more than {most} entries"
        for i, entry in enumerate(value):
            problem = _problem(key, entry)
            if problem is not None:
                return (f"[{i}]{problem[0]}", *problem[1:])
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                return "", k, "keys must be strings"
            # Inside lots and items, "quantity" is one lot's quantity: the key decides.
            problem = _problem("", k) or _problem(k, v)
            if problem is not None:
                return (f".{k}{problem[0]}", *problem[1:])
    return None


def check_on_hand(sku: Any, before: int, change: Any, field: str, value: Any) -> None:
    """Refuse an event whose arithmetic would take a SKU's on-hand beyond MAX_STOCK.

    ``field`` and ``value`` name what the caller sent (e.g. ``payload.quantity``); a
    ``change`` that is not an integer is left for the contract to refuse.
    """
    if isinstance(change, bool) or not isinstance(change, int):
        return
    after = before + change
    if not -MAX_STOCK <= after <= MAX_STOCK:
        raise ContractError(field, value, f"would take on-hand of {sku} from {before:,} to "
                                          f"{after:,}, beyond the largest allowed magnitude "
                                          f"{MAX_STOCK:,}")
