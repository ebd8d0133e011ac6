"""A region catching up after an outage, scaled for CI: east's stores come back with
two hours of queued events while central and west keep trading. East is reported as
syncing with a sensible ``minutes_behind`` and turns live again by itself; the other
regions stay fresh; gold equals the oracle with nothing lost or doubled."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import deltalake
import pytest

from edge_mqtt.agent import StoreAgent
from lakehouse.contract import format_ts
from spark_jobs.stream.runner import StreamConfig, start_streams
from tests.clients import wait_for

from .pipeline import check_against_oracle, drain, start_ingest, start_publishers

pytestmark = [pytest.mark.integration, pytest.mark.spark]

SKUS = ("MILK", "BREAD", "SALAD")


def status_history(root) -> list[dict]:
    """Every east region_status row ever committed (Delta time travel)."""
    table = deltalake.DeltaTable(str(root / "gold" / "region_status"))
    rows = []
    for v in range(table.version() + 1):
        table.load_as_version(v)
        rows += [r for r in table.to_pyarrow_table().to_pylist() if r["region"] == "east"]
    return rows


def test_replaying_region_is_syncing_then_live_while_others_stay_fresh(
        tmp_path, brokers, region_ports, spark):
    root = tmp_path / "lake"
    back = [StoreAgent(f"E{i:03d}", "east", tmp_path / f"e{i}.sqlite") for i in range(8)]
    live = [StoreAgent(f"{r[0].upper()}{i:03d}", r, tmp_path / f"{r}{i}.sqlite")
            for r in ("central", "west") for i in range(4)]
    start = datetime.now(UTC) - timedelta(hours=2)
    recorded: list[dict] = []
    for a in back:  # two hours offline: the outbox fills with back-dated events
        for sku in SKUS:
            recorded.append(a.receive(sku, 500, lot="L1", expires_on="2030-01-01",
                                      supplier_ref="PO", unit_cost=1.0,
                                      occurred_at=format_ts(start)))
        for j in range(400):
            recorded.append(a.sell(SKUS[j % 3], 1, unit_price=2.0, transaction_ref=f"T{j}",
                                   occurred_at=format_ts(start + timedelta(seconds=17 * (j + 1)))))
    for a in live:
        for sku in SKUS:
            recorded.append(a.receive(sku, 500, lot="L1", expires_on="2030-01-01",
                                      supplier_ref="PO", unit_cost=1.0))
    streams = start_streams(spark, ["east", "central", "west"],
                            StreamConfig(lakehouse=str(root), status_every_s=0.5))
    workers = start_ingest(root, region_ports)
    pubs = start_publishers(live, region_ports)
    latencies: list[float] = []
    back_pubs = []
    try:
        levels = root / "gold" / "stock_levels"
        wait_for("live stores in gold", lambda: (levels / "_delta_log").exists()
                 and len(deltalake.DeltaTable(str(levels)).to_pandas()) >= len(live) * 3, 120)
        back_pubs = start_publishers(back, region_ports)  # east's links come back
        t0 = time.monotonic()
        n = 0
        while time.monotonic() - t0 < 25:  # the others keep trading through the burst
            for a in live:
                ev = a.sell(SKUS[n % 3], 1, unit_price=2.0, transaction_ref=f"L{n}")
                recorded.append(ev)
                n += 1
                sent = time.time()
                loc, seq = ev["location_id"], ev["seq"]

                def visible(loc=loc, seq=seq) -> bool:
                    df = deltalake.DeltaTable(str(levels)).to_pyarrow_table(
                        columns=["location_id", "last_seq"],
                        filters=[("location_id", "=", loc)]).to_pylist()
                    return any((r["last_seq"] or 0) >= seq for r in df)
            if n % 16 == 0:
                wait_for("a live sale in gold", visible, 60)
                latencies.append(time.time() - sent)
            time.sleep(0.2)
        wait_for("every event acked", lambda: all(p.acked_seq >= a.last_seq for a, p in
                                                  zip(back + live, back_pubs + pubs,
                                                      strict=True)), 180)
        drain(streams)
        wait_for("east live again", lambda: status_history(root)[-1]["mode"] == "live", 60)
        history = status_history(root)
        syncing = [r for r in history if r["mode"] == "syncing"]
        assert syncing, "east was never reported as syncing"
        worst = max(r["minutes_behind"] for r in syncing)
        assert 20 <= worst <= 125, f"minutes_behind {worst} for a two-hour outage"
        assert history[-1]["mode"] == "live" and history[-1]["backlog_events"] == 0
        check_against_oracle(root, recorded)
        gold = deltalake.DeltaTable(str(root / "gold" / "stock_levels")).to_pandas()
        for a in back + live:
            mine = gold[gold.location_id == a.location_id]
            assert int(mine.contiguous_seq.max()) == a.last_seq, f"{a.location_id} lost events"
        assert latencies and max(latencies) < 10, \
            f"live regions slowed to {max(latencies):.1f} s during the burst"
    finally:
        for p in pubs + back_pubs:
            p.stop()
        for w in workers:
            w.stop()
        for s in streams:
            s.stop()
        for a in back + live:
            a.close()
