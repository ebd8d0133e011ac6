"""The streaming state equals the oracle for any arrival order, duplication or split
into batches, and survives a round trip through its gold rows."""

from __future__ import annotations

import random
from datetime import date, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lakehouse import oracle
from lakehouse.catalogue import STOCK_COHORTS, STOCK_LEVELS
from spark_jobs.stream.fold import RegionState

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
    names_c = STOCK_COHORTS.schema.names
    names_l = STOCK_LEVELS.schema.names
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


# --- one bad event never takes its batch, its location or the region down ---------------

def _broken(event: dict) -> dict:
    """A copy the state cannot apply (its payload lost a required field): what a bug or
    a landing file from an older contract could put in front of the stream."""
    bad = {**event, "payload": {k: v for k, v in event["payload"].items()
                                if k not in ("quantity", "items")}}
    return bad


def test_a_failing_event_is_rejected_alone_and_everything_else_applies(history):
    """The rest of the batch (its own location's later events too) applies; the bad seq
    is dead-lettered, counted as filled, shown to a person, and a corrected event for
    it still applies once."""
    victim = next(e for e in history if e["event_type"] == "sold" and e["seq"] > 5)
    others = [e for e in history if e is not victim]
    state = RegionState()
    touched, fresh = state.apply([*others[:50], _broken(victim), *others[50:]])
    assert len(fresh) == len(others)
    (rejected, reason), = state.rejected
    assert rejected["event_id"] == victim["event_id"] and "could not apply" in reason
    assert victim["location_id"] in touched
    assert cohorts(state) == oracle.fold(others), "gold equals the oracle without it"
    loc = state.locations[victim["location_id"]]
    assert loc.contiguous >= victim["seq"], "the seqs above it are not left waiting"
    item = state.review[(victim["location_id"], victim["seq"])]
    assert (item["cause"], item["status"]) == ("dead-lettered event", "open")
    assert not [g for g in state.gaps.values()
                if g["location_id"] == victim["location_id"] and g["status"] == "open"]
    state.rejected.clear()
    _, fresh = state.apply([victim])  # the corrected event, re-driven
    assert fresh == [victim]
    _, again = state.apply([victim])
    assert again == [], "a second re-drive is a duplicate"
    assert state.review[(victim["location_id"], victim["seq"])]["status"] == "closed"
    assert cohorts(state) == oracle.fold(history)


def test_a_seq_far_beyond_the_last_one_is_one_gap_not_a_list_of_every_seq(history):
    loc = history[0]["location_id"]
    mine = [e for e in history if e["location_id"] == loc][:5]
    jump = {**mine[-1], "seq": 10**12, "event_id": f"{loc}:{10**12}",
            "clock": {**mine[-1]["clock"], loc: 10**12}}
    state = RegionState()
    state.apply([*mine[:4], jump])
    (gap,) = [g for g in state.gaps.values() if g["status"] == "open"]
    assert (gap["first_missing"], gap["last_missing"]) == (5, 10**12 - 1)
    assert gap["missing_count"] == 10**12 - 5 and len(gap["missing"]) == 1000
    state.apply([mine[4]])  # the real seq 5 arrives: the gap narrows
    (gap,) = [g for g in state.gaps.values() if g["status"] == "open"]
    assert gap["missing"][0] == 6 and gap["missing_count"] == 10**12 - 6
    assert len(state.level_rows("east")) > 0


def test_a_failure_reading_history_is_not_the_events_fault(history):
    """Infrastructure failures are raised (the batch is retried), never dead-lettered,
    and leave the location as it was."""
    from spark_jobs.stream.fold import SourceError

    loc = history[0]["location_id"]
    mine = [e for e in history if e["location_id"] == loc]
    count = next(e for e in mine if e["event_type"] == "counted" and e["seq"] > 3)
    state = RegionState()
    later = [e for e in mine if e["seq"] > count["seq"]][:3]
    state.apply([e for e in mine if e["seq"] < count["seq"]] + later)
    before = cohorts(state)

    def broken_history(_loc: str, _after: int) -> list[dict]:
        raise OSError("disk gone")

    with pytest.raises(SourceError):
        state.apply([count], history=broken_history)
    assert not state.rejected
    assert cohorts(state) == before
    assert not state.locations[loc].seen(count["seq"])
