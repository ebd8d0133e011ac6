"""What a growing _delta_log costs each commit of a table the stream rewrites every second.

On a local disk delta-rs lists the whole ``_delta_log`` folder on every commit, so each
commit costs more the more log files the table keeps. This commits a small region
overwrite (the stream's gold write) ``--commits`` times to two tables: one with Delta's
default log retention (30 days: nothing is ever removed within a run) as the baseline,
and one whose retention keeps about as many log files as Shelflife's stock tables do
(``interval 2 minutes`` at one or two commits a second; here the same few hundred
files at the bench's faster commit rate). It prints CPU per commit as the log grows.

The last line printed is one JSON object.

    python bench/deltalog.py --commits 6000
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake


def run(path: Path, commits: int, block: int, configuration: dict[str, str]) -> list[dict]:
    table = pa.table({"region": ["east"] * 10, "quantity": list(range(10))})
    write_deltalake(str(path), table, partition_by=["region"], mode="overwrite",
                    configuration=configuration)
    handle = DeltaTable(str(path))
    blocks = []
    for done in range(block, commits + 1, block):
        cpu = time.process_time()
        for _ in range(block):
            write_deltalake(handle, table, mode="overwrite", predicate="region IN ('east')")
        per_commit_ms = 1000 * (time.process_time() - cpu) / block
        files = sum(1 for f in (path / "_delta_log").iterdir() if f.suffix == ".json")
        blocks.append({"versions": done, "log_files": files,
                       "cpu_ms_per_commit": round(per_commit_ms, 1)})
        print(f"bench: {path.name}: {done} commits, {files} log files, "
              f"{per_commit_ms:.1f} ms CPU per commit", flush=True)
    return blocks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--commits", type=int, default=6000)
    ap.add_argument("--block", type=int, default=500)
    ap.add_argument("--retention", default="interval 8 seconds",
                    help="log retention of the bounded table (the default keeps a few "
                         "hundred files at this bench's commit rate)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="shelflife-deltalog-"))
    baseline = run(work / "default_retention", args.commits, args.block, {})
    bounded = run(work / "bounded_retention", args.commits, args.block,
                  {"delta.logRetentionDuration": args.retention})
    print(json.dumps({
        "commits": args.commits,
        "baseline_cpu_ms_first": baseline[0]["cpu_ms_per_commit"],
        "baseline_cpu_ms_last": baseline[-1]["cpu_ms_per_commit"],
        "baseline_log_files_last": baseline[-1]["log_files"],
        "bounded_cpu_ms_first": bounded[0]["cpu_ms_per_commit"],
        "bounded_cpu_ms_last": bounded[-1]["cpu_ms_per_commit"],
        "bounded_log_files_last": bounded[-1]["log_files"],
        "retention": args.retention,
    }), flush=True)


if __name__ == "__main__":
    main()
