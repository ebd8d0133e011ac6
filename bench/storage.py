"""The lakehouse on local disk and on S3, same load, same run: what object storage costs.

Runs bench/latency.py's whole path (broker, ingest, stream as processes; the simulated
fleet here) twice, first with the lakehouse in a folder (the baseline), then in a bucket
on moto's S3 server on loopback (started here, in its own process: an HTTP S3 endpoint,
conditional PUTs and all). With S3 every table and the landing zone are objects: ingest
PUTs each batch, the stream's landing source lists them and the stream GETs them (boto3),
delta-rs commits each version with a conditional PUT. Then the decision jobs
(``shelflife batch all``) run on the S3 lakehouse, so the tables listed are those of the
stream, ingest and the batch jobs. Also runs the concurrent writer pairs of
tests/lakehouse/writer_pairs.py (every pair of writers that share a table, maintenance
beside them) on the same server and counts lost commits.

The last line printed is one JSON object: ``p99_local_s``, ``p99_s3_s``, ``ratio``
(s3/local), ``lost``, ``duplicated``, ``commits_lost_concurrent`` and ``s3_tables`` (the
tables the run found under the ``s3://`` prefix) and ``s3_requests_per_s`` (the S3 run's
requests a second, by kind and by landing zone or tables, counted from the server's log;
they include the benchmark's own gold polling, a few LIST and GET a second) and
``s3_server_cores``, the CPU the S3 server itself took from the same machine.

    python bench/storage.py --stores 300 --events-per-s 300 --duration-s 60
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.commits import REQUEST  # noqa: E402
from bench.common import cpu_seconds  # noqa: E402
from bench.latency import arguments, measure  # noqa: E402
from lakehouse import storage  # noqa: E402
from lakehouse.contract import REGIONS  # noqa: E402
from tests.lakehouse.writer_pairs import commits_lost, run_pairs  # noqa: E402
from tests.s3 import fresh_lake, moto_server  # noqa: E402


def s3_tables(lake: str) -> list[str]:
    """``layer/table`` of every Delta table under an S3 lakehouse prefix."""
    bucket, prefix = storage.split_s3(lake)
    found = set()
    pages = storage.s3_client().get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=f"{prefix}/")
    for page in pages:
        for item in page.get("Contents", ()):
            parts = item["Key"][len(prefix) + 1:].split("/")
            if len(parts) >= 3 and parts[2] == "_delta_log":
                found.add(f"{parts[0]}/{parts[1]}")
    return sorted(found)


def landing_buckets(lake: str) -> dict[str, str]:
    """A bucket per region's landing zone beside the lakehouse's (made here), as the
    ``SHELFLIFE_LANDING_<REGION>`` settings that point ingest and the stream at them."""
    bucket, prefix = storage.split_s3(lake)
    env = {}
    for region in REGIONS:
        name = f"{bucket}-landing-{region}"
        storage.s3_client().create_bucket(Bucket=name)
        env[f"SHELFLIFE_LANDING_{region.upper()}"] = f"s3://{name}/{prefix}"
    return env


def moto_pid(endpoint: str) -> int | None:
    """The S3 server's process: on this machine it takes CPU from the path it serves,
    which a real bucket would not, so its share is reported beside the ratio."""
    port = endpoint.rsplit(":", 1)[-1]
    found = subprocess.run(["pgrep", "-f", f"moto_server -H 127.0.0.1 -p {port}"],
                           capture_output=True, text=True).stdout.split()
    return int(found[0]) if found else None


def request_counts(log: Path) -> Counter:
    """S3 requests of the whole S3 run by kind and by what they touch (landing or
    tables), from the server's one line per request."""
    counts: Counter = Counter()
    for line in log.read_text(errors="replace").splitlines():
        m = REQUEST.search(line)
        if not m:
            continue
        verb, path = m.groups()
        kind = "LIST" if verb == "GET" and "list-type" in path else verb
        counts[f"{'landing' if 'landing' in path else 'tables'} "
               f"{kind}"] += 1
    return counts


def concurrent_commits_lost(commits: int = 12) -> tuple[int, int]:
    """(commits lost, commits made) over the writer pairs that really share a table,
    each on a fresh prefix of the running S3 server, with maintenance beside them."""
    results = run_pairs(fresh_lake, commits, say=lambda m: print(f"bench:   {m}", flush=True))
    return commits_lost(results), sum(r.commits for r in results)


def main() -> None:
    ap = arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    ap.add_argument("--landing-buckets", action="store_true",
                    help="each region's landing zone in a bucket of its own "
                         "(SHELFLIFE_LANDING_<REGION>), apart from the tables")
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="shelflife-bench-storage-"))
    started = time.monotonic()
    print(f"bench: 1/3 lakehouse on local disk ({work / 'local'})", flush=True)
    local = measure(args, work / "local", str(work / "local" / "lakehouse"))
    log = work / "moto.log"
    with moto_server(log) as endpoint:
        lake = fresh_lake()
        print(f"bench: 2/3 lakehouse on S3 ({lake} at {endpoint})", flush=True)
        server = moto_pid(endpoint)
        landing_env = landing_buckets(lake) if args.landing_buckets else {}
        began, server_cpu = time.monotonic(), cpu_seconds(server) if server else 0.0
        remote = measure(args, work / "s3", lake, landing_env)
        s3_seconds = time.monotonic() - began
        server_cores = ((cpu_seconds(server) - server_cpu) / s3_seconds) if server else None
        requests = request_counts(log)
        print("bench:     the decision jobs on the same S3 lakehouse (shelflife batch all)",
              flush=True)
        batch = subprocess.run([sys.executable, "-m", "apps.cli", "batch", "all", "--lakehouse",
                                lake], cwd=ROOT, capture_output=True, text=True, timeout=1200,
                               env={**os.environ, "SHELFLIFE_STATE_DIR": str(work / "state")})
        if batch.returncode != 0:
            print(f"bench:     batch failed: {batch.stdout[-1500:]} {batch.stderr[-1500:]}",
                  flush=True)
        tables = s3_tables(lake)
        print("bench: 3/3 concurrent writers on S3", flush=True)
        lost_commits, pair_commits = concurrent_commits_lost()
    ratio = (round(remote["p99_s"] / local["p99_s"], 2)
             if remote.get("p99_s") and local.get("p99_s") else None)
    result = {
        "bench": "storage", "stores": args.stores, "events_per_s": args.events_per_s,
        "p50_local_s": local["p50_s"], "p99_local_s": local["p99_s"],
        "p50_s3_s": remote["p50_s"], "p99_s3_s": remote["p99_s"], "ratio": ratio,
        "ack_p99_local_s": local["baseline_ack_p99_s"],
        "ack_p99_s3_s": remote["baseline_ack_p99_s"],
        "stream_ready_local_s": local["stream_ready_s"],
        "stream_ready_s3_s": remote["stream_ready_s"],
        "events_local": local["events"], "events_s3": remote["events"],
        "lost": local["lost"] + remote["lost"],
        "duplicated": local["duplicated"] + remote["duplicated"],
        "not_visible": local["not_visible"] + remote["not_visible"],
        "batch_jobs_ok": batch.returncode == 0,
        "commits_lost_concurrent": lost_commits, "commits_concurrent": pair_commits,
        "s3_tables": tables, "landing": sorted(landing_env.values()) or "in the lakehouse",
        "s3_requests_per_s": {k: round(v / s3_seconds, 1) for k, v in sorted(requests.items())},
        "s3_requests_per_s_total": round(sum(requests.values()) / s3_seconds, 1),
        "s3_server_cores": None if server_cores is None else round(server_cores, 2),
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    print(f"bench: gold p99 local {local['p99_s']} s, S3 {remote['p99_s']} s "
          f"(ratio {ratio}); lost {result['lost']}, duplicated {result['duplicated']}; "
          f"{len(tables)} tables on S3", flush=True)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
