"""Transfer recommendations: never a lot that arrives below the destination's minimum shelf
life, FEFO otherwise, quantities bounded by surplus and shortfall, waste going down."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spark_jobs.decisions.approval import auto_approve
from spark_jobs.decisions.transfers import TRANSFERS_SCHEMA, recommend_transfers

NOW = datetime(2026, 12, 1, tzinfo=UTC)
COHORT_COLUMNS = ["region", "location_id", "sku", "lot", "expires_on", "quantity"]
PAIR = {"transit_hours": 6.0, "cost_per_unit": 0.05}
DAIRY_STORE = {"category": "dairy", "destination_kind": "store", "min_sellable_days": 1.5,
               "handling_hours": 8.0}


def cohort(location: str, lot: str, expires_on: date | None, quantity: int) -> dict:
    return {"region": "east", "location_id": location, "sku": "YOG", "lot": lot,
            "expires_on": expires_on, "quantity": quantity}


def forecast(location: str, per_day: float, days: int = 8) -> list[dict]:
    return [{"region": "east", "location_id": location, "sku": "YOG",
             "forecast_date": NOW.date() + timedelta(days=d), "forecast": per_day,
             "lower": per_day * 0.8, "upper": per_day * 1.2, "model": "test"}
            for d in range(days)]


def run(cohorts: list[dict], forecasts: list[dict], routes: list[tuple[str, str]], *,
        kinds: dict[str, str], policy: list[dict] | None = None, price: float = 1.5,
        min_sellable: int = 1, paths: int = 400, seed: int = 0,
        in_transit: pd.DataFrame | None = None,
        supply: bool = False) -> pd.DataFrame:
    """``supply``: the warehouses fill their stores' reorders. Off by default: these
    fixtures' warehouses stand for stock no reorder will draw, to test the other rules."""
    locations = pd.DataFrame([{"location_id": k, "region": "east", "kind": v}
                              for k, v in kinds.items()])
    items = pd.DataFrame([{"sku": "YOG", "category": "dairy", "price": price,
                           "unit_cost": 0.6, "shelf_life_days": 10,
                           "min_sellable_days": min_sellable}])
    transit = pd.DataFrame([{"source": a, "destination": b, **PAIR} for a, b in routes],
                           columns=["source", "destination", "transit_hours", "cost_per_unit"])
    return recommend_transfers(
        pd.DataFrame(cohorts, columns=COHORT_COLUMNS),
        pd.DataFrame(forecasts), locations, transit,
        pd.DataFrame(policy if policy is not None else [DAIRY_STORE]), items,
        in_transit=in_transit, now=NOW, paths=paths, seed=seed,
        warehouses_supply_reorders=supply)


def yogurt(*wh_lots: tuple[str, date, int], store_stock: int = 10,
           store_demand: float = 30.0) -> pd.DataFrame:
    """WH (no sales) holds the lots; S sells ``store_demand`` a day from ``store_stock``."""
    cohorts = [cohort("WH", *lot) for lot in wh_lots]
    cohorts.append(cohort("S", "S-OWN", date(2026, 12, 20), store_stock))
    return run(cohorts, forecast("S", store_demand), [("WH", "S")],
               kinds={"WH": "warehouse", "S": "store"})


ARRIVAL_DAYS = (PAIR["transit_hours"] + DAIRY_STORE["handling_hours"]) / 24


def life_at_arrival(expires_on: date) -> float:
    end = datetime(expires_on.year, expires_on.month, expires_on.day, tzinfo=UTC)
    return (end + timedelta(days=1) - NOW).total_seconds() / 86400 - ARRIVAL_DAYS


def test_yogurt_that_would_arrive_too_old_is_never_sent() -> None:
    old = date(2026, 12, 2)  # 48 h of life; 6 h transit + 8 h handling leaves 34 h < 36 h
    assert life_at_arrival(old) < DAIRY_STORE["min_sellable_days"]
    recs = yogurt(("OLD", old, 200))
    assert "OLD" not in set(recs["lot"])
    assert list(recs.columns) == TRANSFERS_SCHEMA.names


def test_the_fresher_lot_goes_instead() -> None:
    recs = yogurt(("OLD", date(2026, 12, 2), 200), ("NEW", date(2026, 12, 7), 200))
    assert set(recs["lot"]) == {"NEW"}
    row = recs.iloc[0]
    assert row["destination_location"] == "S" and row["source_location"] == "WH"
    assert row["shelf_life_at_arrival_days"] >= 1.5
    assert row["shelf_life_at_arrival_days"] == life_at_arrival(date(2026, 12, 7))
    # Bounded by S's shortfall: it sells 30/day from arrival until NEW has 1 day left
    # (end of Dec 6), and its own 10 units run out before the delivery lands.
    window = life_at_arrival(date(2026, 12, 7)) + ARRIVAL_DAYS - 1 - ARRIVAL_DAYS
    shortfall = 30.0 * window
    assert 0.8 * shortfall <= row["quantity"] <= shortfall
    assert row["expected_units_saved"] <= row["quantity"]
    assert row["value_saved"] > row["transfer_cost"]
    assert row["status"] == "proposed"
    assert "NEW" in row["reason"] and "WH" in row["reason"] and "S" in row["reason"]


def test_fefo_sends_the_older_lot_first_when_it_is_eligible() -> None:
    old = date(2026, 12, 3)  # 72 h of life: arrives with 58 h >= 36 h
    recs = yogurt(("NEW", date(2026, 12, 7), 200), ("OLD", old, 200))
    assert "OLD" in set(recs["lot"])
    assert recs["lot"].tolist().index("OLD") < (recs["lot"].tolist().index("NEW")
                                                if "NEW" in set(recs["lot"]) else len(recs))
    old_row = recs[recs["lot"] == "OLD"].iloc[0]
    # OLD is on S's shelf from arrival until it has 1 day left (end of Dec 2).
    assert old_row["quantity"] <= 30.0 * (2.0 - ARRIVAL_DAYS)


def test_waste_probability_goes_down_at_the_source() -> None:
    # A (5/day) holds 60 units sellable for 3 days: ~45 will spoil; B sells 30/day, has none.
    cohorts = [cohort("A", "L1", date(2026, 12, 4), 60), cohort("B", "B1", date(2026, 12, 20), 1)]
    recs = run(cohorts, forecast("A", 5.0) + forecast("B", 30.0), [("A", "B")],
               kinds={"A": "store", "B": "store"})
    assert len(recs) == 1
    row = recs.iloc[0]
    assert row["lot"] == "L1"
    assert row["waste_prob_source_after"] < row["waste_prob_source_before"]
    assert row["quantity"] <= 60 - 5.0 * 3 * 0.7  # leaves A what it sells itself
    assert 1 <= row["expected_units_saved"] <= row["quantity"]  # a unit counts once
    assert row["transfer_cost"] == row["quantity"] * PAIR["cost_per_unit"]
    assert row["value_saved"] == row["expected_units_saved"] * 1.5


def test_a_store_with_ample_stock_gets_nothing() -> None:
    cohorts = [cohort("WH", "OLD", date(2026, 12, 5), 200),
               cohort("S", "S-OWN", date(2026, 12, 20), 500)]
    recs = run(cohorts, forecast("S", 10.0), [("WH", "S")],
               kinds={"WH": "warehouse", "S": "store"})
    assert recs.empty
    assert list(recs.columns) == TRANSFERS_SCHEMA.names


def test_stock_in_transit_counts_as_cover() -> None:
    cohorts = [cohort("WH", "OLD", date(2026, 12, 5), 200)]
    moving = pd.DataFrame([{"location_id": "S", "sku": "YOG", "quantity": 400}])
    recs = run(cohorts, forecast("S", 10.0), [("WH", "S")],
               kinds={"WH": "warehouse", "S": "store"}, in_transit=moving)
    assert recs.empty


def test_a_pair_missing_from_transit_is_not_a_candidate() -> None:
    cohorts = [cohort("WH", "OLD", date(2026, 12, 5), 200)]
    recs = run(cohorts, forecast("S", 30.0) + forecast("T", 30.0), [("WH", "T")],
               kinds={"WH": "warehouse", "S": "store", "T": "store"})
    assert not recs.empty
    assert set(recs["destination_location"]) == {"T"}


def test_two_sources_do_not_fill_the_same_need_twice() -> None:
    cohorts = [cohort("W1", "A", date(2026, 12, 6), 300), cohort("W2", "B", date(2026, 12, 6), 300)]
    recs = run(cohorts, forecast("S", 20.0), [("W1", "S"), ("W2", "S")],
               kinds={"W1": "warehouse", "W2": "warehouse", "S": "store"})
    # S sells 20/day from arrival until the lots have 1 day left (end of Dec 5).
    shortfall = 20.0 * (5.0 - ARRIVAL_DAYS)
    assert 0 < recs["quantity"].sum() <= shortfall
    assert len(recs) == 1


def test_output_is_deterministic_and_fits_the_schema() -> None:
    args = (("OLD", date(2026, 12, 3), 200), ("NEW", date(2026, 12, 7), 200))
    a, b = yogurt(*args), yogurt(*args)
    pd.testing.assert_frame_equal(a, b)
    table = pa.Table.from_pandas(a, schema=TRANSFERS_SCHEMA, preserve_index=False)
    assert table.num_rows == len(a) and a["recommendation_id"].is_unique


def test_warehouse_stock_its_stores_will_reorder_is_not_counted_as_saved() -> None:
    # WH holds two days of S's demand: S's own reorders will empty it long before it
    # expires, so moving it saves nothing. Twelve days' worth is another matter.
    own = cohort("S", "S-OWN", date(2026, 12, 20), 10)
    small = [cohort("WH", "NEW", date(2026, 12, 6), 60), own]
    big = [cohort("WH", "NEW", date(2026, 12, 6), 360), own]
    kinds = {"WH": "warehouse", "S": "store"}
    assert not run(small, forecast("S", 30.0), [("WH", "S")], kinds=kinds).empty  # the old view
    assert run(small, forecast("S", 30.0), [("WH", "S")], kinds=kinds, supply=True).empty
    recs = run(big, forecast("S", 30.0), [("WH", "S")], kinds=kinds, supply=True)
    assert len(recs) == 1
    # what the reorders will not draw before the lot expires (end of Dec 6: 6 days x 30)
    assert recs.iloc[0]["expected_units_saved"] <= 360 - 0.8 * 6 * 30


LOT = st.tuples(st.integers(-1, 8), st.integers(1, 120))
SITE = st.tuples(st.lists(LOT, max_size=3), st.floats(0, 40))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sites=st.lists(SITE, min_size=2, max_size=4), hours=st.floats(0, 60),
       handling=st.floats(0, 24), min_days=st.floats(0, 4), warehouse=st.booleans())
def test_never_below_the_minimum_and_never_more_than_the_lot(
        sites: list, hours: float, handling: float, min_days: float, warehouse: bool) -> None:
    names = [f"L{k}" for k in range(len(sites))]
    kinds = {n: "store" for n in names}
    if warehouse:
        kinds[names[0]] = "warehouse"
    cohorts, forecasts, held = [], [], {}
    for name, (lots, demand) in zip(names, sites, strict=True):
        for j, (days, qty) in enumerate(lots):
            lot = f"{name}-{j}"
            cohorts.append(cohort(name, lot, NOW.date() + timedelta(days=days), qty))
            held[(name, lot)] = qty
        if kinds[name] == "store" and demand > 0:
            forecasts += forecast(name, demand)
    locations = pd.DataFrame([{"location_id": k, "region": "east", "kind": v}
                              for k, v in kinds.items()])
    transit = pd.DataFrame([{"source": a, "destination": b, "transit_hours": hours,
                             "cost_per_unit": 0.01} for a in names for b in names if a != b])
    policy = pd.DataFrame([{"category": "dairy", "destination_kind": k,
                            "min_sellable_days": min_days, "handling_hours": handling}
                           for k in ("store", "warehouse")])
    items = pd.DataFrame([{"sku": "YOG", "category": "dairy", "price": 2.0, "unit_cost": 1.0,
                           "shelf_life_days": 10, "min_sellable_days": 1}])
    recs = recommend_transfers(
        pd.DataFrame(cohorts, columns=COHORT_COLUMNS),
        pd.DataFrame(forecasts, columns=["region", "location_id", "sku", "forecast_date",
                                         "forecast", "lower", "upper", "model"]),
        locations, transit, policy, items, now=NOW, paths=100)
    for row in recs.itertuples():
        end = datetime.combine(row.expires_on + timedelta(days=1), datetime.min.time(), UTC)
        on_shelf = NOW + timedelta(hours=hours + handling)
        assert (end - on_shelf).total_seconds() / 86400 >= min_days - 1e-9
        assert row.shelf_life_at_arrival_days >= row.min_sellable_days
        assert row.min_sellable_days == min_days
        assert 1 <= row.quantity <= held[(row.source_location, row.lot)]
        assert row.expected_units_saved >= 1 and row.value_saved > row.transfer_cost
    spent = recs.groupby(["source_location", "lot"])["quantity"].sum()
    for (source, lot), total in spent.items():
        assert total <= held[(source, lot)]


def test_only_a_move_that_nearly_surely_sells_ships_without_a_person() -> None:
    recs = pd.DataFrame({"value_saved": [20.0, 20.0, 20.0], "transfer_cost": [1.0, 1.0, 1.0],
                         "expected_units_saved": [8.0, 8.0, 8.0],
                         "waste_prob_destination": [0.05, 0.3, 0.6],
                         "shelf_life_at_arrival_days": [3.0, 3.0, 3.0],
                         "min_sellable_days": [1.5, 1.5, 1.5]})
    # A rescue that may still spoil at the destination on 3 paths of 10 waits for a person.
    assert auto_approve(recs).tolist() == [True, False, False]


def test_a_move_into_a_store_that_reorders_is_worth_the_waste_it_saves() -> None:
    """S2 sells 20 a day and orders every day (a day's lead time); S1 sells 2 a day of 40
    units that stop being sellable in three days. Moving them saves what S1 would waste;
    S2's shortfall counts only until its own first delivery, since from then on it would
    have ordered what it sells (the outcome simulation measured the old valuation, which
    counted a week of S2's demand, at 2.6 times what such moves saved)."""
    locations = pd.DataFrame([{"location_id": k, "region": "east", "kind": "store"}
                              for k in ("S1", "S2")])
    items = pd.DataFrame([{"sku": "YOG", "category": "dairy", "price": 1.5, "unit_cost": 0.6,
                           "shelf_life_days": 10, "min_sellable_days": 1}])
    recs = recommend_transfers(
        pd.DataFrame([cohort("S1", "OLD", date(2026, 12, 4), 40),
                      cohort("S2", "OWN", date(2026, 12, 9), 5)], columns=COHORT_COLUMNS),
        pd.DataFrame(forecast("S1", 2.0) + forecast("S2", 20.0)), locations,
        pd.DataFrame([{"source": "S1", "destination": "S2", **PAIR}]),
        pd.DataFrame([DAIRY_STORE]), items, now=NOW, paths=1000, explain=True)
    move = recs.iloc[0]
    assert (move["source_location"], move["lot"]) == ("S1", "OLD")
    assert move["estimated_source_waste_avoided"] > 0.9 * move["quantity"]
    # 14 h on the road and at the dock, 10 h of S2 selling 20 a day past its own 5 units
    assert move["estimated_destination_unmet_avoided"] < 12
    assert move["expected_units_saved"] == pytest.approx(
        move["estimated_source_waste_avoided"] - move["estimated_destination_waste_added"],
        rel=0.05)


def test_a_move_out_of_a_lean_category_counts_the_shortfall_it_leaves() -> None:
    """The source keeps selling after a move and refills with its own orders; those orders
    aim at its category's service level (``SHELFLIFE_SERVICE_LEVELS``), so at a lean level
    the units moved away leave a larger shortfall behind, and the estimate says so."""
    locations = pd.DataFrame([{"location_id": k, "region": "east", "kind": "store"}
                              for k in ("S1", "S2")])
    items = pd.DataFrame([{"sku": "YOG", "category": "dairy", "price": 1.5, "unit_cost": 0.6,
                           "shelf_life_days": 10, "min_sellable_days": 1}])
    short = {}
    for level in (0.6, 0.9, 0.98):
        recs = recommend_transfers(
            pd.DataFrame([cohort("S1", "OLD", date(2026, 12, 4), 60),
                          cohort("S2", "OWN", date(2026, 12, 9), 5)], columns=COHORT_COLUMNS),
            pd.DataFrame(forecast("S1", 12.0) + forecast("S2", 20.0)), locations,
            pd.DataFrame([{"source": "S1", "destination": "S2", **PAIR}]),
            pd.DataFrame([DAIRY_STORE]), items, now=NOW, paths=1000, explain=True,
            service_level={"dairy": level})
        assert len(recs) == 1
        short[level] = float(recs.iloc[0]["estimated_source_unmet_added"])
    assert short[0.6] > short[0.9] > short[0.98]
