"""What ``shelflife review list|resolve`` do once chosen (parsers in :mod:`apps.review`)."""

from __future__ import annotations

import argparse
import base64
import getpass
import json
import os
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any

import deltalake
import pyarrow as pa

from apps.auth.cli import refuse
from apps.auth.commands import operator
from apps.auth.exceptions import AuthError
from lakehouse.catalogue import REVIEW_QUEUE, REVIEW_RESOLUTIONS
from lakehouse.readers import is_table
from lakehouse.storage import delta_options, lake_url


def _queue(root: str):
    url = REVIEW_QUEUE.uri(root)
    if not is_table(url):
        raise SystemExit(f"no review queue at {url}: has the streaming job run here?")
    return deltalake.DeltaTable(url, storage_options=delta_options(url)).to_pandas()


def cmd_list(args: argparse.Namespace) -> int:
    df = _queue(lake_url(args.lakehouse))
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
    root = lake_url(args.lakehouse)
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


    url = REVIEW_RESOLUTIONS.uri(root)
    options = delta_options(url)
    schema = pa.schema(deltalake.DeltaTable(url, storage_options=options).schema().to_arrow())
    table = pa.Table.from_pylist([row], schema=schema)
    deltalake.write_deltalake(url, table, mode="append", storage_options=options)
    print(f"{args.item}: resolved by {user.name}"
          + (f"; adjustment {adjustment} recorded at the store" if adjustment else ""))
    return 0
