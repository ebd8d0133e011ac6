"""Derive the store simulator's demand profiles from FreshRetailNet-50K.

The store agent runs on small hardware with the standard library only, so it cannot read
the 3.5-million-row parquet file. This script, run once by a developer, keeps a
deterministic sample of about 600 real store x product series (90 days each) in a small
CSV that ships inside ``edge_mqtt/data/``, and writes the attribution next to it.

Sampling, chosen so the file is reproducible and useful for shapes:

* Only source categories with at least ``MIN_CATEGORY_SERIES`` series take part: the
  smaller ones hold a handful of products and would repeat the same shape.
* Series with more than ``MAX_ZERO_SHARE`` of days at zero sales are left out: once
  scaled up to a busy SKU they would turn into bursts no store sees.
* Each category gets a share of the sample proportional to the square root of its size
  (at least ``MIN_PER_CATEGORY``), so the big categories get more variety without
  crowding out the others.
* Within a category, series are ranked by SHA-256 of ``"{store_id}-{product_id}"`` and the
  first ones are kept, so the sample is stable across pandas versions and row orders.

Usage (from the repository root)::

    python scripts/extract_demand.py [path/to/freshretailnet_daily.parquet]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import math
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "freshretailnet_daily.parquet"
OUT_DIR = REPO / "edge_mqtt" / "data"
PLAIN_NAME = "demand_profiles.csv"
GZIP_NAME = "demand_profiles.csv.gz"
GZIP_ABOVE_BYTES = 1_500_000

TARGET_SERIES = 600
MIN_CATEGORY_SERIES = 150
MIN_PER_CATEGORY = 12
MAX_ZERO_SHARE = 0.15
DAYS = 90

COLUMNS = ("series_id", "city_id", "store_id", "product_id", "first_category_id",
           "second_category_id", "start_date", "sale", "stockout_hours", "discount",
           "activity")


def _rank_key(store_id: int, product_id: int) -> str:
    return hashlib.sha256(f"{store_id}-{product_id}".encode()).hexdigest()


def _allocate(sizes: dict[int, int], total: int) -> dict[int, int]:
    """Split ``total`` over categories by sqrt(size), with a floor, never above the size."""
    weights = {c: math.sqrt(n) for c, n in sizes.items()}
    scale = total / sum(weights.values())
    share = {c: min(sizes[c], max(MIN_PER_CATEGORY, round(w * scale)))
             for c, w in weights.items()}
    # Trim or top up the largest categories so the sample has exactly ``total`` series.
    order = sorted(sizes, key=lambda c: (-sizes[c], c))
    i = 0
    while sum(share.values()) != total:
        c = order[i % len(order)]
        if sum(share.values()) > total and share[c] > MIN_PER_CATEGORY:
            share[c] -= 1
        elif sum(share.values()) < total and share[c] < sizes[c]:
            share[c] += 1
        i += 1
    return share


def _fmt(values: pd.Series, digits: int) -> str:
    return ";".join(f"{round(float(v), digits):g}" for v in values)


def select_series(df: pd.DataFrame) -> pd.DataFrame:
    """One row per kept series, with its 90 days as semicolon-joined lists."""
    keys = ["store_id", "product_id"]
    per_series = df.groupby(keys, sort=False).agg(
        days=("sale", "size"),
        zero_share=("sale", lambda s: float((s == 0).mean())),
        first_category_id=("first_category_id", "first"),
    ).reset_index()
    if (per_series["days"] != DAYS).any():
        raise ValueError(f"expected {DAYS} days per series, got "
                         f"{sorted(per_series['days'].unique())}")
    sizes = per_series.groupby("first_category_id").size()
    big = sizes[sizes >= MIN_CATEGORY_SERIES].index
    eligible = per_series[per_series["first_category_id"].isin(big)
                          & (per_series["zero_share"] <= MAX_ZERO_SHARE)].copy()
    eligible["rank"] = [_rank_key(s, p) for s, p in
                        zip(eligible["store_id"], eligible["product_id"], strict=True)]
    counts = eligible.groupby("first_category_id").size()
    share = _allocate({int(c): int(n) for c, n in counts.items()}, TARGET_SERIES)
    chosen = (eligible.sort_values(["first_category_id", "rank"])
              .groupby("first_category_id", group_keys=False)
              .apply(lambda g: g.head(share[int(g.name)]), include_groups=False))
    picked = set(zip(chosen["store_id"], chosen["product_id"], strict=True))

    rows = []
    subset = df[pd.MultiIndex.from_frame(df[keys]).isin(picked)].sort_values(keys + ["dt"])
    for (store_id, product_id), g in subset.groupby(keys, sort=False):
        head = g.iloc[0]
        rows.append({
            "series_id": f"s{store_id}-p{product_id}",
            "city_id": int(head["city_id"]),
            "store_id": int(store_id),
            "product_id": int(product_id),
            "first_category_id": int(head["first_category_id"]),
            "second_category_id": int(head["second_category_id"]),
            "start_date": str(head["dt"]),
            "sale": _fmt(g["sale"], 4),
            "stockout_hours": ";".join(str(int(v)) for v in g["stockout_hours"]),
            "discount": _fmt(g["discount"], 3),
            "activity": ";".join(str(int(v)) for v in g["activity"]),
        })
    out = pd.DataFrame(rows, columns=list(COLUMNS))
    return out.sort_values(["first_category_id", "series_id"]).reset_index(drop=True)


def write_profiles(profiles: pd.DataFrame, out_dir: Path) -> Path:
    """Write the CSV, gzipped when large; removes the other variant so only one ships."""
    out_dir.mkdir(parents=True, exist_ok=True)
    text = profiles.to_csv(index=False, lineterminator="\n").encode("utf-8")
    plain, packed = out_dir / PLAIN_NAME, out_dir / GZIP_NAME
    if len(text) > GZIP_ABOVE_BYTES:
        # mtime=0 keeps the gzip bytes identical between runs.
        packed.write_bytes(gzip.compress(text, compresslevel=9, mtime=0))
        plain.unlink(missing_ok=True)
        return packed
    plain.write_bytes(text)
    packed.unlink(missing_ok=True)
    return plain


def write_notice(profiles: pd.DataFrame, written: Path, source: Path) -> Path:
    """Attribution and provenance, required by CC BY 4.0 wherever derived data ships."""
    per_cat = profiles.groupby("first_category_id").size()
    cats = ", ".join(f"{c}: {n}" for c, n in per_cat.items())
    digest = hashlib.sha256(written.read_bytes()).hexdigest()
    command = "python scripts/extract_demand.py"
    if source != DEFAULT_SOURCE.resolve():
        command += f" {source}"
    notice = f"""# Demand profiles: source and licence

`{written.name}` is derived from **FreshRetailNet-50K** by Dingdong Inc., licensed under the
Creative Commons Attribution 4.0 International licence (CC BY 4.0,
https://creativecommons.org/licenses/by/4.0/). Changes were made, as described below.

## What was derived

- Source: the training split, summed from hourly to daily sales
  (`{source.name}`, 2024-03-28 to 2024-06-25, 90 days per store x product series).
- Kept: {len(profiles)} store x product series, spread over {len(per_cat)} anonymised
  first-level categories (`first_category_id: series` = {cats}).
- Per series: `series_id` (`s{{store_id}}-p{{product_id}}`), `city_id`, `store_id`,
  `product_id`, `first_category_id`, `second_category_id`, `start_date`, and four
  semicolon-joined lists of 90 daily values in date order: `sale`, `stockout_hours`
  (0-24), `discount` (price ratio, 1 = full price) and `activity` (1 = promotion).
- Selection: categories with at least {MIN_CATEGORY_SERIES} series; series with at most
  {MAX_ZERO_SHARE:.0%} of days at zero sales; a share per category proportional to the
  square root of its size (at least {MIN_PER_CATEGORY}); within a category the series
  whose SHA-256 of `"{{store_id}}-{{product_id}}"` sorts first. No values were altered
  other than rounding (sale to 4 decimals, discount to 3).
- `sale` is scaled by the publisher (mean about 1.0 per day) and is not a unit count.
  Shelflife uses only the shape of each series and rescales it to each SKU's typical
  daily units (`edge_mqtt/demand.py`). Observed sales are censored by stockouts.

## How to rebuild

From the repository root:

```
{command}
```

(the source argument defaults to `../shared/data/freshretailnet_daily.parquet`). The output is
deterministic; SHA-256 of the committed `{written.name}`: `{digest}`.
"""
    path = written.parent / "NOTICE.md"
    path.write_text(notice, encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="?", type=Path, default=DEFAULT_SOURCE,
                        help="FreshRetailNet-50K daily parquet file (default: %(default)s)")
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR,
                        help="where the profile file and NOTICE.md go (default: %(default)s)")
    args = parser.parse_args(argv)
    source = args.source.resolve()
    if not source.is_file():
        parser.error(f"source: no such file {str(source)!r}")
    df = pd.read_parquet(source, columns=["city_id", "store_id", "first_category_id",
                                          "second_category_id", "product_id", "dt", "sale",
                                          "stockout_hours", "discount", "activity"])
    profiles = select_series(df)
    written = write_profiles(profiles, args.out_dir)
    notice = write_notice(profiles, written, source)
    print(f"{written}: {len(profiles)} series, {written.stat().st_size:,} bytes")
    print(f"{notice}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
