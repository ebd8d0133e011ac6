"""What ``shelflife ingest`` and ``demo`` do once chosen (parsers in :mod:`apps.cli`),
with the server packages they need; ``stream`` is in :mod:`apps.serve_stream`."""

from __future__ import annotations

import argparse

from apps.cli import _metrics_port, _regions
from apps.connection import (
    open_credentials,
)
from apps.demo import run_demo
from ingest.worker import IngestConfig, run_workers
from lakehouse.gcpolicy import tune_for_service
from lakehouse.shutdown import stop_event


def cmd_ingest(args: argparse.Namespace) -> int:
    tune_for_service()
    creds = open_credentials(args, "ingest")
    configs = [IngestConfig(region=r, host=args.broker_host, port=args.broker_ports[r],
                            lakehouse=args.lakehouse,
                            backlog_high_events=args.backlog_high,
                            backlog_low_events=args.backlog_low,
                            max_events_per_s=args.max_events_per_s,
                            give_up_after_s=args.give_up_after_s,
                            trigger_s=args.trigger_s, land_ahead_s=args.land_ahead_s,
                            credentials=str(creds.path) if creds else None,
                            tls_ca=args.tls_ca)
               for r in _regions(args.regions)]
    port = _metrics_port(args.metrics_port, args.metrics_host, "ingest")
    print(f"ingest: regions {args.regions} -> {args.lakehouse}/landing"
          + (f"; metrics on http://{args.metrics_host}:{port}/metrics" if port else ""),
          flush=True)
    return run_workers(configs, stop=stop_event(), metrics_port=port,
                       metrics_host=args.metrics_host)


def cmd_demo(args: argparse.Namespace) -> int:
    return run_demo(lakehouse=args.lakehouse, data_dir=args.data_dir, port=args.port,
                    stores=args.stores, events_per_s=args.events_per_s,
                    users_file=args.users_file,
                    insecure=args.insecure)
