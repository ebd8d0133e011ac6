"""Faults: SIGKILL every kind of process, cut a region's link, wipe a broker, and send
thousands of bad payloads, while the whole network trades; then check nothing was lost.

Everything is real and a process of its own: one mosquitto per region (as
``shelflife broker`` starts it, ``--secure`` with per-store logins unless ``--insecure``),
one ``shelflife ingest`` per region, ``shelflife stream`` (Python and its JVM in one
process group), and the stores as ``python -m edge_mqtt.agent_process`` processes hosting
several stores each, every store with its own SQLite file and login. A supervisor loop
restarts whatever exits. Meanwhile:

1. quiet: the baseline event -> gold latency (``others_p99_before_s``);
2. faults on one region at a time: SIGKILL of a store-agent process, of a region's
   ingest, of a region's mosquitto (persistence on, ``autosave_interval 5``, so kills land
   inside its autosave window); once, a broker's persistence is wiped (stopped, its
   ``mosquitto.db`` deleted, started); and ``--partition`` stores of east are cut off
   from their broker by a TCP proxy (``bench/netproxy.py``: delay, then reset
   connections) for an hour of simulated time, recording offline, replaying after.
   Meanwhile the other regions' latency is measured (``others_p99_s``): a region counts
   as under fault from the kill until its backlog is in gold (``Bench.fault_windows``;
   ``recovery_s`` says how long that took per kind), and the events of a region that is
   still catching up on its own fault are not counted as another region's;
3. SIGKILL of the stream's whole process group at random moments, each followed by a
   restart: every other kill lands 2-12 s after the restart (start-up or state
   recovery), the others a few seconds after gold moves again.

Bad payloads are sent throughout (``bench/badpayloads.py``): most by "rogue" stores under
their own valid login on their own events topic, so they reach ingest and the stream;
the rest are forgeries (another store's events, acks beyond its last seq, transfer orders)
from a rogue store or a stranger. Each is traced to its fate: refused by the broker
(connect refused, not authorised, dropped for size) or dead-lettered (read back from
silver ``dead_letters``); anything else is reported as unhandled.

The oracle is what the agents answered: each agent process appends every recorded event
to a log after its SQLite commit (``--record-log``). At the end the stores stop
recording, everything drains, and gold ``stock_cohorts`` is compared with the fold of
those events; ``lost`` = recorded events missing from silver ``events``, ``duplicated`` =
silver rows beyond one per ``(location_id, seq)``.

Simulated time: event timestamps run ``--accel`` times faster than real time (back-dated
so they never pass the present), so a partition of ``3600 / accel`` real seconds is an
hour of trading.

    python bench/faults.py --quick       # about 6-8 minutes
    python bench/faults.py               # 300 stores, >= 170 kills, 10,000+ bad payloads

Last line: one JSON object. Targets: kills >= 170, bad_payloads >= 10,000, lost = 0,
duplicated = 0, stream_exits = 0, forged_accepted = 0, gold_equals_oracle, others_p99_s
<= 2.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import deltalake

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.badpayloads import Bad, RogueClient, key_of, plan, send_anonymous  # noqa: E402
from bench.common import free_port, pct  # noqa: E402
from bench.netproxy import FaultProxy  # noqa: E402
from ingest.brokers import credentials_path, start_brokers  # noqa: E402
from lakehouse import oracle  # noqa: E402
from lakehouse.catalogue import DEAD_LETTERS, EVENTS, STOCK_COHORTS, STOCK_LEVELS, Table  # noqa: E402
from lakehouse.contract import REGIONS  # noqa: E402
from lakehouse.credentials import Credentials  # noqa: E402

MODES: dict[str, dict[str, Any]] = {
    "quick": {"stores": 30, "group": 5, "rate": 1.0, "accel": 120.0, "partition": 5,
              "kills": {"agent": 10, "ingest": 10, "broker": 12, "stream": 3},
              "bad": 1100, "warmup_s": 15.0, "baseline_s": 30.0, "gap_s": (1.5, 4.0),
              "stream_up_s": (5.0, 25.0)},
    "full": {"stores": 300, "group": 10, "rate": 0.3, "accel": 30.0, "partition": 47,
             "kills": {"agent": 52, "ingest": 52, "broker": 54, "stream": 20},
             "bad": 11_000, "warmup_s": 30.0, "baseline_s": 60.0, "gap_s": (2.0, 5.0),
             "stream_up_s": (3.0, 20.0)},
}
AUTOSAVE_S = 5.0  # what ingest.brokers writes: autosave_interval 5
SETTLE_S = {"agent": 10.0, "ingest": 5.0, "broker": 12.0, "wipe": 15.0, "partition": 30.0,
            "stream": 15.0}
"""How long after a component is back its region still counts as under fault (agents
reconnect with up to 10 s of back-off, a replay takes a few seconds)."""


def features() -> dict[str, bool]:
    """Which defences this checkout has: signed acks and orders (another change in
    progress) and per-store logins in the fleet simulator. The bench measures what it
    can observe either way."""
    from dataclasses import fields

    from edge_mqtt.publisher import PublisherConfig
    from edge_mqtt.simulator import FleetConfig

    pub = {f.name for f in fields(PublisherConfig)}
    return {"signed_acks_and_orders": any(k in name for name in pub
                                          for k in ("hmac", "proof", "signing", "secret")),
            "simulator_logins": "credentials" in {f.name for f in fields(FleetConfig)},
            "agent_process_logins": True}


def say(msg: str) -> None:
    print(f"faults: {msg}", flush=True)


# --- processes ----------------------------------------------------------------------------

@dataclass(eq=False)
class Proc:
    """A supervised child: started again whenever it exits, unless it finished."""

    name: str
    kind: str
    """agent, ingest, broker, stream."""
    region: str | None
    launch: Any
    proc: Any = None
    handle: Any = None
    started_at: float = 0.0
    kills: int = 0
    unexpected_exits: int = 0
    done: bool = False
    locations: list[str] = field(default_factory=list)

    def start(self) -> None:
        out = self.launch()
        self.handle = out
        self.proc = getattr(out, "process", out)
        self.started_at = time.time()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def sigkill(self) -> None:
        try:
            if self.kind in ("agent", "ingest", "stream"):
                os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: all of it
            else:
                os.kill(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.kills += 1


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.m = dict(MODES["quick" if args.quick else "full"])
        for key in ("stores", "group", "rate", "accel", "partition", "bad"):
            if getattr(args, key, None) is not None:
                self.m[key] = getattr(args, key)
        self.rng = random.Random(args.seed)
        self.work = Path(args.workdir or tempfile.mkdtemp(prefix="shelflife-faults-"))
        self.lake = self.work / "lakehouse"
        self.brokers_dir = self.work / "brokers"
        self.agents_dir = self.work / "agents"
        self.logs = self.work / "logs"
        for d in (self.lake, self.brokers_dir, self.agents_dir, self.logs):
            d.mkdir(parents=True, exist_ok=True)
        self.secure = not args.insecure
        self.ports = {r: free_port() for r in REGIONS}
        self.health_ports = {r: free_port() for r in REGIONS}
        self.proxy_port = free_port()
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1",
                    "PYSPARK_PYTHON": os.environ.get("PYSPARK_PYTHON", sys.executable),
                    "SHELFLIFE_LAKEHOUSE": str(self.lake)}
        self.stop_file = self.work / "stop-recording"
        self.t0 = time.time()
        # Stores: <REGION>-S001...; east's first ``partition`` stores sit behind the proxy.
        per = self.m["stores"] // len(REGIONS)
        self.stores = {r: [f"{r.upper()}-S{i:03d}" for i in range(1, per + 1)] for r in REGIONS}
        self.rogues = {r: [f"{r.upper()}-ROGUE1", f"{r.upper()}-ROGUE2"] for r in REGIONS}
        self.partitioned = set(self.stores["east"][:self.m["partition"]])
        self.region_of = {loc: r for r, locs in self.stores.items() for loc in locs}
        self.procs: list[Proc] = []
        self.faults: list[dict[str, Any]] = []
        self.kill_log: list[dict[str, Any]] = []
        self.stream_exits = 0
        self.unexpected: Counter[str] = Counter()
        # what the agents recorded (tailing their logs) and what gold shows
        self.recorded: dict[str, int] = defaultdict(int)
        self.rec_time: dict[str, deque[tuple[int, float]]] = defaultdict(deque)
        self.covered: dict[str, list[tuple[int, float]]] = defaultdict(list)
        self.latencies: list[tuple[str, float, float]] = []
        self.lat_lock = threading.Lock()
        self.gold_at: dict[str, int] = {}
        self.gold_version_at = 0.0
        self.tails: dict[Path, int] = {}
        self.stop = threading.Event()
        self.bad: list[Bad] = []
        self.bad_sent = 0
        self.phase = "start"
        self.next_progress = 0.0
        self.proxy: FaultProxy | None = None
        self.sim_origin = 0.0

    # --- components ---------------------------------------------------------------------

    def broker_launch(self, region: str):
        locations = {r: self.stores[r] + self.rogues[r] for r in REGIONS}
        return lambda: start_brokers(self.brokers_dir, [region],
                                     ports={region: self.ports[region]},
                                     secure=self.secure, locations=locations,
                                     timeout=20.0)[0]

    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        out = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        try:
            return subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        finally:
            out.close()

    def cli(self, name: str, *args: str):
        return lambda: self.spawn(name, [sys.executable, "-m", "apps.cli", *args])

    def agent_launch(self, name: str, region: str, locations: list[str], port: int):
        argv = [sys.executable, "-m", "edge_mqtt.agent_process",
                "--db-dir", str(self.agents_dir / "db"), "--locations", ",".join(locations),
                "--region", region, "--port", str(port), "--events", "100000000",
                "--seed", str(self.args.seed), "--rate", str(self.m["rate"]),
                "--stop-file", str(self.stop_file),
                "--record-log", str(self.agents_dir / f"{name}.jsonl"),
                "--status-file", str(self.agents_dir / f"{name}.status.json"),
                "--resend-after-s", "5", "--resend-max-s", "30", "--timeout", "900",
                "--sim-accel", str(self.m["accel"]), "--sim-origin", str(self.sim_origin),
                "--sim-t0", str(self.t0)]
        if self.secure:
            argv += ["--logins", str(self.agents_dir / f"{name}.logins.json")]
        return lambda: self.spawn(name, argv)

    def build(self) -> None:
        for r in REGIONS:
            self.procs.append(Proc(f"broker-{r}", "broker", r, self.broker_launch(r)))
        creds_path = credentials_path(self.brokers_dir)
        ingest_extra = ["--credentials", str(creds_path)] if self.secure else []
        for r in REGIONS:
            self.procs.append(Proc(f"ingest-{r}", "ingest", r, self.cli(
                f"ingest-{r}", "ingest", "--regions", r, "--lakehouse", str(self.lake),
                "--broker-ports", f"{r}={self.ports[r]}", "--metrics-port",
                str(self.health_ports[r]), "--give-up-after-s", "30", *ingest_extra)))
        self.procs.append(Proc("stream", "stream", None, self.cli(
            "stream", "stream", "--lakehouse", str(self.lake), "--metrics-port", "0",
            "--state-every-s", "5")))
        g = self.m["group"]
        for r in REGIONS:
            behind = [s for s in self.stores[r] if s in self.partitioned]
            direct = [s for s in self.stores[r] if s not in self.partitioned]
            for via, locs in (("proxy", behind), ("direct", direct)):
                for i in range(0, len(locs), g):
                    chunk = locs[i:i + g]
                    name = f"agents-{r}-{via}-{i // g:02d}"
                    port = self.proxy_port if via == "proxy" else self.ports[r]
                    p = Proc(name, "agent", r, self.agent_launch(name, r, chunk, port))
                    p.locations = chunk
                    self.procs.append(p)

    def of(self, kind: str, region: str | None = None) -> list[Proc]:
        return [p for p in self.procs if p.kind == kind and (region is None or p.region == region)]

    def write_logins(self) -> None:
        if not self.secure:
            return
        creds = Credentials.open(credentials_path(self.brokers_dir))
        for p in self.of("agent"):
            path = self.agents_dir / f"{p.name}.logins.json"
            path.write_text(json.dumps({loc: creds.credentials_for(loc).password
                                        for loc in p.locations}))
            path.chmod(0o600)

    def supervise(self) -> None:
        """A supervisor's job: whatever exited by itself is counted and started again."""
        for p in self.procs:
            if p.done or p.proc is None or p.proc.poll() is None:
                continue
            rc = p.proc.returncode
            if p.kind == "agent" and rc == 0 and self.stop_file.exists():
                p.done = True
                continue
            p.unexpected_exits += 1
            self.unexpected[p.kind] += 1
            if p.kind == "stream":
                self.stream_exits += 1
            say(f"{p.name} exited by itself (code {rc}); restarting it "
                f"(log {self.logs / (p.name + '.log')})")
            try:
                p.start()
            except Exception as exc:  # noqa: BLE001 - e.g. the port not free yet: next turn
                say(f"{p.name} did not start again: {exc}")

    # --- observing ----------------------------------------------------------------------

    def tail_logs(self) -> None:
        """New lines of the agents' record logs: what was recorded, and when."""
        for path in self.agents_dir.glob("agents-*.jsonl"):
            off = self.tails.get(path, 0)
            try:
                with path.open("rb") as fh:
                    fh.seek(off)
                    data = fh.read()
            except FileNotFoundError:
                continue
            cut = data.rfind(b"\n") + 1
            if not cut:
                continue
            self.tails[path] = off + cut
            for line in data[:cut].splitlines():
                row = json.loads(line)
                e = row["event"]
                loc, seq = e["location_id"], e["seq"]
                self.recorded[loc] = max(self.recorded[loc], seq)
                if row["t"] is not None:
                    self.add_recorded(loc, seq, row["t"])

    def add_recorded(self, loc: str, seq: int, t: float) -> None:
        with self.lat_lock:
            cov = self.covered[loc]
            if cov and cov[-1][0] >= seq:  # gold showed it before the tail read it
                at = next(a for upto, a in cov if upto >= seq)
                self.latencies.append((self.region_of[loc], t, max(0.0, at - t)))
            else:
                self.rec_time[loc].append((seq, t))

    def cover(self, loc: str, upto: int, at: float) -> None:
        with self.lat_lock:
            cov = self.covered[loc]
            if cov and cov[-1][0] >= upto:
                return
            cov.append((upto, at))
            q = self.rec_time[loc]
            while q and q[0][0] <= upto:
                seq, t = q.popleft()
                self.latencies.append((self.region_of[loc], t, max(0.0, at - t)))

    def poll_gold(self) -> None:
        """Every version of gold stock_levels: the first commit showing each location's
        contiguous seq covers every event up to it."""
        path = str(STOCK_LEVELS.path(self.lake))
        seen = -1
        while not self.stop.is_set():
            try:
                dt = deltalake.DeltaTable(path)
                latest = dt.version()
            except Exception:  # noqa: BLE001 - not created yet, or being written
                self.stop.wait(0.5)
                continue
            if latest > seen:
                start = max(seen + 1, latest - 60)
                try:
                    stamps = {h["version"]: h["timestamp"] / 1000.0
                              for h in dt.history(limit=latest - start + 1)}
                except Exception:  # noqa: BLE001
                    stamps = {}
                for v in range(start, latest + 1):
                    try:
                        dt.load_as_version(v)
                        tab = dt.to_pyarrow_table(columns=["location_id", "contiguous_seq"])
                    except Exception:  # noqa: BLE001 - vacuumed
                        continue
                    at = stamps.get(v, time.time())
                    best: dict[str, int] = {}
                    for loc, s in zip(tab["location_id"].to_pylist(),
                                      tab["contiguous_seq"].to_pylist(), strict=True):
                        if s is not None and s > best.get(loc, 0):
                            best[loc] = s
                    for loc, s in best.items():
                        if loc in self.region_of:
                            self.cover(loc, s, at)
                            self.gold_at[loc] = max(self.gold_at.get(loc, 0), s)
                    self.gold_version_at = max(self.gold_version_at, at)
                seen = latest
            self.stop.wait(0.1)

    def agent_state(self) -> tuple[int, int]:
        """(events recorded but not acked, per the agents' status files; events recorded
        but not yet in gold)."""
        unacked = 0
        for path in self.agents_dir.glob("agents-*.status.json"):
            try:
                state = json.loads(path.read_text())["agents"]
            except (OSError, ValueError, KeyError):
                continue
            unacked += sum(max(0, last - acked) for last, acked in state.values())
        not_gold = sum(max(0, s - self.gold_at.get(loc, 0)) for loc, s in self.recorded.items())
        return unacked, not_gold

    def tick(self, seconds: float) -> None:
        """Wait, while supervising, reading the agents' logs and reporting progress."""
        end = time.time() + seconds
        while True:
            self.supervise()
            self.tail_logs()
            now = time.time()
            if now >= self.next_progress:
                self.progress()
                self.next_progress = now + 10.0
            if now >= end:
                return
            time.sleep(min(0.2, end - now))

    def progress(self) -> None:
        kills = Counter()
        for k in self.kill_log:
            kills[k["kind"]] += 1
        unacked, not_gold = self.agent_state()
        outcomes = Counter(b.outcome for b in self.bad[:self.bad_sent])
        say(f"{time.time() - self.t0:6.0f} s [{self.phase}] kills {dict(kills)}; "
            f"recorded {sum(self.recorded.values()):,}, unacked {unacked:,}, "
            f"not in gold {not_gold:,}; bad payloads sent {self.bad_sent:,} "
            f"{dict(outcomes)}; load {os.getloadavg()[0]:.2f}")

    # --- faults -------------------------------------------------------------------------

    def fault(self, kind: str, region: str | None, start: float, end: float) -> None:
        self.faults.append({"kind": kind, "region": region, "start": start, "back": end,
                            "end": end + SETTLE_S[kind]})

    def kill(self, p: Proc) -> None:
        unacked, not_gold = self.agent_state()
        t = time.time()
        since_start = t - p.started_at
        p.sigkill()
        self.kill_log.append({"kind": p.kind, "name": p.name, "at": t,
                              "since_start_s": round(since_start, 2),
                              "unacked": unacked, "not_in_gold": not_gold,
                              "autosave_phase_s": round(since_start % AUTOSAVE_S, 2)
                              if p.kind == "broker" else None})
        p.start()  # a supervisor starts it again at once
        if p.kind == "ingest":
            self.wait_health(p.region)
        self.fault(p.kind, p.region, t, time.time())

    def wait_health(self, region: str, timeout: float = 30.0) -> bool:
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(
                        f"http://127.0.0.1:{self.health_ports[region]}/health", timeout=1):
                    return True
            except OSError:
                self.tick(0.3)
        return False

    def wipe(self, region: str) -> None:
        """Stop a broker cleanly, delete its persistence file, start it again: retained
        acks and queued messages are gone."""
        b = self.of("broker", region)[0]
        t = time.time()
        b.handle.stop()
        b.proc.wait()
        db = self.brokers_dir / region / "mosquitto.db"
        existed = db.exists()
        db.unlink(missing_ok=True)
        b.start()
        self.fault("wipe", region, t, time.time())
        say(f"wiped {region}'s broker persistence ({db}, existed: {existed})")

    def phase_a(self) -> None:
        """Kills of agents, ingest and brokers, one region at a time; the partition and
        the wipe happen in the middle of it."""
        quota = {k: self.m["kills"][k] for k in ("agent", "ingest", "broker")}
        total = sum(quota.values())
        part_at = max(3, total // 5)
        wipe_at = max(part_at + 2, (total * 3) // 5)
        part_s = 3600.0 / self.m["accel"]
        part_end: float | None = None
        part_start = 0.0
        done = 0
        while sum(quota.values()):
            if done == part_at and self.proxy is not None:
                say(f"partition: {len(self.partitioned)} east stores slowed, then cut off "
                    f"for {part_s:.0f} s (an hour of simulated time)")
                self.proxy.delay(0.3)
                self.tick(3.0)
                self.proxy.cut()
                part_start = time.time()
                part_end = part_start + part_s
            if part_end is not None and time.time() >= part_end:
                self.proxy.heal()
                self.fault("partition", "east", part_start, time.time())
                say(f"partition healed after {time.time() - part_start:.0f} s "
                    f"({self.proxy.reset} connections reset meanwhile)")
                part_end = None
            if done == wipe_at:
                self.wipe("west")
            kinds = [k for k, left in quota.items() if left]
            kind = self.rng.choices(kinds, weights=[quota[k] for k in kinds])[0]
            if kind == "broker":
                by = Counter(k["name"] for k in self.kill_log if k["kind"] == "broker")
                target = min(self.of("broker"), key=lambda p: (by[p.name], self.rng.random()))
            elif kind == "ingest":
                target = self.rng.choice(self.of("ingest"))
            else:
                target = self.rng.choice([p for p in self.of("agent") if p.alive()])
            self.kill(target)
            quota[kind] -= 1
            done += 1
            self.tick(self.rng.uniform(*self.m["gap_s"]))
        while part_end is not None and time.time() < part_end:
            self.tick(1.0)
        if part_end is not None:
            self.proxy.heal()
            self.fault("partition", "east", part_start, time.time())
            say("partition healed")

    def phase_b(self) -> None:
        """SIGKILL the stream's process group at random moments; the supervisor restarts
        it. Some kills land during its start-up, the rest while it is running."""
        s = self.of("stream")[0]
        for i in range(self.m["kills"]["stream"]):
            if i % 2 == 1:
                self.tick(self.rng.uniform(2.0, 12.0))  # during start-up or recovery
            else:
                self.wait_stream_up(s.started_at, 240.0)
                self.tick(self.rng.uniform(*self.m["stream_up_s"]))
            since = time.time() - s.started_at
            self.kill(s)
            say(f"stream killed ({i + 1}/{self.m['kills']['stream']}) "
                f"{since:.0f} s after its last start")
        up = self.wait_stream_up(s.started_at, 300.0)
        self.faults[-1]["end"] = up + SETTLE_S["stream"]

    def wait_stream_up(self, since: float, timeout: float) -> float:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.gold_version_at > since + 0.5:
                return self.gold_version_at
            self.tick(0.5)
        say(f"the stream wrote no gold within {timeout:.0f} s of its start")
        return time.time()

    # --- bad payloads -------------------------------------------------------------------

    def send_bad(self, until: threading.Event, per_s: float) -> None:
        creds = Credentials.open(credentials_path(self.brokers_dir)) if self.secure else None
        clients: dict[str, RogueClient] = {}
        for r in REGIONS:
            for i, name in enumerate(self.rogues[r]):
                pw = creds.credentials_for(name).password if creds else None
                clients[name] = RogueClient(self.ports[r], name, pw, v311=(i == 1))
        retry: deque[Bad] = deque()
        interval = 1.0 / per_s
        nxt = time.time()
        i = 0
        try:
            while not self.stop.is_set():
                for c in clients.values():
                    with c.lock:
                        retry.extend(b for b in c.retry if b.tries < 30)
                        c.retry.clear()
                if i >= len(self.bad) and not retry:
                    break
                fast = until.is_set()
                if not fast and time.time() < nxt:
                    time.sleep(min(0.05, nxt - time.time()))
                    continue
                nxt += interval
                if retry and (i >= len(self.bad) or self.rng.random() < 0.2):
                    b = retry.popleft()
                    if time.time() - (b.published_at or 0) < 1.0:
                        retry.append(b)
                        time.sleep(0.01)
                        continue
                elif i < len(self.bad):
                    b = self.bad[i]
                    i += 1
                    self.bad_sent = i
                else:
                    time.sleep(0.05)
                    continue
                if b.sender in clients:
                    clients[b.sender].publish(b)
                else:
                    send_anonymous(self.ports[b.region], b)
                    if b.outcome == "unsent" and b.tries < 30:
                        retry.append(b)
                if fast:
                    time.sleep(0.005)
            deadline = time.time() + 30
            while time.time() < deadline and any(c.unanswered() for c in clients.values()):
                time.sleep(0.2)
        finally:
            for c in clients.values():
                c.stop()

    # --- the end ------------------------------------------------------------------------

    def read_logs(self) -> dict[str, dict[int, dict]]:
        events: dict[str, dict[int, dict]] = defaultdict(dict)
        for path in self.agents_dir.glob("agents-*.jsonl"):
            for line in path.read_bytes().splitlines():
                try:
                    e = json.loads(line)["event"]
                except ValueError:
                    continue  # a torn last line (the process was killed mid-write)
                events[e["location_id"]].setdefault(e["seq"], e)
        return events

    def drain(self, timeout: float) -> bool:
        """Wait until every agent process has had all its events acked and exited, and
        gold shows every recorded event."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            self.tick(2.0)
            waiting = [p.name for p in self.of("agent") if not p.done]
            behind = {loc: s - self.gold_at.get(loc, 0) for loc, s in self.recorded.items()
                      if self.gold_at.get(loc, 0) < s}
            if not waiting and not behind:
                return True
            if int(time.time()) % 10 < 2:
                say(f"draining: {len(waiting)} agent processes still sending, "
                    f"{sum(behind.values()):,} events of {len(behind)} stores not in gold")
        return False

    def read_table(self, table: Table, columns: list[str]) -> list[dict]:
        return deltalake.DeltaTable(str(table.path(self.lake))).to_pyarrow_table(
            columns=columns).to_pylist()

    def wait_silver(self, recorded: int, dead_expected: int, timeout: float) -> None:
        """silver is written from the stream's spill every 10 s: wait for it to hold every
        recorded event and stop growing in dead letters."""
        deadline = time.time() + timeout
        last_dead, still = -1, 0
        while time.time() < deadline:
            self.tick(5.0)
            try:
                n = len(deltalake.DeltaTable(str(EVENTS.path(self.lake)))
                        .to_pyarrow_table(columns=["seq"]))
                d = len(deltalake.DeltaTable(str(DEAD_LETTERS.path(self.lake)))
                        .to_pyarrow_table(columns=["region"]))
            except Exception:  # noqa: BLE001
                continue
            still = still + 1 if d == last_dead else 0
            last_dead = d
            say(f"silver: {n:,}/{recorded:,} events, {d:,} dead letters "
                f"({dead_expected:,} bad payloads taken by a broker)")
            if n >= recorded and (d >= dead_expected or still >= 4):
                return

    def verdict(self, load_start: tuple, load_end: tuple) -> dict[str, Any]:
        events = self.read_logs()
        recorded_pairs = {(loc, s) for loc, evs in events.items() for s in evs}
        # the agents' own databases: did the log miss anything they committed?
        db_last, db_acked, orders = {}, {}, 0
        for path in (self.agents_dir / "db").glob("*.sqlite"):
            conn = sqlite3.connect(path)
            try:
                meta = dict(conn.execute("SELECT key, value FROM meta"))
                loc = json.loads(meta["location_id"]) if meta["location_id"].startswith('"') \
                    else meta["location_id"]
                db_last[loc] = int(json.loads(meta.get("next_seq", "1"))) - 1
                db_acked[loc] = int(json.loads(meta.get("acked_seq", "0")))
                orders += conn.execute("SELECT COUNT(*) FROM transfer_orders").fetchone()[0]
            finally:
                conn.close()
        log_missing = sum(max(0, last - len(events.get(loc, {})))
                          for loc, last in db_last.items())
        silver = self.read_table(EVENTS, ["location_id", "seq"])
        per_pair = Counter((r["location_id"], r["seq"]) for r in silver)
        lost = len(recorded_pairs - set(per_pair))
        duplicated = sum(c - 1 for c in per_pair.values() if c > 1)
        foreign = sum(1 for k in per_pair if k not in recorded_pairs)
        expected: dict = {}
        for evs in events.values():
            expected.update(oracle.fold(evs.values()))
        gold = {(r["location_id"], r["sku"], r["lot"]): r["quantity"]
                for r in self.read_table(STOCK_COHORTS, ["location_id", "sku", "lot", "quantity"])
                if r["quantity"] and r["location_id"] in self.region_of}
        differ = sum(1 for k in set(gold) | set(expected) if gold.get(k) != expected.get(k))
        # ingest's landed seqs against the agents' acks: an ack beyond what ingest landed
        # could only be forged
        landed: dict[str, int] = {}
        for r in REGIONS:
            conn = sqlite3.connect(self.lake / "_ingest" / f"{r}.sqlite")
            try:
                landed.update(dict(conn.execute("SELECT location_id, contiguous FROM landed")))
            finally:
                conn.close()
        acked_beyond = sum(1 for loc, a in db_acked.items() if a > landed.get(loc, 0))
        ack_errors = sum(p.read_text(errors="replace").count("it has lost events the lakehouse")
                         for p in self.logs.glob("agents-*.log"))
        # bad payloads
        dead = self.read_table(DEAD_LETTERS, ["raw", "source", "reason"])
        dl_keys: Counter[str] = Counter()
        dl_source: dict[str, str] = {}
        for r in dead:
            k = key_of(r["raw"] or b"")
            dl_keys[k] += 1
            dl_source.setdefault(k, r["source"] or "?")
        fate: Counter[str] = Counter()
        by_kind: dict[str, Counter] = defaultdict(Counter)
        unhandled_detail: Counter[str] = Counter()
        # what was down in the payload's region soon after a broker took it
        region_down = [(f["start"], f["region"], f["kind"]) for f in self.faults
                       if f["kind"] in ("broker", "wipe", "ingest")]
        fates = []
        for b in self.bad[:self.bad_sent]:
            if b.outcome in ("refused_connect", "not_authorised"):
                f = f"refused_at_broker:{b.outcome}"
            elif dl_keys.get(b.key):
                f = f"dead_lettered:{dl_source[b.key]}"
            elif b.outcome == "published" and b.kind == "oversized":
                f = "refused_at_broker:dropped_for_size"
            elif b.outcome == "published" and b.kind != "events":
                f = "accepted_by_broker"  # an open broker let a forgery through
            else:
                f = "unhandled"
                # Taken by a broker that was SIGKILLed (or wiped) before it could save or
                # hand it on, or handed to an ingest killed before it landed it: after
                # PUBREC mosquitto re-sends only PUBREL, so the payload is gone (an agent's
                # event is re-sent from its outbox; nobody re-sends a rogue's junk).
                near = sorted((at - b.published_at, k) for at, reg, k in region_down
                              if reg == b.region and b.published_at is not None
                              and -1.0 <= at - b.published_at <= AUTOSAVE_S + 1)
                unhandled_detail[f"{b.kind}:{b.outcome}"
                                 + (f":{near[0][1]}_sigkilled_within_"
                                    f"{AUTOSAVE_S + 1:.0f}s" if near else ":unexplained")] += 1
            fate[f] += 1
            by_kind[b.kind][f] += 1
            fates.append({"n": b.n, "kind": b.kind, "variant": b.variant, "region": b.region,
                          "sender": b.sender, "topic": b.topic, "outcome": b.outcome,
                          "tries": b.tries, "published_at": b.published_at, "fate": f,
                          "key": b.key, "dead_letters": dl_keys.get(b.key, 0),
                          "head": b.payload[:120].decode("utf-8", "replace")})
        with (self.work / "bad_payloads.jsonl").open("w") as fh:
            fh.writelines(json.dumps(x) + "\n" for x in fates)
        region_kinds = ("agent", "ingest", "broker", "wipe", "partition")
        windows = self.fault_windows(region_kinds)
        with (self.work / "kills.json").open("w") as fh:
            json.dump({"kills": self.kill_log, "faults": self.faults, "windows": windows,
                       "phases": {"quiet": [self.base_start, self.base_end],
                                  "region_faults": [self.a_start, self.a_end]},
                       "latencies": self.latencies}, fh)
        refused = sum(v for k, v in fate.items() if k.startswith("refused_at_broker"))
        dead_lettered = sum(v for k, v in fate.items() if k.startswith("dead_lettered"))
        # latency
        quiet = [(r, t, lat) for r, t, lat in self.latencies
                 if self.base_start <= t <= self.base_end]

        others = self.others_latency(windows, "until")
        others_fixed = self.others_latency(windows, "end")
        recovery: dict[str, list[float]] = defaultdict(list)
        for w in windows:
            recovery[w["kind"]].append(w["until"] - w["back"])
        kills = Counter(k["kind"] for k in self.kill_log)
        in_flight = {}
        for kind in kills:
            rows = [k for k in self.kill_log if k["kind"] == kind]
            in_flight[kind] = {
                "unacked_mean": round(sum(k["unacked"] for k in rows) / len(rows), 1),
                "unacked_max": max(k["unacked"] for k in rows),
                "not_in_gold_mean": round(sum(k["not_in_gold"] for k in rows) / len(rows), 1),
                "not_in_gold_max": max(k["not_in_gold"] for k in rows)}
        broker_rows = [k for k in self.kill_log if k["kind"] == "broker"]
        stream_rows = [k for k in self.kill_log if k["kind"] == "stream"]
        return {
            "mode": "quick" if self.args.quick else "full",
            "secure": self.secure,
            "features": features(),
            "stores": sum(len(v) for v in self.stores.values()),
            "agent_processes": len(self.of("agent")),
            "kills": {"total": sum(kills.values()), **dict(kills)},
            "kills_per_broker": dict(Counter(k["name"] for k in broker_rows)),
            "broker_kills_before_first_autosave": sum(1 for k in broker_rows
                                                      if k["since_start_s"] < AUTOSAVE_S),
            "stream_kills_since_start_s": [k["since_start_s"] for k in stream_rows],
            "recorded": len(recorded_pairs),
            "lost": lost,
            "duplicated": duplicated,
            "silver_rows_not_recorded": foreign,
            "gold_equals_oracle": differ == 0 and lost == 0,
            "cohorts_differ": differ,
            "log_missing_vs_db": log_missing,
            "bad_payloads": self.bad_sent,
            "dead_lettered": dead_lettered,
            "refused_at_broker": refused,
            "bad_unhandled": fate.get("unhandled", 0),
            "bad_unhandled_detail": dict(unhandled_detail),
            "bad_fate": dict(fate),
            "bad_by_kind": {k: dict(v) for k, v in by_kind.items()},
            "bad_own_topic": sum(1 for b in self.bad[:self.bad_sent]
                                 if b.kind in ("events", "oversized")),
            "dead_letter_rows": len(dead),
            "dead_letter_repeats": sum(c - 1 for c in dl_keys.values() if c > 1),
            "stream_exits": self.stream_exits,
            "unexpected_exits": dict(self.unexpected),
            "forged_accepted": orders + acked_beyond + ack_errors,
            "forged_detail": {"orders_in_agents": orders, "acks_beyond_landed": acked_beyond,
                              "agent_ack_errors": ack_errors,
                              "forgeries_taken_by_broker": fate.get("accepted_by_broker", 0)},
            "others_p99_s": pct(others, 0.99),
            "others_p50_s": pct(others, 0.50),
            "others_events": len(others),
            "others_p99_before_s": pct([x[2] for x in quiet], 0.99),
            "others_p99_fixed_windows_s": pct(others_fixed, 0.99),
            "recovery_s": {k: {"p50": pct(v, 0.50), "max": round(max(v), 2)}
                           for k, v in recovery.items()},
            "before_events": len(quiet),
            "in_flight_at_kills": in_flight,
            "partition": {"stores": len(self.partitioned),
                          "wall_s": round(3600.0 / self.m["accel"]),
                          "simulated_s": 3600,
                          "connections_reset": self.proxy.reset if self.proxy else 0},
            "load_avg_start": [round(x, 2) for x in load_start],
            "load_avg_end": [round(x, 2) for x in load_end],
            "cores": os.cpu_count(),
            "wall_s": round(time.time() - self.t0, 1),
        }

    def fault_windows(self, kinds: tuple[str, ...]) -> list[dict]:
        """Each region fault from its start until its region had recovered (``until``):
        every event the region recorded from just before the fault to the end of its fixed
        window (the component back, plus ``SETTLE_S`` for the stores to reconnect) is in
        gold, so its backlog has drained. A region that is still replaying
        is still in trouble; its own events then are not "the others'", and the others'
        events meanwhile are measured against its catch-up load. ``end`` keeps the fixed
        settle time after the restart (``SETTLE_S``) for comparison."""
        by_region: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for r, t, lat in self.latencies:
            by_region[r].append((t, t + lat))
        for rows in by_region.values():
            rows.sort()
        windows = []
        for f in self.faults:
            if f["kind"] not in kinds:
                continue
            rows = by_region.get(f["region"], [])
            lo = bisect.bisect_left(rows, (f["start"] - 2.0, 0.0))
            hi = bisect.bisect_right(rows, (f["end"], float("inf")))
            caught = max((at for _, at in rows[lo:hi]), default=f["end"])
            windows.append({**f, "until": max(f["end"], caught)})
        return windows

    def others_latency(self, windows: list[dict], end_key: str) -> list[float]:
        """Latencies of events recorded while another region was in a fault window and
        their own region was not (stream kills, which stop every region, excluded)."""
        stream = [(f["start"], f["end"]) for f in self.faults if f["kind"] == "stream"]
        out = []
        for r, t, lat in self.latencies:
            if not (self.a_start <= t <= self.a_end):
                continue
            if any(a <= t <= b for a, b in stream):
                continue
            own = other = False
            for w in windows:
                if w["start"] <= t <= w[end_key]:
                    if w["region"] == r:
                        own = True
                        break
                    other = True
            if other and not own:
                out.append(lat)
        return out

    # --- the run ------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        budget = 7200.0 if not self.args.quick else 1200.0
        self.sim_origin = self.t0 - self.m["accel"] * budget - 3600.0
        self.build()
        self.bad = plan(self.m["bad"], regions=self.stores, rogues=self.rogues,
                        seed=self.args.seed)
        say(f"work dir {self.work}; {sum(len(v) for v in self.stores.values())} stores in "
            f"{len(self.of('agent'))} agent processes; brokers {self.ports}; "
            f"{'secure (per-store logins)' if self.secure else 'anonymous brokers'}")
        for b in self.of("broker"):
            b.start()
        self.write_logins()
        self.proxy = FaultProxy(self.proxy_port, self.ports["east"]).start()
        for p in self.of("ingest"):
            p.start()
        self.of("stream")[0].start()
        threading.Thread(target=self.poll_gold, daemon=True).start()
        self.phase = "spark start-up"
        t = time.time()
        while not (STOCK_LEVELS.path(self.lake) / "_delta_log").exists():
            self.tick(1.0)
            if time.time() - t > 400:
                raise SystemExit("the stream created no tables within 400 s")
        for p in self.of("agent"):
            p.start()
        self.phase = "warm-up"
        self.wait_stream_up(time.time(), 300.0)
        self.tick(self.m["warmup_s"])
        # the baseline starts once gold keeps up (about three seconds of events behind)
        per_s = self.m["rate"] * sum(len(v) for v in self.stores.values())
        caught = time.time() + 180.0
        while self.agent_state()[1] > max(50.0, 3 * per_s) and time.time() < caught:
            self.tick(1.0)
        self.phase = "quiet"
        self.base_start = time.time()
        self.tick(self.m["baseline_s"])
        self.base_end = time.time()
        load_start = os.getloadavg()
        kills = self.m["kills"]
        est = (sum(kills[k] for k in ("agent", "ingest", "broker")) * sum(self.m["gap_s"]) / 2
               + kills["stream"] * 45.0)
        flush = threading.Event()
        sender = threading.Thread(target=self.send_bad,
                                  args=(flush, len(self.bad) / max(60.0, est)), daemon=True)
        sender.start()
        self.phase = "faults"
        self.a_start = time.time()
        self.phase_a()
        self.a_end = time.time()
        self.phase = "stream kills"
        self.phase_b()
        flush.set()
        self.phase = "bad payloads"
        while sender.is_alive():
            self.tick(1.0)
        load_end = os.getloadavg()
        self.phase = "drain"
        self.stop_file.touch()
        say("stores stop recording; draining")
        drained = self.drain(600.0)
        self.tail_logs()
        published = sum(1 for b in self.bad[:self.bad_sent]
                        if b.outcome == "published" and b.kind == "events")
        self.wait_silver(sum(self.recorded.values()), published, 240.0)
        out = self.verdict(load_start, load_end)
        out["drained"] = drained
        return out

    def close(self) -> None:
        self.stop.set()
        for p in self.of("agent"):
            if p.alive():
                os.killpg(p.proc.pid, signal.SIGTERM)
        for p in self.of("stream") + self.of("ingest"):
            if p.alive():
                os.killpg(p.proc.pid, signal.SIGTERM)
        for p in self.of("stream") + self.of("ingest") + self.of("agent"):
            if p.proc is not None:
                try:
                    p.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(p.proc.pid, signal.SIGKILL)
        for b in self.of("broker"):
            if b.handle is not None:
                b.handle.stop()
        if self.proxy is not None:
            self.proxy.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="30 stores, ~35 kills, 1,100 bad payloads: about 6-8 minutes")
    ap.add_argument("--insecure", action="store_true",
                    help="anonymous brokers (no per-store logins or topic rules)")
    ap.add_argument("--stores", type=int, default=None)
    ap.add_argument("--group", type=int, default=None, help="stores per agent process")
    ap.add_argument("--rate", type=float, default=None, help="events/s per store")
    ap.add_argument("--accel", type=float, default=None, help="simulated time speed-up")
    ap.add_argument("--partition", type=int, default=None, help="east stores cut off")
    ap.add_argument("--bad", type=int, default=None, help="bad payloads to send")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    bench = Bench(args)
    try:
        result = bench.run()
    finally:
        bench.close()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
