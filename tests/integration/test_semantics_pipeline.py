"""Conflicts, gaps and the catalogue through the real pipeline: mosquitto, ingest,
Spark + Delta; the tables are read back with ``deltalake``."""

from __future__ import annotations

import copy

import pytest

from apps.auth.users import UsersFile
from apps.cli import main
from edge_mqtt.agent import StoreAgent
from lakehouse.contract import encode_event, topic
from tests.clients import raw_client, wait_for

from .pipeline import drain, read, start_ingest, start_spark

pytestmark = [pytest.mark.integration, pytest.mark.spark]


def test_missing_event_conflict_closes_and_catalogue_is_lww(tmp_path, brokers,
                                                            region_ports, spark, monkeypatch):
    root = tmp_path / "lake"
    UsersFile(root / "_auth" / "users.yaml").add("ana", "ana's long passphrase", "approver")
    monkeypatch.setenv("SHELFLIFE_PASSWORD", "ana's long passphrase")
    east = StoreAgent("E001", "east", tmp_path / "e.sqlite")
    west = StoreAgent("W001", "west", tmp_path / "w.sqlite")
    stock = [east.receive("MILK-1L", 20, lot="L1", expires_on="2030-01-10",
                          supplier_ref="PO", unit_cost=1.0),
             east.sell("MILK-1L", 3, unit_price=1.5, transaction_ref="T1"),
             east.sell("MILK-1L", 4, unit_price=1.5, transaction_ref="T2"),
             east.sell("MILK-1L", 2, unit_price=1.5, transaction_ref="T3")]
    wrong = copy.deepcopy(east.sell("MILK-1L", 1, unit_price=1.5, transaction_ref="T4"))
    wrong["payload"]["stock_before"] = 9  # the store keyed 9; it had 11
    items = [east.update_item("MILK-1L", price=1.49, shelf_life_days=10,
                              occurred_at="2026-11-20T09:00:00.000Z"),
             west.update_item("MILK-1L", price=1.59, description="Milk 1 L",
                              occurred_at="2026-11-20T09:05:00.000Z")]
    streams = start_spark(spark, root, ["east", "west"])
    ports = {r: region_ports[r] for r in ("east", "west")}
    workers = start_ingest(root, ports)
    clients = {r: raw_client(p, f"semantics-{r}") for r, p in ports.items()}

    def send(ev: dict) -> None:
        region = "east" if ev["location_id"] == "E001" else "west"
        clients[region].publish(topic(region, ev["location_id"], "events"),
                                encode_event(ev), qos=2)

    def landed(n: int) -> bool:
        return sum(w.stats.landed for w in workers) >= n

    try:
        for ev in (stock[0], stock[1], stock[3], items[1]):  # seq 3 of E001 is lost
            send(ev)
        wait_for("four events landed", lambda: landed(4), 60)
        drain(streams)
        queue = read(root, "gold", "review_queue")
        assert len(queue) == 1
        item = queue.iloc[0]
        assert (item.location_id, item.seq, item.sku) == ("E001", 4, "MILK-1L")
        assert (item.store_before, item.lakehouse_before, item.difference) == (13, 17, -4)
        assert (item.cause, item.status) == ("missing event", "waiting")
        gaps = read(root, "silver", "sequence_gaps")
        assert list(gaps.missing.iloc[0]) == [3] and gaps.status.iloc[0] == "open"

        for ev in (stock[2], wrong, items[0]):  # the lost sale arrives; then a wrong key
            send(ev)
        wait_for("seven events landed", lambda: landed(7), 60)
        drain(streams)
        queue = read(root, "gold", "review_queue").set_index("seq")
        assert queue.loc[4, "status"] == "closed" and queue.loc[4, "lakehouse_before"] == 13
        assert "arrived" in queue.loc[4, "note"] and queue.loc[4, "gap_closed_at"] is not None
        assert (queue.loc[5, "store_before"], queue.loc[5, "lakehouse_before"]) == (9, 11)
        assert (queue.loc[5, "cause"], queue.loc[5, "status"]) == \
            ("entry error or shrinkage", "open")
        assert read(root, "silver", "sequence_gaps").status.tolist() == ["closed"]
        log = read(root, "silver", "quantity_conflicts")
        assert sorted(log[log.seq == 4].status) == ["closed", "waiting"], \
            "the log keeps both findings; nothing is edited in place"

        assert main(["review", "resolve", "E001:5", "--lakehouse", str(root), "--user", "ana",
                     "--how", "till miskeyed; stock was right"]) == 0
        drain(streams)
        queue = read(root, "gold", "review_queue").set_index("seq")
        assert (queue.loc[5, "status"], queue.loc[5, "resolved_by"]) == ("resolved", "ana")
        assert queue.loc[5, "store_before"] == 9, "the finding itself is kept as it was"

        catalogue = read(root, "silver", "items").set_index("sku")
        milk = catalogue.loc["MILK-1L"]
        assert milk.price == 1.59 and milk.description == "Milk 1 L", "W001 wrote last"
        assert milk.shelf_life_days == 10, "E001's shelf life is not undone by W001"

        levels = read(root, "gold", "stock_levels").set_index(["location_id", "sku"])
        assert levels.loc[("E001", "MILK-1L"), "on_hand"] == 10
        assert levels.loc[("E001", "MILK-1L"), "sellable"] == 10
        trends = read(root, "gold", "demand_trends").set_index(["location_id", "sku"])
        assert trends.loc[("E001", "MILK-1L"), "sold_last_7d"] == 10
        avail = read(root, "gold", "network_availability").set_index(["region", "sku"])
        assert avail.loc[("east", "MILK-1L"), "on_hand"] == 10
        assert avail.loc[("east", "MILK-1L"), "locations_in_stock"] == 1
    finally:
        for c in clients.values():
            c.loop_stop()
            c.disconnect()
        for w in workers:
            w.stop()
        for s in streams:
            s.stop()
        east.close()
        west.close()
