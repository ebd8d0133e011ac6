"""One stream driver for two regions against two drivers of one region each, same load.

The live stream's work happens on its driver: parsing the landing lines, folding them
into each region's state, spilling them and committing gold with delta-rs. Executors only
scan the landing files. So the stream scales by running more drivers, one
``shelflife stream --regions X`` process per shard, not by adding executors. This bench
offers the same load to both layouts, one after the other, each on a fresh lakehouse:

* **one driver**: ``shelflife stream --regions east,central``;
* **two shards**: ``shelflife stream --regions east`` and ``--regions central``, two
  processes on the same lakehouse.

The load: ``--rate`` events/s per region for ``--duration-s`` seconds, made beforehand by
real ``StoreAgent`` instances (stocking receipts, then receipts, FEFO sales and waste, as
``bench/throughput.py`` makes them) and written straight into the landing zone with
``LandingWriter`` (no brokers, no ingest), in batches every ``--batch-every-s`` seconds,
the same events for both layouts. Per layout it reports the events/s applied to gold
during the load (each driver's ``shelflife_stream_events_applied_total``), how long the
backlog took to drain afterwards, and each driver process's CPU (Python and its JVM, from
``/proc``) per event applied. The last line printed is one JSON object.

    python bench/shards.py                          # 300 events/s per region, 60 s each
    python bench/shards.py --rate 600 --duration-s 45
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    Components,
    cpu_seconds,
    free_port,
    machine_busy_s,
    scrape,
    trade,
)
from lakehouse.catalogue import STOCK_LEVELS  # noqa: E402
from lakehouse.contract import encode_event, topic  # noqa: E402
from lakehouse.landing import LandedRecord, LandingWriter, landing_dir, now_ts  # noqa: E402

REGIONS = ("east", "central")
SKUS = ("DAIRY-MILK-1L", "BAK-LOAF-800", "PROD-SALAD-200", "MEAT-CHK-500", "DAIRY-YOG-500",
        "PROD-APPL-1KG", "BAK-ROLL-6", "DAIRY-CHS-200")
APPLIED = "shelflife_stream_events_applied_total"
BEGAN = time.monotonic()


def say(message: str) -> None:
    print(f"[{time.monotonic() - BEGAN:6.1f} s] {message}", flush=True)


def make_events(region: str, stores: int, n: int, seed: int, work: Path
                ) -> tuple[list[bytes], list[bytes], dict[str, int]]:
    """Stocking receipts and ``n`` events of a region's stores, encoded as they arrive;
    and each store's last seq."""
    from edge_mqtt.agent import StoreAgent  # SQLite outboxes: only while the load is made

    rng = random.Random(seed)
    agents = [StoreAgent(f"{region[0].upper()}-S{i:03d}", region, work / f"{region}{i}.sqlite")
              for i in range(stores)]
    expiry = (datetime.now(UTC) + timedelta(days=10)).date()
    stock = [a.receive(sku, 100_000, lot=f"S-{sku}",
                       expires_on=(expiry + timedelta(days=20)).isoformat(),
                       supplier_ref="PO-1", unit_cost=1.0) for a in agents for sku in SKUS]
    events = trade(agents, SKUS, n, rng, expiry)
    last: dict[str, int] = {}
    for e in stock + events:
        last[e["location_id"]] = max(last.get(e["location_id"], 0), e["seq"])
    for a in agents:
        a.close()
    return [encode_event(e) for e in stock], [encode_event(e) for e in events], last


def land(writer: LandingWriter, region: str, raws: list[bytes]) -> None:
    """One landing batch, as ingest writes it once the events are acknowledged."""
    at = now_ts()
    writer.write([LandedRecord("event", topic(region, _loc(raw), "events"), region, at, raw)
                  for raw in raws])


def _loc(raw: bytes) -> str:
    return json.loads(raw)["location_id"]


def applied(ports: list[int]) -> dict[int, float]:
    """Events applied so far, per driver (by its metrics port)."""
    out = {}
    for port in ports:
        metrics = scrape(port)
        out[port] = sum(v for k, v in metrics.items() if k.startswith(APPLIED + "{"))
    return out


def run_layout(name: str, shards: list[tuple[str, ...]], load: dict[str, tuple],
               args: argparse.Namespace, work: Path) -> dict:
    """Start one driver per shard on a fresh lakehouse, stock it, offer the load, drain,
    and measure."""
    lake = work / name / "lake"
    comps = Components(work / name / "logs", {**os.environ, "PYTHONPATH": str(
        Path(__file__).resolve().parents[1]), "SHELFLIFE_SPARK_MASTER": args.master})
    ports, pids = [], {}
    try:
        for shard in shards:
            port = free_port()
            proc = comps.spawn("stream-" + "-".join(shard), "stream", "--regions",
                               ",".join(shard), "--lakehouse", str(lake), "--metrics-port",
                               str(port), "--metrics-host", "127.0.0.1")
            ports.append(port)
            pids[port] = proc.pid
            say(f"{name}: started `shelflife stream --regions {','.join(shard)}` "
                f"(pid {proc.pid})")
        deadline = time.monotonic() + 300
        while True:  # each driver serves /metrics once its queries have started
            for comp in comps.procs:
                comps.check(comp)
            backlog = [k for p in ports for k in scrape(p) if k.startswith(
                "shelflife_stream_landing_backlog_files")]
            if len(backlog) >= sum(len(s) for s in shards):
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"{name}: the stream drivers did not start in 300 s")
            time.sleep(1)
        writers = {r: LandingWriter(landing_dir(r, lake), "bench") for r in REGIONS}
        for r in REGIONS:
            land(writers[r], r, load[r][0])
        stocked = sum(len(load[r][0]) for r in REGIONS)
        while sum(applied(ports).values()) < stocked:
            for comp in comps.procs:
                comps.check(comp)
            time.sleep(0.5)
        say(f"{name}: {stocked} stocking receipts applied; warming up "
            f"{args.warmup_s:g} s, then {args.rate:g} events/s per region for "
            f"{args.duration_s:g} s")
        time.sleep(args.warmup_s)

        before = applied(ports)
        cpu0 = {p: cpu_seconds(pids[p]) for p in ports}
        busy0 = machine_busy_s()
        per_batch = max(1, round(args.rate * args.batch_every_s))
        total = {r: len(load[r][1]) for r in REGIONS}
        sent = dict.fromkeys(REGIONS, 0)
        t0 = time.monotonic()
        ticks = 0
        late = 0.0
        while any(sent[r] < total[r] for r in REGIONS):
            for r in REGIONS:
                chunk = load[r][1][sent[r]:sent[r] + per_batch]
                if chunk:
                    land(writers[r], r, chunk)
                    sent[r] += len(chunk)
            ticks += 1
            wait = t0 + ticks * args.batch_every_s - time.monotonic()
            late = max(late, -wait)
            if wait > 0:
                time.sleep(wait)
            if ticks % round(10 / args.batch_every_s) == 0:
                now = applied(ports)
                say(f"{name}: {time.monotonic() - t0:4.0f} s: sent {sum(sent.values()):,}, "
                    f"applied {sum(now.values()) - sum(before.values()):,.0f}")
        feed_s = time.monotonic() - t0
        during = applied(ports)
        offered = sum(total.values())
        while sum(applied(ports).values()) - sum(before.values()) < offered:
            for comp in comps.procs:
                comps.check(comp)
            if time.monotonic() - t0 - feed_s > args.drain_s:
                break
            time.sleep(0.25)
        drain_s = time.monotonic() - t0 - feed_s
        after = applied(ports)
        elapsed = time.monotonic() - t0
        busy = machine_busy_s() - busy0
        drivers = []
        for shard, port in zip(shards, ports, strict=True):
            events = after[port] - before[port]
            cpu = cpu_seconds(pids[port]) - cpu0[port]
            drivers.append({"regions": list(shard), "events": int(events),
                            "events_per_s_during_load": round(
                                (during[port] - before[port]) / feed_s, 1),
                            "cpu_s": round(cpu, 1), "cores": round(cpu / elapsed, 2),
                            "cpu_us_per_event": round(cpu / events * 1e6) if events else None})
        done = sum(after.values()) - sum(before.values())
        result = {"layout": name, "drivers": drivers, "offered": offered,
                  "offered_per_s": round(offered / feed_s, 1), "applied": int(done),
                  "applied_per_s_during_load": round(
                      (sum(during.values()) - sum(before.values())) / feed_s, 1),
                  "applied_per_s": round(done / elapsed, 1), "feed_s": round(feed_s, 1),
                  "drain_s": round(drain_s, 1), "feed_late_s": round(late, 2),
                  "cpu_us_per_event": round(sum(d["cpu_s"] for d in drivers) / done * 1e6)
                  if done else None,
                  "machine_cores_busy": round(busy / elapsed, 2)}
        result["gold_complete"] = gold_complete(lake, load)
        return result
    finally:
        comps.stop()


def gold_complete(lake: Path, load: dict[str, tuple]) -> bool:
    """Gold stock_levels shows every store's last event (``last_seq``)."""
    import deltalake  # read back as a user would

    rows = deltalake.DeltaTable(str(STOCK_LEVELS.path(lake))).to_pyarrow_table(
        columns=["location_id", "last_seq"]).to_pylist()
    seen: dict[str, int] = {}
    for r in rows:
        seen[r["location_id"]] = max(seen.get(r["location_id"], 0), r["last_seq"] or 0)
    return all(seen.get(loc, 0) >= seq for r in REGIONS for loc, seq in load[r][2].items())


def print_layout(r: dict) -> None:
    """A layout's figures, one line per driver."""
    print(f"\n{r['layout']}: offered {r['offered']:,} events ({r['offered_per_s']:,.0f}/s), "
          f"applied {r['applied']:,}; during the load {r['applied_per_s_during_load']:,.0f}/s; "
          f"drained {r['drain_s']:.1f} s after; gold complete: {r['gold_complete']}; "
          f"machine {r['machine_cores_busy']:.2f} cores busy")
    print(f"  {'driver':18s} {'events':>8s} {'events/s':>9s} {'cpu s':>7s} {'cores':>6s} "
          f"{'us/event':>9s}")
    for d in r["drivers"]:
        print(f"  {','.join(d['regions']):18s} {d['events']:8,d} "
              f"{d['events_per_s_during_load']:9,.0f} {d['cpu_s']:7.1f} {d['cores']:6.2f} "
              f"{d['cpu_us_per_event'] or 0:9,d}")
    print(f"  {'all drivers':18s} {r['applied']:8,d} {r['applied_per_s_during_load']:9,.0f} "
          f"{sum(d['cpu_s'] for d in r['drivers']):7.1f} "
          f"{sum(d['cores'] for d in r['drivers']):6.2f} {r['cpu_us_per_event'] or 0:9,d}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=300.0, help="events/s per region")
    ap.add_argument("--duration-s", type=float, default=60.0, help="load per layout")
    ap.add_argument("--warmup-s", type=float, default=5.0)
    ap.add_argument("--drain-s", type=float, default=30.0,
                    help="longest wait for the backlog after the load")
    ap.add_argument("--batch-every-s", type=float, default=0.25,
                    help="landing batches per region every (ingest's own is ~0.2 s)")
    ap.add_argument("--stores", type=int, default=40, help="stores per region")
    ap.add_argument("--master", default="local[2]", help="each driver's Spark master")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="shelflife-shards-"))
    agents = Path(tempfile.mkdtemp(prefix="shelflife-shards-",
                                   dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    n = int(args.rate * args.duration_s)
    say(f"making {n:,} events per region with {args.stores} StoreAgents each")
    load = {r: make_events(r, args.stores, n, args.seed + i, agents)
            for i, r in enumerate(REGIONS)}
    shutil.rmtree(agents)  # the outboxes served only to make the events (in memory)
    results = [run_layout("one_driver", [REGIONS], load, args, work),
               run_layout("two_shards", [(r,) for r in REGIONS], load, args, work)]
    for r in results:
        print_layout(r)
    one, two = results
    load_avg = os.getloadavg()
    print(f"\nload average at the end {load_avg[0]:.1f}/{load_avg[1]:.1f}/{load_avg[2]:.1f}; "
          f"work in {work}")
    print(json.dumps({"bench": "shards", "rate_per_region": args.rate,
                      "duration_s": args.duration_s, "master": args.master,
                      "one_driver_events_per_s": one["applied_per_s_during_load"],
                      "two_shards_events_per_s": two["applied_per_s_during_load"],
                      "one_driver_cpu_us_per_event": one["cpu_us_per_event"],
                      "two_shards_cpu_us_per_event": two["cpu_us_per_event"],
                      "layouts": results, "loadavg": [round(v, 2) for v in load_avg]}))


if __name__ == "__main__":
    main()
