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

from apps.auth.cli import add_operator_options
from apps.connection import add_connection_options
from apps.lazy import handler
from lakehouse.transfer_status import TRANSFER_STATUSES

JOB_CHOICES = ("forecasts", "accuracy", "transfers", "reorders", "all")


def add_master_option(p: argparse.ArgumentParser, add_option) -> None:
    """``--master``: where the Spark jobs run (``spark://host:port`` for a standalone
    cluster, see scripts/spark_cluster.py)."""
    add_option(p, "--master", "SHELFLIFE_SPARK_MASTER", "local[2]",
               "Spark master: local[N] or spark://host:port of a standalone cluster")


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
        add_master_option(p, add_option)
        p.set_defaults(fn=handler("apps.batch_commands:cmd_batch"), job=job)
    p = bsub.add_parser("schedule", help="run the jobs on a timer (the demo does)")
    lakehouse(p)
    add_option(p, "--forecasts-every-s", "SHELFLIFE_FORECASTS_EVERY_S", 1800.0,
               "forecasts and accuracy every", type=float)
    add_option(p, "--decisions-every-s", "SHELFLIFE_DECISIONS_EVERY_S", 300.0,
               "transfers and reorders every", type=float)
    add_option(p, "--first-after-s", "SHELFLIFE_BATCH_FIRST_AFTER_S", 120.0,
               "first round after", type=float)
    add_master_option(p, add_option)
    p.set_defaults(fn=handler("apps.batch_commands:cmd_schedule"))

    tr = sub.add_parser("transfers", help="transfer recommendations: list, approve, reject")
    tsub = tr.add_subparsers(dest="transfers_command", required=True)
    p = tsub.add_parser("list", help="recommendations, most value first")
    lakehouse(p)
    p.add_argument("--status", choices=TRANSFER_STATUSES)
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(fn=handler("apps.batch_commands:cmd_transfers_list"))
    for decision, verb in (("approved", "approve"), ("rejected", "reject")):
        p = tsub.add_parser(verb, help=f"{verb} a recommendation")
        lakehouse(p)
        p.add_argument("recommendation_id")
        add_operator_options(p, add_option)
        p.add_argument("--note", default="", help="why")
        p.set_defaults(fn=handler("apps.batch_commands:cmd_transfers_decide"), decision=decision)
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
    p.set_defaults(fn=handler("apps.batch_commands:cmd_transfers_dispatch"))

    ref = sub.add_parser("reference", help="transit matrix, sellable-life policy, locations")
    rsub = ref.add_subparsers(dest="reference_command", required=True)
    p = rsub.add_parser("list", help="show a reference table")
    lakehouse(p)
    p.add_argument("table", choices=("transit_times", "sellable_policy", "locations"))
    p.set_defaults(fn=handler("apps.batch_commands:cmd_reference_list"))
    p = rsub.add_parser("transit", help="set the transit time of a location pair")
    lakehouse(p)
    p.add_argument("source")
    p.add_argument("destination")
    p.add_argument("hours", type=float, help="transit hours (negative: not a route)")
    p.add_argument("--cost", type=float, default=None, help="cost per unit")
    p.add_argument("--both-ways", action="store_true", help="set the reverse pair too")
    p.set_defaults(fn=handler("apps.batch_commands:cmd_transit_set"))
    p = rsub.add_parser("transit-import", help="load transit times from a CSV file")
    lakehouse(p)
    p.add_argument("file", help="CSV: source,destination,transit_hours[,cost_per_unit]")
    p.set_defaults(fn=handler("apps.batch_commands:cmd_transit_import"))
    p = rsub.add_parser("policy", help="minimum shelf life at arrival per category and kind")
    lakehouse(p)
    p.add_argument("category")
    p.add_argument("kind", choices=("store", "warehouse"))
    p.add_argument("min_sellable_days", type=float)
    p.add_argument("--handling-hours", type=float, default=None,
                   help="unload and shelve time after arrival (default 8 store, 2 warehouse)")
    p.set_defaults(fn=handler("apps.batch_commands:cmd_policy_set"))
    p = rsub.add_parser("location", help="set a location's region and kind")
    lakehouse(p)
    p.add_argument("location_id")
    p.add_argument("region")
    p.add_argument("kind", choices=("store", "warehouse"))
    p.set_defaults(fn=handler("apps.batch_commands:cmd_location_set"))
