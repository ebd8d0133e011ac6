"""Reorder suggestions approved into purchase orders: the daily spend limit, the log and
the document that leaves the lakehouse (in a folder and on S3), and an order counted as
on its way until its receipt names it."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import pandas as pd
import pytest

from lakehouse import purchase_orders as po
from lakehouse.catalogue import EVENTS, ITEMS, PURCHASE_ORDERS, REORDER_SUGGESTIONS
from lakehouse.readers import read_table
from lakehouse.storage import is_s3, s3_client, split_s3
from tests.lakehouse.demo_tables import write_catalogue_table, write_one_store_of_milk

NOW = datetime.now(UTC).replace(microsecond=0)


def suggestions() -> pd.DataFrame:
    """Three east stores short of milk and one west store short of bread."""
    rows = []
    for loc, region, sku, on_hand, qty in (
            ("E-1", "east", "MILK", 0, 24), ("E-2", "east", "MILK", 6, 12),
            ("E-3", "east", "MILK", 2, 36), ("W-1", "west", "BREAD", 1, 10)):
        rows.append({"region": region, "location_id": loc, "sku": sku, "category": "dairy",
                     "on_hand": on_hand, "sellable_at_arrival": 0.0, "in_transit": 0,
                     "lead_time_days": 1.0, "arrives_on": date(2026, 12, 8),
                     "cover_until": date(2026, 12, 9), "demand_forecast": 12.0,
                     "safety_stock": 2.0, "order_quantity": qty, "case_size": 6,
                     "shelf_life_days": 7, "expected_waste_units": 0.5, "waste_prob": 0.1,
                     "reason": "short", "created_at": NOW - timedelta(minutes=5)})
    return pd.DataFrame(rows)


def prices() -> pd.DataFrame:
    return pd.DataFrame({"sku": ["MILK", "BREAD"], "price": [1.0, 2.5]})


def test_the_emptiest_shelves_are_ordered_first_within_each_regions_limit():
    ranked = po.priced(suggestions(), prices())
    assert ranked["location_id"].tolist() == ["E-1", "W-1", "E-3", "E-2"]  # cover 0, 1/12..
    assert ranked["value"].tolist() == [24.0, 25.0, 36.0, 12.0]
    fit = po.that_fit(ranked, {"east": 20.0}, limit=60.0)
    # east has 40 left: E-1 (24) fits, E-3 (36) does not, E-2 (12) does; west has 60
    assert fit["location_id"].tolist() == ["E-1", "W-1", "E-2"]
    unpriced = po.priced(suggestions(), prices().iloc[:1])
    assert po.that_fit(unpriced, {}, 1000.0)["sku"].unique().tolist() == ["MILK"]


@pytest.fixture(params=["folder", "s3"])
def lake(request, tmp_path) -> str:
    return str(tmp_path) if request.param == "folder" else request.getfixturevalue("s3_lake")


def read_document(lake: str, name: str) -> dict:
    target = f"{po.outbox(lake)}/{name}"
    if is_s3(target):
        bucket, key = split_s3(target)
        return json.loads(s3_client().get_object(Bucket=bucket, Key=key)["Body"].read())
    with open(target, encoding="utf-8") as fh:
        return json.load(fh)


def test_approved_orders_are_logged_sent_once_and_limited(lake):
    ranked = po.priced(suggestions(), prices())
    first = po.approve(ranked.iloc[:2], "ana", root=lake, limit=50.0, now=NOW)
    lines = read_table(PURCHASE_ORDERS, lake).sort_values("po_id")
    assert lines["location_id"].tolist() == ["E-1", "W-1"]
    assert set(lines["approved_by"]) == {"ana"} and lines["value"].sum() == 49.0
    doc = read_document(lake, f"{first.batch_id}.json")
    assert [(o["ship_to"], o["sku"], o["quantity"]) for o in doc["orders"]] == [
        ("E-1", "MILK", 24), ("W-1", "BREAD", 10)]
    assert doc["approved_by"] == "ana" and doc["total_value"] == 49.0

    # The same suggestion cannot be ordered twice, nor past the limit.
    with pytest.raises(ValueError, match="approved already"):
        po.approve(ranked.iloc[:1], "ben", root=lake, limit=50.0, now=NOW)
    assert po.not_yet_ordered(suggestions(), lake, NOW)["location_id"].tolist() == [
        "E-2", "E-3"]
    with pytest.raises(po.SpendLimitError, match=r"east: .* 36.00.*\(26.00 left\)"):
        po.approve(ranked[ranked["location_id"] == "E-3"], "ana", root=lake, limit=50.0,
                   now=NOW)
    assert po.spent_today(lake, NOW) == {"east": 24.0, "west": 25.0}
    assert po.spent_today(lake, NOW + timedelta(days=1)) == {}  # a new day, a new limit

    # An export that missed a document (a crash after the log) writes it, once.
    assert po.export_pending(lake) == []
    second = po.approve(ranked[ranked["location_id"] == "E-2"], "ana", root=lake,
                        limit=50.0, now=NOW + timedelta(minutes=1))
    target = f"{po.outbox(lake)}/{second.batch_id}.json"
    if is_s3(target):
        bucket, key = split_s3(target)
        s3_client().delete_object(Bucket=bucket, Key=key)
    else:
        import os
        os.remove(target)
    assert po.export_pending(lake) == [second.batch_id]
    assert read_document(lake, f"{second.batch_id}.json")["orders"][0]["ship_to"] == "E-2"


def test_an_unpriced_sku_is_refused_because_the_limit_cannot_be_checked(tmp_path):
    ranked = po.priced(suggestions(), prices().iloc[:1])
    with pytest.raises(ValueError, match="no price in the catalogue for BREAD"):
        po.approve(ranked, "ana", root=tmp_path, limit=1000.0, now=NOW)
    assert read_table(PURCHASE_ORDERS, tmp_path) is None


def test_an_order_is_on_its_way_until_its_receipt_names_it(tmp_path):
    ranked = po.priced(suggestions(), prices())
    done = po.approve(ranked.iloc[:2], "ana", root=tmp_path, limit=100.0, now=NOW)
    first, second = done.lines["po_id"].tolist()
    write_catalogue_table(tmp_path, EVENTS, [{
        "event_id": "ev-1", "region": "east", "location_id": "E-1", "seq": 7,
        "event_type": "received", "category": "transactional", "occurred_at": NOW,
        "sku": "MILK", "quantity": 24, "payload": {"sku": "MILK", "supplier_ref": first}}])
    waiting = po.open_orders(tmp_path, NOW + timedelta(hours=20))
    assert waiting["po_id"].tolist() == [second]
    assert po.open_orders(tmp_path, NOW + timedelta(days=po.OPEN_DAYS + 1)).empty


def test_the_reorders_job_does_not_suggest_what_is_on_order(tmp_path):
    from spark_jobs.decisions.jobs import run_reorders_job

    now = datetime.now(UTC)
    write_one_store_of_milk(tmp_path, now, {"L1": 4}, forecast=24.0)
    run_reorders_job(tmp_path, now=now, say=lambda _: None)
    milk = read_table(REORDER_SUGGESTIONS, tmp_path)
    assert milk["location_id"].tolist() == ["E-S001"] and milk["order_quantity"].iat[0] > 0
    po.approve(po.priced(milk, read_table(ITEMS, tmp_path)), "ana", root=tmp_path,
               limit=1e6, now=now)
    said: list[str] = []
    run_reorders_job(tmp_path, now=now, say=said.append)
    after = read_table(REORDER_SUGGESTIONS, tmp_path)
    assert after is None or after["order_quantity"].sum() < milk["order_quantity"].sum()
    assert any(f"{milk['order_quantity'].iat[0]} units on order" in line for line in said)


def test_the_command_lists_spend_and_what_is_on_order_and_exports(tmp_path, capsys):
    from apps.cli import main

    ranked = po.priced(suggestions(), prices())
    done = po.approve(ranked.iloc[:1], "ana", root=tmp_path, limit=100.0)
    assert main(["purchase-orders", "list", "--lakehouse", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "east: 24.00 of 5,000.00 spent today" in out
    assert f"{done.lines['po_id'].iat[0]}  E-1  MILK  24  due 2026-12-08" in out
    assert main(["purchase-orders", "export", "--lakehouse", str(tmp_path)]) == 0
    assert "0 document(s) written" in capsys.readouterr().out  # approve exported it
