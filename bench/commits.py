"""What one Delta commit costs on local disk and on S3: time, and S3 requests by kind.

The live path's writes, done the way the stream does them (a kept-open delta-rs handle):
a region's gold partition replaced every second (``stock_levels``, ~2,000 rows, with an
app transaction), and the record writer's append to silver ``events`` every few seconds
(~500 rows). Each runs ``--commits`` times on a folder and on a bucket on moto's S3
server (loopback, its own process). Then 1, 2, 4 and 8 processes commit to one table at once,
each replacing its own region's partition as fast as it can: how many commits a second
one Delta table takes on S3, and what a commit then costs. The server logs one line per
request, so requests per commit are counted by kind (GET, PUT, HEAD, LIST, DELETE).
Those counts, not moto's latency, are what carry over to a real bucket; SCALING.md
multiplies them out.

The last line printed is one JSON object.

    python bench/commits.py --commits 60
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import re
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow as pa  # noqa: E402
from deltalake import DeltaTable, write_deltalake  # noqa: E402
from deltalake.exceptions import CommitFailedError  # noqa: E402
from deltalake.transaction import CommitProperties, Transaction  # noqa: E402

from lakehouse.catalogue import EVENTS, STOCK_LEVELS  # noqa: E402
from lakehouse.logtidy import HOOKS  # noqa: E402
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
                app_transactions=[Transaction("bench", batch)]),
                post_commithook_properties=HOOKS, **extra)  # as the live writers commit
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


def _writer(url: str, region: str, commits: int, queue: Any) -> None:
    """One process replacing its own region's partition ``commits`` times, as fast as it
    can (a shard's gold writer with no other work); reports its commit times."""
    options = delta_options(url)
    handle = DeltaTable(url, storage_options=options)
    times, failed = [], 0
    first = time.time()
    for batch in range(1, commits + 1):
        data = level_rows(200, batch).set_column(
            0, "region", pa.array([region] * 200, type=pa.string()))
        started = time.perf_counter()
        try:
            write_deltalake(handle, data, mode="overwrite", predicate=f"region = '{region}'",
                            commit_properties=CommitProperties(
                                app_transactions=[Transaction(f"w-{region}", batch)],
                                max_commit_retries=20),  # what the stream allows
                            post_commithook_properties=HOOKS)
        except CommitFailedError:
            failed += 1  # lost the race 20 times: the stream would retry the batch
            handle = DeltaTable(url, storage_options=options)
        times.append(time.perf_counter() - started)
    queue.put((times, first, time.time(), failed))


def shared_table(root: str, writers: int, commits: int) -> dict:
    """``writers`` processes committing to one table at once: the table's commit rate."""
    url = STOCK_LEVELS.uri(root) + f"-shared-{writers}"
    write_deltalake(url, level_rows(10, 0), partition_by=["region"],
                    storage_options=delta_options(url))
    queue: Any = mp.get_context("spawn").Queue()
    procs = [mp.get_context("spawn").Process(target=_writer,
                                             args=(url, f"r{i}", commits, queue))
             for i in range(writers)]
    for p in procs:
        p.start()
    reports = [queue.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    times = [t for r in reports for t in r[0]]
    # from the first commit begun to the last one done (process start-up left out)
    elapsed = max(r[2] for r in reports) - min(r[1] for r in reports)
    version = DeltaTable(url, storage_options=delta_options(url)).version()
    failed = sum(r[3] for r in reports)
    times.sort()
    result = {"writers": writers, "commits": writers * commits, "version": version,
              "failed_after_20_retries": failed,
              "commits_per_s": round((writers * commits - failed) / elapsed, 1),
              "ms_p50": round(1000 * times[len(times) // 2], 1),
              "ms_p95": round(1000 * times[int(len(times) * 0.95)], 1)}
    print(f"bench: {writers} writers on one table: {result['commits_per_s']} commits/s, "
          f"commit p50 {result['ms_p50']} ms, p95 {result['ms_p95']} ms, version "
          f"{version} (expected {writers * commits - failed}), {failed} failed after 20 "
          "retries", flush=True)
    return result


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
    ap.add_argument("--writers", default="1,2,4,8",
                    help="concurrent writer processes on one S3 table, per step")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="shelflife-bench-commits-"))
    print(f"bench: {args.commits} commits of each write, local disk then moto S3", flush=True)
    local = run(str(work / "lake"), args.commits, None)
    log = work / "moto.log"
    with moto_server(log):
        s3 = run(fresh_lake(), args.commits, log)
        shared = [shared_table(fresh_lake(), int(n), max(20, args.commits // 2))
                  for n in args.writers.split(",")]
    result = {"bench": "commits", "local": local, "s3": s3, "s3_shared_table": shared,
              "ratio_p50": {k: round(s3[k]["ms_p50"] / local[k]["ms_p50"], 2) for k in local}}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
