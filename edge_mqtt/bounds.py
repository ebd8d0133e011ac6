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


def check_text(field: str, value: str) -> str:
    """At most MAX_STR characters, none of them a control character or lone surrogate."""
    if len(value) > MAX_STR:
        raise ContractError(field, value, f"longer than {MAX_STR} characters")
    bad = _UNSAFE_CHARS.search(value)
    if bad:
        raise ContractError(field, value, f"contains control character or lone surrogate "
                                          f"U+{ord(bad.group()):04X} at {bad.start()}")
    return value


def check_value(field: str, key: str, value: Any) -> None:
    """Check one value (recursing into lists and objects) against the limit for ``key``.

    ``field`` is how errors name it (``payload.quantity``, ``payload.lots[2].quantity``).
    Types are not checked here (the request shape and the contract do that); only what
    would overflow, not encode, or not be a finite number.
    """
    if isinstance(value, str):
        check_text(field, value)
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int):
        limit = INT_LIMITS.get(key, MAX_STOCK)
        if not -limit <= value <= limit:
            raise ContractError(field, value, f"beyond the largest allowed magnitude {limit:,}")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ContractError(field, value, "must be a finite number")
        limit_f = NUMBER_LIMITS.get(key, float(MAX_STOCK))
        if abs(value) > limit_f:
            raise ContractError(field, value, f"larger than {limit_f:,.0f}")
    elif isinstance(value, list):
        most = LIST_LIMITS.get(key, MAX_ITEMS)
        if len(value) > most:
            raise ContractError(field, f"{len(value)} entries", f"more than {most} entries")
        for i, entry in enumerate(value):
            check_value(f"{field}[{i}]", key, entry)
    elif isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ContractError(field, k, "keys must be strings")
            check_text(f"{field} key", k)
            # Inside lots and items, "quantity" is one lot's quantity.
            check_value(f"{field}.{k}", k, v)


def check_values(values: dict[str, Any], name: Any = None) -> dict[str, Any]:
    """Check every value of a flat request or payload; ``name(key)`` names a field."""
    for key, value in values.items():
        check_value(name(key) if name else key, key, value)
    return values


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
