"""``shelflife batch``, ``shelflife transfers`` and ``shelflife reference``: the decision
jobs, their approvals, and the reference tables they read, from a shell.

``batch forecasts|accuracy|transfers|reorders|all`` runs a job once and prints its
progress; ``batch schedule`` runs them on a timer (the demo does). ``transfers list``
shows what is proposed; ``approve``/``reject`` log the operator in (``--user`` and a
password, see :mod:`apps.auth.cli`) and record that name as the decider (appended to
silver ``transfer_decisions``; nothing is edited in place). ``reference`` edits the transit
matrix, the sellable-life policy and location kinds.
"""

from __future__ import annotations

import argparse
import csv
import json
from datetime import date
from pathlib import Path

from apps.auth.cli import add_operator_options, operator, refuse
from apps.auth.exceptions import AuthError
from apps.connection import add_connection_options, open_credentials
from apps.shutdown import stop_event
from lakehouse.credentials import SigningKeys
from lakehouse.transfer_status import TRANSFER_STATUSES

JOB_CHOICES = ("forecasts", "accuracy", "transfers", "reorders", "all")


def _fail(message: str) -> int:
    print(f"error: {message}")
    return 2


def cmd_batch(args: argparse.Namespace) -> int:
    from spark_jobs.decisions import jobs as batch  # pyspark: only when a job runs

    root = Path(args.lakehouse)
    jobs = batch.JOBS if args.job == "all" else (args.job,)
    spark = None
    results = []
    for job in jobs:
        if job in ("forecasts", "accuracy") and spark is None:
            spark = batch.batch_session(say=lambda m: print(m, flush=True))
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
    from spark_jobs.decisions import jobs as batch  # pyspark: only when jobs run

    every = {"forecasts": args.forecasts_every_s, "accuracy": args.forecasts_every_s,
             "transfers": args.decisions_every_s, "reorders": args.decisions_every_s}
    batch.run_schedule(Path(args.lakehouse), every_s=every, first_after_s=args.first_after_s,
                       stop=stop_event())
    return 0


def cmd_transfers_list(args: argparse.Namespace) -> int:
    from lakehouse.catalogue import TRANSFER_RECOMMENDATIONS  # pyarrow: not on a store machine
    from lakehouse.readers import read_table  # pandas: not on a store machine

    recs = read_table(TRANSFER_RECOMMENDATIONS, Path(args.lakehouse))
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
    from lakehouse.decisions import record_decision  # pandas: not on a store machine

    verb = "approve" if args.decision == "approved" else "reject"
    try:
        user = operator(args, f"{verb} transfers")
    except AuthError as exc:
        return refuse(exc)
    try:
        record_decision(args.recommendation_id, args.decision, user.name, note=args.note,
                        root=Path(args.lakehouse))
    except ValueError as exc:
        return _fail(str(exc))
    print(f"{args.recommendation_id}: {args.decision} by {user.name}")
    return 0


def cmd_transfers_dispatch(args: argparse.Namespace) -> int:
    from ingest.orders import OrderDispatcher, default_brokers  # reads with pandas

    creds = open_credentials(args, "transfers dispatch")
    brokers = default_brokers(args.broker_host, tls_ca=args.tls_ca)
    if creds is not None:  # dispatcher@<region>, and every order signed
        brokers = {region: b.with_login(creds.dispatcher_credentials(region).username,
                                        creds.dispatcher_credentials(region).password)
                   for region, b in brokers.items()}
    dispatcher = OrderDispatcher(Path(args.lakehouse), brokers,
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
    from spark_jobs.decisions.reference import read_reference  # pandas, as above

    frame = read_reference(args.table, Path(args.lakehouse))
    if frame.empty:
        print(f"{args.table}: no entries (defaults apply; see `shelflife reference --help`)")
        return 0
    print(frame.drop(columns=["updated_at"]).to_string(index=False))
    return 0


def _upsert(table: str, rows: list[dict], lakehouse: str) -> int:
    from spark_jobs.decisions.reference import upsert  # pandas, as above

    try:
        size = upsert(table, rows, Path(lakehouse))
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
    from spark_jobs.decisions.reference import _checked  # pandas, as above

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


def add_batch_commands(sub: argparse._SubParsersAction, add_option) -> None:
    def lakehouse(p: argparse.ArgumentParser) -> None:
        add_option(p, "--lakehouse", "SHELFLIFE_LAKEHOUSE", "./lakehouse",
                   "lakehouse root folder")

    batch = sub.add_parser("batch", help="decision jobs: forecasts, accuracy, transfers, "
                                         "reorders")
    bsub = batch.add_subparsers(dest="batch_command", required=True)
    for job in JOB_CHOICES:
        p = bsub.add_parser(job, help=f"run the {job} job once" if job != "all"
                            else "run every job once, in order")
        lakehouse(p)
        p.add_argument("--horizon-days", type=int, default=7, help="days ahead (default 7)")
        p.add_argument("--through", default=None,
                       help="forecasts: last day of history (default: yesterday)")
        p.add_argument("--json", action="store_true", help="print the results as JSON")
        p.set_defaults(fn=cmd_batch, job=job)
    p = bsub.add_parser("schedule", help="run the jobs on a timer (the demo does)")
    lakehouse(p)
    add_option(p, "--forecasts-every-s", "SHELFLIFE_FORECASTS_EVERY_S", 1800.0,
               "forecasts and accuracy every", type=float)
    add_option(p, "--decisions-every-s", "SHELFLIFE_DECISIONS_EVERY_S", 300.0,
               "transfers and reorders every", type=float)
    add_option(p, "--first-after-s", "SHELFLIFE_BATCH_FIRST_AFTER_S", 120.0,
               "first round after", type=float)
    p.set_defaults(fn=cmd_schedule)

    tr = sub.add_parser("transfers", help="transfer recommendations: list, approve, reject")
    tsub = tr.add_subparsers(dest="transfers_command", required=True)
    p = tsub.add_parser("list", help="recommendations, most value first")
    lakehouse(p)
    p.add_argument("--status", choices=TRANSFER_STATUSES)
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(fn=cmd_transfers_list)
    for decision, verb in (("approved", "approve"), ("rejected", "reject")):
        p = tsub.add_parser(verb, help=f"{verb} a recommendation")
        lakehouse(p)
        p.add_argument("recommendation_id")
        add_operator_options(p, add_option)
        p.add_argument("--note", default="", help="why")
        p.set_defaults(fn=cmd_transfers_decide, decision=decision)
    p = tsub.add_parser("dispatch", help="send approved transfers to the locations that "
                                         "ship them (retained orders on their brokers)")
    lakehouse(p)
    add_option(p, "--broker-host", "SHELFLIFE_BROKER_HOST", "127.0.0.1",
               "host of the regional brokers (each on its default port)")
    add_connection_options(p, add_option,
                           who="logs in as dispatcher@<region> and signs orders")
    add_option(p, "--every-s", "SHELFLIFE_ORDERS_EVERY_S", 15.0, "a round every",
               type=float)
    p.add_argument("--once", action="store_true", help="one round, then exit")
    p.set_defaults(fn=cmd_transfers_dispatch)

    ref = sub.add_parser("reference", help="transit matrix, sellable-life policy, locations")
    rsub = ref.add_subparsers(dest="reference_command", required=True)
    p = rsub.add_parser("list", help="show a reference table")
    lakehouse(p)
    p.add_argument("table", choices=("transit_times", "sellable_policy", "locations"))
    p.set_defaults(fn=cmd_reference_list)
    p = rsub.add_parser("transit", help="set the transit time of a location pair")
    lakehouse(p)
    p.add_argument("source")
    p.add_argument("destination")
    p.add_argument("hours", type=float, help="transit hours (negative: not a route)")
    p.add_argument("--cost", type=float, default=None, help="cost per unit")
    p.add_argument("--both-ways", action="store_true", help="set the reverse pair too")
    p.set_defaults(fn=cmd_transit_set)
    p = rsub.add_parser("transit-import", help="load transit times from a CSV file")
    lakehouse(p)
    p.add_argument("file", help="CSV: source,destination,transit_hours[,cost_per_unit]")
    p.set_defaults(fn=cmd_transit_import)
    p = rsub.add_parser("policy", help="minimum shelf life at arrival per category and kind")
    lakehouse(p)
    p.add_argument("category")
    p.add_argument("kind", choices=("store", "warehouse"))
    p.add_argument("min_sellable_days", type=float)
    p.add_argument("--handling-hours", type=float, default=None,
                   help="unload and shelve time after arrival (default 8 store, 2 warehouse)")
    p.set_defaults(fn=cmd_policy_set)
    p = rsub.add_parser("location", help="set a location's region and kind")
    lakehouse(p)
    p.add_argument("location_id")
    p.add_argument("region")
    p.add_argument("kind", choices=("store", "warehouse"))
    p.set_defaults(fn=cmd_location_set)
