"""What a transfer saved, measured by replaying its two series with and without it."""

from __future__ import annotations

import numpy as np

from spark_jobs.decisions.counterfactual import (
    Lot,
    OrderRequest,
    Recommendation,
    Trace,
    decile_errors,
    measure,
    replay_by_place,
    worst_error,
)

DAYS = 20
LAST_OK = 1  # a unit sells until the day before its expiry


def _rec(trace: Trace, lots: dict, *, estimate: float, value: float, shipped: bool,
         day: int = 0) -> Recommendation:
    rec = Recommendation(len(trace.recommendations), day, "S-OLD", "S-SHORT", "MILK", "L1",
                         10, day + 1, estimate, value, shipped=shipped)
    trace.recommend(rec, lots)
    return rec


def _measure(trace: Trace, demand: dict[str, np.ndarray]) -> list[Recommendation]:
    return measure(trace, lambda loc, sku: demand.get(loc), lambda sku: LAST_OK, horizon=7,
                   last_day=DAYS - 1)


def test_a_lot_that_would_spoil_moved_to_a_store_that_runs_out_saves_what_sells_there():
    # S-OLD sells nothing and its lot sells through day 2 only; S-SHORT sells 4 a day and
    # has nothing. Moved on day 0, on the shelf on day 1: 4 + 4 sell there (days 1, 2),
    # the other 2 spoil. Without the move all 10 spoil at S-OLD.
    trace = Trace()
    lots = {("S-OLD", "MILK"): [Lot("L1", 3, 10)]}
    rec = _rec(trace, lots, estimate=8.0, value=20.0, shipped=False)
    demand = {"S-OLD": np.zeros(DAYS), "S-SHORT": np.full(DAYS, 4.0)}
    [done] = _measure(trace, demand)
    assert done is rec and rec.measured_units == 8  # waste 10 -> 2; unmet 28 -> 20
    assert rec.parts == {"source_waste_avoided": 10, "destination_waste_added": 2,
                         "destination_unmet_avoided": 8, "source_unmet_added": 0}


def test_the_recorded_flows_of_both_series_are_replayed_in_both_arms():
    # An order of 12 as short-lived reaches S-SHORT on day 1 in the run: it alone sells
    # all that days 1 and 2 ask for, so the moved units only add to what spoils there.
    trace = Trace()
    lots = {("S-OLD", "MILK"): [Lot("L1", 3, 10)]}
    rec = _rec(trace, lots, estimate=8.0, value=20.0, shipped=True)
    trace.flow("S-OLD", "MILK", 0, Lot("L1", 3, 10), -10, tag=rec.tag)  # the move itself
    trace.flow("S-SHORT", "MILK", 1, Lot("L1", 3, 10), 10, tag=rec.tag)
    trace.flow("S-SHORT", "MILK", 1, Lot("O0", 3, 12), 12)  # the order, in both arms
    demand = {"S-OLD": np.zeros(DAYS), "S-SHORT": np.full(DAYS, 4.0)}
    [done] = _measure(trace, demand)
    assert done.measured_units == 0


def test_errors_are_reported_per_decile_of_estimated_value_and_the_worst_is_signed():
    trace = Trace()
    demand = {"S-OLD": np.zeros(DAYS), "S-SHORT": np.full(DAYS, 4.0)}
    for k in range(10):  # each measures 8 units saved; the estimates say 8, and 16 once
        _rec(trace, {("S-OLD", "MILK"): [Lot("L1", 3, 10)]}, estimate=16.0 if k == 9 else 8.0,
             value=float(k), shipped=False)
    _rec(trace, {("S-OLD", "MILK"): [Lot("L1", 20, 10)]}, estimate=8.0, value=99.0,
         shipped=False, day=DAYS - 3)  # its horizon runs past the last day: not measured
    done = _measure(trace, demand)
    rows = decile_errors(done)
    assert len(done) == 10 and [r["recommendations"] for r in rows] == [1] * 10
    assert [r["error"] for r in rows[:9]] == [0.0] * 9 and rows[9]["error"] == -0.5
    assert worst_error(rows) == -0.5


def _order_two_days(rate: dict[str, float]):
    """A store's daily order in these replays: up to two days of its demand, less what it
    holds and what is on its way (the simulation asks the reorders job instead)."""
    def decide(day: int, requests: list[OrderRequest]) -> list[int]:
        return [max(0, int(2 * rate[r.location]) - sum(x.quantity for x in r.lots)
                    - sum(units for _, units in r.coming)) for r in requests]
    return decide


def _shipped(source_rate: float, run_orders: list[tuple[str, int]]
             ) -> tuple[Recommendation, Trace]:
    """S-OLD moved its lot of 10 (usable through day 3) to S-SHORT (4 a day) on day 0;
    ``run_orders`` reached the stores on day 1, ordered knowing the move had happened."""
    trace = Trace()
    rec = _rec(trace, {("S-OLD", "MILK"): [Lot("L1", 3, 10)]}, estimate=8.0, value=20.0,
               shipped=True)
    rec.moved = 10
    trace.flow("S-OLD", "MILK", 0, Lot("L1", 3, 10), -10, tag=rec.tag)
    trace.flow("S-SHORT", "MILK", 1, Lot("L1", 3, 10), 10, tag=rec.tag)
    for store, units in run_orders:
        trace.flow(store, "MILK", 1, Lot("O0", 20, units), units)
    rate = {"S-OLD": source_rate, "S-SHORT": 4.0}
    demand = {loc: np.full(DAYS, r) for loc, r in rate.items()}
    [done] = measure(trace, lambda loc, sku: demand.get(loc), lambda sku: LAST_OK,
                     horizon=7, last_day=DAYS - 1, reorder_of=lambda sku: (1, 20),
                     decide=_order_two_days(rate))
    return done, trace


def test_without_a_shipped_move_the_destination_orders_what_the_move_brought():
    # In the run S-SHORT's order of day 0 counted the 10 units on their way: it ordered 2.
    done, _ = _shipped(0.0, [("S-SHORT", 2)])
    # Replayed with both stores ordering: with the move S-SHORT sells 8 of it, 2 spoil,
    # and it runs short 6 (day 0, and day 3 before its own orders catch up). Without,
    # it orders 8 on day 0 and runs short 4, on day 0 only. S-OLD's 10 spoil.
    assert done.parts == {"source_waste_avoided": 10, "destination_waste_added": 2,
                          "destination_unmet_avoided": -2, "source_unmet_added": 0}
    assert done.measured_units == 8  # the waste saved
    # Frozen, without the move S-SHORT had only the 2 it ordered: the move "avoided" 8
    # units of its shortfall that its own orders would have covered.
    assert done.measured_frozen == 8


def test_without_a_shipped_move_the_source_would_not_have_ordered_its_replacement():
    # S-OLD sells 2 a day. In the run it gave its lot away and ordered 4 to replace it.
    done, trace = _shipped(2.0, [("S-OLD", 4), ("S-SHORT", 2)])
    # With both stores ordering: without the move S-OLD sells 6 of its lot, wastes 4 and
    # orders when the lot is gone; with it, it orders on day 0. Either way it is short 2
    # units once: the move cost it no sale.
    assert done.parts["source_unmet_added"] == 0
    assert done.parts["source_waste_avoided"] == 4
    # Frozen, the arm without the move gave S-OLD both its lot and the replacement it
    # ordered only because the lot had left: the move looked like 6 lost sales there.
    demand = {"S-OLD": np.full(DAYS, 2.0), "S-SHORT": np.full(DAYS, 4.0)}
    arms = {arm: replay_by_place(done, trace, shipped=arm, demand=demand,
                                 last_ok=LAST_OK, horizon=7) for arm in (True, False)}
    assert arms[True]["S-OLD"][1] - arms[False]["S-OLD"][1] == 6
