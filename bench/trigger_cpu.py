"""What one region's query costs Spark per trigger, with nothing in the batch function.

The stream reads a batch's landing files itself, so what Spark does per trigger is find
the new files, log offsets and commits, and plan the batch. This bench measures that
alone, one query at a time in a fresh Spark (the stream's settings), while a writer
publishes a landing file every 0.15 s (seven a second, as ingest does on a busy
region):

* ``landing``: the stream's landing source (``spark_jobs/stream/source.py``);
* ``file`` (the baseline): Spark's text file source with ``cleanSource=delete``, which
  the stream used before;
* ``idle``: the same JVM with no query, the floor under both.

CPU is the JVM's and every process it forks (the landing source's Python runner among
them), from ``/proc``, over ``--seconds`` after ``--warmup``:

    python bench/trigger_cpu.py --warmup 60 --seconds 60

Last line: JSON with ``landing_cores``, ``file_cores`` (the baseline) and ``idle_cores``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODES = ("landing", "file", "idle")


def _tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its children so far."""
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True,
                              text=True).stdout.split()
    total = 0.0
    for p in [pid, *map(int, children)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _jvm_pid() -> int:
    found = subprocess.run(["pgrep", "-P", str(os.getpid()), "java"], capture_output=True,
                           text=True).stdout.split()
    if not found:  # spark-submit's launcher may sit between
        found = subprocess.run(["pgrep", "-n", "-f", "org.apache.spark.deploy.SparkSubmit"],
                               capture_output=True, text=True).stdout.split()
    return int(found[0])


def run_one(mode: str, warmup: float, seconds: float) -> dict:
    """One mode in this process: the query, the writer, the measurement."""
    from spark_jobs.spark import spark_session
    from spark_jobs.stream.source import SOURCE_FORMAT, register

    root = Path(tempfile.mkdtemp(prefix=f"shelflife-trigger-{mode}-"))
    land = root / "landing"
    land.mkdir()
    # The file source as the stream ran it: its metadata log compacted every 100 batches.
    extra = ({"spark.sql.streaming.fileSource.log.compactInterval": "100"}
             if mode == "file" else None)
    spark = spark_session(f"trigger-cpu-{mode}", extra=extra)
    stop = threading.Event()
    batches: list[int] = []

    def write() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            name = f"b-{time.time_ns()}-bench-{n:06d}.jsonl"
            tmp = land / f".tmp-{name}"
            tmp.write_text('{"kind":"event"}\n' * 30)
            tmp.rename(land / name)
            stop.wait(0.15)

    threading.Thread(target=write, daemon=True).start()
    query = None
    if mode != "idle":
        if mode == "landing":
            register(spark)
            frame = spark.readStream.format(SOURCE_FORMAT).option("path", str(land)).load()
        else:
            frame = (spark.readStream.option("maxFilesPerTrigger", 200)
                     .option("cleanSource", "delete").text(f"file://{land}"))
        query = (frame.writeStream.foreachBatch(lambda df, bid: batches.append(bid))
                 .option("checkpointLocation", str(root / "checkpoint"))
                 .trigger(processingTime="1 second").start())
    jvm = _jvm_pid()
    time.sleep(warmup)
    load = os.getloadavg()[0]
    c0, b0, t0 = _tree_cpu(jvm), len(batches), time.monotonic()
    time.sleep(seconds)
    c1, b1, t1 = _tree_cpu(jvm), len(batches), time.monotonic()
    stop.set()
    left = sum(1 for p in land.iterdir() if p.name.startswith("b-"))
    if query is not None:
        query.stop()
    spark.stop()
    return {"mode": mode, "cores": round((c1 - c0) / (t1 - t0), 3), "batches": b1 - b0,
            "files_waiting_at_end": left, "load_avg_1m": round(load, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warmup", type=float, default=60.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--mode", choices=MODES, help="run one mode in this process")
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(run_one(args.mode, args.warmup, args.seconds)), flush=True)
        return
    results = {}
    for mode in MODES:  # each in a fresh process: a fresh JVM and its JIT
        print(f"{mode}: {args.warmup:.0f} s warm-up, {args.seconds:.0f} s measured ...",
              file=sys.stderr, flush=True)
        out = subprocess.run([sys.executable, __file__, "--mode", mode, "--warmup",
                              str(args.warmup), "--seconds", str(args.seconds)],
                             capture_output=True, text=True, check=True).stdout
        results[mode] = json.loads(out.strip().splitlines()[-1])
        print(f"{mode}: {results[mode]}", file=sys.stderr, flush=True)
    print(json.dumps({
        "landing_cores": results["landing"]["cores"],
        "file_cores": results["file"]["cores"],
        "idle_cores": results["idle"]["cores"],
        "landing_over_idle": round(results["landing"]["cores"] - results["idle"]["cores"], 3),
        "file_over_idle": round(results["file"]["cores"] - results["idle"]["cores"], 3),
        "batches": {m: results[m]["batches"] for m in MODES},
        "load_avg_1m": {m: results[m]["load_avg_1m"] for m in MODES},
    }))


if __name__ == "__main__":
    main()
