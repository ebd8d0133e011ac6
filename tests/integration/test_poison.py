"""Poison events never stop the stream: real mosquitto, ingest, Spark and Delta.

Two ways in. Over MQTT, a store's hostile payloads are refused by ingest with the field
named. Through the landing zone, events that an ingest without today's bounds accepted
(a date typed into a day count, a receipt of 2**63-1 units, a lone surrogate) reach the
stream: each is dead-lettered with its reason, its seq counts as filled, every other event
of every region still reaches gold, and a corrected event re-driven for it applies once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from apps import cli
from lakehouse.contract import REGIONS, build_event, encode_event, topic
from lakehouse.landing import LandedRecord, LandingWriter, landing_dir, now_ts
from tests.clients import raw_client, wait_for

from ..workload import Workload, make_agents
from .pipeline import (
    all_acked,
    check_against_oracle,
    drain,
    read,
    start_ingest,
    start_publishers,
    start_spark,
)

pytestmark = [pytest.mark.integration, pytest.mark.spark]

POISONED = {"east": "E-POISON", "west": "W-POISON"}


def _envelope(loc: str, seq: int, event_type: str, payload: dict[str, Any]) -> dict:
    """An event as an older, laxer producer made it (not checked here on purpose)."""
    return {"schema_version": 1, "event_id": f"{loc}:{seq}", "location_id": loc, "seq": seq,
            "clock": {loc: seq}, "occurred_at": "2026-12-01T10:00:00.000Z",
            "event_type": event_type,
            "category": "metadata" if event_type == "item_updated" else "transactional",
            "causation_id": None, "offline": False, "agent_version": "0.0.9",
            "payload": payload}


def _land(root: Path, region: str, loc: str, events: list[dict]) -> None:
    writer = LandingWriter(landing_dir(region, root), "older-ingest")
    writer.write([LandedRecord("event", topic(region, loc, "events"), region, now_ts(),
                               json.dumps(e).encode()) for e in events])


def _store_events(loc: str) -> tuple[list[dict], list[dict], dict]:
    """(good events, poison events, the corrected seq 2) of one store."""
    good = [
        build_event(location_id=loc, seq=1, event_type="received",
                    payload={"sku": "DAIRY-MILK-1L", "lot": "L1", "quantity": 30,
                             "expires_on": "2026-12-20", "supplier_ref": "PO-1",
                             "unit_cost": 0.8, "stock_before": 0}),
        build_event(location_id=loc, seq=3, event_type="wasted",
                    payload={"sku": "DAIRY-MILK-1L", "quantity": 2, "lot": "L1",
                             "reason_code": "damaged", "disposal_method": "bin",
                             "stock_before": 30}),
        # A seq far beyond the last: one gap record, not a list of every missing seq.
        build_event(location_id=loc, seq=10**12, event_type="item_updated",
                    payload={"sku": "DAIRY-MILK-1L", "description": "Milk 1 l"}),
    ]
    poison = [
        _envelope(loc, 2, "item_updated", {"sku": "DAIRY-MILK-1L",
                                           "min_sellable_days": 20261201}),
        _envelope(loc, 4, "received", {"sku": "DAIRY-MILK-1L", "lot": "L2",
                                       "quantity": 2**63 - 1, "expires_on": "2026-12-20",
                                       "supplier_ref": "PO-2", "unit_cost": 0.8,
                                       "stock_before": 28}),
        _envelope(loc, 5, "item_updated", {"sku": "DAIRY-MILK-1L",
                                           "description": "milk \ud800"}),
    ]
    fixed = build_event(location_id=loc, seq=2, event_type="item_updated",
                        payload={"sku": "DAIRY-MILK-1L", "min_sellable_days": 2})
    return good, poison, fixed


def test_poison_events_are_dead_lettered_and_every_region_carries_on(
        tmp_path, brokers, region_ports, spark):
    root = tmp_path / "lake"
    agents = make_agents(tmp_path / "agents", per_region=4, regions=REGIONS)
    work = Workload(agents, seed=23)
    streams = start_spark(spark, root, list(REGIONS))
    workers = start_ingest(root, region_ports)
    pubs = start_publishers(agents, region_ports)
    hostile = raw_client(region_ports["central"], "stranger-central")
    try:
        work.stock_up()
        for _ in range(300):
            work.step()
        stores = {r: _store_events(loc) for r, loc in POISONED.items()}
        for region, loc in POISONED.items():
            good, poison, _ = stores[region]
            _land(root, region, loc, [good[0], poison[0], good[1], poison[1], poison[2],
                                      good[2]])
        # Over MQTT the same poison never gets past ingest.
        sample = next(e for e in work.events if e["location_id"].startswith("C"))
        over_mqtt = json.loads(encode_event(sample))
        over_mqtt["payload"]["quantity"] = 2**63 - 1
        hostile.publish(topic("central", sample["location_id"], "events"),
                        json.dumps(over_mqtt).encode(), qos=2)
        for _ in range(300):  # ordinary trading goes on meanwhile, in every region
            work.step()
        wait_for("every event acked end to end", lambda: all_acked(agents, pubs), 240)
        drain(streams)
        assert all(s.query is not None and s.query.isActive for s in streams), \
            "no region's query stopped"

        applied = [*work.events, *(e for g, _, _ in stores.values() for e in g)]
        check_against_oracle(root, applied)

        dead = read(root, "silver", "dead_letters")
        stream_dead = dead[dead.source == "stream"]
        reasons = {json.loads(bytes(r.raw).decode("utf-8", "surrogatepass"))["event_id"]:
                   r.reason for r in stream_dead.itertuples()}
        for loc in POISONED.values():
            assert "payload.min_sellable_days" in reasons[f"{loc}:2"]
            assert "payload.quantity" in reasons[f"{loc}:4"]
            assert "payload.description" in reasons[f"{loc}:5"]
        ingest_dead = dead[dead.source == "ingest"]
        assert any("payload.quantity" in r for r in ingest_dead.reason)

        review = read(root, "gold", "review_queue")
        flagged = review[review.cause == "dead-lettered event"]
        assert set(flagged.item_id) == {f"{loc}:{q}" for loc in POISONED.values()
                                        for q in (2, 4, 5)}
        gaps = read(root, "silver", "sequence_gaps")
        east_gap = gaps[(gaps.location_id == "E-POISON") & (gaps.status == "open")]
        assert list(east_gap.first_missing) == [6]
        assert list(east_gap.missing_count) == [10**12 - 6]

        # The corrected event for seq 2, re-driven twice with the CLI (ingest had landed
        # the seq, so it goes straight to the landing zone): applied once, item closed.
        _, _, fixed = stores["east"]
        fix = tmp_path / "fix.jsonl"
        fix.write_text(json.dumps({"region": "east", "event": fixed}) + "\n")
        ports = ",".join(f"{r}={p}" for r, p in region_ports.items())
        for _ in range(2):
            assert cli.main(["deadletters", "redrive", "--file", str(fix), "--lakehouse",
                             str(root), "--broker-ports", ports, "--insecure"]) == 0
        drain(streams)
        silver = read(root, "silver", "events")
        assert (silver.event_id == "E-POISON:2").sum() == 1
        review = read(root, "gold", "review_queue")
        assert review[review.item_id == "E-POISON:2"].status.iloc[0] == "closed"
        items = read(root, "silver", "items")
        assert items[items.sku == "DAIRY-MILK-1L"].min_sellable_days.iloc[0] == 2
    finally:
        hostile.loop_stop()
        hostile.disconnect()
        for p in pubs:
            p.stop()
        for w in workers:
            w.stop()
        for s in streams:
            s.stop()
        for a in agents:
            a.close()
