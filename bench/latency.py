"""Store event -> visible in gold: latency of the whole path under a steady fleet load.

Runs the real parts as separate processes (``shelflife broker``, ``ingest``, ``stream``)
and the simulated fleet in this process. Each event's record time is taken when the
agent commits it; it is *visible in gold* at the commit time of the first
``gold/stock_levels`` version whose ``last_seq`` for its location covers it (read with
``deltalake``, each version in turn). The same run also reports the end-to-end ack
latency (store -> durable landing -> ack back at the store): the part before Spark,
which is the baseline the lakehouse adds to.

Measuring starts once every region's stream has applied a batch and the warm-up has run
after that: how long the stream took to get there is reported apart (``stream_ready_s``),
so start-up is neither hidden nor counted as steady-state latency.

The last line printed is one JSON object.

    python bench/latency.py --stores 300 --events-per-s 300 --duration-s 60
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import deltalake

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    Components,
    Visibility,
    cpu_seconds,
    pct,
    poll_gold,
    ports_in_use,
    rss_mb,
    wait_port,
)
from edge_mqtt.simulator import Fleet, FleetConfig  # noqa: E402
from ingest.brokers import DEFAULT_PORTS  # noqa: E402
from lakehouse.catalogue import EVENTS  # noqa: E402
from lakehouse.storage import delta_options  # noqa: E402


def poll_acks(fleet: Fleet, vis: Visibility, stop: threading.Event) -> None:
    while not stop.is_set():
        now = time.time()
        for loc in fleet.locations:
            vis.cover(loc.location_id, loc.publisher.acked_seq, now)
        time.sleep(0.02)


def arguments(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The load options, shared with bench/storage.py."""
    ap.add_argument("--stores", type=int, default=300)
    ap.add_argument("--events-per-s", type=float, default=300.0)
    ap.add_argument("--duration-s", type=float, default=60.0)
    ap.add_argument("--warmup-s", type=float, default=20.0,
                    help="trading before measuring, after every region's first batch "
                         "(initial stock-up is excluded)")
    ap.add_argument("--workdir", default=None, help="keep state here (default: temp dir)")
    return ap


def main() -> None:
    args = arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0])).parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="shelflife-bench-"))
    print(json.dumps(measure(args, work, str(work / "lakehouse"))), flush=True)


def measure(args: argparse.Namespace, work: Path, lake: str,
            extra_env: dict[str, str] | None = None) -> dict:
    """One run of the whole path against the lakehouse at ``lake`` (a folder or an
    ``s3://`` prefix); returns the figures."""
    work.mkdir(parents=True, exist_ok=True)
    # Secure brokers, as Shelflife runs by default: every store logs in as itself and
    # ingest signs its acks; the fleet issues its stores' logins into the brokers' file.
    creds = work / "brokers" / "credentials.json"
    env = {**os.environ, "SHELFLIFE_LAKEHOUSE": lake, "PYTHONUNBUFFERED": "1",
           "SHELFLIFE_INGEST_METRICS_PORT": "0", "SHELFLIFE_STREAM_METRICS_PORT": "0",
           "SHELFLIFE_CREDENTIALS": str(creds), "SHELFLIFE_STATE_DIR": str(work / "state"),
           **(extra_env or {})}
    logs = work / "logs"
    parts = Components(logs, env)
    procs = parts.procs

    ports_in_use(DEFAULT_PORTS.values())
    try:
        parts.spawn("broker", "broker", "--data-dir", str(work / "brokers"))
        for port in DEFAULT_PORTS.values():
            wait_port(port, 30)
        parts.check("broker")
        parts.spawn("ingest", "ingest", "--lakehouse", lake)
        parts.spawn("stream", "stream", "--lakehouse", lake)
        print(f"bench: work dir {work}; waiting for Spark to create the tables", flush=True)
        levels = parts.wait_for_tables(lake)

        fleet = Fleet(FleetConfig(stores=args.stores, events_per_s=args.events_per_s,
                                  data_dir=work / "fleet", progress_every_s=10.0,
                                  credentials=creds))
        gold_vis, ack_vis = Visibility(), Visibility()
        window = {"on": False}
        measured: list[tuple[str, int]] = []

        def hook(event: dict) -> None:
            if window["on"]:
                t = time.time()
                gold_vis.add(event["location_id"], event["seq"], t)
                ack_vis.add(event["location_id"], event["seq"], t)
                measured.append((event["location_id"], event["seq"]))

        fleet.record_hook = hook
        stop_polls = threading.Event()
        fleet.start()
        threading.Thread(target=poll_gold, args=(levels, gold_vis, stop_polls),
                         daemon=True).start()
        threading.Thread(target=poll_acks, args=(fleet, ack_vis, stop_polls),
                         daemon=True).start()
        stop_fleet = threading.Event()
        runner = threading.Thread(target=fleet.run, args=(stop_fleet,), daemon=True)
        runner.start()
        ready_s = parts.wait_for_batches(lake)
        print(f"bench: every region applied its first batch {ready_s:.0f} s after the stores "
              f"started; warming up {args.warmup_s:.0f} s", flush=True)
        time.sleep(args.warmup_s)
        window["on"] = True
        t0 = time.time()
        print(f"bench: measuring {args.duration_s:.0f} s at {args.events_per_s:.0f} events/s "
              f"from {args.stores} stores", flush=True)
        rss_samples: dict[str, list[float]] = {k: [] for k in procs}
        cpu0 = {k: cpu_seconds(p.pid) for k, p in procs.items()}
        while time.time() - t0 < args.duration_s:
            time.sleep(5)
            for name, p in procs.items():
                rss_samples[name].append(rss_mb(p.pid))
            print(f"bench: {time.time() - t0:5.0f} s, {len(measured)} events, "
                  f"{gold_vis.left()} not yet in gold", flush=True)
        window["on"] = False
        measured_s = time.time() - t0
        cores = {k: round((cpu_seconds(p.pid) - cpu0[k]) / measured_s, 3)
                 for k, p in procs.items()}
        stop_fleet.set()
        runner.join(timeout=10)
        deadline = time.monotonic() + 90
        while gold_vis.left() and time.monotonic() < deadline:
            time.sleep(0.5)
        stop_polls.set()
        fleet.stop()

        # Silver is written behind gold (every few seconds): give it time to catch up.
        deadline = time.monotonic() + 60
        while True:
            silver = deltalake.DeltaTable(
                EVENTS.uri(lake), storage_options=delta_options(EVENTS.uri(lake))
            ).to_pandas(columns=["location_id", "seq"])
            keys = set(zip(silver["location_id"], silver["seq"], strict=True))
            lost = sum(1 for k in measured if k not in keys)
            if not lost or time.monotonic() > deadline:
                break
            time.sleep(2)
        duplicated = int(silver.duplicated(["location_id", "seq"]).sum())
        g, a = gold_vis.latencies, ack_vis.latencies
        result = {
            "p50_s": pct(g, 0.50), "p95_s": pct(g, 0.95), "p99_s": pct(g, 0.99),
            "max_s": pct(g, 1.0), "events": len(measured),
            "events_per_s": round(len(measured) / measured_s, 1),
            "lost": lost, "duplicated": duplicated, "not_visible": gold_vis.left(),
            "baseline_ack_p50_s": pct(a, 0.50), "baseline_ack_p99_s": pct(a, 0.99),
            "stores": args.stores, "duration_s": round(measured_s, 1),
            "rss_mb_max": {k: max(v) if v else None for k, v in rss_samples.items()},
            "stream_ready_s": round(ready_s, 1), "cores": os.cpu_count(),
            # CPU of ingest and the stream (its JVM included) over the measured window,
            # per second of it; the brokers (mosquitto) and the fleet are apart.
            "pipeline_cores": round(cores["ingest"] + cores["stream"], 3),
            "cores_by_process": cores,
        }
        print(f"bench: gold latency p50 {result['p50_s']} s, p95 {result['p95_s']} s, "
              f"p99 {result['p99_s']} s; ack (before Spark) p50 "
              f"{result['baseline_ack_p50_s']} s, p99 {result['baseline_ack_p99_s']} s; "
              f"pipeline {result['pipeline_cores']} cores {cores}", flush=True)
        return result
    finally:
        parts.stop()

if __name__ == "__main__":
    main()
