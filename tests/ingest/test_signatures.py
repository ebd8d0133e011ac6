"""Acks and orders prove who sent them; the broker's ACLs are the first line, the
signature the second, so a store's outbox never loses an event that did not land.

Real mosquitto (secure with ACLs, and open), the real agent publisher, ingest worker and
order dispatcher; the stranger is a plain paho client.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from edge_mqtt.agent import StoreAgent
from edge_mqtt.publisher import Publisher, PublisherConfig
from ingest.brokers import credentials_path, start_brokers, stop_brokers
from ingest.orders import BrokerAddress, OrderDispatcher
from ingest.worker import IngestConfig, IngestWorker
from lakehouse.contract import (
    ContractError,
    build_ack,
    order_topic,
    sign_order,
    signature,
    topic,
    validate_ack,
    validate_signed_order,
)
from lakehouse.credentials import Credentials, SigningKeys
from tests.clients import Client, port_picker

pytestmark = pytest.mark.timeout(90)

LOCATIONS = {"east": ["s1", "s2"]}
ORDER = {"order_id": "O-1", "sku": "MILK", "lot": "L0", "quantity": 2, "destination": "s2",
         "transit_hours": 5.5, "approved_by": "ana",
         "approved_at": "2026-12-01T09:00:00.000Z"}
QUIET_S = 1.0


def wait_for(what: str, check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def outbox(path: Path) -> list[int]:
    with sqlite3.connect(path) as conn:
        return [s for (s,) in conn.execute("SELECT seq FROM outbox ORDER BY seq")]


def receive(agent: StoreAgent, n: int) -> None:
    for i in range(n):
        agent.receive("MILK", 5, lot=f"L{i}", expires_on="2026-12-09", supplier_ref="PO",
                      unit_cost=1.0)


class Store:
    """One store's real agent and publisher, with its key (a secure agent)."""

    def __init__(self, where: Path, location_id: str, port: int, creds: Credentials, *,
                 login: bool) -> None:
        self.db = where / f"{location_id}.sqlite"
        self.agent = StoreAgent(location_id, "east", self.db)
        user = creds.credentials_for(location_id) if login else None
        self.pub = Publisher(self.agent, PublisherConfig(
            port=port, heartbeat_s=0, resend_after_s=2,
            username=user.username if user else None, password=user.password if user else None,
            signing_key=creds.signing_key(location_id)))

    def start(self) -> Store:
        self.pub.start()
        wait_for(f"{self.agent.location_id} online", lambda: self.agent.online, 10)
        time.sleep(0.3)  # its SUBSCRIBE is answered before anything is published at it
        return self

    def close(self) -> None:
        self.pub.stop()
        self.agent.close()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict]:
    opened: list = []
    yield {"opened": opened, "tmp": tmp_path}
    for thing in reversed(opened):
        if isinstance(thing, list):
            stop_brokers(thing)
        else:
            thing.close()


def _broker(env: dict, *, secure: bool) -> tuple[int, Credentials]:
    port = port_picker()()
    data = env["tmp"] / "brokers"
    running = start_brokers(data, ("east",), ports={"east": port},
                            locations=LOCATIONS, secure=secure)
    env["opened"].append(running)
    # An open broker has no credentials of its own; the stores and ingest still do.
    return port, Credentials.open(credentials_path(data), LOCATIONS)


def _client(env: dict, port: int, name: str, login=None) -> Client:
    c = Client(port, name, clean_session=True,
               username=login.username if login else None,
               password=login.password if login else None)
    env["opened"].append(c)
    return c


# --- the contract ------------------------------------------------------------------------

def test_signatures_bind_the_key_the_location_and_the_kind() -> None:
    key, other = b"k" * 32, b"o" * 32
    ack = build_ack("s1", 7, ingest_time="2026-12-01T09:00:00.000Z", key=key)
    assert validate_ack(json.loads(json.dumps(ack)), "s1", key=key)["acked_seq"] == 7
    with pytest.raises(ContractError, match="wrong signature"):  # replayed to s2
        validate_ack(ack, "s2", key=key)
    with pytest.raises(ContractError, match="wrong signature"):  # another key
        validate_ack(ack, "s1", key=other)
    with pytest.raises(ContractError, match="wrong signature"):  # moved further
        validate_ack({**ack, "acked_seq": 8}, "s1", key=key)
    with pytest.raises(ContractError, match="unsigned ack"):
        validate_ack({"acked_seq": 7}, "s1", key=key)
    order = sign_order(ORDER, "s1", key)
    assert validate_signed_order(order, "s1", key=key) == ORDER
    as_ack = signature("ack", "s1", dict(ORDER), key)  # the same fields, signed as an ack
    with pytest.raises(ContractError, match="wrong signature"):
        validate_signed_order({**ORDER, "sig": as_ack}, "s1", key=key)
    with pytest.raises(ContractError, match="wrong signature"):
        validate_signed_order({**order, "quantity": 200}, "s1", key=key)
    cancel = sign_order({"order_id": "O-1", "cancelled": True}, "s1", key)
    assert validate_signed_order(cancel, "s1", key=key)["cancelled"] is True
    with pytest.raises(ContractError, match="unsigned order"):
        validate_signed_order({"order_id": "O-1", "cancelled": True}, "s1", key=key)


# --- the broker keeps strangers and other stores out ----------------------------------

def test_a_forged_ack_from_an_unauthenticated_client_is_refused_by_the_broker(
        env: dict) -> None:
    port, creds = _broker(env, secure=True)
    s1 = Store(env["tmp"], "s1", port, creds, login=True).start()
    env["opened"].append(s1)
    receive(s1.agent, 3)
    stranger = _client(env, port, "stranger")
    stranger.paho.connect("127.0.0.1", port, keepalive=30)
    stranger.paho.loop_start()
    assert stranger.connected.wait(10) and stranger.reason.is_failure
    stranger.paho.publish(topic("east", "s1", "ack"), json.dumps({"acked_seq": 3}), qos=1,
                          retain=True)
    time.sleep(QUIET_S)
    # Nothing reached the agent (not even to be refused), and nothing left the outbox.
    assert s1.pub.refused == {"ack": 0, "order": 0, "status": 0}
    assert outbox(s1.db) == [1, 2, 3] and s1.agent.acked_seq == 0


def test_a_store_cannot_publish_another_stores_ack_or_any_order(env: dict) -> None:
    port, creds = _broker(env, secure=True)
    stores = {loc: Store(env["tmp"], loc, port, creds, login=True).start()
              for loc in ("s1", "s2")}
    env["opened"] += stores.values()
    receive(stores["s2"].agent, 3)
    s1_key, s2_key = creds.signing_key("s1"), creds.signing_key("s2")
    # s1 even holds a correctly signed message: the broker's ACL stops it anyway.
    forger = _client(env, port, "forger", creds.credentials_for("s1")).connect()
    forger.paho.publish(topic("east", "s2", "ack"),
                        json.dumps(build_ack("s2", 3, key=s2_key)), qos=1, retain=True)
    forger.paho.publish(order_topic("east", "s2", "O-1"),
                        json.dumps(sign_order(ORDER, "s2", s2_key)), qos=1, retain=True)
    forger.paho.publish(order_topic("east", "s1", "O-2"),  # not even an order to itself
                        json.dumps(sign_order({**ORDER, "order_id": "O-2"}, "s1", s1_key)),
                        qos=1, retain=True)
    forger.wait_published(3)
    time.sleep(QUIET_S)
    for store in stores.values():
        assert store.pub.refused == {"ack": 0, "order": 0, "status": 0}  # never delivered
        assert store.agent.orders() == []
    assert outbox(stores["s2"].db) == [1, 2, 3] and stores["s2"].agent.acked_seq == 0


# --- on an open broker, the signature alone protects the store ----------------------------

def test_on_an_open_broker_a_secure_agent_refuses_forgeries_and_takes_the_real_thing(
        env: dict) -> None:
    port, creds = _broker(env, secure=False)
    s1 = Store(env["tmp"], "s1", port, creds, login=False).start()
    env["opened"].append(s1)
    receive(s1.agent, 3)
    stranger = _client(env, port, "stranger").connect()
    ack_topic = topic("east", "s1", "ack")
    forged_acks = [
        {"acked_seq": 3, "ingest_time": "2026-12-01T09:00:00.000Z"},    # unsigned
        build_ack("s1", 3, key=b"w" * 32),                              # wrong key
        build_ack("s2", 3, key=creds.signing_key("s2")),                # s2's, replayed
    ]
    forged_orders = {
        "O-UNSIGNED": {**ORDER, "order_id": "O-UNSIGNED"},
        "O-WRONGKEY": sign_order({**ORDER, "order_id": "O-WRONGKEY"}, "s1", b"w" * 32),
        "O-OTHER": sign_order({**ORDER, "order_id": "O-OTHER"}, "s2",
                              creds.signing_key("s2")),
    }
    for ack in forged_acks:
        stranger.paho.publish(ack_topic, json.dumps(ack), qos=1, retain=True)
    for order_id, order in forged_orders.items():
        stranger.paho.publish(order_topic("east", "s1", order_id), json.dumps(order), qos=1,
                              retain=True)
    stranger.wait_published(len(forged_acks) + len(forged_orders))
    wait_for("every forgery refused", lambda: s1.pub.refused == {
        "ack": len(forged_acks), "order": len(forged_orders), "status": 0})
    time.sleep(QUIET_S)  # the pump has had its chance to apply anything
    assert outbox(s1.db) == [1, 2, 3] and s1.agent.acked_seq == 0
    assert s1.agent.orders() == []

    # The genuine ingest and dispatcher, with the keys from the credentials file.
    worker = IngestWorker(IngestConfig(region="east", port=port,
                                       lakehouse=str(env["tmp"] / "lake"),
                                       credentials=str(creds.path)), registry=CollectorRegistry())
    env["opened"].append(_Stops(worker.stop))
    dispatcher = OrderDispatcher(env["tmp"] / "lake", {"east": BrokerAddress(port=port)},
                                 say=lambda _m: None, keys=SigningKeys(creds.path))
    env["opened"].append(_Stops(dispatcher.close))
    worker.start()
    wait_for("ingest's signed ack trims the outbox",
             lambda: s1.agent.acked_seq == 3 and outbox(s1.db) == [])
    dispatcher.send("east", "s1", ORDER)
    wait_for("the dispatcher's order kept",
             lambda: [o["order_id"] for o in s1.agent.orders()] == ["O-1"])
    assert s1.pub.refused == {"ack": len(forged_acks), "order": len(forged_orders),
                              "status": 0}
    assert worker.stats.landed == 3


class _Stops:
    def __init__(self, stop: Callable[[], None]) -> None:
        self.close = stop
