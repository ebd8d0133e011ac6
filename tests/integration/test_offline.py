"""A store offline for six hours of trading, end to end: real mosquitto, ingest, Spark.

While it is cut off it keeps recording and answering stock from its own database; the
other stores keep flowing into gold. When it comes back it replays its backlog in seq
order with the original times, and gold (read with ``deltalake``) equals the oracle.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from edge_mqtt.agent import StoreAgent
from edge_mqtt.agent_process import record_next
from edge_mqtt.publisher import Publisher, PublisherConfig
from lakehouse import oracle
from lakehouse.contract import REGIONS, format_ts
from tests.clients import wait_for

from ..workload import Workload, make_agents
from .pipeline import (
    all_acked,
    check_against_oracle,
    drain,
    gold_cohorts,
    read,
    start_ingest,
    start_publishers,
    start_spark,
)

pytestmark = [pytest.mark.integration, pytest.mark.spark]

OFFLINE_EVENTS = 1500
OUTAGE = timedelta(hours=6)


def test_store_offline_for_six_hours_replays_into_gold(tmp_path, brokers, region_ports,
                                                       spark):
    root = tmp_path / "lake"
    online = make_agents(tmp_path / "agents", per_region=3, regions=REGIONS)
    cut_off = StoreAgent("E-OFF", "east", tmp_path / "agents" / "east-off.sqlite")
    work = Workload(online, seed=23)
    streams = start_spark(spark, root, list(REGIONS))
    workers = start_ingest(root, region_ports)
    pubs = start_publishers(online, region_ports)
    late: Publisher | None = None
    try:
        work.stock_up()
        # Six hours of the cut-off store's trading, time-compressed, interleaved with
        # the connected stores'. Its publisher is not running: it has no network.
        began = datetime.now(UTC) - OUTAGE
        offline_events = []
        for i in range(OFFLINE_EVENTS):
            at = format_ts(began + OUTAGE * i / OFFLINE_EVENTS)
            offline_events.append(record_next(cut_off, seed=3, occurred_at=at))
            if i % 2 == 0:
                work.step()
            if i % 250 == 249:  # it answers stock from its own database all along
                own = oracle.levels(oracle.fold(offline_events))
                assert {("E-OFF", s["sku"]): s["on_hand"] for s in cut_off.stock()
                        if s["on_hand"]} == own
        work.finish_transfers()
        assert all(e["offline"] for e in offline_events)
        assert cut_off.acked_seq == 0 and cut_off.db.outbox_depth() == OFFLINE_EVENTS

        # The connected stores are unaffected: their gold is current without it.
        wait_for("connected stores acked", lambda: all_acked(online, pubs), 120)
        drain(streams)
        check_against_oracle(root, work.events)
        assert not any(k[0] == "E-OFF" for k in gold_cohorts(root))

        # Back online: the backlog goes out at the replay rate and lands once.
        late = Publisher(cut_off, PublisherConfig(port=region_ports["east"],
                                                  replay_rate=1000, resend_after_s=5.0))
        late.start()
        wait_for("the offline backlog acked", lambda: late.acked_seq == OFFLINE_EVENTS, 120)
        drain(streams)

        check_against_oracle(root, work.events + offline_events)
        silver = read(root, "silver", "events")
        mine = silver[silver.location_id == "E-OFF"].sort_values("seq")
        assert mine.seq.tolist() == list(range(1, OFFLINE_EVENTS + 1))
        assert mine.offline.all(), "events recorded offline say so in silver"
        assert not silver[silver.location_id != "E-OFF"].offline.any()
        first, last = (str(mine.occurred_at.iloc[0]), str(mine.occurred_at.iloc[-1]))
        assert first[:16] == offline_events[0]["occurred_at"].replace("T", " ")[:16], \
            "original times, not the replay time"
        assert last[:16] == offline_events[-1]["occurred_at"].replace("T", " ")[:16]
        assert len(silver) == len(work.events) + OFFLINE_EVENTS
        assert not silver.duplicated(["location_id", "seq"]).any()
    finally:
        if late is not None:
            late.stop()
        for p in pubs:
            p.stop()
        for w in workers:
            w.stop()
        for s in streams:
            s.stop()
        for a in [*online, cut_off]:
            a.close()
