"""``shelflife review``: the quantity-conflict review queue from a shell.

``list`` reads gold ``review_queue`` with deltalake. ``resolve`` logs the operator in
(``--user`` and a password, see :mod:`apps.auth.cli`) and appends that name, when and
how to silver ``review_resolutions`` (nothing is edited in place); the streaming job
marks the item resolved in gold within a few seconds. With ``--counted`` and
``--agent-url`` it also records an ``adjusted`` event at the store, through the store
agent's HTTP API: the store owns its seq numbers, so the correction travels the same
path as every other event and shows up in stock like one.
"""

from __future__ import annotations

import argparse

from apps.auth.cli import add_operator_options
from apps.lazy import handler
from lakehouse.contract import REGIONS

STATUSES = ("waiting", "open", "closed", "resolved")


def add_review_commands(sub: argparse._SubParsersAction, add_option) -> None:
    p = sub.add_parser("review", help="list or resolve quantity-conflict review items")
    inner = p.add_subparsers(dest="review_command", required=True)
    q = inner.add_parser("list", help="newest review items first (gold/review_queue)")
    add_option(q, "--lakehouse", "SHELFLIFE_LAKEHOUSE", "./lakehouse", "lakehouse root folder")
    q.add_argument("--region", choices=REGIONS)
    q.add_argument("--status", choices=STATUSES)
    q.add_argument("--limit", type=int, default=30)
    q.set_defaults(fn=handler("apps.review_commands:cmd_list"))
    r = inner.add_parser("resolve", help="record who resolved an item, when and how")
    add_option(r, "--lakehouse", "SHELFLIFE_LAKEHOUSE", "./lakehouse", "lakehouse root folder")
    r.add_argument("item", help="item id, e.g. E001:4")
    add_operator_options(r, add_option)
    r.add_argument("--how", required=True, help="what was found and done")
    r.add_argument("--lot", help="lot to correct (with --counted)")
    r.add_argument("--counted", type=int, help="quantity counted in that lot now")
    r.add_argument("--agent-url", help="the store agent's HTTP API (shelflife agent serve)")
    add_option(r, "--agent-operator", "SHELFLIFE_AGENT_OPERATOR", None,
               "store operator the adjustment is recorded as (password: prompt, or env "
               "SHELFLIFE_AGENT_PASSWORD for scripts)")
    r.set_defaults(fn=handler("apps.review_commands:cmd_resolve"))

