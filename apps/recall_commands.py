"""What ``shelflife recall hold|release|list`` do once chosen (parsers in
:mod:`apps.recall`)."""

from __future__ import annotations

import argparse

from apps.auth.cli import refuse
from apps.auth.commands import operator
from apps.auth.exceptions import AuthError
from lakehouse import recalls
from lakehouse.contract import ContractError
from lakehouse.storage import check_bucket, lake_url


def _decide(args: argparse.Namespace, verb: str) -> int:
    root = lake_url(args.lakehouse)
    check_bucket(root)
    try:
        user = operator(args, f"{verb} recalls")
    except AuthError as exc:
        return refuse(exc)
    act = recalls.place_hold if verb == "place" else recalls.release_hold
    try:
        row = act(root, args.sku, args.lot, by=user.name, reason=args.reason)
    except (recalls.HoldError, ContractError) as exc:
        raise SystemExit(f"recall: {exc}") from exc
    what = "on hold" if row["on_hold"] else "released"
    print(f"recall: {args.sku} lot {args.lot} {what} by {user.name} ({row['hold_id']}); "
          "the order dispatcher tells every store within a round")
    return 0


def cmd_hold(args: argparse.Namespace) -> int:
    return _decide(args, "place")


def cmd_release(args: argparse.Namespace) -> int:
    return _decide(args, "release")


def cmd_list(args: argparse.Namespace) -> int:
    root = lake_url(args.lakehouse)
    check_bucket(root)
    cur = recalls.current_holds(root)
    on = cur[cur["on_hold"].astype(bool)] if len(cur) else cur
    if on.empty:
        print("recall: no lot on hold")
        return 0
    confirmed = recalls.confirmations(root, on)
    for h in on.itertuples(index=False):
        where = recalls.holders(root, h.sku, h.lot)
        n = int((confirmed["hold_id"] == h.hold_id).sum())
        print(f"{h.sku} lot {h.lot}: on hold since {h.decided_at:%Y-%m-%d %H:%M} UTC by "
              f"{h.decided_by} ({h.reason}); {int(where['units'].sum())} units at "
              f"{len(where)} locations; confirmed by {n} stores")
        for row in where.head(20).itertuples(index=False):
            print(f"  {row.location_id:<12} {row.units:>6}")
    return 0
