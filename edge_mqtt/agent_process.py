"""A store agent as a process of its own: records a reproducible stream and publishes it.

    python -m edge_mqtt.agent_process --db s.sqlite --location E-1 --region east \\
        --port 18831 --events 2000 --seed 7

The crash tests kill it with SIGKILL at random instants and start it again on the same
database. Event n is a function of the seed, n and the stock the database holds, so a
restarted process records exactly the event the killed one would have recorded next;
once all ``--events`` are recorded it waits until ingest acks the last one, then exits 0.

Several stores can share one process (a bench runs hundreds on two cores):

    python -m edge_mqtt.agent_process --db-dir agents/ --locations E-1,E-2 \\
        --region east --port 18831 --events 100000 --rate 0.5 --until 1767225600 \\
        --record-log agents/group-1.jsonl --logins agents/group-1.logins.json

Each store gets ``<db-dir>/<location>.sqlite`` and its own publisher (signed in as itself
with ``--logins``); each records ``--rate`` events per second until ``--events``, the
wall-clock time ``--until`` or ``--stop-file`` exists, then all wait for their acks.
``--record-log`` appends every recorded event, after its commit, to a JSON-lines file:
what the agents answered, for an oracle that reads nothing the lakehouse wrote. A
restarted process first copies into the log any event committed but not yet logged when
it was killed (from the outbox).
"""

from __future__ import annotations

import argparse
import heapq
import json
import logging
import os
import random
import sys
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from lakehouse.contract import REGIONS, format_ts

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


class RecordLog:
    """Every event the agents recorded, appended as one JSON line after its commit.

    One ``os.write`` per line on an ``O_APPEND`` descriptor: a SIGKILL leaves at most one
    torn last line, which the next open cuts off. An event committed but not yet logged
    when the process died is still in its agent's outbox (nothing acks it that fast) and
    is copied from there on the next start; :attr:`gaps` counts any that were not.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.logged: dict[str, int] = {}
        self.gaps = 0
        if self.path.exists():
            data = self.path.read_bytes()
            cut = data.rfind(b"\n") + 1
            if cut < len(data):  # a line torn by a kill
                os.truncate(self.path, cut)
            for line in data[:cut].splitlines():
                e = json.loads(line)["event"]
                loc = e["location_id"]
                self.logged[loc] = max(self.logged.get(loc, 0), e["seq"])
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def catch_up(self, agent: StoreAgent) -> None:
        """Log what ``agent`` committed after the last logged line of the previous run."""
        done = self.logged.get(agent.location_id, 0)
        last = agent.last_seq
        if last <= done:
            return
        rows = agent.db.outbox_after(done, last - done)
        for _seq, body in rows:
            self.write(json.loads(body), None)
        self.gaps += (last - done) - len(rows)

    def write(self, event: dict[str, Any], at: float | None) -> None:
        line = json.dumps({"t": at, "event": event}, separators=(",", ":")) + "\n"
        os.write(self.fd, line.encode("utf-8"))
        self.logged[event["location_id"]] = event["seq"]

    def close(self) -> None:
        os.close(self.fd)


class SimClock:
    """``occurred_at`` for accelerated simulated time: ``origin + accel * (now - t0)``."""

    def __init__(self, origin: float, t0: float, accel: float) -> None:
        self.origin, self.t0, self.accel = origin, t0, accel

    def now(self) -> str:
        moment = self.origin + self.accel * (time.time() - self.t0)
        return format_ts(datetime.fromtimestamp(moment, UTC))


def _write_status(path: Path, agents: list[StoreAgent], gaps: int) -> None:
    """``{location: [last recorded seq, last acked seq]}``, replaced atomically."""
    state = {a.location_id: [a.last_seq, a.acked_seq] for a in agents}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"agents": state, "log_gaps": gaps, "at": time.time()}))
    os.replace(tmp, path)


def run_group(args: argparse.Namespace) -> int:
    """Several stores in one process: record at ``--rate`` each until ``--events`` or
    ``--until``, then wait for every ack."""
    folder = Path(args.db_dir)
    folder.mkdir(parents=True, exist_ok=True)
    logins = json.loads(Path(args.logins).read_text()) if args.logins else {}
    agents = [StoreAgent(loc, args.region, folder / f"{loc}.sqlite") for loc in args.locations]
    log = RecordLog(Path(args.record_log)) if args.record_log else None
    if log is not None:
        for a in agents:
            log.catch_up(a)
    clock = (SimClock(args.sim_origin, args.sim_t0, args.sim_accel)
             if args.sim_accel else None)
    pubs = [Publisher(a, PublisherConfig(
        host=args.host, port=args.port, replay_rate=args.replay_rate,
        resend_after_s=args.resend_after_s, resend_max_s=args.resend_max_s,
        heartbeat_s=args.heartbeat_s, max_inflight=args.max_inflight,
        username=a.location_id if a.location_id in logins else None,
        password=logins.get(a.location_id))) for a in agents]
    for p in pubs:
        p.start()
    status = Path(args.status_file) if args.status_file else None
    status_at = 0.0
    gaps = log.gaps if log is not None else 0
    started = time.monotonic()
    rng = random.Random(f"{args.seed}:{time.time()}")
    interval = 1.0 / args.rate if args.rate > 0 else 0.0
    due = [(time.monotonic() + rng.uniform(0, interval), i) for i in range(len(agents))]
    heapq.heapify(due)
    stop_file = Path(args.stop_file) if args.stop_file else None
    stop_checked = 0.0
    try:
        while due and not (args.until and time.time() >= args.until):
            now = time.monotonic()
            if stop_file is not None and now - stop_checked >= 0.2:
                stop_checked = now
                if stop_file.exists():
                    break
            if status is not None and now >= status_at:
                _write_status(status, agents, gaps)
                status_at = now + 0.5
            at, i = due[0]
            if at > now:
                time.sleep(min(at - now, 0.1))
                continue
            heapq.heappop(due)
            agent = agents[i]
            if agent.last_seq >= args.events:
                continue
            event = record_next(agent, args.seed,
                                occurred_at=clock.now() if clock is not None else None)
            if log is not None:
                log.write(event, time.time())
            heapq.heappush(due, (at + interval, i))
        # --timeout counts from the end of recording: a group may trade for hours
        deadline = time.monotonic() + args.timeout if args.timeout > 0 else float("inf")
        while any(a.acked_seq < a.last_seq for a in agents):
            if time.monotonic() > deadline:
                print(json.dumps({"error": "timed out waiting for acks",
                                  "unacked": {a.location_id: a.last_seq - a.acked_seq
                                              for a in agents}}), file=sys.stderr)
                return 1
            if status is not None and time.monotonic() >= status_at:
                _write_status(status, agents, gaps)
                status_at = time.monotonic() + 0.5
            time.sleep(0.05)
        if status is not None:
            _write_status(status, agents, gaps)
        print(json.dumps({"locations": len(agents),
                          "recorded": sum(a.last_seq for a in agents),
                          "sent": sum(p.sent for p in pubs), "log_gaps": gaps,
                          "seconds": round(time.monotonic() - started, 2)}))
        return 0
    finally:
        for p in pubs:
            p.stop()
        for a in agents:
            a.close()
        if log is not None:
            log.close()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m edge_mqtt.agent_process",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--db", help="the agent's SQLite file (created if new)")
    p.add_argument("--location", help="location id, e.g. E-001")
    p.add_argument("--locations", type=lambda v: [x for x in v.split(",") if x],
                   help="several stores in this process, comma-separated (with --db-dir)")
    p.add_argument("--db-dir", help="folder of <location>.sqlite files (with --locations)")
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
    p.add_argument("--resend-max-s", type=float, default=240.0,
                   help="longest wait between re-sends of a stalled ack")
    p.add_argument("--until", type=float, default=0.0,
                   help="stop recording at this Unix time (0 = only --events stops it)")
    p.add_argument("--stop-file", help="stop recording once this file exists")
    p.add_argument("--record-log", help="append each recorded event to this JSON-lines file")
    p.add_argument("--status-file",
                   help="keep {location: [last seq, acked seq]} in this file (every 0.5 s)")
    p.add_argument("--logins", help="JSON file {location: password}: sign in as the store")
    p.add_argument("--sim-accel", type=float, default=0.0,
                   help="occurred_at runs this many times faster than real time (0 = real)")
    p.add_argument("--sim-origin", type=float, default=0.0,
                   help="simulated Unix time at --sim-t0")
    p.add_argument("--sim-t0", type=float, default=0.0, help="real Unix time of the origin")
    args = p.parse_args(argv)
    if args.locations:
        if not args.db_dir:
            p.error("--locations needs --db-dir")
    elif not (args.db and args.location):
        p.error("give --db and --location, or --locations and --db-dir")
    if args.events < 1:
        p.error(f"--events: expected a positive count, got {args.events}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    return run_group(args) if args.locations else run(args)


if __name__ == "__main__":
    sys.exit(main())
