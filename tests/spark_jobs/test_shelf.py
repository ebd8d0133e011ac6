"""The FEFO Monte Carlo: older lots sell first, stock past its sellable life is waste, and
the same seed gives the same answer (so what-if comparisons are not noise)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from spark_jobs.decisions.shelf import ShelfModel, life_left_days

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def model(lots: list[tuple[str, date | None, int]], *, demand: float | list[float] = 10.0,
          min_sellable: int = 0, kind: str = "store", now: datetime = NOW, seed: int = 0,
          horizon: float = 7, paths: int = 400, correlation: float = 0.0,
          service_level: float | dict[str, float] = 0.9) -> ShelfModel:
    """One store and SKU; days independent unless ``correlation`` (the FEFO rules are
    checked on their own, the shared forecast error by the tests that name it)."""
    cohorts = pd.DataFrame([{"region": "east", "location_id": "S1", "sku": "YOG", "lot": lot,
                             "expires_on": exp, "quantity": qty} for lot, exp, qty in lots],
                           columns=["region", "location_id", "sku", "lot", "expires_on",
                                    "quantity"])
    means = demand if isinstance(demand, list) else [demand] * 8
    forecasts = pd.DataFrame([{"region": "east", "location_id": "S1", "sku": "YOG",
                               "forecast_date": now.date() + timedelta(days=d), "forecast": m,
                               "lower": m * 0.9, "upper": m * 1.1, "model": "test"}
                              for d, m in enumerate(means)])
    locations = pd.DataFrame([{"location_id": "S1", "region": "east", "kind": kind}])
    items = pd.DataFrame([{"sku": "YOG", "category": "dairy", "price": 1.2, "unit_cost": 0.5,
                           "shelf_life_days": 10, "min_sellable_days": min_sellable}])
    return ShelfModel(cohorts, forecasts, locations, items, now=now, horizon_days=horizon,
                      paths=paths, seed=seed, error_correlation=correlation,
                      service_level=service_level)


def outlook(m: ShelfModel) -> pd.DataFrame:
    return m.cohort_outlook().set_index("lot")


def test_life_left_runs_to_the_end_of_the_expiry_date() -> None:
    assert life_left_days(date(2026, 12, 2), NOW) == pytest.approx(2.0)
    assert life_left_days(date(2026, 12, 1), NOW + timedelta(hours=18)) == pytest.approx(0.25)
    assert life_left_days(None, NOW) == float("inf")


def test_older_lot_sells_first() -> None:
    # One day of demand (10) is less than either lot: FEFO takes it all from OLD.
    m = model([("NEW", date(2026, 12, 20), 40), ("OLD", date(2026, 12, 5), 40)], horizon=1)
    cohorts = outlook(m)
    assert cohorts.loc["NEW", "expected_sold"] == 0
    assert cohorts.loc["OLD", "expected_sold"] == pytest.approx(10, rel=0.15)


def test_older_lot_is_used_up_before_the_fresher_one_sells() -> None:
    demand, old = 5.0, 20  # OLD (5 days to sell) covers 4 days; the week needs 35
    m = model([("OLD", date(2026, 12, 5), old), ("NEW", date(2026, 12, 30), 40)],
              demand=demand)
    cohorts = outlook(m)
    assert cohorts.loc["OLD", "expected_sold"] > 0.95 * old
    week = demand * 7
    assert cohorts.loc["NEW", "expected_sold"] == pytest.approx(
        week - cohorts.loc["OLD", "expected_sold"], rel=0.1)


def test_stock_beyond_its_sellable_life_is_waste() -> None:
    m = model([("GONE", date(2026, 11, 30), 12), ("SHORT", date(2026, 12, 1), 8)],
              demand=100.0, min_sellable=2)
    cohorts = outlook(m)
    for lot, qty in (("GONE", 12), ("SHORT", 8)):  # expired; 1 day left < 2 days minimum
        assert cohorts.loc[lot, "expected_sold"] == 0
        assert cohorts.loc[lot, "expected_waste"] == qty
        assert cohorts.loc[lot, "waste_prob"] == 1.0


def test_unsold_units_at_the_end_of_sale_are_wasted() -> None:
    qty, demand, sell_days = 50, 5.0, 3  # sellable 3 days (to end of Dec 3) at 5 a day
    cohorts = outlook(model([("L1", date(2026, 12, 3), qty)], demand=demand))
    expected = qty - demand * sell_days
    assert cohorts.loc["L1", "expected_waste"] == pytest.approx(expected, rel=0.1)
    assert cohorts.loc["L1", "waste_prob"] > 0.99


def test_a_warehouse_sells_nothing_and_wastes_at_expiry() -> None:
    m = model([("W1", date(2026, 12, 3), 30), ("W2", date(2026, 12, 20), 30)],
              demand=0.0, kind="warehouse")
    cohorts = outlook(m)
    assert cohorts.loc["W1", "expected_waste"] == 30
    assert cohorts.loc["W2", "expected_waste"] == 0


def test_today_counts_only_the_hours_left() -> None:
    evening = NOW + timedelta(hours=18)  # a quarter of today left, no stock at all
    m = model([], demand=[40.0, 0, 0, 0, 0, 0, 0, 0], now=evening, paths=2000)
    unmet = m.series_outlook()["expected_unmet"].iloc[0]
    assert unmet == pytest.approx(40.0 / 4, rel=0.1)


def test_same_seed_same_answer_and_other_seed_differs() -> None:
    lots = [("L1", date(2026, 12, 3), 25), ("L2", date(2026, 12, 6), 25)]
    a, b = outlook(model(lots, seed=3)), outlook(model(lots, seed=3))
    pd.testing.assert_frame_equal(a, b)
    c = outlook(model(lots, seed=4))
    assert not np.allclose(a["expected_waste"], c["expected_waste"])


def test_what_if_runs_on_the_same_demand_paths() -> None:
    m = model([("L1", date(2026, 12, 3), 25)], seed=5)
    assert np.array_equal(m.demand(0), m.demand(0))
    assert np.array_equal(m.demand(0, 3), m.demand(0)[:3])  # shorter horizon, same days
    base = m.baseline()
    again = m.run([(0, m.lots[0])])
    assert np.array_equal(base.unmet_paths[0], again.unmet_paths[0])
    # Adding stock can only lower unmet demand, path by path.
    extra = m.run([(0, (*m.lots[0], m.lots[0][0].__class__("X", 10, 0.5, 5.0)))])
    assert (extra.unmet_paths[0] <= base.unmet_paths[0] + 1e-6).all()
    assert (extra.unmet_paths[0] < base.unmet_paths[0] - 1e-6).any()


def test_a_shared_forecast_error_makes_a_week_less_certain_not_a_day() -> None:
    # The forecast's error carries from day to day: days correlate as asked, each day
    # keeps its own spread, and a week's total spreads wider than independent days give.
    lots = [("L1", date(2026, 12, 3), 25)]
    shared = model(lots, demand=20.0, paths=4000, correlation=0.3).demand(0)
    alone = model(lots, demand=20.0, paths=4000).demand(0)
    assert np.corrcoef(shared[1], shared[4])[0, 1] == pytest.approx(0.3, abs=0.06)
    assert abs(np.corrcoef(alone[1], alone[4])[0, 1]) < 0.06
    assert shared[2].mean() == pytest.approx(20, rel=0.03)
    assert shared[2].std() == pytest.approx(alone[2].std(), rel=0.08)
    assert shared[:7].sum(axis=0).std() > 1.5 * alone[:7].sum(axis=0).std()
    # A lot a little short of its days' forecast is wasted on more paths: a forecast that
    # is high all week is the case a transfer out of it guards against.
    short = [("L1", date(2026, 12, 5), 80)]
    wasted = [(model(short, demand=20.0, paths=4000, correlation=c).baseline()
               .waste_paths[0] > 0.5).mean() for c in (0.3, 0.0)]
    assert wasted[0] > 3 * wasted[1] and wasted[0] > wasted[1] + 0.04
    # One slow day (a near-closed Sunday) must not widen the others' days.
    uneven = model(lots, demand=[20.0, 20.0, 20.0, 0.01, 20.0, 20.0, 20.0, 20.0],
                   paths=4000, correlation=0.3).demand(0)
    assert uneven[2].std() == pytest.approx(alone[2].std(), rel=0.08)
    assert uneven[3].std() < 0.2


def test_bad_inputs_are_refused_with_the_field_named() -> None:
    with pytest.raises(ValueError, match="now"):
        model([], now=datetime(2026, 12, 1))
    with pytest.raises(ValueError, match="kind"):
        model([], kind="depot")


def test_a_store_that_reorders_runs_short_only_until_its_first_delivery() -> None:
    m = model([], demand=10.0, paths=2000)  # an empty shelf; orders take a day to arrive
    alone = float(m.run(list(enumerate(m.lots))).expected_unmet[0])
    ordering = m.run(list(enumerate(m.lots)), reorders=True)
    assert alone == pytest.approx(70, rel=0.05)  # a week of demand, all of it lost
    # The first day is lost; from the first delivery on, the orders keep the shelf at a
    # day's forecast and then some (0.9 service), so little more is.
    assert 10 <= float(ordering.expected_unmet[0]) < 14
    assert float(ordering.unmet_between(0, 1.0, 7.0)) < 4


def test_what_a_store_holds_displaces_its_orders() -> None:
    # 60 units that stay sellable all week cover six days of 10: orders only top them up,
    # so nothing the orders bring is wasted and the lot sells as it would alone.
    m = model([("OWN", date(2026, 12, 8), 60)], demand=10.0, paths=2000)
    alone = m.run(list(enumerate(m.lots)))
    ordering = m.run(list(enumerate(m.lots)), reorders=True)
    assert ordering.sold[0, 0] == pytest.approx(alone.sold[0, 0], rel=0.01)
    assert float(ordering.waste_paths.mean()) == 0.0
    assert float(ordering.expected_unmet[0]) < 1.0


def test_the_stores_orders_in_a_what_if_aim_for_their_category_s_service_level() -> None:
    """A transfer is valued with both stores' own orders in the model; those orders must
    aim where the reorders job's do, or a lean category's shortfall after a move is
    understated."""
    unmet = {}
    for level in (0.6, 0.9, 0.98):
        m = model([], demand=10.0, paths=2000, service_level={"dairy": level})
        unmet[level] = float(m.run(list(enumerate(m.lots)), reorders=True)
                             .unmet_between(0, 1.0, 7.0))
    assert unmet[0.6] > unmet[0.9] > unmet[0.98]
    other = model([], demand=10.0, paths=2000, service_level={"bakery": 0.6})
    assert float(other.run(list(enumerate(other.lots)), reorders=True)
                 .unmet_between(0, 1.0, 7.0)) == pytest.approx(unmet[0.9])
