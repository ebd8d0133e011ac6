"""The cohort changes an event implies: one definition for the lakehouse state, the
simulator's mirror of each store and the benchmarks. (The test oracle keeps its own
fold on purpose, so it checks this one.)"""

from __future__ import annotations

from typing import Any


def movements(event: dict[str, Any]) -> list[tuple[str, str, str | None, int]]:
    """The cohort changes (sku, lot, expires_on, qty) one non-count event implies."""
    p, et = event["payload"], event["event_type"]
    if et == "received":
        return [(p["sku"], p["lot"], p["expires_on"], p["quantity"])]
    if et in ("sold", "transfer_out"):
        return [(p["sku"], x["lot"], x["expires_on"], -x["quantity"]) for x in p["lots"]]
    if et == "transfer_in":
        return [(p["sku"], x["lot"], x["expires_on"], x["quantity"]) for x in p["lots"]]
    if et == "wasted":
        return [(p["sku"], p["lot"], p.get("expires_on"), -p["quantity"])]
    if et == "adjusted":
        return [(p["sku"], p["lot"], p.get("expires_on"), p["delta"])]
    return []
