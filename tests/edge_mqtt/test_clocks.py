"""Vector clocks on the agent: they only grow, a transfer_in merges its source's entry as a
max, and a location's own entry is always the event's seq."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from edge_mqtt.agent import StoreAgent

LOCS = ("S-A", "S-B", "S-C")

# (kind, at, other, seq): a local event at ``at``; a transfer from ``other`` to ``at``
# carrying the real transfer_out; or a transfer_in whose causation names a location that
# is not running (any seq, possibly lower than one already seen).
ops = st.lists(st.one_of(
    st.tuples(st.just("local"), st.integers(0, 2), st.just(0), st.just(0)),
    st.tuples(st.just("transfer"), st.integers(0, 2), st.integers(0, 2), st.just(0)),
    st.tuples(st.just("remote"), st.integers(0, 2), st.just(0), st.integers(1, 50)),
), min_size=1, max_size=25)


@settings(max_examples=40, deadline=None)
@given(steps=ops)
def test_clocks_only_grow_and_transfer_in_merges_the_source_as_max(tmp_path_factory, steps):
    folder = tmp_path_factory.mktemp("clocks")
    agents = [StoreAgent(loc, "east", folder / f"{loc}.sqlite") for loc in LOCS]
    last: dict[str, dict[str, int]] = {loc: {} for loc in LOCS}

    def check(agent: StoreAgent, event: dict, merged: tuple[str, int] | None) -> None:
        before, clock, me = last[agent.location_id], event["clock"], agent.location_id
        assert clock[me] == event["seq"] == agent.last_seq
        for loc, seen in before.items():
            assert clock.get(loc, 0) >= seen, f"{loc} went back: {before} -> {clock}"
        expected = {**before, me: event["seq"]}
        if merged is not None and merged[0] != me:
            src, seq = merged
            expected[src] = max(before.get(src, 0), seq)
        assert clock == expected
        last[me] = clock

    try:
        for kind, at, other, seq in steps:
            dst = agents[at]
            if kind == "local":
                ev = dst.receive("MILK", 2, lot=f"L{dst.last_seq}", expires_on="2026-12-09",
                                 supplier_ref="PO", unit_cost=1.0)
                check(dst, ev, None)
            elif kind == "transfer":
                src = agents[other]
                out = src.transfer_out("MILK", 1, destination=dst.location_id,
                                       transfer_id=f"X{src.last_seq}",
                                       expected_transit_hours=1.0)
                check(src, out, None)
                inn = dst.transfer_in("MILK", 1, source=src.location_id,
                                      transfer_id=out["payload"]["transfer_id"],
                                      lots=out["payload"]["lots"],
                                      causation_id=out["event_id"])
                check(dst, inn, (src.location_id, out["seq"]))
            else:
                inn = dst.transfer_in("MILK", 1, source="S-Z", transfer_id=f"Z{seq}",
                                      lots=[{"lot": "Z", "expires_on": "2026-12-09",
                                             "quantity": 1}],
                                      causation_id=f"S-Z:{seq}")
                check(dst, inn, ("S-Z", seq))
        # What an agent recorded is what it keeps: the stored clock is the last event's.
        for a in agents:
            assert a.db.get_meta("clock", {}) == last[a.location_id]
    finally:
        for a in agents:
            a.close()
