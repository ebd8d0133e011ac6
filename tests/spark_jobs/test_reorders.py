"""Reorder suggestions: cover the window to the next delivery, net of sellable stock and stock
in transit, and never more than the new lot will sell before it stops being sellable."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta

import pandas as pd
import pyarrow as pa
import pytest

from lakehouse.catalogue import REORDER_SUGGESTIONS
from spark_jobs.decisions.reorders import (
    critical_ratio,
    service_levels_from_env,
    suggest_reorders,
    unknown_categories,
)
from spark_jobs.decisions.shelf import Z80

NOW = datetime(2026, 12, 1, tzinfo=UTC)
COHORT_COLUMNS = ["region", "location_id", "sku", "lot", "expires_on", "quantity"]


def reorder(stock: list[tuple[str, date | None, int]], *, demand: float = 20.0,
            spread: float = 0.2, shelf_life: int = 10, min_sellable: int = 1, case: int = 1,
            lead: int | None = 1, review: float = 1, moving: int = 0,
            moving_expires: date | pd.Timestamp | None = None, kind: str = "store",
            unit_cost: float = 0.5,
            service_level: float | dict[str, float] = 0.9) -> pd.DataFrame:
    cohorts = pd.DataFrame([{"region": "east", "location_id": "S1", "sku": "MILK", "lot": lot,
                             "expires_on": exp, "quantity": qty} for lot, exp, qty in stock],
                           columns=COHORT_COLUMNS)
    forecasts = pd.DataFrame([{"region": "east", "location_id": "S1", "sku": "MILK",
                               "forecast_date": NOW.date() + timedelta(days=d),
                               "forecast": demand, "lower": demand * (1 - spread),
                               "upper": demand * (1 + spread), "model": "test"}
                              for d in range(7)])
    locations = pd.DataFrame([{"location_id": "S1", "region": "east", "kind": kind}])
    item = {"sku": "MILK", "category": "dairy", "price": 1.1, "unit_cost": unit_cost,
            "shelf_life_days": shelf_life, "min_sellable_days": min_sellable, "case_size": case}
    if lead is not None:
        item["lead_time_days"] = lead
    in_transit = (pd.DataFrame([{"location_id": "S1", "sku": "MILK", "quantity": moving,
                                 "expires_on": moving_expires}]) if moving else None)
    return suggest_reorders(cohorts, forecasts, locations, pd.DataFrame([item]),
                            in_transit=in_transit, now=NOW, review_days=review, paths=2000,
                            service_level=service_level)


def daily_sd(demand: float, spread: float = 0.2) -> float:
    return max(2 * demand * spread / (2 * Z80), math.sqrt(demand))


def test_a_store_running_low_orders_its_window_less_sellable_stock() -> None:
    demand, stock = 20.0, 25  # lead 1 day: about 5 left when the order lands; cover 1 day
    out = reorder([("L1", date(2026, 12, 20), stock)], demand=demand)
    assert len(out) == 1
    row = out.iloc[0]
    net = demand * 1 - (stock - demand * 1)
    sd = daily_sd(demand) * math.sqrt(2)  # the two days' demand decide the shortfall
    assert net <= row["order_quantity"] <= net + 2 * sd
    assert row["demand_forecast"] == demand * 1
    assert abs(row["sellable_at_arrival"] - (stock - demand)) <= daily_sd(demand)
    assert row["arrives_on"] == date(2026, 12, 2) and row["cover_until"] == date(2026, 12, 3)
    assert row["on_hand"] == stock and row["in_transit"] == 0
    assert row["expected_waste_units"] < 1 and row["waste_prob"] < 0.1
    assert row["order_quantity"] == round(row["demand_forecast"] + row["safety_stock"]
                                          - row["sellable_at_arrival"])
    assert list(out.columns) == REORDER_SUGGESTIONS.schema.names
    table = pa.Table.from_pandas(out, schema=REORDER_SUGGESTIONS.schema, preserve_index=False)
    assert table.num_rows == 1


def test_a_category_s_own_service_level_sets_its_safety_stock() -> None:
    """The outcome simulation tunes a level per category; a category it names orders to
    that level, any other to the default."""
    low = reorder([], demand=20.0, service_level={"dairy": 0.6}).iloc[0]
    high = reorder([], demand=20.0, service_level={"dairy": 0.97}).iloc[0]
    other = reorder([], demand=20.0, service_level={"bakery": 0.6}).iloc[0]
    default = reorder([], demand=20.0).iloc[0]
    assert low["order_quantity"] < default["order_quantity"] < high["order_quantity"]
    assert other["order_quantity"] == default["order_quantity"]
    assert "60% service" in low["reason"] and "90% service" in other["reason"]
    with pytest.raises(ValueError, match="service_level"):
        reorder([], service_level={"dairy": 1.0})


def test_the_job_takes_its_service_levels_from_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHELFLIFE_SERVICE_LEVELS", raising=False)
    assert service_levels_from_env() == 0.9
    monkeypatch.setenv("SHELFLIFE_SERVICE_LEVELS", "0.85")
    assert service_levels_from_env() == 0.85
    monkeypatch.setenv("SHELFLIFE_SERVICE_LEVELS", "dairy=0.8, bakery = 0.95")
    assert service_levels_from_env() == {"dairy": 0.8, "bakery": 0.95}
    for bad in ("dairy=95", "dairy=high", "=0.8", "1", "nan", "dairy=0.8,",
                "dairy=0.8,dairy=0.95"):
        monkeypatch.setenv("SHELFLIFE_SERVICE_LEVELS", bad)
        with pytest.raises(ValueError, match="SHELFLIFE_SERVICE_LEVELS"):
            service_levels_from_env()
    items = pd.DataFrame({"sku": ["MILK", "ROLL"], "category": ["dairy", "bakery"]})
    assert unknown_categories({"diary": 0.8, "bakery": 0.9}, items) == ["diary"]
    assert unknown_categories(0.8, items) == []


def test_a_store_whose_cohorts_cover_demand_orders_nothing() -> None:
    out = reorder([("L1", date(2026, 12, 20), 200)], demand=10.0)
    assert out.empty
    assert list(out.columns) == REORDER_SUGGESTIONS.schema.names


def test_a_short_lived_slow_seller_is_not_told_to_order_what_will_spoil() -> None:
    demand, life = 3.0, 2  # the new lot sells for 2 days; the cover window is 4 days
    out = reorder([], demand=demand, shelf_life=life, min_sellable=0, review=4)
    assert len(out) == 1
    row = out.iloc[0]
    sells_before_expiry = demand * life
    assert row["order_quantity"] <= sells_before_expiry
    assert row["order_quantity"] < row["demand_forecast"]  # the window alone would want more
    # margin 0.6, cost 0.5: the last unit may be wasted on at most 0.6 / 1.1 of the paths
    assert row["waste_prob"] <= critical_ratio(1.1, 0.5) + 0.05
    assert row["expected_waste_units"] <= 0.25 * row["order_quantity"]
    assert "capped" in row["reason"]


def test_a_dear_unit_with_a_thin_margin_is_capped_harder() -> None:
    thin = reorder([], demand=3.0, shelf_life=2, min_sellable=0, review=4,
                   unit_cost=1.0).iloc[0]  # margin 0.1 against a cost of 1.0 if wasted
    wide = reorder([], demand=3.0, shelf_life=2, min_sellable=0, review=4).iloc[0]
    assert thin["order_quantity"] < wide["order_quantity"]
    assert thin["waste_prob"] <= critical_ratio(1.1, 1.0) + 0.05


def test_a_sale_and_a_waste_weigh_the_same_without_a_unit_cost() -> None:
    assert critical_ratio(2.0, float("nan")) == 0.5
    assert critical_ratio(2.0, 0.5) == 0.75
    assert critical_ratio(2.0, 3.0) == 0.5  # a cost above the price is not believed
    assert critical_ratio(float("nan"), float("nan")) == 0.5


def test_stock_in_transit_reduces_the_order() -> None:
    stock = [("L1", date(2026, 12, 20), 25)]  # ~5 left when the order lands
    without = reorder(stock).iloc[0]["order_quantity"]
    with_moving = reorder(stock, moving=12).iloc[0]  # still on hand then: 12 less to order
    assert with_moving["in_transit"] == 12
    assert without - 12 - 3 <= with_moving["order_quantity"] <= without - 12 + 3


def test_cohorts_that_expire_before_the_order_arrives_are_no_cover() -> None:
    nothing = reorder([]).iloc[0]
    # 300 units, but their last sellable day is today (1 day left is the minimum).
    expiring = reorder([("OLD", date(2026, 12, 1), 300)]).iloc[0]
    assert expiring["sellable_at_arrival"] == 0
    assert expiring["order_quantity"] == nothing["order_quantity"]
    assert expiring["on_hand"] == 300


def test_orders_come_in_whole_cases_when_that_does_not_spoil() -> None:
    out = reorder([("L1", date(2026, 12, 20), 25)], case=12).iloc[0]
    single = reorder([("L1", date(2026, 12, 20), 25)]).iloc[0]
    assert out["order_quantity"] % 12 == 0
    assert out["order_quantity"] == math.ceil(single["order_quantity"] / 12) * 12
    assert out["case_size"] == 12


def test_rounding_down_when_a_full_case_would_spoil() -> None:
    out = reorder([], demand=2.0, shelf_life=2, min_sellable=0, case=24)
    assert out.empty  # a case of 24 with ~4 units of sales before expiry: order nothing


def test_an_empty_shelf_gets_a_part_case_that_sells_more_than_it_wastes() -> None:
    # Rolls: a case of 10, 2 days of life, 3 a day: ~6 sell and ~4 spoil. Selling none
    # is worse, so the case is ordered.
    row = reorder([], demand=3.0, shelf_life=2, min_sellable=0, case=10).iloc[0]
    assert row["order_quantity"] == 10
    assert "rounded up" in row["reason"]
    assert 3 <= row["expected_waste_units"] <= 5


def test_a_part_case_whose_waste_costs_more_than_its_sales_earn_is_not_ordered() -> None:
    # The same rolls with a margin of 0.1 and a cost of 1.0: 6 x 0.1 < 4 x 1.0.
    assert reorder([], demand=3.0, shelf_life=2, min_sellable=0, case=10,
                   unit_cost=1.0).empty


def test_lead_time_defaults_to_a_day_and_warehouses_do_not_reorder_here() -> None:
    row = reorder([("L1", date(2026, 12, 20), 25)], lead=None).iloc[0]
    assert row["lead_time_days"] == 1 and row["arrives_on"] == date(2026, 12, 2)
    assert reorder([], kind="warehouse").empty


def test_a_transfer_on_its_way_counts_only_for_the_life_its_lot_has_left() -> None:
    """A transfer brings a lot that may expire in a day or two. Counted as a fresh
    receipt, it would stop the store ordering for the days after it is gone."""
    fresh = reorder([], demand=20.0, moving=60)
    short = reorder([], demand=20.0, moving=60, moving_expires=NOW.date() + timedelta(days=1))
    assert fresh.empty  # 60 fresh units cover today and the day the order would cover
    # a reader's missing date (NaT) is no expiry known, not a lot long gone
    assert reorder([], demand=20.0, moving=60, moving_expires=pd.NaT).empty
    # Usable through tomorrow only (and pulled a day before expiry): nothing of it is
    # sellable when the order lands, so the store orders that day in full.
    row = short.iloc[0]
    assert row["sellable_at_arrival"] == 0 and row["order_quantity"] >= 20
    assert row["in_transit"] == 60


def test_shipped_transfers_give_the_units_in_transit_their_lot_s_expiry() -> None:
    from spark_jobs.decisions.jobs import in_transit_lots  # the job's input, no lakehouse

    levels = pd.DataFrame({"location_id": ["S1", "S2"], "sku": ["MILK", "MILK"],
                           "in_transit_in": [30, 5]})
    shipped = pd.DataFrame({"destination_location": ["S1", "S1", "S2"],
                            "sku": ["MILK"] * 3, "lot": ["B", "A", "C"],
                            "expires_on": [date(2026, 12, 9), date(2026, 12, 3),
                                           date(2026, 12, 4)],
                            "quantity": [12, 10, 8]})
    out = in_transit_lots(levels, shipped)
    rows = sorted(((r.location_id, r.expires_on, r.quantity) for r in out.itertuples()),
                  key=lambda r: (r[0], r[1] or date.max))
    # S1: both approved lots (earliest first), and 8 units no approved move explains.
    # S2 shows 5 in transit: the lot's expiry, for no more than the level says.
    assert rows == [("S1", date(2026, 12, 3), 10), ("S1", date(2026, 12, 9), 12),
                    ("S1", None, 8), ("S2", date(2026, 12, 4), 5)]
