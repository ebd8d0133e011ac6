"""Sends a location's outbox to its regional broker and trims it on end-to-end acks.

MQTT's own acks are not trusted for durability: an event leaves the outbox only when the
retained message on the location's ``ack`` topic (written by ingest after the landing
batch is durable) covers its seq. On every (re)connect, and whenever the ack stalls, the
publisher sends again from the last acked seq; ingest drops the duplicates.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from lakehouse.contract import topic

from .agent import StoreAgent
from .store import StoreDB

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PublisherConfig:
    """How the agent talks to its broker."""

    host: str = "127.0.0.1"
    """Broker host."""
    port: int = 18831
    """Broker port."""
    window: int = 500
    """Events sent ahead of the last end-to-end ack."""
    resend_after_s: float = 15.0
    """Re-send from the last ack when it has not moved for this long."""
    replay_rate: float = 0.0
    """Events per second when catching up (0 = as fast as the window allows)."""
    max_inflight: int = 20
    """QoS 2 messages in flight to the broker. A stock mosquitto (``max_inflight_messages
    20``) answers PUBREC to MQTT 3.1.1 publishes beyond its quota and then drops them, so
    the default stays at 20; brokers started by ``ingest.brokers`` allow up to 1000."""
    username: str | None = None
    password: str | None = None
    keepalive: int = 30


class Publisher:
    """Drains one agent's outbox over MQTT QoS 2 with a persistent session."""

    def __init__(self, agent: StoreAgent, config: PublisherConfig | None = None) -> None:
        self.agent = agent
        self.config = config or PublisherConfig()
        self.events_topic = topic(agent.region, agent.location_id, "events")
        self.ack_topic = topic(agent.region, agent.location_id, "ack")
        # Its own connection: WAL lets it read the outbox while the tills write.
        self.db = StoreDB(agent.db.path)
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"shelflife-agent-{agent.location_id}",
                                  clean_session=False, protocol=mqtt.MQTTv311)
        if self.config.username:
            self.client.username_pw_set(self.config.username, self.config.password)
        self.client.max_inflight_messages_set(self.config.max_inflight)
        self.client.max_queued_messages_set(0)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self._lock = threading.Lock()
        self._sent_up_to = agent.acked_seq
        self._acked = agent.acked_seq
        self._applied = self._acked
        self._ack_moved_at = time.monotonic()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.sent = 0
        agent.on_record = lambda _seq: self._wake.set()

    # --- lifecycle ---------------------------------------------------------------------

    def start(self, *, pump_thread: bool = True, loop_thread: bool = True) -> None:
        """Connect in the background; reconnects by itself while the link is down.

        With ``loop_thread=False`` only the broker address is set: the caller drives the
        socket (``client.reconnect()``, ``loop_read/loop_write/loop_misc``), which lets
        one thread serve hundreds of publishers.
        """
        self.client.reconnect_delay_set(min_delay=1, max_delay=10)
        self.client.connect_async(self.config.host, self.config.port, self.config.keepalive)
        if loop_thread:
            self.client.loop_start()
        if pump_thread:
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name=f"pub-{self.agent.location_id}")
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=5)
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
        client.subscribe(self.ack_topic, qos=1)
        with self._lock:
            self._sent_up_to = self._acked  # re-send anything not yet acked end to end
            self._ack_moved_at = time.monotonic()
        self.agent.online = True
        self._wake.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.agent.online = False

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        try:
            acked = int(json.loads(msg.payload)["acked_seq"])
        except (ValueError, KeyError, TypeError):
            log.warning("%s: ignoring malformed ack %r", self.agent.location_id, msg.payload)
            return
        with self._lock:
            if acked <= self._acked:
                return
            self._acked = acked
            self._ack_moved_at = time.monotonic()
            self._sent_up_to = max(self._sent_up_to, acked)
        self._wake.set()

    # --- sending -----------------------------------------------------------------------

    @property
    def acked_seq(self) -> int:
        return self._acked

    @property
    def pending(self) -> bool:
        """True when :meth:`pump` has work: a new event, ack or reconnect since it last ran.

        Lets one thread pump many publishers started with ``pump_thread=False``.
        """
        return self._wake.is_set()

    def pump(self) -> int:
        """Apply the newest ack and send what the window allows; returns events sent."""
        # Cleared before reading anything, so a wake-up arriving meanwhile is kept.
        self._wake.clear()
        if self._applied < self._acked:
            acked = self._acked
            self.db.apply_ack(acked)
            self._applied = acked
        if not self.client.is_connected():
            return 0
        now = time.monotonic()
        with self._lock:
            if (self._sent_up_to > self._acked
                    and now - self._ack_moved_at > self.config.resend_after_s):
                log.info("%s: ack stalled at %d, re-sending", self.agent.location_id,
                         self._acked)
                self._sent_up_to = self._acked
                self._ack_moved_at = now
            start = self._sent_up_to
            room = self._acked + self.config.window - start
        if room <= 0:
            return 0
        if self.config.replay_rate > 0:
            room = min(room, max(1, int(self.config.replay_rate / 10)))
        rows = self.db.outbox_after(start, room)
        for seq, body in rows:
            info = self.client.publish(self.events_topic, body, qos=2)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                break
            with self._lock:
                self._sent_up_to = max(self._sent_up_to, seq)
            self.sent += 1
        if rows and len(rows) == room:
            self._wake.set()  # a full batch: more may be waiting
        return len(rows)

    def _run(self) -> None:
        while not self._stop.is_set():
            sent = self.pump()
            if self.config.replay_rate > 0 and sent:
                time.sleep(sent / self.config.replay_rate)
            elif not sent:
                self._wake.wait(timeout=1.0)
                self._wake.clear()
