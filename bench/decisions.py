"""Times the decision logic on a synthetic network: 300 stores and 6 warehouses in 3 regions,
24 SKUs (7,200 store series), a few cohorts each, every in-region route in ``transit``.

    python bench/decisions.py                 # 1000 paths, as the batch job runs it
    python bench/decisions.py --paths 200     # quicker

Prints figures and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spark_jobs.decisions.reorders import suggest_reorders  # noqa: E402
from spark_jobs.decisions.transfers import recommend_transfers  # noqa: E402

REGIONS = ("east", "central", "west")
CATEGORIES = ("dairy", "bakery", "produce", "meat")


def network(stores: int, skus: int, seed: int, now: datetime) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    locs = []
    for r, region in enumerate(REGIONS):
        locs += [{"location_id": f"{region.upper()}-S{n:03d}", "region": region, "kind": "store"}
                 for n in range(r * stores // 3, (r + 1) * stores // 3)]
        locs += [{"location_id": f"WH-{region.upper()}-{n}", "region": region,
                  "kind": "warehouse"} for n in (1, 2)]
    locations = pd.DataFrame(locs)
    items = pd.DataFrame([{
        "sku": f"SKU-{k:02d}", "category": CATEGORIES[k % 4], "price": 1 + 4 * rng.random(),
        "unit_cost": np.nan if k % 7 == 0 else 0.5 + rng.random(),
        "shelf_life_days": int(rng.integers(2, 15)), "min_sellable_days": int(rng.integers(0, 3)),
        "case_size": int(rng.choice([1, 6, 12])), "lead_time_days": int(rng.integers(1, 3)),
    } for k in range(skus)])
    cohorts, forecasts = [], []
    for loc in locs:
        for it in items.itertuples():
            if loc["kind"] == "warehouse":
                for j in range(2):
                    cohorts.append((loc["region"], loc["location_id"], it.sku, f"W{j}",
                                    now.date() + timedelta(days=int(rng.integers(1, 12))),
                                    int(rng.integers(50, 400))))
                continue
            level = float(rng.lognormal(2.0, 0.8))
            for d in range(8):
                m = level * (0.8 + 0.4 * rng.random())
                forecasts.append((loc["region"], loc["location_id"], it.sku,
                                  now.date() + timedelta(days=d), m, 0.7 * m, 1.3 * m, "bench"))
            for j in range(int(rng.integers(1, 4))):
                cohorts.append((loc["region"], loc["location_id"], it.sku, f"L{j}",
                                now.date() + timedelta(days=int(rng.integers(0, it.shelf_life_days
                                                                             + 1))),
                                int(level * rng.uniform(0, 4))))
    routes = []
    for region in REGIONS:
        ids = locations.loc[locations["region"] == region, "location_id"].tolist()
        routes += [{"source": a, "destination": b, "transit_hours": 2 + 10 * rng.random(),
                    "cost_per_unit": 0.05 + 0.3 * rng.random()}
                   for a in ids for b in ids if a != b and not b.startswith("WH")]
    policy = pd.DataFrame([{"category": c, "destination_kind": k, "min_sellable_days": 1.0,
                            "handling_hours": 4.0} for c in CATEGORIES
                           for k in ("store", "warehouse")])
    return {
        "cohorts": pd.DataFrame(cohorts, columns=["region", "location_id", "sku", "lot",
                                                  "expires_on", "quantity"]),
        "forecasts": pd.DataFrame(forecasts, columns=["region", "location_id", "sku",
                                                      "forecast_date", "forecast", "lower",
                                                      "upper", "model"]),
        "locations": locations, "items": items, "transit": pd.DataFrame(routes),
        "policy": policy,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stores", type=int, default=300)
    parser.add_argument("--skus", type=int, default=24)
    parser.add_argument("--paths", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    now = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    net = network(args.stores, args.skus, args.seed, now)
    print(f"{len(net['locations'])} locations, {len(net['items'])} SKUs, "
          f"{len(net['cohorts'])} cohorts, {len(net['forecasts'])} forecast rows, "
          f"{len(net['transit'])} routes, {args.paths} paths")
    began = time.perf_counter()
    recs = recommend_transfers(net["cohorts"], net["forecasts"], net["locations"],
                               net["transit"], net["policy"], net["items"], now=now,
                               paths=args.paths)
    transfers_s = time.perf_counter() - began
    print(f"transfers: {len(recs)} recommendations, {recs['quantity'].sum()} units, "
          f"{recs['expected_units_saved'].sum():.0f} units saved, {transfers_s:.1f} s")
    began = time.perf_counter()
    orders = suggest_reorders(net["cohorts"], net["forecasts"], net["locations"],
                              net["items"], now=now, paths=args.paths)
    reorders_s = time.perf_counter() - began
    print(f"reorders: {len(orders)} suggestions, {orders['order_quantity'].sum()} units, "
          f"{reorders_s:.1f} s")
    print(json.dumps({"stores": args.stores, "skus": args.skus, "paths": args.paths,
                      "cohorts": len(net["cohorts"]), "routes": len(net["transit"]),
                      "transfers": len(recs), "transfers_s": round(transfers_s, 2),
                      "reorders": len(orders), "reorders_s": round(reorders_s, 2)}))


if __name__ == "__main__":
    main()
