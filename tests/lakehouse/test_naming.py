"""An id read alone gives the same answer everywhere: the range the simulated stores sell
is filed under its own categories by the stream and the decision jobs before any
``item_updated`` event has described it, and a ``WH-`` location is a warehouse."""

from __future__ import annotations

from edge_mqtt.catalogue import CATALOGUE
from lakehouse.naming import LOCATION_KINDS, category_of_sku, kind_of


def test_every_simulated_sku_is_filed_under_its_own_category_by_its_prefix():
    wrong = {s.sku: (s.category, category_of_sku(s.sku)) for s in CATALOGUE
             if category_of_sku(s.sku) != s.category}
    assert not wrong


def test_the_catalogue_category_wins_over_the_prefix():
    assert category_of_sku("DAIRY-MILK-1L", " Deli ") == "deli"
    assert category_of_sku("XYZ-1") == "xyz"


def test_location_kinds_come_from_the_id():
    assert [kind_of(x) for x in ("WH-EAST-1", "wh-west-2", "EAST-S001")] == [
        "warehouse", "warehouse", "store"]
    assert set(LOCATION_KINDS) == {"store", "warehouse"}
