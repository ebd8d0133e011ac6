"""A store agent as a process of its own: records a reproducible stream and publishes it.

    python -m edge_mqtt.agent_process --db s.sqlite --location E-1 --region east \\
        --port 18831 --events 2000 --seed 7

The crash tests kill it with SIGKILL at random instants and start it again on the same
database. Event n is a function of the seed, n and the stock the database holds, so a
restarted process records exactly the event the killed one would have recorded next;
once all ``--events`` are recorded it waits until ingest acks the last one, then exits 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any

from lakehouse.contract import REGIONS

from .agent import StoreAgent
from .publisher import Publisher, PublisherConfig

SKUS = ("DAIRY-MILK-WH-1L", "BAK-LOAF-WHT-800", "PROD-SALAD-MIX-200")
PEER = "X-PEER"
"""The other end of the stream's transfers (it never runs; only its ids appear)."""


def _expiry(rng: random.Random) -> str:
    return (date(2026, 12, 1) + timedelta(days=rng.randint(1, 14))).isoformat()


def record_next(agent: StoreAgent, seed: int, *, occurred_at: str | None = None
                ) -> dict[str, Any]:
    """Record event ``agent.last_seq + 1`` of the stream; every event type appears."""
    seq = agent.last_seq + 1
    rng = random.Random(f"{seed}:{agent.location_id}:{seq}")
    sku = SKUS[seq % len(SKUS)] if seq <= len(SKUS) else rng.choice(SKUS)
    at = {"occurred_at": occurred_at}
    if seq <= len(SKUS):
        return agent.receive(sku, 40, lot=f"L{seq}", expires_on=_expiry(rng),
                             supplier_ref="PO-0", unit_cost=1.0, **at)
    r = rng.random()
    lots = [c for c in agent.db.cohorts(sku) if c["quantity"] > 0]
    if 0.58 <= r < 0.66 and lots:
        c = lots[rng.randrange(len(lots))]
        return agent.waste(sku, min(c["quantity"], rng.randint(1, 3)), lot=c["lot"],
                           reason_code="damaged", disposal_method="compost", **at)
    if r < 0.66:  # sales beyond stock included: they draw from the unallocated lot
        return agent.sell(sku, rng.randint(1, 4), unit_price=2.5,
                          transaction_ref=f"T{seq}", **at)
    if r < 0.82:
        return agent.receive(sku, rng.randint(5, 25), lot=f"L{seq}", expires_on=_expiry(rng),
                             supplier_ref="PO-1", unit_cost=1.1, **at)
    if r < 0.86:
        return agent.transfer_out(sku, rng.randint(1, 5), destination=PEER,
                                  transfer_id=f"TO{seq}", expected_transit_hours=4.0, **at)
    if r < 0.90:
        qty = rng.randint(1, 6)
        return agent.transfer_in(sku, qty, source=PEER, transfer_id=f"TI{seq}",
                                 lots=[{"lot": f"P{seq}", "expires_on": _expiry(rng),
                                        "quantity": qty}],
                                 causation_id=f"{PEER}:{rng.randint(1, 5 * seq)}", **at)
    if r < 0.95:
        every = agent.db.cohorts(sku)
        if every:
            c = every[rng.randrange(len(every))]
            return agent.adjust(sku, lot=c["lot"], counted_quantity=max(0, c["quantity"] - 1),
                                **at)
        return agent.update_item(sku, price=2.0, **at)
    if r < 0.975:
        items = [{"sku": c["sku"], "lot": c["lot"], "expires_on": c["expires_on"],
                  "quantity": max(0, c["quantity"] + rng.randint(-2, 1))}
                 for c in agent.db.cohorts() if c["expires_on"] is not None]
        return agent.count(items, **at)
    return agent.update_item(sku, price=round(rng.uniform(1, 5), 2), **at)


def run(args: argparse.Namespace) -> int:
    """Record up to ``--events`` (continuing from the database), then wait for the acks."""
    agent = StoreAgent(args.location, args.region, args.db)
    pub = Publisher(agent, PublisherConfig(
        host=args.host, port=args.port, replay_rate=args.replay_rate,
        resend_after_s=args.resend_after_s, heartbeat_s=args.heartbeat_s,
        max_inflight=args.max_inflight))
    pub.start()
    started = time.monotonic()
    deadline = started + args.timeout if args.timeout > 0 else float("inf")
    try:
        interval = 1.0 / args.rate if args.rate > 0 else 0.0
        next_at = time.monotonic()
        while agent.last_seq < args.events:
            record_next(agent, args.seed)
            if interval:
                next_at += interval
                time.sleep(max(0.0, next_at - time.monotonic()))
        while agent.acked_seq < args.events:  # trimmed from the outbox, not only acked
            if time.monotonic() > deadline:
                print(json.dumps({"error": "timed out waiting for acks",
                                  "acked_seq": agent.acked_seq}), file=sys.stderr)
                return 1
            time.sleep(0.02)
        print(json.dumps({"location_id": agent.location_id, "last_seq": agent.last_seq,
                          "acked_seq": agent.acked_seq, "sent": pub.sent,
                          "seconds": round(time.monotonic() - started, 2)}))
        return 0
    finally:
        pub.stop()
        agent.close()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m edge_mqtt.agent_process",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--db", required=True, help="the agent's SQLite file (created if new)")
    p.add_argument("--location", required=True, help="location id, e.g. E-001")
    p.add_argument("--region", required=True, choices=REGIONS)
    p.add_argument("--host", default="127.0.0.1", help="broker host")
    p.add_argument("--port", type=int, required=True, help="broker port")
    p.add_argument("--events", type=int, required=True, help="length of the stream")
    p.add_argument("--seed", type=int, default=1, help="which stream")
    p.add_argument("--rate", type=float, default=0.0,
                   help="events recorded per second (0 = as fast as SQLite allows)")
    p.add_argument("--replay-rate", type=float, default=0.0,
                   help="events sent per second at most (0 = unthrottled)")
    p.add_argument("--resend-after-s", type=float, default=15.0,
                   help="re-send from the last ack when it stalls this long")
    p.add_argument("--heartbeat-s", type=float, default=30.0, help="heartbeat interval")
    p.add_argument("--max-inflight", type=int, default=20, help="QoS 2 messages in flight")
    p.add_argument("--timeout", type=float, default=0.0,
                   help="give up waiting for acks after this many seconds (0 = never)")
    args = p.parse_args(argv)
    if args.events < 1:
        p.error(f"--events: expected a positive count, got {args.events}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
