"""The correctness oracle: the fold of each location's events in seq order.

Independent of Spark on purpose (plain Python over decoded events), so tests and
benchmarks can check gold against it with a second engine.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

CohortKey = tuple[str, str, str]  # (location_id, sku, lot)


def fold(events: Iterable[dict[str, Any]]) -> dict[CohortKey, int]:
    """Non-zero cohort quantities after applying every event once, in seq order."""
    by_loc: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    for e in events:
        by_loc[e["location_id"]].setdefault(e["seq"], e)  # duplicates count once
    state: dict[CohortKey, int] = defaultdict(int)
    for loc, evs in by_loc.items():
        for seq in sorted(evs):
            e = evs[seq]
            p, et = e["payload"], e["event_type"]
            if et == "counted":
                for key in [k for k in state if k[0] == loc]:
                    del state[key]
                for i in p["items"]:
                    state[(loc, i["sku"], i["lot"])] += i["quantity"]
            elif et == "received":
                state[(loc, p["sku"], p["lot"])] += p["quantity"]
            elif et in ("sold", "transfer_out"):
                for lot in p["lots"]:
                    state[(loc, p["sku"], lot["lot"])] -= lot["quantity"]
            elif et == "transfer_in":
                for lot in p["lots"]:
                    state[(loc, p["sku"], lot["lot"])] += lot["quantity"]
            elif et == "wasted":
                state[(loc, p["sku"], p["lot"])] -= p["quantity"]
            elif et == "adjusted":
                state[(loc, p["sku"], p["lot"])] += p["delta"]
    return {k: v for k, v in state.items() if v != 0}


def levels(cohorts: dict[CohortKey, int]) -> dict[tuple[str, str], int]:
    """On hand per (location, sku), from folded cohorts."""
    out: dict[tuple[str, str], int] = defaultdict(int)
    for (loc, sku, _lot), q in cohorts.items():
        out[(loc, sku)] += q
    return {k: v for k, v in out.items() if v != 0}
