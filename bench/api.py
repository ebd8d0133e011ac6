"""The read API under a web shop's load: how long "is SKU X in stock at store Y?" takes
on a network of 300 stores x 500 SKUs, while gold keeps changing.

Writes gold ``stock_levels`` (150,000 rows by default) and ``region_status`` with
delta-rs, starts ``shelflife api`` as its own process with a fresh key, then asks it
``--requests`` single lookups (random store and SKU) from ``--clients`` threads, and a
page of one SKU across the network. Halfway through, the bench commits a new version of
``stock_levels`` so the server rereads it under load.

Baseline, from the same run: the same single lookup done the way a caller without the
API would, opening the Delta table with delta-rs and filtering it (no server, no cache).

Last line: JSON with ``lookup_p50_ms``, ``lookup_p99_ms``, ``requests_per_s``,
``sku_page_ms``, ``reread_after_commit_s`` (how long a new gold version took to show),
``baseline_lookup_ms`` and the server's RSS.

    python bench/api.py                  # 300 stores x 500 SKUs, 2,000 lookups
    python bench/api.py --skus 24 --requests 500
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from apps.api.keys import ApiKeysFile  # noqa: E402
from bench.common import free_port, pct, rss_mb, wait_port  # noqa: E402
from lakehouse.catalogue import REGION_STATUS, STOCK_LEVELS  # noqa: E402
from lakehouse.contract import REGIONS  # noqa: E402
from lakehouse.readers import read_table  # noqa: E402
from spark_jobs.decisions.jobs import write_table  # noqa: E402


def write_gold(root: Path, stores: int, skus: int, on_hand: int) -> list[tuple[str, str]]:
    """``stores`` x ``skus`` stock rows (every store holding ``on_hand`` of each SKU but a
    few), and a live status per region; the (location, sku) pairs."""
    now = datetime.now(UTC)
    rows, pairs = [], []
    for i in range(stores):
        region = REGIONS[i % len(REGIONS)]
        loc = f"{region[0].upper()}-S{i:03d}"
        for j in range(skus):
            sku = f"DAIRY-SKU-{j:04d}"
            qty = on_hand if (i + j) % 17 else 0
            rows.append((region, loc, sku, qty, 2 if qty else 0,
                         date.today() + timedelta(days=3), qty, qty // 4, 0, 0, 0,
                         10, 0, 10, [], now))
            pairs.append((loc, sku))
    frame = pd.DataFrame(rows, columns=STOCK_LEVELS.schema.names)
    write_table(STOCK_LEVELS, frame, root)
    write_table(REGION_STATUS, pd.DataFrame([{
        "region": r, "mode": "live", "events_total": 1, "events_last_batch": 1,
        "batch_duration_s": 0.2, "last_event_at": now, "lag_s": 0.5, "updated_at": now,
        "minutes_behind": 0.0, "backlog_events": 0, "backlog_files": 0,
        "events_per_s": 100.0} for r in REGIONS]), root)
    return pairs


def get(url: str, token: str) -> dict:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stores", type=int, default=300)
    ap.add_argument("--skus", type=int, default=500)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--seed", type=int, default=5)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="shelflife-api-") as tmp:
        root = Path(tmp)
        began = time.monotonic()
        pairs = write_gold(root, args.stores, args.skus, on_hand=12)
        print(f"api bench: wrote {len(pairs):,} stock rows in "
              f"{time.monotonic() - began:.1f} s", flush=True)

        base = []
        for loc, sku in rng.sample(pairs, 20):
            t0 = time.perf_counter()
            frame = read_table(STOCK_LEVELS, root, filters=[("location_id", "=", loc),
                                                            ("sku", "=", sku)])
            base.append((time.perf_counter() - t0) * 1000)
            assert frame is not None and len(frame) == 1

        token = ApiKeysFile(root / "keys.json").add("bench")
        port = free_port()
        with open(root / "api.log", "w") as log:  # the child keeps its own descriptor
            proc = subprocess.Popen([sys.executable, "-m", "apps.cli", "api", "--lakehouse",
                                     str(root), "--port", str(port), "--keys-file",
                                     str(root / "keys.json")], stdout=log, stderr=log,
                                    cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            wait_port(port, 60)
            url = f"http://127.0.0.1:{port}"
            t0 = time.perf_counter()
            get(f"{url}/v1/availability/{pairs[0][0]}/{pairs[0][1]}", token)
            first_ms = (time.perf_counter() - t0) * 1000
            print(f"api bench: server up; first lookup (reads gold) {first_ms:.0f} ms",
                  flush=True)

            lookups: list[float] = []
            lock = threading.Lock()
            todo = [rng.choice(pairs) for _ in range(args.requests)]
            committed: dict[str, float] = {}

            def client(chunk: list[tuple[str, str]]) -> None:
                for loc, sku in chunk:
                    t = time.perf_counter()
                    body = get(f"{url}/v1/availability/{loc}/{sku}", token)
                    with lock:
                        lookups.append((time.perf_counter() - t) * 1000)
                    if "at" in committed and body["on_hand"] == 99 and "seen" not in committed:
                        committed["seen"] = time.monotonic()

            def change() -> None:
                time.sleep(1.0)
                frame = read_table(STOCK_LEVELS, root)
                frame["on_hand"] = 99
                write_table(STOCK_LEVELS, frame, root)
                committed["at"] = time.monotonic()

            threads = [threading.Thread(target=client, args=(todo[i::args.clients],))
                       for i in range(args.clients)]
            changer = threading.Thread(target=change)
            t0 = time.perf_counter()
            changer.start()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            changer.join()
            wall = time.perf_counter() - t0
            if "seen" not in committed:  # the lookups ended before the reread: ask again
                while get(f"{url}/v1/availability/{pairs[0][0]}/{pairs[0][1]}",
                          token)["on_hand"] != 99:
                    time.sleep(0.05)
                committed["seen"] = time.monotonic()
            t0 = time.perf_counter()
            page = get(f"{url}/v1/availability?sku={pairs[0][1]}&limit=10000", token)
            page_ms = (time.perf_counter() - t0) * 1000
            assert page["total"] == args.stores
            server_mb = rss_mb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    result = {
        "rows": len(pairs), "requests": len(lookups), "clients": args.clients,
        "lookup_p50_ms": round(pct(lookups, 0.5), 2), "lookup_p99_ms": round(pct(lookups, 0.99), 2),
        "requests_per_s": round(len(lookups) / wall, 1), "sku_page_ms": round(page_ms, 1),
        "first_lookup_ms": round(first_ms, 1),
        "reread_after_commit_s": round(committed["seen"] - committed["at"], 2),
        "server_rss_mb": round(server_mb, 1),
        "baseline_lookup_ms": round(pct(base, 0.5), 1),
        "baseline": "delta-rs open + filtered read of the same row per lookup, no server",
    }
    print(f"api bench: lookups p50 {result['lookup_p50_ms']} ms, p99 "
          f"{result['lookup_p99_ms']} ms, {result['requests_per_s']}/s from "
          f"{args.clients} clients; baseline (delta-rs read per lookup) "
          f"{result['baseline_lookup_ms']} ms", flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
