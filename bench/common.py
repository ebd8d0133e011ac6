"""Helpers shared by the end-to-end benchmarks: percentiles, process trees, the real
components as child processes, and "when did gold first show this event"."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import deque
from datetime import date, timedelta
from pathlib import Path
from urllib.parse import unquote

import deltalake
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lakehouse.catalogue import REGION_STATUS, STOCK_LEVELS  # noqa: E402
from lakehouse.contract import REGIONS  # noqa: E402
from lakehouse.metrics import parse_metrics  # noqa: E402
from lakehouse.readers import is_table  # noqa: E402
from lakehouse.storage import delta_options, is_s3, s3_client, split_s3  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, int(q * len(s)))], 3)


def _tree(pid: int) -> list[int]:
    """A process and all its descendants (the JVM is a child of `stream`)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for child in Path(f"/proc/{p}/task").iterdir():
                todo += [int(k) for k in (child / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return out


def rss_mb(pid: int) -> float:
    """RSS of a process and all its descendants."""
    total = 0
    for p in _tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError):
            continue
    return round(total / 1024, 1)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process tree so far (children still running)."""
    total = 0
    for p in _tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
    return total / CLOCK_TICKS


def wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"broker on port {port} did not come up")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ports_in_use(ports) -> None:
    for port in ports:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                raise SystemExit(f"port {port} is in use (a demo still running?): "
                                 "the benchmark needs its own brokers")


def scrape(port: int) -> dict[str, float]:
    """A component's /metrics as ``{name{labels}: value}`` (empty when unreachable)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            return parse_metrics(resp.read().decode())
    except OSError:
        return {}


class Components:
    """``shelflife`` subcommands as child processes, each logging to ``<logs>/<name>.log``."""

    def __init__(self, logs: Path, env: dict[str, str]) -> None:
        self.logs = logs
        self.logs.mkdir(parents=True, exist_ok=True)
        self.env = env
        self.procs: dict[str, subprocess.Popen] = {}

    def spawn(self, name: str, *args: str) -> subprocess.Popen:
        out = open(self.logs / f"{name}.log", "w")  # noqa: SIM115 - lives as long as the child
        self.procs[name] = subprocess.Popen([sys.executable, "-m", "apps.cli", *args],
                                            env=self.env, cwd=ROOT, stdout=out,
                                            stderr=subprocess.STDOUT)
        return self.procs[name]

    def check(self, name: str) -> None:
        if self.procs[name].poll() is not None:
            raise SystemExit(f"{name} exited; see {self.logs / (name + '.log')}")

    def wait_for_tables(self, lake: Path | str, timeout: float = 300) -> str:
        """Wait until the stream has created gold; returns gold/stock_levels."""
        levels = STOCK_LEVELS.uri(lake)
        started = time.monotonic()
        while not is_table(levels):
            self.check("stream")
            if time.monotonic() - started > timeout:
                raise SystemExit(f"Spark did not create the tables within {timeout:.0f} s")
            time.sleep(0.5)
        time.sleep(5)  # the queries start right after the tables exist
        return levels

    def wait_for_batches(self, lake: Path | str, timeout: float = 600) -> float:
        """Wait until every region's stream has applied a batch (gold/region_status
        counts its events); returns the seconds waited.

        The queries start some time after the tables exist (the stream rebuilds its books
        and state from bronze first, and on S3 Spark's first listing of a landing prefix is
        slow), so a fixed wait would put the start-up inside the measured window."""
        url = REGION_STATUS.uri(lake)
        started = time.monotonic()
        status: deltalake.DeltaTable | None = None
        while True:
            self.check("stream")
            ready: set[str] = set()
            if status is None and is_table(url):
                status = deltalake.DeltaTable(url, storage_options=delta_options(url))
            if status is not None:
                status.update_incremental()  # reads only the versions since the last look
                rows = status.to_pyarrow_table(columns=["region", "events_total"])
                ready = {r for r, n in zip(rows["region"].to_pylist(),
                                           rows["events_total"].to_pylist(), strict=True)
                         if n}
            if ready >= set(REGIONS):
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise SystemExit(f"the stream applied no batch in {sorted(set(REGIONS) - ready)}"
                                 f" within {timeout:.0f} s")
            time.sleep(1.0)

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


class Visibility:
    """Matches recorded (location, seq) to the first moment a signal covers them."""

    def __init__(self) -> None:
        self.pending: dict[str, deque[tuple[int, float]]] = {}
        self.latencies: list[float] = []
        self.recorded_at: list[float] = []
        """When each event of ``latencies`` was recorded (same order)."""
        self.lock = threading.Lock()

    def add(self, loc: str, seq: int, t: float) -> None:
        with self.lock:
            self.pending.setdefault(loc, deque()).append((seq, t))

    def cover(self, loc: str, upto: int, at: float) -> None:
        with self.lock:
            q = self.pending.get(loc)
            while q and q[0][0] <= upto:
                _, t = q.popleft()
                self.latencies.append(max(0.0, at - t))
                self.recorded_at.append(t)

    def left(self) -> int:
        with self.lock:
            return sum(len(q) for q in self.pending.values())

    def seen(self) -> int:
        with self.lock:
            return len(self.latencies)


def machine_busy_s() -> float:
    """CPU seconds the whole machine has spent busy since boot (every process, every
    core), to tell how much of a run's CPU went to something else."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / CLOCK_TICKS


def read_object(url: str) -> bytes | None:
    """The bytes at ``url`` (a path or ``s3://``), None when there is no such object."""
    if is_s3(url):
        bucket, key = split_s3(url)
        try:
            return s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as exc:  # noqa: BLE001 - botocore's NoSuchKey
            if "NoSuchKey" in str(exc) or "404" in str(exc):
                return None
            raise
    try:
        return Path(url).read_bytes()
    except FileNotFoundError:
        return None


def version_adds(table_url: str, version: int) -> tuple[float, list[dict]] | None:
    """Commit time (s) and the data files that ``version`` of a Delta table added, read
    from its log entry; None when that version does not exist yet. Files added without
    a data change (compaction) are left out."""
    entry = read_object(f"{table_url.rstrip('/')}/_delta_log/{version:020d}.json")
    if entry is None:
        return None
    at, adds = time.time(), []
    for line in entry.decode().splitlines():
        action = json.loads(line) if line.strip() else {}
        if "commitInfo" in action and "timestamp" in action["commitInfo"]:
            at = action["commitInfo"]["timestamp"] / 1000.0
        add = action.get("add")
        if add and add.get("dataChange", True):
            adds.append(add)
    return at, adds


def poll_gold(path: Path | str, vis: Visibility | list[Visibility], stop: threading.Event, *,
              regions: list[str] | None = None, every_s: float = 0.2) -> None:
    """Cover events at the commit time of each gold/stock_levels version showing them.

    Each version is read once, and only the files it added: a version replaces whole
    region partitions, so those files hold every location of the regions it changed.
    Reopening the table each poll instead replayed its log and listed it, which on S3
    made the measuring itself a quarter of the server's requests. ``vis`` may be several
    matchers fed from one read of each version; ``regions`` reads only those
    partitions, when the events watched are all theirs."""
    watchers = vis if isinstance(vis, list) else [vis]
    url = str(path).rstrip("/")
    version = 0
    while not stop.is_set():
        try:
            found = version_adds(url, version)
        except Exception:  # noqa: BLE001 - a read that failed is tried again
            found = None
        if found is None:
            time.sleep(every_s)
            continue
        at, adds = found
        best: dict[str, int] = {}
        for add in adds:
            if regions and add.get("partitionValues", {}).get("region") not in regions:
                continue
            data = read_object(f"{url}/{unquote(add['path'])}")
            if data is None:  # vacuumed since: a later version covers the same rows
                continue
            table = pq.read_table(pa.BufferReader(data), columns=["location_id", "last_seq"])
            for loc, s in zip(table["location_id"].to_pylist(),
                              table["last_seq"].to_pylist(), strict=True):
                if s is not None and s > best.get(loc, 0):
                    best[loc] = s
        for loc, s in best.items():
            for w in watchers:
                w.cover(loc, s, at)
        version += 1


def trade(agents: list, skus: list[str], n: int, rng: random.Random,
          expiry: date) -> list[dict]:
    """``n`` events of ordinary trading by ``agents`` (real ``StoreAgent``s): 10 %
    deliveries of a fresh lot, 5 % waste, the rest sales of one to three units."""
    events = []
    for k in range(n):
        a, sku, r = rng.choice(agents), rng.choice(skus), rng.random()
        if r < 0.10:
            events.append(a.receive(sku, rng.randint(20, 60), lot=f"L{k}",
                                    expires_on=(expiry + timedelta(days=rng.randint(0, 9)))
                                    .isoformat(), supplier_ref="PO-2", unit_cost=1.1))
        elif r < 0.15:
            events.append(a.waste(sku, 1, lot=f"S-{sku}", reason_code="damaged",
                                  disposal_method="compost"))
        else:
            events.append(a.sell(sku, rng.randint(1, 3), unit_price=2.5,
                                 transaction_ref=f"T{k}"))
    return events
