"""A stranger on an open broker cannot take the agent offline, trim its outbox or make it
skip events; every refusal is counted where an operator looks (heartbeat, GET /health).

Runs against a real mosquitto in anonymous mode, which is what lets a stranger publish
to the agent's ack and orders topics at all.
"""

from __future__ import annotations

import json
import sqlite3
import urllib.request

import pytest

from edge_mqtt.agent import StoreAgent
from edge_mqtt.http_api import serve_agent
from edge_mqtt.publisher import Publisher, PublisherConfig
from lakehouse.contract import MAX_EVENT_BYTES, Heartbeat, order_topic, topic
from tests.clients import raw_client, wait_for

LOC = "E-HOSTILE"
GOOD_ORDER = {"order_id": "O-GOOD", "sku": "MILK", "lot": "L1", "quantity": 2,
              "destination": "E-002", "transit_hours": 4.0, "approved_by": "ana",
              "approved_at": "2026-12-01T09:00:00.000Z"}

ACKS = [
    b"\xff\xfe\x00junk",                      # not UTF-8
    b"[1, 2, 3]",                             # a JSON list
    b"42",                                    # a number
    b'{"acked_seq": "3"}',                    # seq of the wrong type
    b'{"acked_seq": 1' + b"0" * 40 + b"}",    # a seq no SQLite integer holds
    b"[" * 100_000,                           # nesting that blows the parser's stack
    b"x" * (MAX_EVENT_BYTES + 1),             # too big: refused unread
]
FORGED_ACK = b'{"acked_seq": 1000}'          # beyond the last recorded seq, retained
ORDERS = {
    "O-JUNK": b"\xff\x00junk",
    "O-LIST": b'["O-LIST"]',
    "O-TYPES": json.dumps({**GOOD_ORDER, "order_id": "O-TYPES", "sku": ["MILK"],
                           "quantity": "2", "transit_hours": {"h": 4}}).encode(),
    "O-HUGE": json.dumps({**GOOD_ORDER, "order_id": "O-HUGE",
                          "quantity": 10**30}).encode(),
    "O-CTRL": json.dumps({**GOOD_ORDER, "order_id": "O-CTRL",
                          "approved_by": "ana\x00\ud800"}).encode(),
    "O-DEEP": b"{" + b'"a":{' * 50_000,
    "O-BIG": b"x" * (MAX_EVENT_BYTES + 1),
}


def receive(agent: StoreAgent, lot: str) -> dict:
    return agent.receive("MILK", 5, lot=lot, expires_on="2026-12-09", supplier_ref="PO",
                         unit_cost=1.0)


def outbox_seqs(path) -> list[int]:
    with sqlite3.connect(path) as conn:
        return [s for (s,) in conn.execute("SELECT seq FROM outbox ORDER BY seq")]


def test_junk_forged_acks_and_bad_orders_are_refused_and_the_agent_keeps_sending(
        tmp_path, brokers, region_ports):
    port = region_ports["east"]
    db = tmp_path / "h.sqlite"
    agent = StoreAgent(LOC, "east", db)
    for i in range(3):
        receive(agent, f"L{i}")
    seen: list[int] = []
    beats: list[Heartbeat] = []
    watcher = raw_client(port, "watcher")
    watcher.on_message = lambda _c, _u, m: (
        beats.append(Heartbeat.from_json(m.payload)) if m.topic.endswith("/heartbeat")
        else seen.append(json.loads(m.payload)["seq"]))
    watcher.subscribe([(topic("east", LOC, "events"), 2), (topic("east", LOC, "heartbeat"), 1)])
    stranger = raw_client(port, "stranger")
    config = PublisherConfig(port=port, resend_after_s=60, heartbeat_s=0.5)
    pub = Publisher(agent, config)
    server = serve_agent(agent, "127.0.0.1", 0, publisher=pub)
    try:
        pub.start()
        wait_for("the first three events", lambda: sorted(set(seen)) == [1, 2, 3], 15)

        ack_topic = topic("east", LOC, "ack")
        for payload in ACKS:
            stranger.publish(ack_topic, payload, qos=1).wait_for_publish(10)
        stranger.publish(ack_topic, FORGED_ACK, qos=1, retain=True).wait_for_publish(10)
        for order_id, payload in ORDERS.items():
            stranger.publish(order_topic("east", LOC, order_id), payload, qos=1,
                             retain=True).wait_for_publish(10)
        # A good order from the same open broker still gets through after all that.
        stranger.publish(order_topic("east", LOC, "O-GOOD"), json.dumps(GOOD_ORDER),
                         qos=1).wait_for_publish(10)
        # Shelflife's brokers drop messages over MAX_EVENT_BYTES (message_size_limit)
        # before any client sees them; the agent refuses the rest.
        expected = {"ack": sum(len(p) <= MAX_EVENT_BYTES for p in ACKS) + 1,
                    "order": sum(len(p) <= MAX_EVENT_BYTES for p in ORDERS.values()),
                    "status": 0}
        wait_for("every bad message refused", lambda: pub.refused == expected, 20)
        wait_for("the good order", lambda: len(agent.orders()) == 1, 10)

        # Still connected, and the next event goes out.
        assert pub.client.is_connected() and agent.online
        receive(agent, "L-NEXT")
        wait_for("event 4 to reach a subscriber", lambda: 4 in seen, 15)
        # Nothing trimmed, no order but the good one, and the operator can see it all.
        assert outbox_seqs(db) == [1, 2, 3, 4]
        assert agent.acked_seq == 0 and pub.acked_seq == 0
        assert [o["order_id"] for o in agent.orders()] == ["O-GOOD"]
        with urllib.request.urlopen(f"{server.url}/health", timeout=10) as resp:
            health = json.loads(resp.read())
        assert health["refused_messages"] == expected
        assert health["outbox_depth"] == 4 and health["online"] is True
        wait_for("a heartbeat counting the refusals",
                 lambda: any(b.refused_messages == sum(expected.values())
                             for b in beats), 10)
    finally:
        server.shutdown()
        pub.stop()

    # A restarted agent gets the retained forged ack and bad orders again on subscribe:
    # it refuses them again and still sends everything from seq 1 (it skips nothing).
    seen.clear()
    pub = Publisher(agent, config)
    try:
        pub.start()
        wait_for("the retained junk refused again",
                 lambda: pub.refused == {"ack": 1, "order": expected["order"],
                                         "status": 0}, 20)
        receive(agent, "L-AFTER")
        wait_for("every event sent again", lambda: sorted(set(seen)) == [1, 2, 3, 4, 5], 15)
        assert pub.client.is_connected()
        assert outbox_seqs(db) == [1, 2, 3, 4, 5] and agent.acked_seq == 0
    finally:
        pub.stop()
        for c in (stranger, watcher):
            c.disconnect()
            c.loop_stop()
        agent.close()


def test_an_ack_within_range_trims_and_one_beyond_deletes_nothing(tmp_path, brokers,
                                                                   region_ports):
    """What ingest sends moves the outbox; a seq the agent never recorded does not."""
    port = region_ports["east"]
    db = tmp_path / "a.sqlite"
    agent = StoreAgent(LOC, "east", db)
    for i in range(4):
        receive(agent, f"L{i}")
    pub = Publisher(agent, PublisherConfig(port=port, resend_after_s=60, heartbeat_s=0))
    ingest_like = raw_client(port, "ingest-like")
    ack_topic = topic("east", LOC, "ack")
    try:
        pub.start()
        wait_for("connected", lambda: agent.online, 10)
        ingest_like.publish(ack_topic, json.dumps({"acked_seq": 2}), qos=1,
                            retain=True).wait_for_publish(10)
        wait_for("seq 1-2 trimmed", lambda: outbox_seqs(db) == [3, 4], 10)
        ingest_like.publish(ack_topic, json.dumps({"acked_seq": 5}), qos=1,
                            retain=True).wait_for_publish(10)
        wait_for("the ack beyond seq 4 refused", lambda: pub.refused["ack"] == 1, 10)
        assert outbox_seqs(db) == [3, 4] and agent.acked_seq == 2 and pub.acked_seq == 2
        assert pub.client.is_connected()
    finally:
        ingest_like.disconnect()
        ingest_like.loop_stop()
        pub.stop()
        agent.close()


def test_the_store_refuses_an_ack_beyond_its_last_seq(tmp_path):
    """The one place the outbox shrinks holds the line even if a caller does not."""
    agent = StoreAgent(LOC, "east", tmp_path / "s.sqlite")
    try:
        for i in range(2):
            receive(agent, f"L{i}")
        with pytest.raises(ValueError, match="beyond the last recorded seq 2"):
            agent.db.apply_ack(3)
        assert agent.db.outbox_depth() == 2 and agent.acked_seq == 0
    finally:
        agent.close()

