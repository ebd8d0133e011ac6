"""The store agent on its own: record rate, offline-backlog replay rate, memory when full.

Three figures, each next to what the same machine does without Shelflife in the way:

* **record** - events per second through :class:`StoreAgent` into SQLite with
  ``synchronous=FULL`` (the agent's default), with a store's mix (mostly sales, each
  drawn first-expired-first-out over several lots of its SKU): one till (each event its
  own transaction and fsync), then several tills at once (group commit: events recorded
  at the same moment share a transaction and its fsync). Baselines: raw ``sqlite3``
  inserts of the same payload sizes, one WAL transaction per row, same pragmas; and the
  disk's own fsync latency (p50 of a few hundred fsyncs of a small write next to the
  database). Events per fsync = events per commit (counted by the agent) / fsyncs per
  commit (counted with ``strace`` on a short run, when strace is installed). CPU time per
  one-till event (``record_cpu_ms_per_event``: this process, user + system, the workload's
  own share included) moves far less with other work on the machine than events/s does.
* **replay** - an agent that recorded a backlog while offline connects to a real mosquitto
  with a real ingest worker (a process of its own); events per second until the end-to-end
  ack covers the whole backlog. Baselines: raw paho QoS 2 publishes of the same payloads to
  the same mosquitto, with no subscriber and into ingest until its ack covers them.
* **memory** - VmRSS of a separate agent process holding a large outbox, idle and then
  with a Publisher connected and replaying (a store back online after a long outage).

Targets (printed next to the figures): record >= 2,000/s, replay >= 2,000/s, RSS <= 60 MB.
The last line printed is one JSON object.

    python bench/agent.py                 # 20,000 events, 20,000 backlog, 500,000 queued
    python bench/agent.py --quick         # smoke run
    python bench/agent.py --profile       # also print the record loop's hot spots
    python bench/agent.py --synchronous NORMAL   # the unsafe mode, for comparison
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import math
import os
import pstats
import random
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import date, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_mqtt.agent import StoreAgent  # noqa: E402
from edge_mqtt.catalogue import SKUS  # noqa: E402
from lakehouse.contract import UNALLOCATED_LOT, encode_event, topic  # noqa: E402
from lakehouse.movements import movements  # noqa: E402
from lakehouse.mqtt import BrokerAddress, make_client  # noqa: E402

TARGET_RECORD_PER_S = 2000.0
TARGET_REPLAY_PER_S = 2000.0
TARGET_RSS_MB = 60.0
REGION = "east"


def log(msg: str) -> None:
    print(f"bench: {msg}", flush=True)


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def vm_kb(pid: int, field: str) -> int:
    """A /proc/<pid>/status figure in kB (VmRSS: resident now, VmHWM: peak resident)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def poisson(rng: random.Random, mean: float) -> int:
    """Knuth's method: basket lines are small, so no need for anything cleverer."""
    limit, product, count = math.exp(-mean), rng.random(), 0
    while product > limit:
        count += 1
        product *= rng.random()
    return count


# --- the workload -----------------------------------------------------------------------

class Mix:
    """One store's trading, compressed: mostly sales, each drawn FEFO over the SKU's lots.

    Stock is replenished a case at a time whenever a SKU falls below three cases, so
    every SKU keeps several lots of different expiry and sales regularly straddle two
    of them. Around the sales: write-offs, count corrections, transfers both ways,
    price changes and, rarely, a full count. A small mirror of the stock (folded from
    the events the agent returns) picks lots to write off without querying SQLite, so
    the loop times the agent and not the workload.
    """

    SALE, WASTE, ADJUST, XFER_OUT, XFER_IN, PRICE, COUNT = (
        0.86, 0.89, 0.905, 0.93, 0.955, 0.96, 0.9602)

    def __init__(self, agent: StoreAgent, seed: int = 7) -> None:
        self.agent = agent
        self.rng = random.Random(seed)
        self.skus = list(SKUS.values())
        self.weights = [s.typical_daily_units for s in self.skus]
        self.lots: dict[str, dict[str, list[Any]]] = {s.sku: {} for s in self.skus}
        self.received: Counter[str] = Counter()
        self.by_type: Counter[str] = Counter()
        self.lots_per_sale: Counter[int] = Counter()
        self.pending: list[str] = []
        self.n = 0
        self.day0 = date(2026, 6, 1)

    # mirror -------------------------------------------------------------------------

    def _add(self, sku: str, lot: str, expires_on: str | None, delta: int) -> None:
        lots = self.lots[sku]
        entry = lots.setdefault(lot, [expires_on, 0])
        entry[1] += delta
        if entry[1] == 0:
            del lots[lot]

    def _fold(self, ev: dict[str, Any]) -> None:
        p, et = ev["payload"], ev["event_type"]
        self.by_type[et] += 1
        if et == "counted":
            for sku in self.lots:
                self.lots[sku] = {}
            for item in p["items"]:
                self._add(item["sku"], item["lot"], item["expires_on"], item["quantity"])
        else:
            for move in movements(ev):
                self._add(*move)
            if et == "sold":
                self.lots_per_sale[len(p["lots"])] += 1

    def _on_hand(self, sku: str) -> int:
        return sum(q for lot, (_e, q) in self.lots[sku].items() if lot != UNALLOCATED_LOT)

    def _real_lots(self, sku: str) -> list[tuple[str, str, int]]:
        return sorted((e, lot, q) for lot, (e, q) in self.lots[sku].items()
                      if q > 0 and lot != UNALLOCATED_LOT)

    def _next(self) -> int:
        self.n += 1
        return self.n

    # events -------------------------------------------------------------------------

    def _receive(self, sku: str) -> dict[str, Any]:
        item = SKUS[sku]
        self.received[sku] += 1
        expiry = self.day0 + timedelta(days=item.shelf_life_days + self.received[sku] // 4)
        return self.agent.receive(sku, item.case_size, lot=f"L{self._next()}",
                                  expires_on=expiry.isoformat(),
                                  supplier_ref=f"PO-{self.n // 50}",
                                  unit_cost=item.unit_cost)

    def stock_up(self) -> int:
        for item in self.skus:
            for _ in range(4):
                self._fold(self._receive(item.sku))
        return 4 * len(self.skus)

    def step(self) -> dict[str, Any]:
        """Record one event and return it."""
        if self.pending:
            ev = self._receive(self.pending.pop())
            self._fold(ev)
            return ev
        rng = self.rng
        item = rng.choices(self.skus, self.weights)[0]
        sku, r = item.sku, rng.random()
        ev: dict[str, Any] | None = None
        if r >= self.SALE:
            lots = self._real_lots(sku)
            if r < self.WASTE and lots:
                _e, lot, q = lots[0]
                ev = self.agent.waste(sku, min(q, 1 + poisson(rng, 1.0)), lot=lot,
                                      reason_code=rng.choice(("expired", "damaged")),
                                      disposal_method="compost")
            elif r < self.ADJUST and lots:
                _e, lot, q = rng.choice(lots)
                ev = self.agent.adjust(sku, lot=lot, counted_quantity=max(0, q - rng.randint(0, 2)))
            elif r < self.XFER_OUT:
                ev = self.agent.transfer_out(sku, rng.randint(2, 6), destination="EAST-S002",
                                             transfer_id=f"TR{self._next()}",
                                             expected_transit_hours=2.0)
            elif r < self.XFER_IN:
                expiry = self.day0 + timedelta(days=item.shelf_life_days - 1)
                qty = rng.randint(2, item.case_size)
                ev = self.agent.transfer_in(
                    sku, qty, source="WH-EAST-1", transfer_id=f"TR{self._next()}",
                    lots=[{"lot": f"W{self.n}", "expires_on": expiry.isoformat(),
                           "quantity": qty}],
                    causation_id=f"WH-EAST-1:{self.n}")
            elif r < self.PRICE:
                ev = self.agent.update_item(sku, price=round(item.unit_price
                                                             * rng.uniform(0.7, 1.0), 2))
            elif r < self.COUNT:
                items = [{"sku": s, "lot": lot, "expires_on": e, "quantity": q}
                         for s, lots_ in self.lots.items() for lot, (e, q) in lots_.items()
                         if q >= 0]
                ev = self.agent.count(items)
        if ev is None:
            # A basket line: mostly one or two units, now and then a multi-buy.
            qty = 1 + poisson(rng, 0.35) if rng.random() > 0.08 else rng.randint(4, 12)
            ev = self.agent.sell(sku, qty, unit_price=item.unit_price,
                                 transaction_ref=f"T{self._next()}")
        self._fold(ev)
        if ev["event_type"] in ("sold", "transfer_out", "wasted") and (
                self._on_hand(sku) < 3 * item.case_size and sku not in self.pending):
            self.pending.append(sku)
        return ev


def record(mix: Mix, n: int, label: str, every_s: float = 5.0,
           latencies: bool = True) -> tuple[float, list[float], float]:
    """Record ``n`` events; returns (seconds, per-event latencies in ms, CPU seconds).

    CPU time (this process, all threads) is less skewed by other work on the machine than
    wall time: it says what one event costs the agent (and the workload) besides the fsync.

    The memory phase passes ``latencies=False``: half a million floats would add some
    16 MB of the benchmark's own to the RSS it measures.
    """
    lat: list[float] = []
    cpu0 = time.process_time()
    t0 = last = time.perf_counter()
    for i in range(n):
        a = time.perf_counter()
        mix.step()
        b = time.perf_counter()
        if latencies:
            lat.append((b - a) * 1000)
        if b - last >= every_s:
            last = b
            log(f"{label}: {i + 1}/{n} events, {(i + 1) / (b - t0):.0f}/s")
    return time.perf_counter() - t0, lat, time.process_time() - cpu0


# --- phase 1: record, and raw SQLite ------------------------------------------------------

def fsync_p50_ms(folder: Path, rounds: int = 300) -> float:
    """Median time of write(64 B) + fsync on the filesystem that holds the database."""
    path = folder / "fsync.probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    times = []
    try:
        for _ in range(rounds):
            os.write(fd, b"x" * 64)
            t0 = time.perf_counter()
            os.fsync(fd)
            times.append((time.perf_counter() - t0) * 1000)
    finally:
        os.close(fd)
        path.unlink()
    return round(pct(times, 0.5) or 0, 3)


def fsyncs_per_commit(work: Path, synchronous: str, n: int = 300) -> float | None:
    """fsync + fdatasync calls per one-event commit, counted by strace in a child that
    records ``n`` events minus one that records none (opening costs its own)."""
    strace = shutil.which("strace")
    if strace is None:
        return None
    counts = []
    for k in (0, n):
        out = work / f"strace-{k}.txt"
        db = work / f"strace-{k}.sqlite"
        subprocess.run([strace, "-f", "-c", "-o", str(out), "-e", "trace=fsync,fdatasync",
                        sys.executable, str(Path(__file__).resolve()), "--child-record",
                        str(db), "--events", str(k), "--synchronous", synchronous],
                       check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        calls = 0
        for line in out.read_text().splitlines():
            parts = line.split()
            if parts and parts[-1] in ("fsync", "fdatasync"):
                calls += int(parts[3])  # % time, seconds, usecs/call, calls
        counts.append(calls)
    return round((counts[1] - counts[0]) / n, 3)


def child_record(db: Path, n: int, synchronous: str) -> None:
    """Child process: record ``n`` events one at a time (for counting fsyncs)."""
    agent = StoreAgent("BENCH-FSYNC", REGION, db, synchronous=synchronous)  # type: ignore[arg-type]
    mix = Mix(agent, seed=5)
    mix.stock_up()
    record(mix, n, "fsync count", latencies=False)
    agent.close()


def phase_record_tills(work: Path, n: int, tills: int, synchronous: str) -> dict[str, Any]:
    """``tills`` threads recording at once (as HTTP requests do), each its own mix over
    its own share of the SKUs; group commit lets events that meet share one fsync."""
    agent = StoreAgent("BENCH-TILLS", REGION, work / "tills.sqlite",
                       synchronous=synchronous)  # type: ignore[arg-type]
    mixes = []
    for t in range(tills):
        mix = Mix(agent, seed=100 + t)
        # No full counts here: one replaces every till's stock at once, and the other
        # tills' mirrors (which pick lots to waste and adjust) would go stale.
        mix.COUNT = mix.PRICE
        mix.skus = mix.skus[t::tills]
        mix.weights = [s.typical_daily_units for s in mix.skus]
        mix.stock_up()
        mixes.append(mix)
    commits0, events0 = agent.commit_stats
    each = n // tills
    log(f"record: {each * tills} events from {tills} tills at once (synchronous={synchronous})")
    threads = [threading.Thread(target=record, args=(m, each, f"till {i}", 60.0, False))
               for i, m in enumerate(mixes)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    secs = time.perf_counter() - t0
    commits, events = agent.commit_stats
    agent.close()
    return {"record_tills_per_s": round(each * tills / secs, 1), "record_tills": tills,
            "record_tills_events_per_commit": round((events - events0)
                                                    / max(1, commits - commits0), 2)}


def phase_record(work: Path, n: int, profile: bool, synchronous: str) -> dict[str, Any]:
    agent = StoreAgent("BENCH-REC", REGION, work / "record.sqlite",
                       synchronous=synchronous)  # type: ignore[arg-type]
    mix = Mix(agent, seed=11)
    mix.stock_up()
    mix.by_type.clear()
    commits0, events0 = agent.commit_stats
    log(f"record: {n} events through StoreAgent (synchronous={synchronous})")
    prof = cProfile.Profile() if profile else None
    if prof:
        prof.enable()
    secs, lat, cpu = record(mix, n, "record")
    if prof:
        prof.disable()
    commits, events = agent.commit_stats
    sizes = [r[0] for r in agent.db.conn.execute(
        "SELECT length(body) FROM outbox ORDER BY seq DESC LIMIT ?", (n,))]
    bodies = [r[0] for r in agent.db.conn.execute(
        "SELECT body FROM outbox ORDER BY seq DESC LIMIT ?", (n,))]
    multi = sum(v for k, v in mix.lots_per_sale.items() if k > 1)
    sales = sum(mix.lots_per_sale.values())
    lots_held = [len(v) for v in mix.lots.values()]
    agent.close()
    out = {
        "record_per_s": round(n / secs, 1),
        "record_p50_ms": round(pct(lat, 0.5) or 0, 3),
        "record_p99_ms": round(pct(lat, 0.99) or 0, 3),
        "record_cpu_ms_per_event": round(cpu * 1000 / n, 3),
        "record_events": n,
        "record_events_per_commit": round((events - events0) / max(1, commits - commits0), 2),
        "record_mix": dict(mix.by_type.most_common()),
        "sales_over_several_lots_share": round(multi / sales, 3) if sales else None,
        "lots_per_sku_mean": round(sum(lots_held) / len(lots_held), 1),
        "body_bytes_mean": round(sum(sizes) / len(sizes), 1),
    }
    if prof:
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(30)
        print(buf.getvalue(), flush=True)
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(20)
        print(buf.getvalue(), flush=True)
    out["_bodies"] = bodies
    return out


def phase_sqlite_raw(work: Path, bodies: list[bytes], synchronous: str) -> float:
    """What SQLite alone does: one WAL transaction per row, same bodies, same pragmas."""
    conn = sqlite3.connect(work / "raw.sqlite", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("CREATE TABLE outbox (seq INTEGER PRIMARY KEY, body BLOB NOT NULL)")
    t0 = time.perf_counter()
    for seq, body in enumerate(bodies, 1):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO outbox(seq, body) VALUES (?, ?)", (seq, body))
        conn.execute("COMMIT")
    secs = time.perf_counter() - t0
    conn.close()
    return round(len(bodies) / secs, 1)


# --- phase 2: replay, and raw paho --------------------------------------------------------

def phase_replay(work: Path, port: int, n: int, window: int, inflight: int,
                 synchronous: str) -> dict[str, Any]:
    from edge_mqtt.publisher import Publisher, PublisherConfig

    agent = StoreAgent("BENCH-REPLAY", REGION, work / "replay.sqlite",
                       synchronous=synchronous)  # type: ignore[arg-type]
    mix = Mix(agent, seed=23)
    n_total = mix.stock_up() + n
    log(f"replay: recording a backlog of {n} events offline")
    record(mix, n, "replay backlog")
    target = agent.last_seq
    pub = Publisher(agent, PublisherConfig(port=port, window=window, max_inflight=inflight))
    log(f"replay: connecting with {target} events queued (window {window}, "
        f"max_inflight {inflight})")
    t0 = time.perf_counter()
    pub.start()
    connected_s = None
    last = t0
    deadline = t0 + max(120.0, n / 200)
    while pub.acked_seq < target:
        now = time.perf_counter()
        if connected_s is None and agent.online:
            connected_s = now - t0
        if now > deadline:
            raise SystemExit(f"replay: ack stuck at {pub.acked_seq} of {target}")
        if now - last >= 2:
            last = now
            log(f"replay: acked {pub.acked_seq}/{target}, "
                f"{pub.acked_seq / (now - t0):.0f}/s")
        time.sleep(0.002)
    secs = time.perf_counter() - t0
    pub.stop()
    agent.close()
    return {"replay_per_s": round(target / secs, 1), "replay_events": target,
            "replay_s": round(secs, 2), "replay_connect_s": round(connected_s or 0, 3),
            "replay_backlog_recorded": n_total, "replay_window": window,
            "replay_max_inflight": inflight}


def renumber(event: dict[str, Any], loc: str, seq: int) -> bytes:
    """A recorded event as if ``loc`` had recorded it as ``seq``: same size, still valid."""
    clock = {k: v for k, v in event["clock"].items() if k != event["location_id"]}
    clock[loc] = seq
    return encode_event({**event, "location_id": loc, "seq": seq,
                         "event_id": f"{loc}:{seq}", "clock": clock})


def phase_paho_raw(port: int, bodies: list[bytes], inflight: int,
                   to: str = "bench/raw/events", ack_topic: str | None = None) -> float:
    """The ceiling: one paho client publishing QoS 2 as fast as mosquitto completes them.

    With ``ack_topic`` the clock stops when ingest's end-to-end ack covers the last seq,
    as the replay's does.
    """

    done = threading.Event()
    count = [0]

    def on_publish(*_args: Any) -> None:
        count[0] += 1
        if count[0] == len(bodies):
            done.set()

    connected = threading.Event()
    acked = [0]

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        acked[0] = max(acked[0], int(json.loads(msg.payload)["acked_seq"]))

    def on_connect(client: Any, *_args: Any) -> None:
        if ack_topic:
            client.subscribe(ack_topic, qos=1)
        connected.set()

    c = make_client(BrokerAddress("127.0.0.1", port), client_id=f"bench-raw-{inflight}")
    c.max_inflight_messages_set(inflight)
    c.max_queued_messages_set(0)
    c.on_publish = on_publish
    c.on_connect = on_connect
    c.on_message = on_message
    c.connect("127.0.0.1", port)
    c.loop_start()
    if not connected.wait(10):
        raise SystemExit("paho baseline: could not connect")
    t0 = time.perf_counter()
    for body in bodies:
        c.publish(to, body, qos=2)
    if not done.wait(max(60.0, len(bodies) / 100)):
        raise SystemExit(f"paho baseline: only {count[0]} of {len(bodies)} completed")
    deadline = time.perf_counter() + 60
    while ack_topic and acked[0] < len(bodies):
        if time.perf_counter() > deadline:
            raise SystemExit(f"paho baseline: ingest acked {acked[0]} of {len(bodies)}")
        time.sleep(0.002)
    secs = time.perf_counter() - t0
    c.disconnect()
    c.loop_stop()
    return round(len(bodies) / secs, 1)


# --- phase 3: memory of a separate agent process with a full outbox ------------------------

def child_hold(db: Path, queued: int, port: int, fill: str) -> None:
    """Child process: fill the outbox, go idle, then connect a Publisher on request.

    Talks to the parent by lines: progress and READY/CONNECTED on stdout, PUBLISH and
    QUIT on stdin, so the parent reads /proc while nothing else runs here.
    """
    from edge_mqtt.publisher import Publisher, PublisherConfig

    agent = StoreAgent("BENCH-RSS", REGION, db)
    have = agent.last_seq - agent.acked_seq
    if fill != "none" and have < queued:
        mix = Mix(agent, seed=31)
        if agent.last_seq == 0:
            mix.stock_up()
        todo = queued - (agent.last_seq - agent.acked_seq)
        real = todo if fill == "record" else min(todo, 5000)
        record(mix, real, "queue", every_s=10.0, latencies=False)
        if todo > real:
            bulk_copy(agent, todo - real)
    print(f"READY {agent.last_seq - agent.acked_seq}", flush=True)
    if sys.stdin.readline().strip() != "PUBLISH":
        return
    pub = Publisher(agent, PublisherConfig(port=port))
    pub.start()
    deadline = time.monotonic() + 10
    while not agent.online and time.monotonic() < deadline:
        time.sleep(0.01)
    print("CONNECTED" if agent.online else "OFFLINE", flush=True)
    sys.stdin.readline()
    print(f"SENT {pub.sent} ACKED {pub.acked_seq}", flush=True)
    pub.stop()
    agent.close()


def bulk_copy(agent: StoreAgent, n: int, chunk: int = 20_000) -> None:
    """Repeat the outbox's real events under new seqs, many per transaction.

    Same bodies and sizes as recorded events (seq, event_id and clock renumbered), at a
    rate that fills half a million in seconds rather than minutes.
    """
    db = agent.db
    loc = agent.location_id
    samples = [json.loads(b) for (b,) in db.conn.execute(
        "SELECT body FROM outbox ORDER BY seq DESC LIMIT 1000")]
    seq = agent.last_seq
    t0 = time.perf_counter()
    done = 0
    while done < n:
        k = min(chunk, n - done)
        with db.transaction():
            for i in range(k):
                seq += 1
                db.append_outbox(seq, renumber(samples[(done + i) % len(samples)], loc, seq))
            db.set_meta("next_seq", seq + 1)
            db.set_meta("clock", {**agent.db.get_meta("clock", {}), loc: seq})
        done += k
        log(f"queue: bulk {done}/{n} ({done / (time.perf_counter() - t0):.0f}/s)")


def child_ingest(lake: Path, port: int) -> None:
    """Child process: the region's ingest worker, as in production a process of its own
    (sharing the agent's GIL would slow both and skew the replay figure).

    Prints UP once subscribed, a STATS line per STATS request, stops at end of input.
    """
    from ingest.worker import IngestConfig, IngestWorker

    worker = IngestWorker(IngestConfig(region=REGION, port=port, lakehouse=str(lake)))
    worker.start()
    print("UP" if worker.connected.is_set() else "DOWN", flush=True)
    for _line in sys.stdin:
        st = worker.stats
        print("STATS " + json.dumps({"landed": st.landed, "batches": st.batches,
                                     "duplicates": st.duplicates,
                                     "dead_letters": st.dead_letters}), flush=True)
    worker.stop()


class Child:
    """The parent's side of one child process of this script, talking by lines."""

    def __init__(self, *args: str) -> None:
        cmd = [sys.executable, str(Path(__file__).resolve()), *args]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, bufsize=1, cwd=ROOT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def expect(self, word: str) -> str:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip()
            if line.startswith(word):
                return line
            print(f"  child: {line}", flush=True)
        raise SystemExit(f"agent process exited ({self.proc.wait()}) before {word}")

    def say(self, word: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(word + "\n")
        self.proc.stdin.flush()

    def rss_mb(self) -> float:
        return round(vm_kb(self.proc.pid, "VmRSS") / 1024, 1)

    def hwm_mb(self) -> float:
        return round(vm_kb(self.proc.pid, "VmHWM") / 1024, 1)

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                self.proc.wait(10)


def measure_child(db: Path, queued: int, port: int, fill: str, label: str,
                  idle_s: float, publish_s: float) -> dict[str, Any]:
    child = Child("--child-hold", str(db), "--queued", str(queued), "--port", str(port),
                  "--fill", fill)
    try:
        t0 = time.perf_counter()
        ready = child.expect("READY")
        fill_s = time.perf_counter() - t0
        held = int(ready.split()[1])
        peak = child.hwm_mb()
        time.sleep(idle_s)
        idle = child.rss_mb()
        log(f"{label}: {held} events queued (filled in {fill_s:.0f} s), idle RSS "
            f"{idle} MB, peak so far {peak} MB")
        child.say("PUBLISH")
        if child.expect("CONNECTED").strip() != "CONNECTED":
            raise SystemExit(f"{label}: publisher did not connect")
        samples = []
        t1 = time.perf_counter()
        while time.perf_counter() - t1 < publish_s:
            time.sleep(0.25)
            samples.append(child.rss_mb())
        child.say("QUIT")
        sent = child.expect("SENT")
        log(f"{label}: with the Publisher connected for {publish_s:.0f} s: RSS max "
            f"{max(samples)} MB, last {samples[-1]} MB ({sent.lower()})")
        return {"queued": held, "fill_s": round(fill_s, 1), "idle_mb": idle,
                "publishing_max_mb": max(samples), "peak_while_filling_mb": peak}
    finally:
        child.close()


# --- main ---------------------------------------------------------------------------------

def verdict(value: float, target: float, higher_is_better: bool = True) -> str:
    ok = value >= target if higher_is_better else value <= target
    sign = ">=" if higher_is_better else "<="
    return f"target {sign} {target:,.0f}: {'met' if ok else 'MISSED'}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=20_000, help="events in the record phase")
    ap.add_argument("--backlog", type=int, default=20_000, help="offline backlog to replay")
    ap.add_argument("--queued", type=int, default=500_000,
                    help="events held in the outbox of the process whose RSS is measured")
    ap.add_argument("--fill", choices=("auto", "record", "bulk", "none"), default="auto",
                    help="how the memory phase fills its outbox: every event recorded "
                         "through the agent, or 5,000 recorded and the rest copied in bulk "
                         "(auto: record when the measured rate does it in under 2 minutes; "
                         "none: measure what --workdir's database already holds)")
    ap.add_argument("--window", type=int, default=None,
                    help="publisher window during replay (default: PublisherConfig's)")
    ap.add_argument("--inflight", type=int, default=None,
                    help="publisher max_inflight during replay (default: PublisherConfig's)")
    ap.add_argument("--synchronous", choices=("NORMAL", "FULL"), default="FULL",
                    help="SQLite synchronous for every agent here (the agent's default: FULL)")
    ap.add_argument("--tills", type=int, default=4,
                    help="threads recording at once in the group-commit phase")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 2,000 events, 2,000 backlog, 20,000 queued")
    ap.add_argument("--profile", action="store_true", help="cProfile the record loop")
    ap.add_argument("--workdir", default=None, help="keep files here (default: temp dir)")
    ap.add_argument("--child-hold", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-ingest", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-record", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child_hold:
        child_hold(Path(args.child_hold), args.queued, args.port, args.fill)
        return
    if args.child_ingest:
        child_ingest(Path(args.child_ingest), args.port)
        return
    if args.child_record:
        child_record(Path(args.child_record), args.events, args.synchronous)
        return
    if args.quick:
        args.events, args.backlog, args.queued = 2000, 2000, 20_000

    from edge_mqtt.publisher import PublisherConfig
    from ingest.brokers import start_brokers, stop_brokers

    defaults = PublisherConfig()
    window = args.window or defaults.window
    inflight = args.inflight or defaults.max_inflight
    work = Path(args.workdir or tempfile.mkdtemp(prefix="shelflife-agent-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    load0 = round(os.getloadavg()[0], 2)
    # Other work on the machine skews every figure here: the load average says how much.
    log(f"work dir {work}; {os.cpu_count()} cores, load average {load0}; "
        f"SQLite {sqlite3.sqlite_version}")
    brokers: list[Any] = []
    worker = None
    try:
        rec = phase_record(work, args.events, args.profile, args.synchronous)
        bodies = rec.pop("_bodies")
        met = verdict(rec["record_per_s"], TARGET_RECORD_PER_S)
        log(f"record: {rec['record_per_s']:,.0f} events/s ({met}), "
            f"p50 {rec['record_p50_ms']} ms, p99 {rec['record_p99_ms']} ms, "
            f"CPU {rec['record_cpu_ms_per_event']} ms per event; "
            f"mix {rec['record_mix']}; {rec['sales_over_several_lots_share']:.0%} of sales "
            f"drew from more than one lot; bodies {rec['body_bytes_mean']:.0f} B mean")
        rec.update(phase_record_tills(work, args.events, args.tills, args.synchronous))
        log(f"record: {rec['record_tills_per_s']:,.0f} events/s from {args.tills} tills at "
            f"once ({verdict(rec['record_tills_per_s'], TARGET_RECORD_PER_S)}), "
            f"{rec['record_tills_events_per_commit']} events per commit")
        rec["sqlite_raw_per_s"] = phase_sqlite_raw(work, bodies, args.synchronous)
        log(f"baseline: raw sqlite3, one WAL transaction per row, same bodies, "
            f"synchronous={args.synchronous}: {rec['sqlite_raw_per_s']:,.0f} rows/s")
        rec["fsync_p50_ms"] = fsync_p50_ms(work)
        rec["fsyncs_per_commit"] = fsyncs_per_commit(work, args.synchronous)
        per = rec["fsyncs_per_commit"]
        rec["commits_per_fsync"] = None if not per else {
            "one_till": round(rec["record_events_per_commit"] / per, 2),
            "tills": round(rec["record_tills_events_per_commit"] / per, 2)}
        log(f"baseline: disk fsync p50 {rec['fsync_p50_ms']} ms "
            f"(at most {1000 / max(rec['fsync_p50_ms'], 1e-3):,.0f} commits/s); "
            f"{per} fsyncs per one-event commit (strace); recorded events per fsync: "
            f"{rec['commits_per_fsync']}")

        port = free_port()
        brokers = start_brokers(work / "brokers", [REGION],
                                ports={REGION: port})
        worker = Child("--child-ingest", str(work / "lakehouse"), "--port", str(port))
        if worker.expect("UP") != "UP":
            raise SystemExit("ingest worker did not connect to mosquitto")
        log(f"mosquitto on 127.0.0.1:{port} with an ingest worker (its own process)")
        rep = phase_replay(work, port, args.backlog, window, inflight, args.synchronous)
        log(f"replay: {rep['replay_per_s']:,.0f} events/s end to end "
            f"({verdict(rep['replay_per_s'], TARGET_REPLAY_PER_S)}), "
            f"{rep['replay_events']} events in {rep['replay_s']} s")
        worker.say("STATS")
        st = json.loads(worker.expect("STATS").split(" ", 1)[1])
        rep["replay_ingest_batches"] = st["batches"]
        log(f"replay: ingest landed {st['landed']} in {st['batches']} batches "
            f"({st['landed'] / max(1, st['batches']):.0f} per batch), "
            f"{st['duplicates']} duplicates")
        raw_bodies = (bodies * (1 + args.backlog // max(1, len(bodies))))[:args.backlog]
        rep["paho_qos2_per_s"] = phase_paho_raw(port, raw_bodies, inflight)
        rep["paho_qos2_inflight1000_per_s"] = phase_paho_raw(port, raw_bodies, 1000)
        # Through ingest too: what replay would do if the agent added nothing of its own.
        events = [json.loads(b) for b in bodies]
        raw_loc = "BENCH-RAW"
        raw_events = [renumber(events[i % len(events)], raw_loc, i + 1)
                      for i in range(args.backlog)]
        rep["paho_qos2_into_ingest_per_s"] = phase_paho_raw(
            port, raw_events, inflight, to=topic(REGION, raw_loc, "events"),
            ack_topic=topic(REGION, raw_loc, "ack"))
        log(f"baseline: raw paho QoS 2 to the same mosquitto, same bodies: "
            f"{rep['paho_qos2_per_s']:,.0f}/s with max_inflight {inflight}, "
            f"{rep['paho_qos2_inflight1000_per_s']:,.0f}/s with 1000 (no subscriber); "
            f"{rep['paho_qos2_into_ingest_per_s']:,.0f}/s with max_inflight {inflight} "
            f"until ingest's ack covers them all")

        fill = args.fill
        if fill == "auto":
            fill = "record" if args.queued / rec["record_per_s"] < 120 else "bulk"
        log(f"memory: a separate agent process queues {args.queued} events ({fill})")
        db = work / "rss.sqlite"
        first = measure_child(db, args.queued, port, fill, "memory", idle_s=3.0,
                              publish_s=10.0)
        log("memory: a new agent process over what is left of that outbox")
        again = measure_child(db, args.queued, port, "none", "memory (restarted)",
                              idle_s=3.0, publish_s=10.0)
        rss = max(first["idle_mb"], first["publishing_max_mb"],
                  again["idle_mb"], again["publishing_max_mb"])
        log(f"memory: worst RSS {rss} MB ({verdict(rss, TARGET_RSS_MB, False)})")
    finally:
        if worker is not None:
            worker.close()
        stop_brokers(brokers)

    result = {
        **rec, **rep,
        "rss_mb_500k": rss,
        "rss_mb_500k_idle": first["idle_mb"],
        "rss_mb_500k_publishing": first["publishing_max_mb"],
        "rss_mb_500k_peak_while_filling": first["peak_while_filling_mb"],
        "rss_mb_500k_restarted_idle": again["idle_mb"],
        "rss_mb_500k_restarted_publishing": again["publishing_max_mb"],
        "rss_restarted_queued": again["queued"],
        "rss_queued": first["queued"], "rss_fill": fill, "rss_fill_s": first["fill_s"],
        "targets": {"record_per_s": TARGET_RECORD_PER_S, "replay_per_s": TARGET_REPLAY_PER_S,
                    "rss_mb_500k": TARGET_RSS_MB},
        "met": {"record": rec["record_per_s"] >= TARGET_RECORD_PER_S,
                "record_tills": rec["record_tills_per_s"] >= TARGET_RECORD_PER_S,
                "replay": rep["replay_per_s"] >= TARGET_REPLAY_PER_S,
                "rss": rss <= TARGET_RSS_MB},
        "synchronous": args.synchronous, "cores": os.cpu_count(),
        "loadavg_1m": {"start": load0, "end": round(os.getloadavg()[0], 2)},
        "total_s": round(time.perf_counter() - t_start, 1),
    }
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
