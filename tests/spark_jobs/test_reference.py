"""Reference tables: defaults a new network runs on, edits that win, bad edits refused."""

from __future__ import annotations

import pandas as pd
import pytest

from spark_jobs.decisions import reference


def _locs() -> pd.DataFrame:
    return pd.DataFrame({"location_id": ["WH-EAST-1", "EAST-S001", "EAST-S002", "WEST-S001"],
                         "region": ["east", "east", "east", "west"]})


def test_locations_take_kind_from_the_id_unless_the_table_says_otherwise(tmp_path):
    derived = reference.locations(_locs(), tmp_path)
    assert dict(zip(derived.location_id, derived.kind, strict=True)) == {
        "WH-EAST-1": "warehouse", "EAST-S001": "store", "EAST-S002": "store",
        "WEST-S001": "store"}
    reference.upsert("locations", [{"location_id": "EAST-S002", "region": "east",
                                    "kind": "warehouse"}], tmp_path)
    edited = reference.locations(_locs(), tmp_path).set_index("location_id")
    assert edited.loc["EAST-S002", "kind"] == "warehouse"
    assert len(edited) == 4


def test_transit_matrix_defaults_by_route_and_listed_pairs_win(tmp_path):
    locs = reference.locations(_locs(), tmp_path)
    matrix = reference.transit_matrix(locs, tmp_path).set_index(["source", "destination"])
    assert len(matrix) == 4 * 3  # every ordered pair, none to itself
    same = reference.DEFAULT_TRANSIT["same_region"].transit_hours
    cross = reference.DEFAULT_TRANSIT["cross_region"].transit_hours
    assert matrix.loc[("WH-EAST-1", "EAST-S001"), "transit_hours"] == same
    assert matrix.loc[("WH-EAST-1", "WEST-S001"), "transit_hours"] == cross

    reference.upsert("transit_times", [
        {"source": "WH-EAST-1", "destination": "EAST-S001", "transit_hours": 2.5,
         "cost_per_unit": 0.05},
        {"source": "WH-EAST-1", "destination": "WEST-S001", "transit_hours": -1}], tmp_path)
    matrix = reference.transit_matrix(locs, tmp_path).set_index(["source", "destination"])
    assert matrix.loc[("WH-EAST-1", "EAST-S001")].tolist() == [2.5, 0.05]
    assert ("WH-EAST-1", "WEST-S001") not in matrix.index  # forbidden route
    assert ("WEST-S001", "WH-EAST-1") in matrix.index  # the reverse was not edited


def test_policy_defaults_to_36_hours_for_chilled_dairy_at_a_store_and_can_be_edited(tmp_path):
    policy = reference.sellable_policy(["dairy", "bakery"], tmp_path).set_index(
        ["category", "destination_kind"])
    assert policy.loc[("dairy", "store"), "min_sellable_days"] * 24 == 36
    assert policy.loc[("dairy", "store"), "handling_hours"] == reference.HANDLING_HOURS["store"]
    assert len(policy) == 4
    reference.upsert("sellable_policy", [{"category": "Dairy", "destination_kind": "store",
                                          "min_sellable_days": 2.0}], tmp_path)
    policy = reference.sellable_policy(["dairy"], tmp_path).set_index(
        ["category", "destination_kind"])
    assert policy.loc[("dairy", "store"), "min_sellable_days"] == 2.0
    assert policy.loc[("dairy", "warehouse"), "min_sellable_days"] == 5.0


@pytest.mark.parametrize(("table", "row", "message"), [
    ("transit_times", {"source": "A", "destination": "B", "transit_hours": "six"},
     "transit_hours: expected a number (got 'six')"),
    ("transit_times", {"source": "", "destination": "B", "transit_hours": 3},
     "source: expected a non-empty string (got '')"),
    ("sellable_policy", {"category": "dairy", "destination_kind": "shop",
                         "min_sellable_days": 1}, "destination_kind: expected one of"),
    ("sellable_policy", {"category": "dairy", "destination_kind": "store",
                         "min_sellable_days": -1}, "min_sellable_days: expected a finite"),
    ("locations", {"location_id": "X", "region": "east", "kind": "depot"}, "kind: expected"),
])
def test_bad_edits_are_refused_naming_field_and_value_and_nothing_is_written(
        tmp_path, table, row, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        reference.upsert(table, [row], tmp_path)
    assert reference.read_reference(table, tmp_path).empty


def test_sku_attributes_fall_back_to_the_category_the_prefix_names(tmp_path):
    attrs = reference.sku_attributes(["DAIRY-YOG-500", "BAK-LOAF-WHT-800", "ODD-THING"],
                                     tmp_path).set_index("sku")
    assert attrs.loc["DAIRY-YOG-500", "category"] == "dairy"
    assert attrs.loc["BAK-LOAF-WHT-800", "category"] == "bakery"
    assert attrs.loc["BAK-LOAF-WHT-800", "shelf_life_days"] == (
        reference.CATEGORY_DEFAULTS["bakery"].shelf_life_days)
    assert attrs.loc["ODD-THING", "category"] == "odd"
    assert attrs.loc["ODD-THING", "shelf_life_days"] == (
        reference.FALLBACK_CATEGORY.shelf_life_days)
