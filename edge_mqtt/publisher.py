"""Sends a location's outbox to its regional broker and trims it on end-to-end acks.

MQTT's own acks are not trusted for durability: an event leaves the outbox only when the
retained message on the location's ``ack`` topic (written by ingest after the landing
batch is durable) covers its seq. On every (re)connect, and whenever the ack stalls, the
publisher sends again from the last acked seq; ingest drops the duplicates. A stall that
repeats (ingest down for hours) is re-sent at growing intervals, so a long outage does not
fill the broker's queue with copies of the same window.

Events recorded offline keep their original ``occurred_at`` and go out in seq order,
throttled to ``replay_rate`` so a store back from a long outage cannot swamp its region.
Every ``heartbeat_s`` the publisher also says how the store is doing (see ``heartbeat``).

Whatever arrives on the ``ack`` and ``orders`` topics (from ingest, the lakehouse, or a
stranger on an open broker) is refused with a warning naming the topic and the reason
when the agent cannot use it, and counted in :attr:`Publisher.refused` and the heartbeat.
No message can raise inside paho's callback: that would end its network loop and leave
the store offline until restarted (and a retained message would do it again on every
connect). An ack beyond the last recorded seq is refused: it never trims the outbox.

Proof of origin. With the store's signing key (``PublisherConfig.signing_key``, issued by
the secure brokers' credentials), an ack or order must carry ingest's or the dispatcher's
signature over this location (:func:`lakehouse.contract.read_ack`); anything else is
refused and counted like junk, and never deletes an event or becomes an order. So even on
an open or misconfigured broker a stranger cannot make the store drop events that never
landed or ship goods nobody approved. Without a key the agent trusts its broker, and says
so once when it starts.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import paho.mqtt.client as mqtt

from lakehouse.contract import (
    MAX_EVENT_BYTES,
    ContractError,
    Heartbeat,
    ingest_status_topic,
    order_topic,
    read_ack,
    read_ingest_status,
    read_order,
    skew_from_ack,
    topic,
    utc_now_ms,
)
from lakehouse.mqtt import BrokerAddress, make_client
from lakehouse.ratelimit import TokenBucket

from .agent import AGENT_VERSION, StoreAgent
from .store import AckRefused, StoreDB

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PublisherConfig:
    """How the agent talks to its broker."""

    host: str = "127.0.0.1"
    """Broker host."""
    port: int = 18831
    """Broker port."""
    window: int = 2000
    """Events sent ahead of the last end-to-end ack."""
    resend_after_s: float = 15.0
    """Re-send from the last ack when it has not moved for this long."""
    resend_max_s: float = 60.0
    """Each stall re-send without progress doubles the wait, up to this: a minute, so
    messages a broker dropped go out again within one."""
    replay_rate: float = 0.0
    """Events per second at most when catching up (0 = as fast as the window allows)."""
    max_inflight: int = 20
    """QoS 2 messages in flight to the broker. A stock mosquitto (``max_inflight_messages
    20``) answers PUBREC to MQTT 3.1.1 publishes beyond its quota and then drops them, so
    the default stays at 20; brokers started by ``ingest.brokers`` allow up to 1000."""
    heartbeat_s: float = 30.0
    """Seconds between heartbeats (0 = none); one also goes out on every connect."""
    username: str | None = None
    """Broker login: the location id on secure brokers."""
    password: str | None = field(default=None, repr=False)
    tls_ca: str | None = None
    """CA certificate (PEM) to connect over TLS; None = plain TCP on loopback/VPN."""
    keepalive: int = 30
    signing_key: bytes | None = field(default=None, repr=False)
    """The store's key (secure mode): acks and orders must be signed with it. None =
    trust the broker (logged as a warning at start)."""
    warn_unsigned: bool = True
    """Log that warning; a fleet of simulated stores says it once for all."""

    def __post_init__(self) -> None:
        for name in ("resend_after_s", "resend_max_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)!r}")
        for name in ("replay_rate", "heartbeat_s"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)!r}")
        if self.window < 1:
            raise ValueError(f"window: must be >= 1, got {self.window!r}")
        if self.signing_key is not None and len(self.signing_key) < 16:
            raise ValueError("signing_key: expected at least 16 bytes (the credentials "
                             f"file issues 32), got {len(self.signing_key)}")

    def address(self) -> BrokerAddress:
        """The broker this agent connects to, as the shared client factory takes it."""
        return BrokerAddress(self.host, self.port, self.username, self.password,
                             tls_ca=self.tls_ca)


class Publisher:
    """Drains one agent's outbox over MQTT QoS 2 with a persistent session."""

    def __init__(self, agent: StoreAgent, config: PublisherConfig | None = None) -> None:
        self.agent = agent
        self.config = config or PublisherConfig()
        self.events_topic = topic(agent.region, agent.location_id, "events")
        self.ack_topic = topic(agent.region, agent.location_id, "ack")
        self.heartbeat_topic = topic(agent.region, agent.location_id, "heartbeat")
        self.orders_topic = order_topic(agent.region, agent.location_id)
        self._orders_prefix = self.orders_topic[:-1]
        self.status_topic = ingest_status_topic(agent.region)
        # Its own connection: WAL lets it read the outbox while the tills write.
        self.db = StoreDB(agent.db.path, synchronous=agent.db.synchronous)
        self.client = make_client(self.config.address(),
                                  client_id=f"shelflife-agent-{agent.location_id}",
                                  clean_session=False)
        self.client.max_inflight_messages_set(self.config.max_inflight)
        self.client.max_queued_messages_set(0)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self._lock = threading.Lock()
        self._sent_up_to = agent.acked_seq
        self._acked = agent.acked_seq
        self._applied = self._acked
        self._waiting_since = time.monotonic()
        """When the oldest unacked send went out, or the ack last moved since then."""
        self._resend_wait = self.config.resend_after_s
        self._hold_until = 0.0
        """Monotonic time until which a stall is not re-sent: ingest said it is paused."""
        self._replay = TokenBucket(self.config.replay_rate,
                                   burst=max(1.0, self.config.replay_rate / 10))
        """The replay rate as a token bucket of ~100 ms."""
        self._throttled_until = math.inf
        self._heartbeat_at = math.inf
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop_thread = False
        self.sent = 0
        self.heartbeats = 0
        self.resends = 0
        """Times the publisher went back to the last ack (connects and stalls)."""
        self.refused: dict[str, int] = {"ack": 0, "order": 0, "status": 0}
        """Messages refused per kind (see :meth:`_refuse`); the heartbeat carries the sum."""
        self.clock_skew_s: float | None = None
        """Local clock minus ingest's, from the last live ack (None until one arrives)."""
        # The broker publishes this for us when the link dies without a DISCONNECT
        # (network gone, process killed), replacing the last retained heartbeat.
        self.client.will_set(self.heartbeat_topic, self._heartbeat(online=False).to_json(),
                             qos=1, retain=True)
        agent.on_record = lambda _seq: self._wake.set()

    # --- lifecycle ---------------------------------------------------------------------

    def start(self, *, pump_thread: bool = True, loop_thread: bool = True) -> None:
        """Connect in the background; reconnects by itself while the link is down.

        With ``loop_thread=False`` only the broker address is set: the caller drives the
        socket (``client.reconnect()``, ``loop_read/loop_write/loop_misc``), which lets
        one thread serve hundreds of publishers.
        """
        if self.config.signing_key is None and self.config.warn_unsigned:
            log.warning("%s: no signing key, so this agent trusts every ack and order its "
                        "broker delivers (an ack deletes events from the outbox); on a "
                        "broker others can publish to, give it its key (SHELFLIFE_AGENT_KEY)",
                        self.agent.location_id)
        self.client.connect_async(self.config.host, self.config.port, self.config.keepalive)
        self._loop_thread = loop_thread
        if loop_thread:
            self.client.loop_start()
        if pump_thread:
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name=f"pub-{self.agent.location_id}")
            self._thread.start()

    def stop(self) -> None:
        """Stop sending; a connected publisher first says it is going offline."""
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=5)
        if self.client.is_connected() and self.config.heartbeat_s > 0:
            try:
                info = self.client.publish(
                    self.heartbeat_topic,
                    self._heartbeat(online=False, with_outbox=True).to_json(),
                    qos=1, retain=True)
                if self._loop_thread:  # paho's loop thread flushes it; otherwise the caller
                    info.wait_for_publish(timeout=1.0)
            except (RuntimeError, ValueError) as exc:
                log.debug("%s: last heartbeat not sent: %s", self.agent.location_id, exc)
        self.client.disconnect()
        self.client.loop_stop()
        self.agent.online = False
        self.db.close()

    # --- MQTT callbacks ----------------------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("%s: broker refused connection: %s", self.agent.location_id,
                        reason_code)
            return
        client.subscribe([(self.ack_topic, 1), (self.orders_topic, 1), (self.status_topic, 1)])
        with self._lock:
            # Re-send anything not yet acked end to end: the broker may have lost it.
            if self._sent_up_to > self._acked:
                self.resends += 1
            self._sent_up_to = self._acked
            self._waiting_since = time.monotonic()
            self._resend_wait = self.config.resend_after_s
            self._hold_until = 0.0  # a broker that lost its state holds no status either
            self._heartbeat_at = 0.0  # say hello straight away
        self.agent.online = True
        self._wake.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.agent.online = False
        self._heartbeat_at = math.inf  # the next connect sends one

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        """Hand an ack or an order on; never raises, whatever the payload.

        paho runs this in its network thread, and an exception escaping here ends that
        thread: the agent would stay offline, and a retained message would end it again
        after every restart.
        """
        kind = ("order" if msg.topic.startswith(self._orders_prefix) else
                "status" if msg.topic == self.status_topic else "ack")
        try:
            if len(msg.payload) > MAX_EVENT_BYTES:  # refused unread
                self._refuse(kind, msg.topic, f"{len(msg.payload)} bytes, larger than "
                                              f"{MAX_EVENT_BYTES}")
            elif kind == "order":
                self._on_order(msg)
            elif kind == "status":
                self._on_status(msg)
            elif msg.topic == self.ack_topic:
                self._on_ack(msg)
            else:
                self._refuse(kind, msg.topic, "not a topic this agent subscribes to")
        except Exception as exc:  # noqa: BLE001 - the network loop must survive anything
            self._refuse(kind, msg.topic, f"{type(exc).__name__}: {exc}")

    def _refuse(self, kind: str, where: str, reason: str) -> None:
        self.refused[kind] += 1
        log.warning("%s: refused %s on %s: %s", self.agent.location_id, kind, where,
                    reason[:300])

    def _on_ack(self, msg: mqtt.MQTTMessage) -> None:
        """Move the ack forward, only within [acked seq, last recorded seq]."""
        if not msg.payload:
            return  # a cleared retained ack: nothing to learn
        try:
            ack = read_ack(msg.payload, self.agent.location_id, key=self.config.signing_key)
        except ContractError as exc:
            self._refuse("ack", msg.topic, f"{exc}; nothing deleted")
            return
        acked = ack["acked_seq"]
        last = self.agent.last_seq
        if acked > last:
            # Ingest acks only what this agent sent: this is forged, or this database
            # lost events the lakehouse holds (see store.py on synchronous=NORMAL).
            self._refuse("ack", msg.topic, f"acked_seq {acked} is beyond the last recorded "
                                           f"seq {last}; nothing deleted")
            return
        if not msg.retain:  # a retained ack replayed on subscribe carries an old time
            skew = skew_from_ack(ack, datetime.now(UTC))
            if skew is not None:
                self.clock_skew_s = skew
        with self._lock:
            if acked <= self._acked:
                return
            self._acked = acked
            self._waiting_since = time.monotonic()
            self._resend_wait = self.config.resend_after_s
            self._sent_up_to = max(self._sent_up_to, acked)
        self._wake.set()

    HOLD_S = 60.0
    """How long one "paused" or "behind" from ingest holds re-sends; ingest repeats it
    every few seconds, so a dead ingest (or a stale retained status) holds for at most
    this long."""

    def _on_status(self, msg: mqtt.MQTTMessage) -> None:
        """Ingest paused or behind: acks will be late, not lost, so a stall is not re-sent
        (which would add load exactly when the lakehouse is behind). Keeping up again: the
        re-send clock starts over."""
        if not msg.payload:
            return
        status = read_ingest_status(msg.payload, self.agent.region)
        now = time.monotonic()
        with self._lock:
            if status["state"] != "ok":
                self._hold_until = now + self.HOLD_S
            elif self._hold_until:
                self._hold_until = 0.0
                self._waiting_since = now

    def _on_order(self, msg: mqtt.MQTTMessage) -> None:
        """An approved transfer for this location; an empty message is a cleared order."""
        if not msg.payload:
            return
        try:
            self.agent.accept_order(read_order(msg.payload, msg.topic, self.agent.location_id,
                                               key=self.config.signing_key))
        except ValueError as exc:  # ContractError included
            self._refuse("order", msg.topic, str(exc))

    # --- sending -----------------------------------------------------------------------

    @property
    def acked_seq(self) -> int:
        return self._acked

    @property
    def pending(self) -> bool:
        """True when :meth:`pump` has work: a new event, ack, reconnect, heartbeat due, or
        the replay throttle lets more out.

        Lets one thread pump many publishers started with ``pump_thread=False``.
        """
        return self._wake.is_set() or time.monotonic() >= min(self._throttled_until,
                                                              self._heartbeat_at)

    def pump(self) -> int:
        """Apply the newest ack, send a heartbeat when due, and send what the window and
        the replay rate allow; returns events sent."""
        # Cleared before reading anything, so a wake-up arriving meanwhile is kept.
        self._wake.clear()
        if self._applied < self._acked:
            acked = self._acked
            try:
                self.db.apply_ack(acked)
                self._applied = acked
            except AckRefused as exc:  # _on_ack checks first; this is the last line
                self._refuse("ack", self.ack_topic, str(exc))
                with self._lock:
                    self._acked = self._sent_up_to = self._applied
        if not self.client.is_connected():
            self._throttled_until = self._heartbeat_at = math.inf
            return 0
        now = time.monotonic()
        if now >= self._heartbeat_at:
            self._send_heartbeat(now)
        with self._lock:
            if now < self._hold_until:  # ingest is paused: late, not lost
                self._waiting_since = now
            elif (self._sent_up_to > self._acked
                    and now - self._waiting_since > self._resend_wait):
                log.info("%s: ack stalled at %d for %.0f s, re-sending",
                         self.agent.location_id, self._acked, now - self._waiting_since)
                self._sent_up_to = self._acked
                self._waiting_since = now
                self._resend_wait = min(self._resend_wait * 2, self.config.resend_max_s)
                self.resends += 1
            start = self._sent_up_to
            room = self._acked + self.config.window - start
        self._throttled_until = math.inf
        if room <= 0:
            return 0
        allowance = self._replay.allowance()
        allowed = room if allowance is None else min(room, allowance)
        if allowed == 0:
            self._throttled_until = now + self._replay.wait_s()
            return 0
        rows = self.db.outbox_after(start, allowed)
        sent = 0
        for seq, body in rows:
            info = self.client.publish(self.events_topic, body, qos=2)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                break
            with self._lock:
                if self._sent_up_to == self._acked:
                    self._waiting_since = now  # the stall clock starts with this send
                self._sent_up_to = max(self._sent_up_to, seq)
            sent += 1
        self.sent += sent
        self._replay.spend(sent)
        if rows and len(rows) == allowed:
            if allowed < room and self._replay.limited:
                self._throttled_until = now + self._replay.wait_s()
            else:
                self._wake.set()  # a full batch: more may be waiting
        return sent

    def _last_seq(self) -> int:
        return int(self.db.get_meta("next_seq", 1)) - 1

    def _heartbeat(self, *, online: bool, with_outbox: bool = False) -> Heartbeat:
        """The agent's state now; the will is built without the outbox figures, which
        would be stale by the time the broker sends it."""
        hb = Heartbeat(location_id=self.agent.location_id, region=self.agent.region,
                       agent_version=AGENT_VERSION, online=online, local_time=utc_now_ms(),
                       clock_skew_hint_s=self.clock_skew_s)
        if not with_outbox:
            return hb
        return replace(hb, outbox_depth=self.db.outbox_depth(), last_seq=self._last_seq(),
                       last_acked_seq=self._acked, refused_messages=sum(self.refused.values()),
                   holds=self.agent.hold_ids())

    def _send_heartbeat(self, now: float) -> None:
        interval = self.config.heartbeat_s
        if interval <= 0:
            self._heartbeat_at = math.inf
            return
        self._heartbeat_at = now + interval
        info = self.client.publish(self.heartbeat_topic,
                                   self._heartbeat(online=True, with_outbox=True).to_json(),
                                   qos=1, retain=True)
        if info.rc == mqtt.MQTT_ERR_SUCCESS:
            self.heartbeats += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.pump()
            except Exception:  # a locked or full disk: log, wait, try again
                log.exception("%s: sending failed; retrying", self.agent.location_id)
                self._stop.wait(1.0)
                continue
            if self._wake.is_set():
                continue
            due = min(self._throttled_until, self._heartbeat_at) - time.monotonic()
            self._wake.wait(timeout=min(1.0, max(0.0, due)))
