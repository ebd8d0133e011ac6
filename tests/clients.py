"""MQTT clients and waiting, for tests of any component: real paho clients from the shared
factory, and nothing beyond the store agent's own dependencies (its tests run in a
virtualenv without the server extra)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt

from lakehouse.contract import topic
from lakehouse.mqtt import BrokerAddress, make_client
from tests.ports import free_port


def port_picker() -> Callable[[], int]:
    """Hands out ports nothing listens on right now (and distinct within a test)."""
    return free_port


class Client:
    """A paho 2.x client that records what it receives and waits for it."""

    def __init__(self, port: int, client_id: str, *, clean_session: bool = False,
                 username: str | None = None, password: str | None = None) -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self.published = 0
        self.subacks = 0
        self._want = 1  # wake a waiting test only when this many have arrived
        self._cond = threading.Condition()
        self.connected = threading.Event()
        self.reason: object = None
        self.session_present: bool | None = None
        self.paho = make_client(BrokerAddress("127.0.0.1", port, username, password),
                                client_id=client_id, clean_session=clean_session)
        self.paho.on_connect = self._on_connect
        self.paho.on_message = self._on_message
        self.paho.on_publish = self._on_publish
        self.paho.on_subscribe = self._on_subscribe
        self.port = port

    def _on_subscribe(self, *_args: object) -> None:
        with self._cond:
            self.subacks += 1
            self._cond.notify_all()

    def _on_connect(self, _c, _u, flags, reason_code, _p) -> None:
        self.reason = reason_code
        self.session_present = flags.session_present
        self.connected.set()

    def _on_message(self, _c, _u, message) -> None:
        with self._cond:
            self.messages.append(message)
            if len(self.messages) >= self._want:
                self._cond.notify_all()

    def _on_publish(self, _c, _u, _mid, _rc, _p) -> None:
        with self._cond:
            self.published += 1
            if self.published >= self._want:
                self._cond.notify_all()

    def connect(self) -> Client:
        self.paho.connect("127.0.0.1", self.port, keepalive=30)
        self.paho.loop_start()
        assert self.connected.wait(10), "no CONNACK within 10 s"
        assert not self.reason.is_failure, f"connection refused: {self.reason}"
        return self

    def subscribe(self, topic_filter: str, qos: int = 2) -> None:
        with self._cond:
            wanted = self.subacks + 1
            result, _mid = self.paho.subscribe(topic_filter, qos)
            assert result == mqtt.MQTT_ERR_SUCCESS
            # wait for SUBACK so nothing published next is missed
            assert self._cond.wait_for(lambda: self.subacks >= wanted, 10), \
                f"no SUBACK for {topic_filter}"

    def wait_for(self, count: int, timeout: float = 30) -> list[bytes]:
        with self._cond:
            self._want = count
            self._cond.wait_for(lambda: len(self.messages) >= count, timeout)
        return [m.payload for m in self.messages]

    def wait_published(self, count: int, timeout: float = 60) -> None:
        with self._cond:
            self._want = count
            self._cond.wait_for(lambda: self.published >= count, timeout)
        assert self.published >= count, f"only {self.published} of {count} publishes acked"

    def close(self) -> None:
        """Idempotent, so a test can close before its broker stops and the fixture again."""
        if self.connected.is_set():
            self.connected.clear()
            self.paho.disconnect()
        self.paho.loop_stop()


def persistent_backlog_round_trip(port: int, count: int, clients: list[Client]) -> None:
    """Subscriber away while ``count`` QoS 2 messages arrive; it must get each once, in order."""
    events = topic("east", "store-001", "events")
    sub = Client(port, "ingest-east")
    clients.append(sub)
    sub.connect().subscribe("shelflife/v1/east/+/events", qos=2)
    sub.close()

    pub = Client(port, "agent-store-001")
    clients.append(pub)
    pub.paho.max_inflight_messages_set(1000)
    pub.connect()
    expected = [f"event {i}".encode() for i in range(count)]
    for payload in expected:
        pub.paho.publish(events, payload, qos=2)
    pub.wait_published(count)

    back = Client(port, "ingest-east")
    clients.append(back)
    back.connect()
    assert back.session_present is True
    back.wait_for(count, timeout=60)
    time.sleep(0.3)  # anything extra (a duplicate) would arrive now
    got = [m.payload for m in back.messages]
    assert len(got) == count, f"received {len(got)} of {count}"
    assert got == expected, "messages arrived out of order or duplicated"
    assert {m.qos for m in back.messages} == {2}
    for client in (pub, back):
        client.close()


def wait_for(what: str, check: Callable[[], bool], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def raw_client(port: int, name: str) -> mqtt.Client:
    """A plain MQTT client for injecting duplicates and malformed payloads."""
    c = make_client(BrokerAddress("127.0.0.1", port), client_id=name)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c
