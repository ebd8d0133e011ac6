"""The perishable range the store-fleet simulator stocks, sells and wastes.

Shelf life, prices and case sizes are not in the demand data, so they live here as
parameters a grocery buyer would recognise. Prices are per selling unit in the network's
currency; shelf life counts days from receipt at a store.

``min_sellable_days`` is set per category and per kind of location: a store keeps an item
on sale while it has at least that many days left (0 = sellable up to and including its
expiry date); a warehouse only ships stock with at least its (larger) number of days left,
so the receiving store still has time to sell it.

Each SKU borrows its daily demand shape from one FreshRetailNet-50K ``first_category_id``
(see ``edge_mqtt/data/NOTICE.md``). The source anonymises its categories, so the pairing
cannot be by name; it pairs each Shelflife category with source categories whose
behaviour fits, measured over all 39,055 source series:

============  =========  ===============================================================
category      source id  why
============  =========  ===============================================================
produce       4, 20      the two broadest categories (94 and 75 products, most series):
                         fruit and vegetables are a fresh grocer's largest range
dairy         16         the steadiest (lowest day-to-day variation, under 1% of days
                         with no sales): milk and yogurt are bought every day
bakery        29, 30     the strongest weekend lift (x1.5 and x1.4 on Sat/Sun)
meat          21, 8      mid variation, frequent promotions (a third to half of days)
seafood       5          the most volatile, most zero-sale days and deepest discounts:
                         fish sells in bursts and is marked down to clear
deli          18, 31     steady, few zero days; 31 is rarely promoted
ready_meals   28, 10     volatile with many zero-sale days and few promotions
============  =========  ===============================================================
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from lakehouse.contract import check_id

LocationKind = Literal["store", "warehouse"]


def _invalid(field: str, value: object, reason: str) -> ValueError:
    return ValueError(f"{field}: {reason} (got {value!r})")


@dataclass(frozen=True, slots=True)
class CategoryPolicy:
    """Days of life an item must have left to stay on sale (store) or be shipped (warehouse)."""

    name: str
    store_min_sellable_days: int
    warehouse_min_sellable_days: int

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise _invalid("name", self.name, "expected a lower-case identifier")
        for field in ("store_min_sellable_days", "warehouse_min_sellable_days"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise _invalid(field, value, "expected an integer >= 0")
        if self.warehouse_min_sellable_days < self.store_min_sellable_days:
            raise _invalid("warehouse_min_sellable_days", self.warehouse_min_sellable_days,
                           f"must be >= store_min_sellable_days "
                           f"({self.store_min_sellable_days})")


CATEGORIES: dict[str, CategoryPolicy] = {
    p.name: p
    for p in (
        CategoryPolicy("dairy", store_min_sellable_days=1, warehouse_min_sellable_days=5),
        CategoryPolicy("bakery", store_min_sellable_days=0, warehouse_min_sellable_days=1),
        CategoryPolicy("produce", store_min_sellable_days=1, warehouse_min_sellable_days=3),
        CategoryPolicy("meat", store_min_sellable_days=1, warehouse_min_sellable_days=3),
        CategoryPolicy("seafood", store_min_sellable_days=1, warehouse_min_sellable_days=2),
        CategoryPolicy("deli", store_min_sellable_days=1, warehouse_min_sellable_days=4),
        CategoryPolicy("ready_meals", store_min_sellable_days=0,
                       warehouse_min_sellable_days=1),
    )
}


@dataclass(frozen=True, slots=True)
class Sku:
    """One perishable product line; invalid values fail here, naming the field."""

    sku: str
    description: str
    category: str
    shelf_life_days: int
    unit_cost: float
    unit_price: float
    typical_daily_units: float
    """Mean units one store sells per day; the demand model scales real shapes to it."""
    case_size: int
    """Units per case: receipts arrive in whole cases."""
    source_category_id: int
    """FreshRetailNet-50K ``first_category_id`` whose series give this SKU its shape."""

    def __post_init__(self) -> None:
        check_id("sku", self.sku)
        if not isinstance(self.description, str) or not self.description.strip():
            raise _invalid("description", self.description, "expected a non-empty string")
        if self.category not in CATEGORIES:
            raise _invalid("category", self.category,
                           f"expected one of {', '.join(CATEGORIES)}")
        _check_int("shelf_life_days", self.shelf_life_days, minimum=1)
        needed = CATEGORIES[self.category].warehouse_min_sellable_days
        if self.shelf_life_days <= needed:
            raise _invalid("shelf_life_days", self.shelf_life_days,
                           f"must exceed the {self.category} warehouse minimum of "
                           f"{needed} sellable days")
        _check_positive("unit_cost", self.unit_cost)
        _check_positive("unit_price", self.unit_price)
        if self.unit_price < self.unit_cost:
            raise _invalid("unit_price", self.unit_price,
                           f"list price below unit_cost {self.unit_cost}")
        _check_positive("typical_daily_units", self.typical_daily_units)
        _check_int("case_size", self.case_size, minimum=1)
        _check_int("source_category_id", self.source_category_id, minimum=0)

    def min_sellable_days(self, location_kind: LocationKind = "store") -> int:
        """Days of life left below which this SKU is pulled (store) or not shipped."""
        policy = CATEGORIES[self.category]
        if location_kind == "store":
            return policy.store_min_sellable_days
        if location_kind == "warehouse":
            return policy.warehouse_min_sellable_days
        raise _invalid("location_kind", location_kind, "expected 'store' or 'warehouse'")


def _check_int(field: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _invalid(field, value, f"expected an integer >= {minimum}")


def _check_positive(field: str, value: object) -> None:
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not math.isfinite(value) or value <= 0):
        raise _invalid(field, value, "expected a finite number > 0")


def index_skus(skus: Iterable[Sku]) -> dict[str, Sku]:
    """SKU id -> Sku; refuses a repeated id, which would merge two products' stock."""
    out: dict[str, Sku] = {}
    for item in skus:
        if item.sku in out:
            raise _invalid("sku", item.sku, "listed twice in the catalogue")
        out[item.sku] = item
    return out


_S = Sku
CATALOGUE: tuple[Sku, ...] = (
    # dairy: chilled, 7-10 days for milk, 2-3 weeks for yogurt
    _S("DAIRY-MILK-WH-1L", "Whole milk 1 L", "dairy", 9, 0.78, 1.25, 38.0, 12, 16),
    _S("DAIRY-MILK-SS-1L", "Semi-skimmed milk 1 L", "dairy", 9, 0.74, 1.19, 32.0, 12, 16),
    _S("DAIRY-YOG-500", "Natural yogurt 500 g", "dairy", 18, 0.95, 1.69, 12.0, 6, 16),
    _S("DAIRY-YOG-GRK-4X125", "Greek-style yogurt 4 x 125 g", "dairy", 21, 1.35, 2.39, 9.0,
       6, 16),
    _S("DAIRY-CREAM-250", "Fresh double cream 250 ml", "dairy", 12, 0.82, 1.45, 6.0, 12, 16),
    # bakery: baked or delivered daily, 2-3 days
    _S("BAK-LOAF-WHT-800", "White sliced loaf 800 g", "bakery", 3, 0.52, 1.15, 28.0, 10, 29),
    _S("BAK-SOURDOUGH-600", "Sourdough loaf 600 g", "bakery", 2, 1.10, 2.95, 10.0, 8, 29),
    _S("BAK-CROISSANT-4PK", "All-butter croissants 4 pack", "bakery", 2, 0.88, 2.10, 14.0,
       12, 30),
    # produce: soft fruit and leaves 4-5 days, hardier fruit up to 10
    _S("PROD-BANANA-5PK", "Bananas 5 pack", "produce", 6, 0.55, 1.05, 42.0, 18, 4),
    _S("PROD-STRAWB-400", "Strawberries 400 g punnet", "produce", 4, 1.25, 2.50, 16.0, 10, 4),
    _S("PROD-SALAD-MIX-200", "Mixed salad leaves 200 g", "produce", 5, 0.62, 1.39, 14.0, 12,
       20),
    _S("PROD-TOM-CHERRY-250", "Cherry tomatoes 250 g", "produce", 8, 0.58, 1.29, 18.0, 12, 4),
    _S("PROD-AVOCADO-2PK", "Ripe and ready avocados 2 pack", "produce", 5, 0.95, 1.99, 9.0,
       10, 20),
    _S("PROD-APPLE-6PK", "Gala apples 6 pack", "produce", 10, 0.92, 1.85, 15.0, 12, 4),
    # meat: 4-6 days
    _S("MEAT-CHK-BREAST-500", "Chicken breast fillets 500 g", "meat", 6, 2.60, 4.49, 14.0, 8,
       21),
    _S("MEAT-BEEF-MINCE-500", "Beef mince 5% fat 500 g", "meat", 4, 2.45, 4.25, 11.0, 8, 21),
    _S("MEAT-PORK-CHOP-4PK", "Pork loin chops 4 pack", "meat", 5, 2.70, 4.75, 6.0, 6, 8),
    # seafood: 2-3 days
    _S("SEA-SALMON-2X120", "Salmon fillets 2 x 120 g", "seafood", 3, 2.95, 4.99, 8.0, 6, 5),
    _S("SEA-COD-LOIN-280", "Cod loins 280 g", "seafood", 3, 2.80, 4.60, 5.0, 6, 5),
    # deli: sealed packs, about a week to ten days
    _S("DELI-HAM-SLICED-120", "Sliced cooked ham 120 g", "deli", 10, 0.98, 1.89, 13.0, 12,
       18),
    _S("DELI-HUMMUS-200", "Classic houmous 200 g", "deli", 7, 0.55, 1.20, 10.0, 10, 31),
    # ready meals: sandwiches 2 days, cooked meals 4-5, fresh soup a week
    _S("RM-SANDWICH-CHKN", "Chicken salad sandwich", "ready_meals", 2, 1.05, 2.85, 20.0, 8,
       28),
    _S("RM-LASAGNE-400", "Beef lasagne 400 g", "ready_meals", 5, 1.75, 3.75, 7.0, 6, 10),
    _S("RM-SOUP-TOMATO-600", "Fresh tomato soup 600 g", "ready_meals", 7, 1.05, 2.40, 6.0, 6,
       28),
)
del _S

SKUS: Mapping[str, Sku] = index_skus(CATALOGUE)
"""SKU id -> Sku for the default catalogue."""


def get_sku(sku: str) -> Sku:
    """Look up a SKU of the default catalogue; unknown ids fail naming the id."""
    try:
        return SKUS[sku]
    except KeyError:
        raise _invalid("sku", sku, "not in the catalogue") from None
