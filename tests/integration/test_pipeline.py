"""The walking skeleton end to end: real mosquitto, real ingest, real Spark + Delta.

Gold is read back with ``deltalake`` (a second engine) and compared with the oracle, the
fold of each location's events in seq order.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from lakehouse import oracle
from lakehouse.contract import REGIONS, encode_event, topic
from tests.apps.api import add_key, served_api
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


def malformed_payloads(region: str, sample: dict) -> list[tuple[str, bytes, str]]:
    """(topic, bytes, expected reason fragment) for a region, built from a real event."""
    loc = sample["location_id"]
    good_topic = topic(region, loc, "events")
    zero = json.loads(encode_event(sample))
    zero["payload"]["quantity"] = 0
    bad_type = json.loads(encode_event(sample))
    bad_type["event_type"] = "teleported"
    other = "ZZ" + loc
    return [
        (good_topic, b"{not json", "not JSON"),
        (good_topic, b"\xff\xfe\x00", "not UTF-8"),
        (good_topic, json.dumps({"schema_version": 1}).encode(), "missing from the envelope"),
        (good_topic, json.dumps(zero).encode(), "payload.quantity"),
        (good_topic, json.dumps(bad_type).encode(), "event_type"),
        (topic(region, other, "events"), encode_event(sample), "location mismatch"),
    ]


def run_pipeline(tmp_path: Path, region_ports: dict[str, int], spark, *,
                 restart_at: int | None = None, root: Path | str | None = None,
                 serve_api: bool = False) -> None:
    root = root or tmp_path / "lake"
    agents = make_agents(tmp_path / "agents", per_region=10, regions=REGIONS)
    work = Workload(agents, seed=11)
    streams = start_spark(spark, root, list(REGIONS))
    workers = start_ingest(root, region_ports)
    pubs = start_publishers(agents, region_ports)
    clients = {r: raw_client(p, f"injector-{r}") for r, p in region_ports.items()}
    try:
        work.stock_up()
        for i in range(5000):
            work.step()
            if restart_at is not None and i == restart_at:
                # Stop Spark while batches are flowing, keep trading, then start again
                # on the same checkpoints.
                wait_for("some gold",
                         lambda running=streams: any(s.events_total for s in running), 120)
                for s in streams:
                    s.stop()
                streams = []
            if restart_at is not None and i == restart_at + 1500:
                streams = start_spark(spark, root, list(REGIONS))
        work.finish_transfers()
        events = work.events
        assert len(events) >= 5000

        # Duplicates at the MQTT level, and malformed payloads, in every region.
        rng = random.Random(5)
        for ev in rng.sample(events, 300):
            region = next(a.region for a in agents if a.location_id == ev["location_id"])
            clients[region].publish(topic(region, ev["location_id"], "events"),
                                    encode_event(ev), qos=2)
        bad: list[tuple[str, bytes, str]] = []
        for region in REGIONS:
            sample = next(e for e in events if e["location_id"].startswith(region[0].upper())
                          and e["event_type"] == "sold")
            for t, raw, reason in malformed_payloads(region, sample):
                clients[region].publish(t, raw, qos=2)
                bad.append((t, raw, reason))

        wait_for("every event acked end to end", lambda: all_acked(agents, pubs), 240)
        wait_for("dead letters landed", lambda: sum(w.stats.dead_letters for w in workers)
                 >= len(bad), 60)
        drain(streams)

        check_against_oracle(root, events)
        if serve_api:
            check_api_against_oracle(root, events, tmp_path)

        silver = read(root, "silver", "events")
        assert len(silver) == len(events), "silver must hold each event exactly once"
        assert not silver.duplicated(["location_id", "seq"]).any()
        bronze = read(root, "bronze", "events_raw")
        assert len(bronze) == len(events)

        dead = read(root, "silver", "dead_letters")
        got = {(r.topic, bytes(r.raw)): r.reason for r in dead.itertuples()}
        for t, raw, reason in bad:
            assert (t, raw) in got, f"malformed payload on {t} missing from dead letters"
            assert reason in got[(t, raw)], (reason, got[(t, raw)])
        assert len(dead) == len(bad)

        levels = read(root, "gold", "stock_levels")
        last = levels.groupby("location_id")["last_seq"].max().to_dict()
        assert last == {a.location_id: a.last_seq for a in agents}
    finally:
        for c in clients.values():
            c.loop_stop()
            c.disconnect()
        for p in pubs:
            p.stop()
        for w in workers:
            w.stop()
        for s in streams:
            s.stop()
        for a in agents:
            a.close()


def check_api_against_oracle(root: Path | str, events: list[dict], tmp_path: Path) -> None:
    """What the read API tells another system equals the oracle's stock, row for row."""
    keys = tmp_path / "api_keys.json"
    token = add_key(keys, "webshop")
    with served_api(root, keys, tmp_path / "api.log") as api:
        api.token = token
        status, page = api.get("/v1/availability?limit=10000")
        assert status == 200, page
        assert page["total"] == len(page["items"])
        got = {(r["location_id"], r["sku"]): r["on_hand"] for r in page["items"]
               if r["on_hand"] != 0}
        assert got == oracle.levels(oracle.fold(events))
        assert all(r["age_s"] is not None and r["region_mode"] in ("live", "syncing")
                   for r in page["items"]), "every answer says how old it is"


def test_gold_equals_oracle_with_duplicates_and_malformed(tmp_path, brokers, region_ports,
                                                          spark):
    run_pipeline(tmp_path, region_ports, spark, serve_api=True)


def test_gold_equals_oracle_with_the_lakehouse_on_s3(tmp_path, brokers, region_ports, spark,
                                                     s3_lake, monkeypatch):
    """The same run with tables and landing zone in a bucket (moto's S3 server): ingest
    PUTs its batches, the landing source lists them with boto3, delta-rs commits with
    conditional PUTs."""
    monkeypatch.setenv("SHELFLIFE_STATE_DIR", str(tmp_path / "state"))
    run_pipeline(tmp_path, region_ports, spark, root=s3_lake, serve_api=True)
    assert not (tmp_path / "lake").exists(), "nothing of the lakehouse on the local disk"
    assert any((tmp_path / "state").rglob("*.sqlite")), "ingest's seq database stays local"


def test_streaming_restart_mid_stream_loses_and_doubles_nothing(tmp_path, brokers,
                                                               region_ports, spark):
    run_pipeline(tmp_path, region_ports, spark, restart_at=1500)
