"""The embedded broker against real paho-mqtt clients (and raw sockets for edge cases)."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from ingest.embedded_broker import EmbeddedBroker, matches, valid_filter
from lakehouse.contract import topic

pytestmark = pytest.mark.timeout(60)


# --- helpers shared with test_brokers.py -----------------------------------------------------

def port_picker() -> Callable[[], int]:
    """Hands out ports nothing listens on right now (and distinct within a test)."""
    given: set[int] = set()

    def pick() -> int:
        while True:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            if port not in given:
                given.add(port)
                return port

    return pick


@pytest.fixture
def free_port() -> Callable[[], int]:
    return port_picker()


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
        self.paho = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                                client_id=client_id, clean_session=clean_session)
        if username is not None:
            self.paho.username_pw_set(username, password)
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


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    """Collects the clients a test opens and closes them afterwards."""
    opened: list[Client] = []
    yield opened
    for client in opened:
        client.close()


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


# --- raw packets, for what paho cannot be made to do -------------------------------------

def _raw_connect(port: int, client_id: str, keepalive: int = 30,
                 clean: bool = True) -> socket.socket:
    name, cid = b"MQTT", client_id.encode()
    body = (struct.pack("!H", 4) + name + bytes((4, 2 if clean else 0))
            + struct.pack("!H", keepalive) + struct.pack("!H", len(cid)) + cid)
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(bytes((0x10, len(body))) + body)
    connack = sock.recv(4)
    assert connack[:2] == b"\x20\x02" and connack[3] == 0, connack
    return sock


def _raw_publish_qos2(topic_name: str, payload: bytes, pid: int, dup: bool) -> bytes:
    encoded = topic_name.encode()
    body = struct.pack("!H", len(encoded)) + encoded + struct.pack("!H", pid) + payload
    return bytes((0x34 | (0x08 if dup else 0), len(body))) + body


# --- fixtures -------------------------------------------------------------------------------

@pytest.fixture
def broker(free_port: Callable[[], int]) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(port=free_port()) as running:
        yield running


# --- tests ------------------------------------------------------------------------------------

def test_topic_filters_follow_mqtt_rules() -> None:
    def hit(topic_filter: str, name: str) -> bool:
        return matches(topic_filter.split("/"), name.split("/"))

    assert hit("a/+/c", "a/b/c") and hit("a/#", "a") and hit("#", "a/b")
    assert not hit("+/x", "$SYS/x") and not hit("a/+", "a/b/c") and not hit("a/b", "a")
    assert valid_filter("shelflife/v1/+/+/events") and valid_filter("#")
    assert not valid_filter("a/#/b") and not valid_filter("a/b+") and not valid_filter("")


def test_qos2_round_trip(broker: EmbeddedBroker, clients: list[Client]) -> None:
    sub = Client(broker.port, "sub-qos2")
    pub = Client(broker.port, "pub-qos2")
    clients += [sub, pub]
    sub.connect().subscribe("shelflife/v1/central/+/events")
    pub.connect()
    pub.paho.publish(topic("central", "dc-7", "events"), b'{"seq": 1}', qos=2)
    assert sub.wait_for(1, timeout=10) == [b'{"seq": 1}']
    assert sub.messages[0].qos == 2
    pub.wait_published(1, timeout=10)


def test_inbound_qos2_resend_is_delivered_once(broker: EmbeddedBroker,
                                               clients: list[Client]) -> None:
    sub = Client(broker.port, "sub-dedup")
    clients.append(sub)
    sub.connect().subscribe("dedup/#")
    with _raw_connect(broker.port, "raw-pub") as raw:
        raw.sendall(_raw_publish_qos2("dedup/x", b"once", 7, dup=False))
        assert raw.recv(4) == b"\x50\x02\x00\x07"  # PUBREC
        raw.sendall(_raw_publish_qos2("dedup/x", b"once", 7, dup=True))  # PUBREC was lost
        assert raw.recv(4) == b"\x50\x02\x00\x07"
        raw.sendall(b"\x62\x02\x00\x07")  # PUBREL
        assert raw.recv(4) == b"\x70\x02\x00\x07"  # PUBCOMP
        raw.sendall(_raw_publish_qos2("dedup/x", b"next", 7, dup=False))  # id free again
        assert raw.recv(4) == b"\x50\x02\x00\x07"
    assert sub.wait_for(2, timeout=10) == [b"once", b"next"]
    time.sleep(0.2)
    assert len(sub.messages) == 2


def test_retained_message_reaches_a_late_subscriber(broker: EmbeddedBroker,
                                                    clients: list[Client]) -> None:
    ack = topic("west", "store-9", "ack")
    pub = Client(broker.port, "ingest-west")
    clients.append(pub)
    pub.connect()
    pub.paho.publish(ack, b'{"acked_seq": 41}', qos=1, retain=True)
    pub.paho.publish(ack, b'{"acked_seq": 42}', qos=1, retain=True)
    pub.wait_published(2, timeout=10)

    late = Client(broker.port, "agent-store-9")
    clients.append(late)
    late.connect().subscribe(ack, qos=1)
    assert late.wait_for(1, timeout=10) == [b'{"acked_seq": 42}']
    assert late.messages[0].retain

    pub.paho.publish(ack, b"", qos=1, retain=True)  # an empty retained payload clears it
    pub.wait_published(3, timeout=10)
    later = Client(broker.port, "agent-store-9-again", clean_session=True)
    clients.append(later)
    later.connect().subscribe(ack, qos=1)
    time.sleep(0.3)
    assert later.messages == []


def test_persistent_session_gets_500_queued_messages_in_order(
        broker: EmbeddedBroker, clients: list[Client]) -> None:
    persistent_backlog_round_trip(broker.port, 500, clients)


def test_clean_session_discards_what_was_queued(broker: EmbeddedBroker,
                                                clients: list[Client]) -> None:
    sub = Client(broker.port, "fleeting")
    clients.append(sub)
    sub.connect().subscribe("t/#")
    sub.close()
    pub = Client(broker.port, "pub-clean")
    clients.append(pub)
    pub.connect()
    pub.paho.publish("t/1", b"while away", qos=1)
    pub.wait_published(1, timeout=10)
    again = Client(broker.port, "fleeting", clean_session=True)
    clients.append(again)
    again.connect()
    assert again.session_present is False
    time.sleep(0.3)
    assert again.messages == []


def test_wildcard_subscription_sees_only_its_region_events(broker: EmbeddedBroker,
                                                           clients: list[Client]) -> None:
    sub = Client(broker.port, "ingest-east-wild")
    pub = Client(broker.port, "pub-wild")
    clients += [sub, pub]
    sub.connect().subscribe("shelflife/v1/east/+/events")
    pub.connect()
    for region, loc, kind in [("east", "s1", "events"), ("east", "s1", "ack"),
                              ("west", "s1", "events"), ("east", "s2", "events"),
                              ("east", "s2", "heartbeat")]:
        pub.paho.publish(topic(region, loc, kind), f"{region}/{loc}/{kind}".encode(), qos=2)
    pub.wait_published(5, timeout=10)
    time.sleep(0.3)
    assert sub.wait_for(2, timeout=10) == [b"east/s1/events", b"east/s2/events"]


def test_queue_limit_drops_beyond_max_queued(free_port: Callable[[], int],
                                             clients: list[Client]) -> None:
    with EmbeddedBroker(port=free_port(), max_queued=10) as small:
        sub = Client(small.port, "small-sub")
        clients.append(sub)
        sub.connect().subscribe("q/#", qos=1)
        sub.close()
        pub = Client(small.port, "small-pub")
        clients.append(pub)
        pub.connect()
        for i in range(25):
            pub.paho.publish("q/x", str(i).encode(), qos=1)
        pub.wait_published(25, timeout=10)
        back = Client(small.port, "small-sub")
        clients.append(back)
        back.connect()
        assert back.wait_for(10, timeout=10) == [str(i).encode() for i in range(10)]
        time.sleep(0.3)
        assert len(back.messages) == 10
        pub.close()
        back.close()


def test_username_and_password_are_checked(free_port: Callable[[], int],
                                           clients: list[Client]) -> None:
    with EmbeddedBroker(port=free_port(), users={"ingest": "s3cret"}) as secured:
        wrong = Client(secured.port, "wrong", username="ingest", password="guess")
        clients.append(wrong)
        with pytest.raises(AssertionError, match="refused"):
            wrong.connect()
        right = Client(secured.port, "right", username="ingest", password="s3cret")
        clients.append(right)
        right.connect()
        right.close()
        wrong.close()


def test_silent_client_is_dropped_after_keepalive(broker: EmbeddedBroker) -> None:
    with _raw_connect(broker.port, "silent", keepalive=1) as raw:
        raw.settimeout(5)
        started = time.monotonic()
        assert raw.recv(1) == b""  # the broker closed the connection
        assert time.monotonic() - started < 4


def test_pingreq_keeps_the_connection(broker: EmbeddedBroker) -> None:
    with _raw_connect(broker.port, "pinger", keepalive=1) as raw:
        for _ in range(4):
            time.sleep(0.5)
            raw.sendall(b"\xc0\x00")
            assert raw.recv(2) == b"\xd0\x00"


def _read_packet(sock: socket.socket) -> tuple[int, bytes]:
    first = sock.recv(1)[0]
    length, shift = 0, 0
    while True:
        byte = sock.recv(1)[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    body = b""
    while len(body) < length:
        body += sock.recv(length - len(body))
    return first, body


def test_unacknowledged_deliveries_resume_in_order_after_reconnect(
        broker: EmbeddedBroker, clients: list[Client]) -> None:
    sub = Client(broker.port, "ingest-resume")
    clients.append(sub)
    sub.connect().subscribe("resume/#", qos=2)
    sub.close()
    pub = Client(broker.port, "pub-resume")
    clients.append(pub)
    pub.connect()
    for i in range(3):
        pub.paho.publish("resume/x", f"m{i}".encode(), qos=2)
    pub.wait_published(3, timeout=10)

    with _raw_connect(broker.port, "ingest-resume", clean=False) as raw:
        first, body = _read_packet(raw)  # m0 arrives; the connection drops before PUBREC
        assert first & 0xF6 == 0x34 and body.endswith(b"m0")
    with _raw_connect(broker.port, "ingest-resume", clean=False) as raw:
        got = [_read_packet(raw) for _ in range(3)]
        assert [body[-2:] for _, body in got] == [b"m0", b"m1", b"m2"]
        assert all(first & 0x08 for first, _ in got)  # DUP: these were sent before
        pid = got[0][1][len(b"\x00\x08resume/x"):][:2]
        raw.sendall(b"\x50\x02" + pid)  # PUBREC
        assert _read_packet(raw) == (0x62, pid)  # PUBREL
