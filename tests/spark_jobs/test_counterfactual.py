"""What a transfer saved, measured by replaying its two series with and without it."""

from __future__ import annotations

import numpy as np

from spark_jobs.decisions.counterfactual import (
    Lot,
    Recommendation,
    Trace,
    decile_errors,
    measure,
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


def test_without_a_shipped_move_the_destination_would_have_ordered_what_it_brought():
    # The run moved 10 units on day 0, and S-SHORT's order that day counted them as on
    # their way: it ordered 2. Without the move it would have ordered 12, arriving with
    # the move's day: its shortfall was not the move's to avoid.
    def measured(order: int) -> Recommendation:
        trace = Trace()
        rec = _rec(trace, {("S-OLD", "MILK"): [Lot("L1", 3, 10)]}, estimate=8.0, value=20.0,
                   shipped=True)
        rec.moved = 10
        trace.flow("S-OLD", "MILK", 0, Lot("L1", 3, 10), -10, tag=rec.tag)
        trace.flow("S-SHORT", "MILK", 1, Lot("L1", 3, 10), 10, tag=rec.tag)
        if order:
            trace.flow("S-SHORT", "MILK", 1, Lot("O0", 20, order), order)
        demand = {"S-OLD": np.zeros(DAYS), "S-SHORT": np.full(DAYS, 4.0)}
        [done] = measure(trace, lambda loc, sku: demand.get(loc), lambda sku: LAST_OK,
                         horizon=7, last_day=DAYS - 1, reorder_of=lambda sku: (1, 20))
        return done

    done = measured(order=2)
    # With the move: 8 of it sell at S-SHORT, 2 spoil, then the 2 ordered sell; unmet 18.
    # Without: 10 spoil at S-OLD; S-SHORT sells its 12 ordered units; unmet 16.
    assert done.parts == {"source_waste_avoided": 10, "destination_waste_added": 2,
                          "destination_unmet_avoided": -2, "source_unmet_added": 0}
    assert done.measured_units == 8  # the waste saved
    assert done.measured_frozen == 8  # frozen: the same 8, as much of it "unmet avoided"
    # An order of nothing says only that the order without the move was at most the
    # units moved: it stays nothing, as in the frozen replay.
    nothing = measured(order=0)
    assert nothing.parts["destination_unmet_avoided"] == 8
