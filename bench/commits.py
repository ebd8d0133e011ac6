"""What one Delta commit costs on local disk and on S3: time, and S3 requests by kind.

The live path's writes, done the way the stream does them (a kept-open delta-rs handle):
a region's gold partition replaced every second (``stock_levels``, ~2,000 rows, with an
app transaction), and the record writer's append to silver ``events`` every few seconds
(~500 rows). Each runs ``--commits`` times on a folder and on a bucket on moto's S3
server (loopback, its own process). The server logs one line per request, so requests
per commit are counted by kind (GET, PUT, HEAD, LIST, DELETE). Those counts, not moto's
latency, are what carry over to a real bucket; SCALING.md multiplies them out.

The last line printed is one JSON object.

    python bench/commits.py --commits 60
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, date, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow as pa  # noqa: E402
from deltalake import DeltaTable, write_deltalake  # noqa: E402
from deltalake.transaction import CommitProperties, Transaction  # noqa: E402

from lakehouse.catalogue import EVENTS, STOCK_LEVELS  # noqa: E402
from lakehouse.storage import delta_options  # noqa: E402
from tests.s3 import fresh_lake, moto_server  # noqa: E402

REQUEST = re.compile(r'"(GET|PUT|HEAD|POST|DELETE) (\S+)')


def level_rows(n: int, batch: int) -> pa.Table:
    now = datetime.now(UTC)
    rows = [{"region": "east", "location_id": f"E{i // 20:04d}", "sku": f"SKU-{i % 20:03d}",
             "on_hand": batch + i, "cohorts": 2, "earliest_expiry": date(2026, 12, 20),
             "sellable": batch + i, "expiring_48h": 0, "expired": 0, "in_transit_in": 0,
             "in_transit_out": 0, "last_seq": batch, "last_count_seq": 0,
             "contiguous_seq": batch, "seqs_after_gap": [], "updated_at": now}
            for i in range(n)]
    return pa.Table.from_pylist(rows, schema=STOCK_LEVELS.schema)


def event_rows(n: int, batch: int) -> pa.Table:
    now = datetime.now(UTC)
    rows = [{"region": "east", "location_id": f"E{i % 300:04d}", "seq": batch * n + i,
             "event_id": f"ev-{batch}-{i}", "event_type": "sold", "category": "dairy",
             "occurred_at": now, "sku": f"SKU-{i % 20:03d}", "quantity": 1,
             "payload": {"sku": f"SKU-{i % 20:03d}", "quantity": 1}, "received_at": now,
             "processed_at": now} for i in range(n)]
    return pa.Table.from_pylist(rows, schema=EVENTS.schema)


def run(root: str, commits: int, log: Path | None) -> dict:
    """Time both writes ``commits`` times under ``root``; count requests if ``log``."""
    out = {}
    for name, table, make, rows, mode in (
            ("gold_region_overwrite", STOCK_LEVELS, level_rows, 2000, "overwrite"),
            ("silver_append", EVENTS, event_rows, 500, "append")):
        url = table.uri(root)
        options = delta_options(url)
        write_deltalake(url, make(rows, 0), partition_by=list(table.partitions),
                        storage_options=options)
        handle = DeltaTable(url, storage_options=options)
        before = _requests(log)
        times = []
        for batch in range(1, commits + 1):
            data = make(rows, batch)
            started = time.perf_counter()
            extra = {"predicate": "region = 'east'"} if mode == "overwrite" else {}
            write_deltalake(handle, data, mode=mode, commit_properties=CommitProperties(
                app_transactions=[Transaction("bench", batch)]), **extra)
            times.append(time.perf_counter() - started)
        after = _requests(log)
        times.sort()
        out[name] = {"rows": rows, "commits": commits,
                     "ms_p50": round(1000 * times[len(times) // 2], 1),
                     "ms_p95": round(1000 * times[int(len(times) * 0.95)], 1)}
        if log is not None:
            delta = after - before
            out[name]["requests_per_commit"] = {k: round(v / commits, 2)
                                                for k, v in sorted(delta.items())}
            out[name]["requests_per_commit_total"] = round(sum(delta.values()) / commits, 2)
        print(f"bench: {root[:40]:40} {name:22} p50 {out[name]['ms_p50']:7.1f} ms"
              + (f", {out[name]['requests_per_commit_total']} requests/commit "
                 f"{out[name]['requests_per_commit']}" if log else ""), flush=True)
    return out


def _requests(log: Path | None) -> Counter:
    """Requests the S3 server has logged so far, by kind (a GET with list-type is LIST)."""
    counts: Counter = Counter()
    if log is None:
        return counts
    time.sleep(0.3)  # the server writes its log line after answering
    for line in log.read_text(errors="replace").splitlines():
        m = REQUEST.search(line)
        if m:
            kind = "LIST" if m.group(1) == "GET" and "list-type" in m.group(2) else m.group(1)
            counts[kind] += 1
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--commits", type=int, default=60)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="shelflife-bench-commits-"))
    print(f"bench: {args.commits} commits of each write, local disk then moto S3", flush=True)
    local = run(str(work / "lake"), args.commits, None)
    log = work / "moto.log"
    with moto_server(log):
        s3 = run(fresh_lake(), args.commits, log)
    result = {"bench": "commits", "local": local, "s3": s3,
              "ratio_p50": {k: round(s3[k]["ms_p50"] / local[k]["ms_p50"], 2) for k in local}}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
