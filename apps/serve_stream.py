"""What ``shelflife stream`` does once chosen: its own module, so that only this command
pays for importing pyspark (``ingest`` and ``demo`` start without it)."""

from __future__ import annotations

import argparse

from apps.cli import _metrics_port, _regions
from lakehouse.gcpolicy import tune_for_service
from lakehouse.shutdown import stop_event
from spark_jobs.stream.runner import StreamConfig, run_streams


def cmd_stream(args: argparse.Namespace) -> int:
    tune_for_service()
    print(f"streaming: regions {args.regions}, lakehouse {args.lakehouse}, "
          f"Spark master {args.master} "
          "(the first run downloads the Delta jars from Maven Central)", flush=True)
    port = _metrics_port(args.metrics_port, args.metrics_host, "stream")
    run_streams(_regions(args.regions), StreamConfig(lakehouse=args.lakehouse,
                                                     trigger_s=args.trigger_s,
                                                     record_every_s=args.record_every_s,
                                                     state_every_s=args.state_every_s),
                stop=stop_event(), metrics_port=port, metrics_host=args.metrics_host,
                master=args.master)
    return 0
