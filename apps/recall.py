"""``shelflife recall``: put a lot on hold across the network, see where it is, release it.

``hold`` and ``release`` log the operator in (``--user`` and a password, see
:mod:`apps.auth.cli`) and append to silver ``lot_holds`` (:mod:`lakehouse.recalls`); the
order dispatcher (``shelflife ingest``) carries the hold to every store within one round.
``list`` shows each lot on hold, the locations still holding units and how many stores
have confirmed it.
"""

from __future__ import annotations

import argparse

from apps.auth.cli import add_operator_options
from apps.lazy import handler


def add_recall_commands(sub: argparse._SubParsersAction, add_option) -> None:
    p = sub.add_parser("recall", help="put a lot on hold network-wide, list or release holds")
    inner = p.add_subparsers(dest="recall_command", required=True)
    for action, helptext in (
            ("hold", "put SKU lot LOT on hold at every location (a recall)"),
            ("release", "lift the hold: the lot may be sold and moved again"),
            ("list", "lots on hold, who holds units and who confirmed")):
        q = inner.add_parser(action, help=helptext)
        add_option(q, "--lakehouse", "SHELFLIFE_LAKEHOUSE", "./lakehouse",
                   "lakehouse root folder or s3://bucket/prefix")
        if action != "list":
            q.add_argument("sku")
            q.add_argument("lot")
            q.add_argument("--reason", required=True,
                           help="why, as the stores will see it (e.g. the supplier's notice)")
            add_operator_options(q, add_option)
        q.set_defaults(fn=handler(f"apps.recall_commands:cmd_{action}"))
