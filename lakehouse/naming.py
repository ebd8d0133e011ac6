"""What an id says by itself: a location's kind and a SKU's category.

The agent's simulated range, the stream's daily totals and the decision jobs all need the
same answer when the catalogue is silent (a SKU no ``item_updated`` event has described
yet, a location missing from the ``locations`` table), so the rules live here once.
Standard library only: the store agent may use them.
"""

from __future__ import annotations

LOCATION_KINDS = ("store", "warehouse")
"""Every kind of location; a warehouse's id starts with ``WH-``."""

PREFIX_CATEGORY = {"DAIRY": "dairy", "BAK": "bakery", "PROD": "produce", "MEAT": "meat",
                   "SEA": "seafood", "DELI": "deli", "RM": "ready_meals"}
"""The category a SKU's prefix names (``DAIRY-MILK-1L`` -> dairy)."""


def kind_of(location_id: str) -> str:
    """``warehouse`` for an id starting ``WH-``, else ``store``."""
    return "warehouse" if location_id.upper().startswith("WH-") else "store"


def category_of_sku(sku: str, catalogue_category: str | None = None) -> str:
    """The catalogue's category (lower case), else the one the SKU prefix names."""
    if isinstance(catalogue_category, str) and catalogue_category.strip():
        return catalogue_category.strip().lower()
    prefix = sku.split("-", 1)[0].upper()
    return PREFIX_CATEGORY.get(prefix, prefix.lower())
