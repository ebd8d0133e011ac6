"""The forecast job on ``local[2]`` and on a Spark standalone cluster, same data, same run.

Silver ``events`` for ``--stores x --skus`` series (daily Poisson sales around a level
with a weekly shape, a weekly delivery, ``--days`` days) are written once; then
``shelflife batch forecasts`` runs as its own driver, first with ``--master local[2]``,
then with ``--master spark://...`` against a master and ``--workers`` workers started by
``scripts/spark_cluster.py`` on loopback. Each run keeps a Spark event log, from which the
bench sums, per stage, the tasks, the executors' run time (wall time of the tasks, the
Python workers' time inside) and their CPU time (the JVM task threads only: the forecasts'
Python workers are not in it).

The job forecasts groups of up to 2,000 series per task (``SERIES_PER_TASK``), so the
default 4,000 series make two tasks: one per core of this machine's two.

    python bench/cluster.py                  # 100 stores x 40 SKUs, 56 days
    python bench/cluster.py --stores 15      # 600 series: one task, a quick look

Figures: ``local_s`` and ``cluster_s`` are the job's own time (history read, forecasts,
gold write) as ``shelflife batch forecasts --json`` reports it; ``*_wall_s`` add the
driver's start. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
from deltalake import write_deltalake

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lakehouse.catalogue import DEMAND_FORECASTS, EVENTS  # noqa: E402
from lakehouse.contract import build_event, encode_event, format_ts, topic  # noqa: E402
from scripts.spark_cluster import StageTimes, stage_times, standalone_cluster  # noqa: E402
from spark_jobs.stream.record import silver_rows  # noqa: E402

BEGAN = time.monotonic()
WEEKLY = (0.8, 0.9, 0.9, 1.0, 1.1, 1.4, 0.9)
THROUGH = date(2024, 6, 2)


def say(message: str) -> None:
    print(f"[{time.monotonic() - BEGAN:6.1f} s] {message}", flush=True)


def write_events(lake: Path, stores: int, skus: int, days: int, seed: int) -> int:
    """Silver events as the stream writes them (the record writer's own shaper), one
    delta-rs commit per store batch; returns how many."""
    rng = np.random.default_rng(seed)
    first = THROUGH - timedelta(days=days - 1)
    path = EVENTS.path(lake)
    path.parent.mkdir(parents=True, exist_ok=True)
    total = 0
    for s in range(stores):
        loc = f"EAST-S{s:04d}"
        seq, lines = 0, []
        for k in range(skus):
            sku, level, stock = f"SKU-{k:03d}", float(rng.uniform(2, 30)), 0
            for d in range(days):
                day = datetime.combine(first + timedelta(days=d), datetime.min.time(),
                                       tzinfo=UTC)
                moves = []
                if d % 7 == 0:
                    qty = int(level * 10) + 10
                    lot, expiry = f"L{d}", (day.date() + timedelta(days=14)).isoformat()
                    moves.append((6, "received", {"sku": sku, "quantity": qty,
                                                  "stock_before": stock, "lot": lot,
                                                  "expires_on": expiry,
                                                  "supplier_ref": "S1", "unit_cost": 0.5}))
                    stock += qty
                sold = min(stock, int(rng.poisson(level * WEEKLY[day.weekday()])))
                if sold:
                    moves.append((14, "sold", {"sku": sku, "quantity": sold,
                                               "stock_before": stock, "unit_price": 1.5,
                                               "transaction_ref": f"T{seq}",
                                               "lots": [{"lot": lot,
                                                         "expires_on": expiry,
                                                         "quantity": sold}]}))
                    stock -= sold
                for hour, kind, payload in moves:
                    seq += 1
                    event = build_event(location_id=loc, seq=seq, event_type=kind,
                                        payload=payload,
                                        occurred_at=format_ts(day.replace(hour=hour)))
                    lines.append({"kind": "event", "topic": topic("east", loc, "events"),
                                  "region": "east", "received_at": "2024-06-03T00:00:00.000Z",
                                  "batch_id": f"b{s}", "line": len(lines),
                                  "raw": encode_event(event).decode()})
        rows = silver_rows([(0, line) for line in lines], datetime.now(UTC))
        write_deltalake(str(path), pa.Table.from_pylist(rows, schema=EVENTS.schema),
                        mode="append", partition_by=list(EVENTS.partitions))
        total += len(rows)
        if (s + 1) % max(1, stores // 5) == 0:
            say(f"events: {s + 1}/{stores} stores, {total:,} events")
    return total


def run_job(lake: Path, master: str, event_log: Path, log: Path) -> dict:
    """``shelflife batch forecasts`` on ``master`` as its own driver; its JSON result and
    wall time."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SHELFLIFE_SPARK_EVENT_LOG": str(event_log),
           "PYSPARK_PYTHON": sys.executable}
    began = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "apps.cli", "batch", "forecasts",
                                 "--lakehouse", str(lake), "--through", THROUGH.isoformat(),
                                 "--json", "--master", master],
                                env=env, cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        result = None
        for line in proc.stdout:
            out.write(line)
            if line.startswith("[{"):
                result = json.loads(line)[0]
            elif line.startswith(("batch:", "forecasts:", "Traceback", "error")):
                say(f"{master}: {line.strip()}")  # the job's progress; Spark's own in the log
    if proc.wait() != 0 or result is None:
        raise SystemExit(f"forecasts on {master} failed; see {log}")
    result["wall_s"] = round(time.monotonic() - began, 1)
    return result


def table(title: str, stages: list[StageTimes]) -> list[dict]:
    """Print a run's stages; return them as JSON rows."""
    print(f"\n{title}")
    print(f"  {'stage':>5s} {'name':24s} {'tasks':>5s} {'run s':>8s} {'cpu s':>8s}  executors")
    rows = []
    for s in stages:
        rows.append({"stage": s.stage, "name": s.name, "tasks": s.tasks,
                     "executor_run_s": round(s.executor_run_s, 2),
                     "executor_cpu_s": round(s.executor_cpu_s, 2),
                     "executors": sorted(s.executors)})
        print(f"  {s.stage:5d} {s.name[:24]:24s} {s.tasks:5d} {s.executor_run_s:8.2f} "
              f"{s.executor_cpu_s:8.2f}  {','.join(sorted(s.executors))}")
    print(f"  {'':5s} {'total':24s} {sum(s.tasks for s in stages):5d} "
          f"{sum(s.executor_run_s for s in stages):8.2f} "
          f"{sum(s.executor_cpu_s for s in stages):8.2f}")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stores", type=int, default=100)
    ap.add_argument("--skus", type=int, default=40)
    ap.add_argument("--days", type=int, default=56)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--cores", type=int, default=2, help="cores per worker")
    ap.add_argument("--memory", default="2g", help="memory per worker")
    ap.add_argument("--port", type=int, default=27177, help="the cluster's master port")
    ap.add_argument("--webui-port", type=int, default=28180,
                    help="its web UI (the workers' take the next ports)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--dir", default=None, help="work folder (default: a new temporary one)")
    args = ap.parse_args()
    work = Path(args.dir or tempfile.mkdtemp(prefix="shelflife-cluster-"))
    lake = work / "lake"
    series = args.stores * args.skus
    say(f"writing silver events: {args.stores} stores x {args.skus} SKUs = {series:,} series, "
        f"{args.days} days, in {work}")
    events = write_events(lake, args.stores, args.skus, args.days, args.seed)

    say("forecasts on local[2]")
    local = run_job(lake, "local[2]", work / "events-local", work / "local.log")
    local_stages = stage_times(work / "events-local")
    local_rows = DEMAND_FORECASTS.path(lake)

    say(f"starting a standalone cluster: {args.workers} worker(s) x {args.cores} cores, "
        f"{args.memory}")
    with standalone_cluster(work / "cluster", workers=args.workers, cores=args.cores,
                            memory=args.memory, port=args.port,
                            webui_port=args.webui_port) as cluster:
        say(f"forecasts on {cluster.master_url}")
        remote = run_job(lake, cluster.master_url, work / "events-cluster",
                         work / "cluster.log")
    cluster_stages = stage_times(work / "events-cluster")

    local_table = table(f"local[2]: job {local['seconds']} s (driver wall {local['wall_s']} s)",
                        local_stages)
    cluster_table = table(f"{cluster.master_url}: job {remote['seconds']} s "
                          f"(driver wall {remote['wall_s']} s)", cluster_stages)
    load = os.getloadavg()
    print(f"\n{series:,} series, {events:,} events; load average at the end "
          f"{load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}; forecasts in {local_rows}")
    print(json.dumps({
        "bench": "cluster", "series": series, "events": events, "days": args.days,
        "local_s": local["seconds"], "cluster_s": remote["seconds"],
        "local_wall_s": local["wall_s"], "cluster_wall_s": remote["wall_s"],
        "workers": args.workers, "cores_per_worker": args.cores,
        "local_executor_run_s": round(sum(s.executor_run_s for s in local_stages), 2),
        "cluster_executor_run_s": round(sum(s.executor_run_s for s in cluster_stages), 2),
        "stages": cluster_table, "local_stages": local_table,
        "loadavg": [round(v, 2) for v in load],
    }))


if __name__ == "__main__":
    main()
