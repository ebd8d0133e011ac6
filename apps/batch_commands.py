"""What ``shelflife batch``, ``transfers`` and ``reference`` do once chosen (parsers in
:mod:`apps.batch`): the decision jobs, approvals, dispatch and reference tables, with
the server packages they need imported here."""

from __future__ import annotations

import argparse
import csv
import json
from datetime import date

from apps.auth.cli import refuse
from apps.auth.commands import operator
from apps.auth.exceptions import AuthError
from apps.connection import open_credentials
from ingest.orders import OrderDispatcher, default_brokers
from lakehouse.catalogue import TRANSFER_RECOMMENDATIONS
from lakehouse.credentials import SigningKeys
from lakehouse.decisions import record_decision
from lakehouse.readers import read_table
from lakehouse.shutdown import stop_event
from lakehouse.storage import check_bucket, lake_url
from spark_jobs.decisions import jobs as batch
from spark_jobs.decisions.reference import _checked, read_reference, upsert


def _fail(message: str) -> int:
    print(f"error: {message}")
    return 2


def cmd_batch(args: argparse.Namespace) -> int:
    root = lake_url(args.lakehouse)
    check_bucket(root)
    jobs = batch.JOBS if args.job == "all" else (args.job,)
    spark = None
    results = []
    for job in jobs:
        if job in ("forecasts", "accuracy") and spark is None:
            spark = batch.batch_session(say=lambda m: print(m, flush=True), root=root,
                                        master=args.master)
        if job == "forecasts":
            through = date.fromisoformat(args.through) if args.through else None
            results.append(batch.run_forecasts_job(root, spark=spark, through=through,
                                                   horizon_days=args.horizon_days))
        elif job == "transfers":
            results.append(batch.run_transfers_job(root, horizon_days=args.horizon_days))
        else:
            results.append(batch.run_job(job, root, spark=spark))
    if args.json:
        print(json.dumps(results))
    return 0


def cmd_schedule(args: argparse.Namespace) -> int:
    every = {"forecasts": args.forecasts_every_s, "accuracy": args.forecasts_every_s,
             "transfers": args.decisions_every_s, "reorders": args.decisions_every_s}
    batch.run_schedule(lake_url(args.lakehouse), every_s=every,
                       first_after_s=args.first_after_s, stop=stop_event(), master=args.master)
    return 0


def cmd_transfers_list(args: argparse.Namespace) -> int:
    recs = read_table(TRANSFER_RECOMMENDATIONS, lake_url(args.lakehouse))
    if recs is None:
        return _fail("no transfer recommendations yet: run `shelflife batch transfers`")
    if args.status:
        recs = recs[recs["status"] == args.status]
    recs = recs.sort_values("value_saved", ascending=False).head(args.limit)
    if recs.empty:
        print("no transfer recommendations")
        return 0
    print(f"{'id':<18} {'status':<9} {'sku':<20} {'lot':<12} {'from':<12} {'to':<12} "
          f"{'qty':>5} {'life@arr':>8} {'saved':>6}")
    for r in recs.itertuples():
        print(f"{r.recommendation_id:<18} {r.status:<9} {r.sku:<20} {r.lot:<12} "
              f"{r.source_location:<12} {r.destination_location:<12} {r.quantity:>5} "
              f"{r.shelf_life_at_arrival_days:>7.1f}d {r.expected_units_saved:>6.1f}")
        print(f"    {r.reason}")
    return 0


def cmd_transfers_decide(args: argparse.Namespace) -> int:
    verb = "approve" if args.decision == "approved" else "reject"
    try:
        user = operator(args, f"{verb} transfers")
    except AuthError as exc:
        return refuse(exc)
    try:
        record_decision(args.recommendation_id, args.decision, user.name, note=args.note,
                        root=lake_url(args.lakehouse))
    except ValueError as exc:
        return _fail(str(exc))
    print(f"{args.recommendation_id}: {args.decision} by {user.name}")
    return 0


def cmd_transfers_dispatch(args: argparse.Namespace) -> int:
    creds = open_credentials(args, "transfers dispatch")
    brokers = default_brokers(args.broker_host, tls_ca=args.tls_ca)
    if creds is not None:  # dispatcher@<region>, and every order signed
        brokers = {region: b.with_login(creds.dispatcher_credentials(region).username,
                                        creds.dispatcher_credentials(region).password)
                   for region, b in brokers.items()}
    dispatcher = OrderDispatcher(lake_url(args.lakehouse), brokers,
                                 keys=SigningKeys(creds.path) if creds else None)
    try:
        if args.once:
            counts = dispatcher.run_once()
            print("orders: " + ", ".join(f"{n} {what}" for what, n in counts.items()))
            return 1 if counts["failed"] else 0
        dispatcher.run(args.every_s, stop=stop_event())
    finally:
        dispatcher.close()
    return 0


def cmd_reference_list(args: argparse.Namespace) -> int:
    frame = read_reference(args.table, lake_url(args.lakehouse))
    if frame.empty:
        print(f"{args.table}: no entries (defaults apply; see `shelflife reference --help`)")
        return 0
    print(frame.drop(columns=["updated_at"]).to_string(index=False))
    return 0


def _upsert(table: str, rows: list[dict], lakehouse: str) -> int:
    try:
        size = upsert(table, rows, lake_url(lakehouse))
    except ValueError as exc:
        return _fail(str(exc))
    print(f"{table}: {len(rows)} row(s) written, {size} in the table")
    return 0


def cmd_transit_set(args: argparse.Namespace) -> int:
    rows = [{"source": args.source, "destination": args.destination,
             "transit_hours": args.hours, "cost_per_unit": args.cost}]
    if args.both_ways:
        rows.append({**rows[0], "source": args.destination, "destination": args.source})
    return _upsert("transit_times", rows, args.lakehouse)


def cmd_transit_import(args: argparse.Namespace) -> int:
    """CSV with a header ``source,destination,transit_hours[,cost_per_unit]``; every line is
    checked before anything is written, and the first bad one is named."""
    rows = []
    with open(args.file, encoding="utf-8", newline="") as fh:
        for n, line in enumerate(csv.DictReader(fh), start=2):
            row = {"source": line.get("source"), "destination": line.get("destination"),
                   "transit_hours": line.get("transit_hours"),
                   "cost_per_unit": line.get("cost_per_unit") or None}
            try:
                _checked("transit_times", row)
            except ValueError as exc:
                return _fail(f"{args.file} line {n}: {exc}")
            rows.append(row)
    return _upsert("transit_times", rows, args.lakehouse)


def cmd_policy_set(args: argparse.Namespace) -> int:
    return _upsert("sellable_policy", [{"category": args.category,
                                        "destination_kind": args.kind,
                                        "min_sellable_days": args.min_sellable_days,
                                        "handling_hours": args.handling_hours}],
                   args.lakehouse)


def cmd_location_set(args: argparse.Namespace) -> int:
    return _upsert("locations", [{"location_id": args.location_id, "region": args.region,
                                  "kind": args.kind}], args.lakehouse)
