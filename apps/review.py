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
import base64
import getpass
import json
import os
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from apps.auth.cli import add_operator_options, operator, refuse
from apps.auth.exceptions import AuthError
from lakehouse.contract import REGIONS

STATUSES = ("waiting", "open", "closed", "resolved")


def _queue(root: Path):
    import deltalake  # here, not at import: the store agent's CLI stays light

    from lakehouse.catalogue import REVIEW_QUEUE  # pyarrow: not on a store machine

    path = REVIEW_QUEUE.path(root)
    if not (path / "_delta_log").exists():
        raise SystemExit(f"no review queue at {path}: has the streaming job run here?")
    return deltalake.DeltaTable(str(path)).to_pandas()


def cmd_list(args: argparse.Namespace) -> int:
    df = _queue(Path(args.lakehouse))
    if args.region:
        df = df[df.region == args.region]
    if args.status:
        df = df[df.status == args.status]
    df = df.sort_values("detected_at", ascending=False).head(args.limit)
    if df.empty:
        print("no review items")
        return 0
    print(f"{'item':<14} {'status':<9} {'sku':<22} {'store':>6} {'lake':>6} {'diff':>5}  "
          "cause")
    for r in df.itertuples():
        print(f"{r.item_id:<14} {r.status:<9} {_cell(r.sku):<22} {_cell(r.store_before):>6} "
              f"{_cell(r.lakehouse_before):>6} {_cell(r.difference):>5}  {r.cause}")
    return 0


def _cell(value: Any) -> str:
    """A number or name for the table; '-' where a dead-lettered event had none."""
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return str(int(value)) if isinstance(value, float) else str(value)


def _agent_login(args: argparse.Namespace) -> tuple[str, str]:
    """The store operator the adjustment is recorded as (the agent checks the password;
    ``shelflife agent operators add`` at the store)."""
    name = args.agent_operator
    if not name:
        raise SystemExit("an adjustment at the store needs --agent-operator (an operator of "
                         "that store's agent)")
    password = os.environ.get("SHELFLIFE_AGENT_PASSWORD")
    if password is None:
        password = getpass.getpass(f"store operator {name}'s password: ")
    return name, password


def _post_adjustment(url: str, item: Any, lot: str, counted: int,
                     login: tuple[str, str]) -> str:
    body = json.dumps({"event_type": "adjusted", "sku": item.sku, "lot": lot,
                       "counted_quantity": counted}).encode()
    token = base64.b64encode(f"{login[0]}:{login[1]}".encode()).decode()
    req = urllib.request.Request(url.rstrip("/") + "/events", data=body, method="POST",
                                 headers={"Content-Type": "application/json",
                                          "Authorization": f"Basic {token}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())["event_id"]
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        raise SystemExit(f"the store agent refused the adjustment ({exc.code}): {detail}"
                         ) from exc
    except OSError as exc:
        raise SystemExit(f"could not reach the store agent at {url}: {exc}") from exc


def cmd_resolve(args: argparse.Namespace) -> int:
    root = Path(args.lakehouse)
    try:  # before anything else: a refused login must not reach the store agent
        user = operator(args, "resolve review items")
    except AuthError as exc:
        return refuse(exc)
    df = _queue(root)
    match = df[df.item_id == args.item]
    if match.empty:
        raise SystemExit(f"no review item {args.item!r} (see: shelflife review list)")
    item = match.iloc[0]
    if item.status == "resolved":
        raise SystemExit(f"{args.item} is already resolved by {item.resolved_by}")
    if (args.counted is None) != (args.agent_url is None) or \
            (args.counted is not None and not args.lot):
        raise SystemExit("an adjustment needs --counted, --lot and --agent-url together")
    adjustment = None
    if args.counted is not None:
        adjustment = _post_adjustment(args.agent_url, item, args.lot, args.counted,
                                      _agent_login(args))
    row = {"item_id": args.item, "region": item.region, "resolved_by": user.name,
           "resolved_at": datetime.now(UTC), "resolution": args.how,
           "adjustment_event_id": adjustment}
    import deltalake  # delta-rs and Arrow: not on a store machine
    import pyarrow as pa  # as above

    from lakehouse.catalogue import REVIEW_RESOLUTIONS  # pyarrow: not on a store machine

    path = REVIEW_RESOLUTIONS.path(root)
    schema = pa.schema(deltalake.DeltaTable(str(path)).schema().to_arrow())
    table = pa.Table.from_pylist([row], schema=schema)
    deltalake.write_deltalake(str(path), table, mode="append")
    print(f"{args.item}: resolved by {user.name}"
          + (f"; adjustment {adjustment} recorded at the store" if adjustment else ""))
    return 0


def add_review_commands(sub: argparse._SubParsersAction, add_option) -> None:
    p = sub.add_parser("review", help="list or resolve quantity-conflict review items")
    inner = p.add_subparsers(dest="review_command", required=True)
    q = inner.add_parser("list", help="newest review items first (gold/review_queue)")
    add_option(q, "--lakehouse", "SHELFLIFE_LAKEHOUSE", "./lakehouse", "lakehouse root folder")
    q.add_argument("--region", choices=REGIONS)
    q.add_argument("--status", choices=STATUSES)
    q.add_argument("--limit", type=int, default=30)
    q.set_defaults(fn=cmd_list)
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
    r.set_defaults(fn=cmd_resolve)

