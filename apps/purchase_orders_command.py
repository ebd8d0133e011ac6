"""What ``shelflife purchase-orders`` does (parser in :mod:`apps.cli`): list today's
approved purchase orders, or write the document of every approval that has none yet."""

from __future__ import annotations

import argparse

from lakehouse import purchase_orders as po
from lakehouse.catalogue import PURCHASE_ORDERS
from lakehouse.readers import read_table
from lakehouse.storage import check_bucket, lake_url


def cmd_purchase_orders(args: argparse.Namespace) -> int:
    root = lake_url(args.lakehouse)
    check_bucket(root)
    if args.action == "export":
        written = po.export_pending(root)
        print(f"purchase-orders: {len(written)} document(s) written to {po.outbox(root)}"
              + "".join(f"\n  {b}.json" for b in written))
        return 0
    orders = read_table(PURCHASE_ORDERS, root)
    if orders is None or orders.empty:
        print("purchase-orders: none approved yet")
        return 0
    spent = po.spent_today(root)
    limit = po.spend_limit()
    for region in sorted(set(orders["region"])):
        print(f"{region}: {spent.get(region, 0.0):,.2f} of {limit:,.2f} spent today")
    waiting = po.open_orders(root)
    print(f"{len(waiting)} line(s) approved in the last {po.OPEN_DAYS} days not yet received")
    for row in waiting.itertuples(index=False):
        print(f"  {row.po_id}  {row.location_id}  {row.sku}  {row.quantity}  "
              f"due {str(row.arrives_on)[:10]}")
    return 0
