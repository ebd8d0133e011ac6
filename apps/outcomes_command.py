"""Runs the outcome simulation (:mod:`spark_jobs.decisions.outcomes`) and reports it: a
table per policy, an optional chart, and one JSON line last."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure  # prophet's dependency, so the server extra has it

from edge_mqtt.catalogue import CATALOGUE
from lakehouse.storage import lake_url
from spark_jobs.decisions.approval import AUTO_APPROVAL_RULE
from spark_jobs.decisions.outcomes import POLICIES, simulate
from spark_jobs.decisions.transfers import ESTIMATE_PARTS

TARGETS = {"waste_reduction": 0.34, "stockout_reduction": 0.50,
           "post_transfer_waste_reduction": 0.67, "inventory_change": -0.18,
           "estimate_error_worst_decile": 0.20}
"""The seed network's year in production: reductions at least, inventory at most; the
transfer estimates within 20 % in every decile of value."""
DEMAND_RULE = ("recovered: a censored day (>2 stockout hours) is the larger of its sales and "
               "the mean of the series' uncensored days within 7 days either side; not from "
               "Shelflife's forecaster")


def source_categories() -> dict[int, str]:
    """FreshRetailNet ``first_category_id`` -> Shelflife category, as the store simulator
    pairs them (``edge_mqtt.catalogue``)."""
    return {sku.source_category_id: sku.category for sku in CATALOGUE}


def cmd_outcomes(args: argparse.Namespace) -> int:
    began = time.monotonic()

    def say(message: str) -> None:
        print(f"[{time.monotonic() - began:6.0f} s] {message}", flush=True)

    data = pd.read_parquet(args.demand)
    say(f"demand: {args.demand} ({len(data):,} rows)")
    with tempfile.TemporaryDirectory(prefix="shelflife-outcomes-") as root:
        result = simulate(data, source_categories(), stores=args.stores, weeks=args.weeks,
                          seed=args.seed, unit_scale=args.scale, paths=args.paths,
                          root=lake_url(root), say=say, cache=args.cache)
    _print_table(result)
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(result, indent=1, default=str))
    if args.chart:
        _chart(result, args.chart)
        say(f"chart: {args.chart}")
    line: dict[str, Any] = {k: result[k] for k in (
        "waste_reduction", "stockout_reduction", "post_transfer_waste_reduction",
        "inventory_change", "horizon_weeks", "stores", "series", "transfers_per_store_week",
        "estimate_error_worst_decile")}
    line["targets_met"] = {
        k: (None if line[k] is None else
            line[k] <= v if k == "inventory_change" else
            abs(line[k]) <= v if k == "estimate_error_worst_decile" else line[k] >= v)
        for k, v in TARGETS.items()}
    line.update({"seed": args.seed, "unit_scale": args.scale, "paths": args.paths,
                 "demand": DEMAND_RULE, "auto_approval": AUTO_APPROVAL_RULE,
                 "baseline_tuning": result["baseline_tuning"],
                 "shelflife_tuning": result["shelflife_tuning"],
                 "estimates": result["estimates"],
                 "policies": {p: {k: v for k, v in result["policies"][p].items()
                                  if k != "balance"} for p in POLICIES},
                 "balanced": all(result["policies"][p]["balance"]["balanced"]
                                 for p in POLICIES),
                 "seconds": round(time.monotonic() - began, 1)})
    print(json.dumps(line))
    return 0


def _print_table(result: dict[str, Any]) -> None:
    rows = ["waste_units", "waste_value", "lost_sales_units", "lost_sales_value",
            "stockout_incidents", "service_level", "transfers", "transfer_units",
            "transferred_waste_units", "average_inventory_units", "transfers_per_store_week"]
    print(f"{'':28}" + "".join(f"{p:>16}" for p in POLICIES))
    for r in rows:
        print(f"{r:28}" + "".join(f"{result['policies'][p][r]!s:>16}" for p in POLICIES))
    est = result["estimates"]
    print(f"\nShelflife's transfer estimates against the replay ({est['measured']} of "
          f"{est['recommendations']} recommendations, {est['shipped_measured']} shipped; "
          f"{est['horizon_days']}-day horizon):")
    print(f"{'decile of value':>16}{'value':>18}{'count':>8}{'estimated':>12}{'measured':>12}"
          f"{'error':>8}")
    for d in est["deciles"]:
        error = "-" if d["error"] is None else f"{d['error']:+.0%}"
        print(f"{d['decile']:>16}{d['value_from']:>9.1f}-{d['value_to']:<8.1f}"
              f"{d['recommendations']:>8}{d['estimated_units']:>12}{d['measured_units']:>12}"
              f"{error:>8}")
    went = est.get("where_it_went_shipped", {})
    if any(k.startswith("estimated_") for k in went):
        print("\nWhere the shipped moves' units came from, estimated and measured:")
        print(f"{'':28}{'estimated':>12}{'measured':>12}")
        for part in ESTIMATE_PARTS:
            print(f"{part:28}{went.get(f'estimated_{part}', 0.0):>12.1f}"
                  f"{went.get(part, 0.0):>12.1f}")


def _chart(result: dict[str, Any], path: Path) -> None:
    measures = [("waste_units", "waste (units)"),
                ("stockout_incidents", "stockout incidents\n(store-SKU-days)"),
                ("average_inventory_units", "average inventory (units)"),
                ("transferred_waste_units", "waste of transferred units")]
    labels = {"day_old_batch": "day-old batch", "quantity_only": "quantity-only real time",
              "shelflife": "Shelflife"}
    fig = Figure(figsize=(13, 3.6))  # no pyplot: no GUI backend, no global figure state
    axes = fig.subplots(1, len(measures))
    for ax, (key, title) in zip(axes, measures, strict=True):
        values = [result["policies"][p][key] or 0 for p in POLICIES]
        ax.bar([labels[p] for p in POLICIES], values, color=["#999999", "#e69f00", "#0072b2"])
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    fig.suptitle(f"{result['stores']} stores, {result['horizon_weeks']:g} weeks of real demand "
                 f"(FreshRetailNet-50K, CC BY 4.0)", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
