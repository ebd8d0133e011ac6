"""The streaming state equals the oracle for any arrival order, duplication or split
into batches, and survives a round trip through its gold rows."""

from __future__ import annotations

import random
from datetime import date, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lakehouse import oracle
from spark_jobs.gold import LEVELS_SCHEMA
from spark_jobs.state import RegionState

from ..workload import Workload, make_agents


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """A few hundred real events from real agents, counts and transfers included."""
    agents = make_agents(tmp_path_factory.mktemp("agents"), per_region=3, regions=("east",))
    work = Workload(agents, seed=3)
    work.stock_up()
    for _ in range(400):
        work.step()
    work.finish_transfers()
    assert {e["event_type"] for e in work.events} >= {"counted", "sold", "transfer_in"}
    return work.events


def cohorts(state: RegionState) -> dict:
    return {(r[1], r[2], r[3]): r[5] for r in state.cohort_rows("east")}


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6), batches=st.integers(1, 40), dup_share=st.floats(0, 0.3))
def test_any_order_duplicates_and_batching_give_the_oracle(history, seed, batches,
                                                            dup_share):
    rng = random.Random(seed)
    arrivals = list(history) + rng.sample(history, int(len(history) * dup_share))
    rng.shuffle(arrivals)
    state = RegionState()
    by_seq = {}

    def lookup(loc: str, after: int) -> list[dict]:
        return [e for (lo, s), e in by_seq.items() if lo == loc and s > after]

    size = max(1, len(arrivals) // batches)
    fresh_total = 0
    for i in range(0, len(arrivals), size):
        chunk = arrivals[i:i + size]
        _, fresh = state.apply(chunk, history=lookup)
        fresh_total += len(fresh)
        by_seq.update({(e["location_id"], e["seq"]): e for e in fresh})
    assert fresh_total == len(history), "each event is new exactly once"
    assert cohorts(state) == oracle.fold(history)


def test_state_round_trips_through_gold_rows(history):
    state = RegionState()
    half = len(history) // 2
    state.apply(history[:half])
    now = datetime(2026, 11, 27, 12, 0)
    for st_ in state.locations.values():
        st_.updated_at = now
    names_c = ["region", "location_id", "sku", "lot", "expires_on", "quantity", "updated_at"]
    names_l = [f.name for f in LEVELS_SCHEMA.fields]
    back = RegionState.from_gold([dict(zip(names_c, r, strict=True))
                                  for r in state.cohort_rows("east")],
                                 [dict(zip(names_l, r, strict=True))
                                  for r in state.level_rows("east")])
    _, fresh = back.apply(history)  # the first half again, then the rest
    assert len(fresh) == len(history) - half
    assert cohorts(back) == oracle.fold(history)
    level = {(r[1], r[2]): r[3] for r in back.level_rows("east") if r[3]}
    assert level == oracle.levels(oracle.fold(history))
    assert all(isinstance(r[4], date | None) for r in back.cohort_rows("east"))
