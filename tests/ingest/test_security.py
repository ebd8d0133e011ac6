"""Secure brokers: a store signs in as itself and can touch only its own topics.

Each check runs against a real mosquitto with real paho clients. MQTT 3.1.1 has no way
to refuse a PUBLISH, so a forbidden one is acknowledged and dropped: the tests assert
that the reader never receives it while the same client's allowed message, sent right
after, does arrive.
"""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ingest import brokers as brokers_module
from ingest.auth import TopicRules, covers
from ingest.brokers import (
    TlsFiles,
    credentials_path,
    mosquitto_config,
    start_brokers,
    stop_brokers,
)
from lakehouse.contract import topic
from lakehouse.credentials import Credentials, Login, dispatcher_username, ingest_username
from tests.clients import Client, port_picker

pytestmark = pytest.mark.timeout(60)

LOCATIONS = {"east": ["s1", "s2"], "west": ["w1"]}
QUIET_S = 0.5  # how long a forbidden message is given to show up


@dataclass
class Secured:
    """One secure east broker, its credentials, and the clients a test opened."""

    port: int
    creds: Credentials
    clients: list[Client]
    data_dir: Path

    def client(self, client_id: str, login: Login | None, password: str | None = None,
               *, connect: bool = True) -> Client:
        c = Client(self.port, client_id,
                   username=login.username if login else None,
                   password=password if password is not None else
                   (login.password if login else None))
        self.clients.append(c)
        return c.connect() if connect else c

    def store(self, location_id: str) -> Client:
        return self.client(f"agent-{location_id}", self.creds.credentials_for(location_id))

    def ingest(self) -> Client:
        return self.client("ingest-east", self.creds.ingest_credentials("east"))


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[Secured]:
    port = port_picker()()
    running = start_brokers(tmp_path, ("east",), ports={"east": port},
                            locations=LOCATIONS, secure=True)
    opened: list[Client] = []
    try:
        assert [b.secure for b in running] == [True]
        creds = Credentials.open(credentials_path(tmp_path))
        yield Secured(port, creds, opened, tmp_path)
    finally:
        for c in opened:
            c.close()
        stop_brokers(running)


def refusal(client: Client) -> object:
    """The CONNACK reason of a connection attempt expected to fail."""
    client.paho.connect("127.0.0.1", client.port, keepalive=30)
    client.paho.loop_start()
    assert client.connected.wait(10), "no CONNACK within 10 s"
    return client.reason


def quiet(client: Client, count: int) -> list[bytes]:
    """What arrived after waiting a little longer for anything beyond ``count``."""
    client.wait_for(count + 1, timeout=QUIET_S)
    return [m.payload for m in client.messages]


# --- the rules, on both brokers ---------------------------------------------------------

def test_store_cannot_publish_as_another_store(secured: Secured) -> None:
    ingest = secured.ingest()
    ingest.subscribe("shelflife/v1/east/+/events")
    ingest.subscribe("shelflife/v1/east/+/heartbeat")
    s1 = secured.store("s1")
    s1.paho.publish(topic("east", "s2", "events"), b"spoofed s2 event", qos=2)
    s1.paho.publish(topic("east", "s2", "heartbeat"), b"spoofed s2 heartbeat", qos=1)
    s1.paho.publish(topic("west", "w1", "events"), b"spoofed other region", qos=2)
    s1.paho.publish("shelflife/v1/east/s1/other", b"not a Shelflife topic", qos=1)
    s1.paho.publish(topic("east", "s1", "events"), b"own event", qos=2)
    s1.paho.publish(topic("east", "s1", "heartbeat"), b"own heartbeat", qos=1)
    s1.wait_published(6)  # the broker acknowledged all, forbidden ones included
    ingest.wait_for(2, timeout=10)
    assert sorted(quiet(ingest, 2)) == [b"own event", b"own heartbeat"]
    assert sorted(m.topic for m in ingest.messages) == [topic("east", "s1", "events"),
                                                        topic("east", "s1", "heartbeat")]


def test_store_cannot_forge_or_read_another_stores_ack(secured: Secured) -> None:
    ingest = secured.ingest()
    for loc in ("s1", "s2"):
        ingest.paho.publish(topic("east", loc, "ack"), json.dumps({"acked_seq": 7}),
                            qos=1, retain=True)
    ingest.wait_published(2)
    s2 = secured.store("s2")
    s2.subscribe(topic("east", "s2", "ack"), qos=1)
    s2.wait_for(1, timeout=10)  # the retained ack the ingest user wrote

    s1 = secured.store("s1")
    s1.subscribe(topic("east", "s2", "ack"), qos=1)      # someone else's, exactly
    s1.subscribe("shelflife/v1/east/+/ack", qos=1)       # everyone's, by wildcard
    s1.subscribe("shelflife/v1/east/+/events", qos=1)    # other stores' events
    # a forged ack would make s2 drop events from its outbox that ingest never landed
    s1.paho.publish(topic("east", "s2", "ack"), json.dumps({"acked_seq": 10**9}), qos=1,
                    retain=True)
    s1.wait_published(1)
    s2.paho.publish(topic("east", "s2", "events"), b"s2 event", qos=1)
    ingest.paho.publish(topic("east", "s2", "ack"), json.dumps({"acked_seq": 8}), qos=1)
    s1.subscribe(topic("east", "s1", "ack"), qos=1)      # its own: allowed
    s1.wait_for(1, timeout=10)

    assert quiet(s2, 2) == [b'{"acked_seq": 7}', b'{"acked_seq": 8}']
    # mosquitto grants the wildcard and filters what it delivers (s1 then gets its own
    # retained ack once per matching subscription)
    assert set(quiet(s1, 1)) == {b'{"acked_seq": 7}'}
    assert {m.topic for m in s1.messages} == {topic("east", "s1", "ack")}


def test_ingest_reads_events_and_writes_acks(secured: Secured) -> None:
    ingest = secured.ingest()
    ingest.subscribe("shelflife/v1/east/+/events")
    stores = {loc: secured.store(loc) for loc in ("s1", "s2")}
    for loc, client in stores.items():
        client.subscribe(topic("east", loc, "ack"), qos=1)
        client.paho.publish(topic("east", loc, "events"), f"{loc}:1".encode(), qos=2)
    assert sorted(ingest.wait_for(2, timeout=10)) == [b"s1:1", b"s2:1"]
    for loc in stores:
        ingest.paho.publish(topic("east", loc, "ack"), f"ack {loc}".encode(), qos=1,
                            retain=True)
    for loc, client in stores.items():
        assert client.wait_for(1, timeout=10) == [f"ack {loc}".encode()]
    # the ingest user may not publish events, so it cannot inject them either
    ingest.paho.publish(topic("east", "s1", "events"), b"injected", qos=2)
    ingest.wait_published(3)
    assert sorted(quiet(ingest, 2)) == [b"s1:1", b"s2:1"]


def test_only_ingest_reads_the_brokers_own_figures(secured: Secured) -> None:
    # The pipeline page charts clients and held messages from $SYS; a store must not
    # learn how many other stores are connected or how much the broker holds.
    ingest = secured.ingest()
    store = secured.store("s1")
    for c in (ingest, store):
        c.subscribe("$SYS/broker/clients/connected")
    # mosquitto publishes $SYS every sys_interval (10 s); a subscriber first gets the
    # value it published last, from before these clients connected
    deadline = time.monotonic() + 25
    while time.monotonic() < deadline and not any(int(m.payload) >= 2
                                                  for m in ingest.messages):
        time.sleep(0.2)
    assert max(int(m.payload) for m in ingest.messages) >= 2
    assert quiet(store, 0) == []


def test_store_cannot_leave_a_will_on_another_stores_topic(secured: Secured) -> None:
    ingest = secured.ingest()
    ingest.subscribe("shelflife/v1/east/+/events")
    s1 = secured.client("agent-s1", secured.creds.credentials_for("s1"), connect=False)
    s1.paho.will_set(topic("east", "s2", "events"), b"spoofed will", qos=2)
    s1.paho.connect("127.0.0.1", secured.port, keepalive=30)
    s1.paho.loop_start()
    assert s1.connected.wait(10)
    if not s1.reason.is_failure:  # accepted: drop the link so the broker sends the will
        s1.paho.loop_stop()
        s1.paho.socket().close()
    assert quiet(ingest, 0) == []


@pytest.mark.parametrize("who", ["wrong password", "anonymous", "other region's store",
                                 "ingest password for a store", "unknown user"])
def test_bad_credentials_are_refused_at_connect(secured: Secured, who: str) -> None:
    creds = secured.creds
    login, password = {
        "wrong password": (creds.credentials_for("s1"), "guess"),
        "anonymous": (None, None),
        "other region's store": (creds.credentials_for("w1"), None),
        "ingest password for a store": (creds.credentials_for("s1"),
                                        creds.ingest_credentials("east").password),
        "unknown user": (Login("s3", "x"), None),
    }[who]
    reason = refusal(secured.client(f"c-{who}", login, password, connect=False))
    assert reason.is_failure, f"{who}: connection accepted ({reason})"


def test_store_cannot_take_over_the_ingest_session(secured: Secured) -> None:
    """A store reusing ingest's client id must not receive ingest's queued events."""
    ingest = secured.ingest()
    ingest.subscribe("shelflife/v1/east/+/events")
    ingest.close()
    s2 = secured.store("s2")
    s2.paho.publish(topic("east", "s2", "events"), b"queued for ingest", qos=2)
    s2.wait_published(1)

    thief = secured.client("ingest-east", secured.creds.credentials_for("s1"),
                           connect=False)
    thief.paho.connect("127.0.0.1", secured.port, keepalive=30)
    thief.paho.loop_start()
    assert thief.connected.wait(10)
    # mosquitto (use_username_as_clientid) lets s1 in under its own name, away from
    # ingest's session
    assert not thief.reason.is_failure
    assert quiet(thief, 0) == []
    thief.close()
    back = secured.ingest()
    assert back.session_present
    assert back.wait_for(1, timeout=10) == [b"queued for ingest"]


# --- files and credentials --------------------------------------------------------------

def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_credentials_are_generated_once_and_private(tmp_path: Path) -> None:
    path = tmp_path / "credentials.json"
    first = Credentials.open(path, {"east": ["s1", "s2"]})
    assert _mode(path) == 0o600
    assert first.credentials_for("s1").username == "s1"
    assert first.ingest_credentials("west").username == ingest_username("west")
    passwords = {first.credentials_for(x).password for x in ("s1", "s2")}
    passwords |= {first.ingest_credentials(r).password for r in ("east", "central", "west")}
    passwords |= {first.dispatcher_credentials(r).password
                  for r in ("east", "central", "west")}
    assert len(passwords) == 8 and all(len(p) >= 24 for p in passwords)
    assert first.dispatcher_credentials("east").username == "dispatcher@east"
    login = first.credentials_for("s1")
    assert login.password not in repr(login) and login.password not in str(login)

    again = Credentials.open(path, {"east": ["s2", "s3"], "west": ["w1"]})
    assert again.credentials_for("s1") == first.credentials_for("s1")
    assert again.ingest_credentials("east") == first.ingest_credentials("east")
    assert again.dispatcher_credentials("east") == first.dispatcher_credentials("east")
    assert again.locations("east") == ["s1", "s2", "s3"]
    assert again.region_of("w1") == "west"
    assert Credentials.open(path).locations("west") == ["w1"]

    with pytest.raises(ValueError, match=r"location 's1'.*'west'.*'east'"):
        Credentials.open(path, {"west": ["s1"]})
    with pytest.raises(KeyError, match="s9"):
        again.credentials_for("s9")
    with pytest.raises(ValueError, match="location_id"):
        Credentials.open(path, {"east": ["bad/id"]})

    path.chmod(0o644)
    Credentials.open(path)
    assert _mode(path) == 0o600
    path.write_text("{}")
    with pytest.raises(ValueError, match="not a Shelflife credentials file"):
        Credentials.open(path)


def test_topic_rules() -> None:
    rules = TopicRules.for_region("east", ["s1"])
    ingest = ingest_username("east")
    assert rules("s1", "publish", "shelflife/v1/east/s1/events")
    assert rules("s1", "publish", "shelflife/v1/east/s1/heartbeat")
    assert not rules("s1", "publish", "shelflife/v1/east/s1/ack")
    assert not rules("s1", "publish", "shelflife/v1/east/s2/events")
    assert rules("s1", "subscribe", "shelflife/v1/east/s1/ack")
    assert not rules("s1", "subscribe", "shelflife/v1/east/+/ack")
    assert not rules("s1", "subscribe", "#")
    assert rules(ingest, "subscribe", "shelflife/v1/east/+/events")
    assert rules(ingest, "subscribe", "shelflife/v1/east/s7/heartbeat")
    assert not rules(ingest, "subscribe", "shelflife/v1/east/#")
    assert not rules(ingest, "subscribe", "shelflife/v1/+/+/events")
    assert rules(ingest, "publish", "shelflife/v1/east/s7/ack")
    assert not rules(ingest, "publish", "shelflife/v1/east/s7/events")
    # transfer orders: only the dispatcher writes them, each store reads its own
    dispatcher = dispatcher_username("east")
    assert rules("s1", "subscribe", "shelflife/v1/east/s1/orders/+")
    assert not rules("s1", "subscribe", "shelflife/v1/east/s2/orders/+")
    assert not rules("s1", "publish", "shelflife/v1/east/s1/orders/597b07709accd33f")
    assert rules(dispatcher, "publish", "shelflife/v1/east/s7/orders/597b07709accd33f")
    assert not rules(ingest, "publish", "shelflife/v1/east/s7/orders/597b07709accd33f")
    assert not rules(ingest, "subscribe", "shelflife/v1/east/s7/orders/+")
    assert not rules(dispatcher, "publish", "shelflife/v1/east/s7/ack")
    assert not rules(dispatcher, "subscribe", "shelflife/v1/east/+/events")
    assert not rules(None, "publish", "shelflife/v1/east/s1/events")
    assert not rules("nobody", "subscribe", "shelflife/v1/east/s1/ack")
    assert covers(["a", "#"], ["a", "b", "+"]) and not covers(["a", "+"], ["a", "#"])


def test_secure_config_and_files(tmp_path: Path) -> None:
    port = port_picker()()
    running = start_brokers(tmp_path, ("east",), ports={"east": port},
                            locations=LOCATIONS, secure=True)
    stop_brokers(running)
    region_dir = tmp_path.resolve() / "east"
    conf = (region_dir / "mosquitto.conf").read_text().splitlines()
    assert "allow_anonymous false" in conf and "allow_anonymous true" not in conf
    assert f"password_file {region_dir / 'passwd'}" in conf
    assert f"acl_file {region_dir / 'acl'}" in conf
    creds = Credentials.open(credentials_path(tmp_path))
    passwd = (region_dir / "passwd").read_text()
    assert _mode(region_dir / "passwd") == 0o600
    assert [line.split(":")[0] for line in passwd.splitlines()] == [
        "ingest@east", "dispatcher@east", "s1", "s2"]  # this region's users only
    assert creds.credentials_for("s1").password not in passwd
    assert all(line.split(":", 1)[1].startswith("$7$") for line in passwd.splitlines())
    acl = (region_dir / "acl").read_text()
    assert "user s1\ntopic write shelflife/v1/east/s1/events\n" in acl
    assert "topic read shelflife/v1/east/+/events" in acl
    assert not list(region_dir.glob(".*"))  # no plain-text staging file left behind


def test_default_config_stays_open(tmp_path: Path) -> None:
    conf = mosquitto_config(brokers_module.BrokerSpec("east", port=18831), tmp_path)
    assert "allow_anonymous true" in conf.splitlines()
    assert "password_file" not in conf and "certfile" not in conf


def test_mosquitto_accepts_hashes_made_without_mosquitto_passwd(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(brokers_module, "find_mosquitto_passwd", lambda: None)
    port = port_picker()()
    running = start_brokers(tmp_path, ("east",), ports={"east": port},
                            locations=LOCATIONS, secure=True)
    try:
        creds = Credentials.open(credentials_path(tmp_path))
        login = creds.credentials_for("s1")
        client = Client(port, "s1", username=login.username, password=login.password)
        client.connect().close()
        wrong = Client(port, "s1b", username="s1", password="nope")
        assert refusal(wrong).is_failure
        wrong.close()
    finally:
        stop_brokers(running)


# --- TLS ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed, so no test certificate")
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return TlsFiles(cert, key)


def test_tls_listener(tmp_path: Path, self_signed: TlsFiles) -> None:
    port = port_picker()()
    running = start_brokers(tmp_path, ("east",), ports={"east": port},
                            locations=LOCATIONS, secure=True, tls=self_signed)
    opened: list[Client] = []
    try:
        conf = (tmp_path.resolve() / "east" / "mosquitto.conf").read_text().splitlines()
        assert f"certfile {self_signed.certfile}" in conf
        assert f"keyfile {self_signed.keyfile}" in conf
        creds = Credentials.open(credentials_path(tmp_path))
        ing, s1 = creds.ingest_credentials("east"), creds.credentials_for("s1")
        sub = Client(port, "ingest", username=ing.username, password=ing.password)
        pub = Client(port, "s1", username=s1.username, password=s1.password)
        opened += [sub, pub]
        for c in (sub, pub):
            c.paho.tls_set(ca_certs=str(self_signed.certfile))
        sub.connect().subscribe("shelflife/v1/east/+/events")
        pub.connect().paho.publish(topic("east", "s1", "events"), b"over tls", qos=2)
        assert sub.wait_for(1, timeout=10) == [b"over tls"]

        plain = Client(port, "plain", username=s1.username, password=s1.password)
        opened.append(plain)
        plain.paho.connect("127.0.0.1", port, keepalive=30)
        plain.paho.loop_start()
        assert not plain.connected.wait(1.5) or plain.reason.is_failure, \
            "a client without TLS was let in"
    finally:
        for c in opened:
            c.close()
        stop_brokers(running)


def test_tls_files_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="certfile"):
        TlsFiles(tmp_path / "missing.pem", tmp_path / "key.pem")


def test_agent_and_ingest_work_end_to_end_over_tls_with_their_own_logins(
        tmp_path: Path, self_signed: TlsFiles) -> None:
    """The real publisher and ingest worker, configured as an operator would."""
    import time

    from edge_mqtt.agent import StoreAgent
    from edge_mqtt.publisher import Publisher, PublisherConfig
    from ingest.worker import IngestConfig, IngestWorker

    port = port_picker()()
    running = start_brokers(tmp_path / "b", ("east",), ports={"east": port},
                            locations=LOCATIONS, secure=True, tls=self_signed)
    creds = Credentials.open(credentials_path(tmp_path / "b"))
    ing, s1 = creds.ingest_credentials("east"), creds.credentials_for("s1")
    ca = str(self_signed.certfile)
    worker = IngestWorker(IngestConfig(region="east", port=port, lakehouse=str(tmp_path / "l"),
                                       username=ing.username, password=ing.password,
                                       tls_ca=ca))
    agent = StoreAgent("s1", "east", tmp_path / "s1.sqlite")
    pub = Publisher(agent, PublisherConfig(port=port, username=s1.username,
                                           password=s1.password, tls_ca=ca))
    try:
        worker.start()
        pub.start()
        for i in range(30):
            agent.receive("MILK", 2, lot=f"L{i}", expires_on="2026-12-09", supplier_ref="PO",
                          unit_cost=1.0)
        deadline = time.monotonic() + 20
        while pub.acked_seq < 30 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pub.acked_seq == 30 and worker.stats.landed == 30
    finally:
        pub.stop()
        worker.stop()
        agent.close()
        stop_brokers(running)


# --- ingest and the order dispatcher on one secure mosquitto ---------------------------

def _order(order_id: str) -> dict:
    return {"order_id": order_id, "sku": "MILK", "lot": "L1", "quantity": 2,
            "destination": "s2", "transit_hours": 5.5, "approved_by": "ana",
            "approved_at": "2026-12-01T09:00:00.000Z"}


def test_dispatcher_has_its_own_login_and_ingest_keeps_landing(tmp_path: Path) -> None:
    """The dispatcher used to log in as ingest@<region>; with use_username_as_clientid
    mosquitto then closed ingest's connection and landing stopped."""
    import time

    from prometheus_client import CollectorRegistry

    from edge_mqtt.agent import StoreAgent
    from edge_mqtt.publisher import Publisher, PublisherConfig
    from ingest.orders import BrokerAddress, OrderDispatcher
    from ingest.worker import IngestConfig, IngestWorker
    from lakehouse.contract import order_topic
    from tests.clients import wait_for

    port = port_picker()()
    running = start_brokers(tmp_path / "b", ("east",),
                            ports={"east": port}, locations=LOCATIONS, secure=True)
    creds = Credentials.open(credentials_path(tmp_path / "b"))
    ing, dis, s1 = (creds.ingest_credentials("east"), creds.dispatcher_credentials("east"),
                    creds.credentials_for("s1"))
    agent = StoreAgent("s1", "east", tmp_path / "s1.sqlite")
    pub = Publisher(agent, PublisherConfig(port=port, username=s1.username,
                                           password=s1.password, heartbeat_s=0))
    worker = IngestWorker(IngestConfig(region="east", port=port,
                                       lakehouse=str(tmp_path / "lake"),
                                       username=ing.username, password=ing.password),
                          registry=CollectorRegistry())
    dispatcher = OrderDispatcher(tmp_path / "lake", {"east": BrokerAddress(
        port=port, username=dis.username, password=dis.password)}, say=lambda _m: None)
    opened: list[Client] = []
    try:
        pub.start()
        wait_for("the store online", lambda: agent.online, 10)
        # Forbidden writers first, while the store is subscribed to its orders. Ingest's
        # own login is used before the worker connects, as it would otherwise take its
        # client id.
        for name, login in (("s2", creds.credentials_for("s2")), ("ingest", ing)):
            forger = Client(port, f"forger-{name}", clean_session=True,
                            username=login.username, password=login.password)
            opened.append(forger)
            forger.connect().paho.publish(order_topic("east", "s1", f"forged{name}"),
                                          json.dumps(_order(f"forged{name}")), qos=1,
                                          retain=True)
            forger.wait_published(1)
            forger.close()

        worker.start()
        dispatcher.send("east", "s1", _order("realorder1"))
        assert worker.connected.is_set()
        wait_for("the dispatcher's order at the store",
                 lambda: [o["order_id"] for o in agent.orders()] == ["realorder1"], 10)
        for i in range(20):  # events published after the dispatcher connected
            agent.receive("MILK", 2, lot=f"L{i}", expires_on="2026-12-09",
                          supplier_ref="PO", unit_cost=1.0)
        wait_for("20 events acked", lambda: pub.acked_seq == 20, 20)
        dispatcher.send("east", "s1", _order("realorder2"))
        agent.receive("MILK", 1, lot="L99", expires_on="2026-12-09", supplier_ref="PO",
                      unit_cost=1.0)
        wait_for("the 21st event acked", lambda: pub.acked_seq == 21, 20)
        time.sleep(QUIET_S)
        assert worker.stats.landed == 21 and worker.connected.is_set()
        assert sorted(o["order_id"] for o in agent.orders()) == ["realorder1", "realorder2"]
        log_text = running[0].log_path.read_text()
        assert "already connected, closing old connection" not in log_text

        anonymous = Client(port, "anonymous", clean_session=True)
        opened.append(anonymous)
        assert refusal(anonymous).is_failure
    finally:
        for c in opened:
            c.close()
        dispatcher.close()
        pub.stop()
        worker.stop()
        agent.close()
        stop_brokers(running)


def test_a_store_added_while_the_brokers_run_can_log_in_after_a_reload(
        tmp_path: Path) -> None:
    """`shelflife simulate` (or an operator) adds stores to credentials.json while
    `shelflife broker` runs; the running brokers accept them without a restart."""
    from ingest.brokers import reload_credentials

    port = port_picker()()
    running = start_brokers(tmp_path, ("east",), ports={"east": port},
                            locations=LOCATIONS, secure=True)
    opened: list[Client] = []
    try:
        early = Client(port, "s1-early", clean_session=True,
                       **_login(Credentials.open(credentials_path(tmp_path)), "s1"))
        opened.append(early.connect())
        added = Credentials.open(credentials_path(tmp_path), {"east": ["s9"]})
        newcomer = Client(port, "s9-too-soon", clean_session=True, **_login(added, "s9"))
        opened.append(newcomer)
        assert refusal(newcomer).is_failure  # not yet: the broker has not reloaded
        reload_credentials(running, tmp_path)
        time.sleep(0.5)  # mosquitto handles SIGHUP between network loops
        s9 = Client(port, "s9", clean_session=True, **_login(added, "s9"))
        opened.append(s9.connect())
        s9.paho.publish(topic("east", "s9", "events"), b"from s9", qos=1)
        s9.wait_published(1)
        assert early.paho.is_connected()  # nobody was thrown off by the reload
    finally:
        for c in opened:
            c.close()
        stop_brokers(running)


def _login(creds: Credentials, location_id: str) -> dict[str, str]:
    login = creds.credentials_for(location_id)
    return {"username": login.username, "password": login.password}
