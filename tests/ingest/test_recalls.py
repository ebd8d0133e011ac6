"""A recall from the lakehouse to the shelf and back: a lot put on hold reaches every
store through the order dispatcher and a secure broker, the stores stop selling and
shipping it, their heartbeats confirm it, and a release lifts it.

Real mosquitto with ACLs, the real agent publisher, ingest worker (heartbeats into
silver) and order dispatcher; the lakehouse is Delta tables written by delta-rs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import write_deltalake
from prometheus_client import CollectorRegistry

from edge_mqtt.agent import StoreAgent
from edge_mqtt.publisher import Publisher, PublisherConfig
from ingest.brokers import credentials_path, start_brokers, stop_brokers
from ingest.orders import BrokerAddress, OrderDispatcher
from ingest.worker import IngestConfig, IngestWorker
from lakehouse import recalls
from lakehouse.catalogue import LOCATIONS
from lakehouse.contract import ContractError, hold_id
from lakehouse.credentials import Credentials, SigningKeys
from tests.clients import port_picker, wait_for

pytestmark = pytest.mark.timeout(120)

LOCATIONS_BY_REGION = {"east": ["s1", "s2"]}
ORDER = {"order_id": "O-1", "sku": "MILK", "lot": "L-OLD", "quantity": 2,
         "destination": "s2", "transit_hours": 5.5, "approved_by": "ana",
         "approved_at": "2026-12-01T09:00:00.000Z"}


@pytest.fixture
def network(tmp_path: Path) -> Iterator[dict]:
    """A secure east broker, ingest, the dispatcher and two stores; s1 holds two lots."""
    port = port_picker()()
    data = tmp_path / "brokers"
    brokers = start_brokers(data, ("east",), ports={"east": port},
                            locations=LOCATIONS_BY_REGION, secure=True)
    creds = Credentials.open(credentials_path(data), LOCATIONS_BY_REGION)
    lake = tmp_path / "lake"
    write_deltalake(str(LOCATIONS.path(lake)), pa.Table.from_pylist(
        [{"location_id": s, "region": "east", "kind": "store", "updated_at": datetime.now(UTC)}
         for s in ("s1", "s2")], schema=LOCATIONS.schema))
    agents, pubs = {}, {}
    worker = IngestWorker(IngestConfig(region="east", port=port, lakehouse=str(lake),
                                       credentials=str(creds.path)),
                          registry=CollectorRegistry())
    login = creds.dispatcher_credentials("east")
    dispatcher = OrderDispatcher(lake, {"east": BrokerAddress(
        port=port, username=login.username, password=login.password)},
                                 say=lambda _m: None, keys=SigningKeys(creds.path))
    try:
        worker.start()
        for s in ("s1", "s2"):
            agents[s] = StoreAgent(s, "east", tmp_path / f"{s}.sqlite")
            login = creds.credentials_for(s)
            pubs[s] = Publisher(agents[s], PublisherConfig(
                port=port, heartbeat_s=1, username=login.username, password=login.password,
                signing_key=creds.signing_key(s)))
            pubs[s].start()
            wait_for(f"{s} online", lambda a=agents[s]: a.online, 10)
        s1 = agents["s1"]
        s1.receive("MILK", 5, lot="L-OLD", expires_on="2026-12-05", supplier_ref="PO-1",
                   unit_cost=1.0)
        s1.receive("MILK", 5, lot="L-NEW", expires_on="2026-12-09", supplier_ref="PO-2",
                   unit_cost=1.0)
        time.sleep(0.3)  # subscriptions answered before anything is published at them
        yield {"lake": lake, "agents": agents, "dispatcher": dispatcher, "worker": worker}
    finally:
        dispatcher.close()
        for pub in pubs.values():
            pub.stop()
        worker.stop()
        for a in agents.values():
            a.close()
        stop_brokers(brokers)


def test_a_recall_reaches_every_store_stops_the_lot_and_is_confirmed(network: dict) -> None:
    lake, s1, s2 = network["lake"], network["agents"]["s1"], network["agents"]["s2"]
    dispatcher: OrderDispatcher = network["dispatcher"]
    dispatcher.send("east", "s1", ORDER)  # an approved transfer of the lot, not yet shipped
    wait_for("the transfer order at s1", lambda: len(s1.orders("pending")) == 1)

    placed = recalls.place_hold(lake, "MILK", "L-OLD", by="ana", reason="notice 114")
    with pytest.raises(recalls.HoldError, match="already on hold"):
        recalls.place_hold(lake, "MILK", "L-OLD", by="ana", reason="again")
    with pytest.raises(ContractError, match="sku"):
        recalls.place_hold(lake, "MILK/2", "L-OLD", by="ana", reason="bad sku")
    counts = dispatcher.run_once()
    assert counts["sent"] == 2 and counts["failed"] == 0  # one hold per location
    wait_for("both stores hold the lot",
             lambda: all(a.hold_ids() == [hold_id("MILK", "L-OLD")] for a in (s1, s2)))
    assert [o["status"] for o in s1.orders()] == ["cancelled"]
    sale = s1.sell("MILK", 2, unit_price=1.2, transaction_ref="T1")
    assert [lot["lot"] for lot in sale["payload"]["lots"]] == ["L-NEW"]
    assert dispatcher.run_once()["sent"] == 0  # said once

    # The stores' heartbeats, landed by ingest, say they have it in force.
    time.sleep(1.5)
    network["worker"].heartbeats.flush()
    holds = recalls.current_holds(lake)
    confirmed = recalls.confirmations(lake, holds)
    assert sorted(confirmed.loc[confirmed["confirmed_at"].notna(), "location_id"]) == [
        "s1", "s2"]
    assert placed["decided_by"] == "ana"

    recalls.release_hold(lake, "MILK", "L-OLD", by="ana", reason="supplier cleared it")
    assert dispatcher.run_once()["sent"] == 2
    wait_for("the release at both stores", lambda: s1.hold_ids() == s2.hold_ids() == [])
    sale = s1.sell("MILK", 1, unit_price=1.2, transaction_ref="T2")
    assert [lot["lot"] for lot in sale["payload"]["lots"]] == ["L-OLD"]
    assert recalls.lots_on_hold(lake) == set()
