"""CPU per event and per batch of each Python step between a store's message and gold.

The latency and throughput benches time the whole path with Spark, mosquitto and the
feeders sharing two cores; this one takes the Python steps alone, in one process, on real
events (made by ``StoreAgent``), and counts the *CPU* each costs (``time.process_time``:
every thread of this process, delta-rs's writers included, and nothing of any other
program, so a busy machine changes the figures little). It is the profile the
README quotes, before and after a change:

* ingest, per event: decode and check the payload (``decode_event``), write its landing
  line (``LandedRecord.to_line``);
* the stream, per micro-batch of one region: parse the landing lines, check them, fold
  them into the region's state, spill them, rewrite the region's gold cohorts and levels
  (delta-rs), and, every ``--record-every`` batches, write the spills to bronze and silver.

Spark's own per-trigger cost (the landing source's offsets, planning, the hand-over to
Python) is not here: ``bench/trigger_cpu.py`` measures it alone and
``bench/throughput.py`` the stream process whole.

    python bench/stream_cpu.py --stores 100 --skus 24 --batch 170 --batches 40

Last line: one JSON object with microseconds of CPU per event for each step, and per batch
for the fixed-cost ones.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import trade  # noqa: E402
from edge_mqtt.agent import StoreAgent  # noqa: E402
from lakehouse.catalogue import STOCK_COHORTS, STOCK_LEVELS, STREAM_TABLES  # noqa: E402
from lakehouse.contract import decode_event, encode_event, topic  # noqa: E402
from lakehouse.gcpolicy import tune_for_service  # noqa: E402
from lakehouse.landing import LandedRecord, LandingLines, now_ts  # noqa: E402
from spark_jobs.stream import gold  # noqa: E402
from spark_jobs.stream.books import NetworkBooks  # noqa: E402
from spark_jobs.stream.fold import RegionState  # noqa: E402
from spark_jobs.stream.record import RecordWriter  # noqa: E402
from spark_jobs.stream.steps import MicroBatch, check_events, spill_lines  # noqa: E402

REGION = "east"
SKU_PREFIXES = ("DAIRY-MILK", "BAK-LOAF", "PROD-SALAD", "MEAT-CHK", "DAIRY-YOG", "PROD-APPL")


class Clock:
    """CPU seconds per named step (the whole process: delta-rs writes on threads of its
    own)."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = defaultdict(float)
        self._t = time.process_time()

    def lap(self, name: str) -> None:
        now = time.process_time()
        self.spent[name] += now - self._t
        self._t = now


def make_events(stores: int, skus: int, n: int, seed: int, work: Path) -> tuple[list, list]:
    """Stocking receipts for every store and SKU, then ``n`` receipts, sales and waste."""
    rng = random.Random(seed)
    names = [f"{SKU_PREFIXES[i % len(SKU_PREFIXES)]}-{i:03d}" for i in range(skus)]
    agents = [StoreAgent(f"E-S{i:03d}", REGION, work / f"agent-{i}.sqlite")
              for i in range(stores)]
    expiry = (datetime.now(UTC) + timedelta(days=12)).date()
    stock = [a.receive(sku, 5000, lot=f"S-{sku}", expires_on=expiry.isoformat(),
                       supplier_ref="PO-1", unit_cost=1.0) for a in agents for sku in names]
    events = trade(agents, names, n, rng, expiry)
    return stock, events


def land(events: list[dict], clock: Clock | None, batch_id: str) -> list[str]:
    """Ingest's part: the payload bytes as received, decoded and checked, then written as
    landing lines."""
    payloads = [(topic(REGION, e["location_id"], "events"), encode_event(e)) for e in events]
    if clock:
        clock.lap("setup")
    for _, raw in payloads:
        decode_event(raw)
    if clock:
        clock.lap("ingest_decode")
    at = now_ts()
    lines = [LandedRecord("event", t, REGION, at, raw).to_line(batch_id, i)
             for i, (t, raw) in enumerate(payloads)]
    if clock:
        clock.lap("ingest_line")
    return lines


def run(args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="shelflife-cpu-"))
    stock, events = make_events(args.stores, args.skus, args.batch * args.batches, args.seed,
                                work)
    from deltalake import write_deltalake  # the tables, empty, as the stream creates them
    paths = {}
    for table in STREAM_TABLES:
        paths[table.name] = str(work / "lake" / table.layer / table.name)
        write_deltalake(paths[table.name], table.schema.empty_table(),
                        partition_by=list(table.partitions) or None,
                        configuration=dict(table.properties) or None)
    state = RegionState(REGION, NetworkBooks())
    record = RecordWriter(REGION, work / "spill", paths, "bench", every_s=3600)
    state.apply(json.loads(json.dumps(stock)))
    clock = Clock()
    batches = [events[i:i + args.batch] for i in range(0, len(events), args.batch)]
    for b, batch in enumerate(batches, start=1):
        clock.lap("setup")
        texts = land(batch, clock, f"bench-{b:06d}")
        run = MicroBatch(b, time.time(), LandingLines.parse(texts))
        clock.lap("parse")
        run.parsed, run.refused = check_events(run.lines)
        clock.lap("check")
        run.touched, run.events = state.apply([e for _, e, _ in run.parsed])
        clock.lap("fold")
        keep, rows = spill_lines(run, REGION)
        record.spill(b, keep, rows=rows)
        clock.lap("spill")
        cohorts, levels = state.cohort_rows(REGION), state.level_rows(REGION)
        clock.lap("gold_rows")
        gold.write_region(paths["stock_cohorts"], cohorts, STOCK_COHORTS.schema, REGION,
                          app_id="bench-c", batch_id=b)
        clock.lap("gold_cohorts")
        gold.write_region(paths["stock_levels"], levels, STOCK_LEVELS.schema, REGION,
                          app_id="bench-l", batch_id=b)
        clock.lap("gold_levels")
        if b % args.record_every == 0 or b == len(batches):
            record.flush()
            clock.lap("record")
        if b % 10 == 0:
            print(f"bench: batch {b}/{len(batches)}", flush=True)
    n = len(events)
    per_event = {k: round(v / n * 1e6, 1) for k, v in clock.spent.items() if k != "setup"}
    per_batch = {k: round(v / len(batches) * 1e3, 2) for k, v in clock.spent.items()
                 if k != "setup"}
    ingest = sum(v for k, v in per_event.items() if k.startswith("ingest"))
    stream = sum(v for k, v in per_event.items() if not k.startswith("ingest"))
    return {"events": n, "batch": args.batch, "batches": len(batches),
            "stores": args.stores, "skus": args.skus,
            "cohort_rows": len(state.cohort_rows(REGION)),
            "us_per_event": per_event, "ms_per_batch": per_batch,
            "ingest_us_per_event": round(ingest, 1), "stream_us_per_event": round(stream, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stores", type=int, default=100, help="stores in the region")
    ap.add_argument("--skus", type=int, default=24)
    ap.add_argument("--batch", type=int, default=170,
                    help="events per micro-batch (170 = 500 events/s over 3 regions)")
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--record-every", type=int, default=10,
                    help="batches per bronze/silver write (the stream's 10 s)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--default-gc", action="store_true",
                    help="keep Python's collector thresholds (ingest and the stream tune them:"
                         " lakehouse.gcpolicy)")
    args = ap.parse_args()
    if not args.default_gc:
        tune_for_service()  # as `shelflife ingest` and `shelflife stream` start
    result = run(args)
    result["gc"] = "default" if args.default_gc else "service"
    for step, us in result["us_per_event"].items():
        print(f"bench: {step:14s} {us:8.1f} us/event {result['ms_per_batch'][step]:8.2f} "
              "ms/batch")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
