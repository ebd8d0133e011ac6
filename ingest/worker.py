"""One region's ingest worker: MQTT in, validated durable landing batches out, then acks.

Order of operations per batch matters and is the delivery guarantee: validate, drop
seqs already landed, write the batch file durably, remember the landed seqs, and only
then publish each location's end-to-end ack (the highest seq landed with every lower
one). A bad payload becomes a dead letter in the same batch and the stream moves on.

Backpressure and quota. When the region's landing backlog (events landed but not yet
consumed by the stream) reaches ``backlog_high_events``, or the region's
``max_events_per_s`` quota is used up, the worker stops *acknowledging* instead of
stopping to read: it keeps what it already has in memory and withholds the final QoS 2
PUBCOMP of every message that arrives meanwhile. The broker counts a message against
the subscriber's in-flight window until PUBCOMP, so after ``max_inflight_messages``
(1,000 on Shelflife's brokers) it stops sending and queues the rest in the persistent
session, on disk. Nothing is dropped and nothing is re-ordered, the connection and its
keepalive stay up, and intake memory stays bounded by that window. The alternatives
were worse: unsubscribing would make the broker discard new messages (no subscription,
no queue), and not reading the socket lets keepalive expire and turns a pause into
reconnect churn. Intake resumes below ``backlog_low_events``; held messages are landed
first, then acknowledged.
"""

from __future__ import annotations

import json
import logging
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from lakehouse.contract import (
    ContractError,
    check_region,
    decode_event,
    parse_topic,
    topic,
    utc_now_ms,
)
from lakehouse.metrics import REGISTRY, Registry, serve_metrics
from lakehouse.paths import lakehouse_root, landing_dir

from .backpressure import IntakeGate, LandingBacklog, RateQuota
from .dedup import SeqTracker
from .landing import LandedRecord, LandingWriter, now_ts
from .metrics import IngestMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestConfig:
    """Settings of one region's worker; defaults run the demo."""

    region: str
    """Region served (east, central, west)."""
    host: str = "127.0.0.1"
    """Broker host."""
    port: int = 18831
    """Broker port."""
    lakehouse: str | None = None
    """Lakehouse root (default $SHELFLIFE_LAKEHOUSE or ./lakehouse)."""
    flush_interval_s: float = 0.15
    """Longest time an event waits in memory before its batch is written."""
    max_batch: int = 2000
    """A batch is written early once it holds this many messages."""
    backlog_high_events: int = 50_000
    """Stop taking messages once this many landed events wait for the stream."""
    backlog_low_events: int | None = None
    """Take messages again below this backlog (default: half the high-water mark)."""
    max_events_per_s: float = 0.0
    """The region's intake quota in events per second (0 = no limit)."""
    backlog_check_s: float = 0.25
    """How often the landing folder is counted."""

    worker_id: str = "w1"
    """Distinguishes workers of one region in batch names."""
    username: str | None = None
    password: str | None = None
    tls_ca: str | None = None
    """CA certificate (PEM) to connect over TLS; None = plain TCP on loopback/VPN."""

    def __post_init__(self) -> None:
        check_region(self.region)
        if self.flush_interval_s <= 0:
            raise ValueError(f"flush_interval_s: must be > 0, got {self.flush_interval_s!r}")
        IntakeGate(self.backlog_high_events, self.low_water)  # raises on a bad pair
        RateQuota(self.max_events_per_s)

    @property
    def low_water(self) -> int:
        """The backlog below which intake resumes."""
        if self.backlog_low_events is None:
            return self.backlog_high_events // 2
        return self.backlog_low_events


@dataclass
class IngestStats:
    """Counters a person (or /metrics) reads to see the worker is moving."""

    received: int = 0
    landed: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    batches: int = 0
    acks_sent: int = 0
    last_flush_at: float = 0.0
    held: int = 0
    """Messages received but not yet acknowledged to the broker (paused or over quota)."""


class _Msg(NamedTuple):
    topic: str
    payload: bytes
    received_at: str
    received_mono: float
    mid: int | None
    """Set while the broker still waits for this message's PUBCOMP (or PUBACK)."""
    qos: int


class _IngestClient(mqtt.Client):
    """paho's client, also answering a PUBREL for a message ingest no longer holds.

    With manual acks paho leaves every PUBREL to the application. After a reconnect the
    broker re-sends PUBREL for each message whose PUBCOMP went down with the old
    connection; for one that ingest already landed and acknowledged, nobody would
    answer, and it would occupy a slot of the broker's in-flight window for ever.
    """

    holds: object = None  # Callable[[int], bool], set by the worker

    def _handle_pubrel(self):  # noqa: ANN202 - paho's private hook
        mid = None
        try:
            mid = struct.unpack("!H", bytes(self._in_packet["packet"][:2]))[0]
            with self._in_message_mutex:
                known = mid in self._in_messages
        except Exception:  # noqa: BLE001 - paho changed inside: keep its behaviour
            known = True
        rc = super()._handle_pubrel()
        if mid is not None and not known and callable(self.holds) and not self.holds(mid):
            self._send_pubcomp(mid)
        return rc


class IngestWorker:
    """Consumes ``shelflife/v1/<region>/+/events`` and lands batches durably."""

    def __init__(self, config: IngestConfig, *, registry: Registry = REGISTRY) -> None:
        self.config = config
        root = lakehouse_root(config.lakehouse)
        self.writer = LandingWriter(landing_dir(config.region, root), config.worker_id)
        self.tracker = SeqTracker(root / "_ingest" / f"{config.region}.sqlite")
        self.stats = IngestStats()
        self.backlog = LandingBacklog(self.writer.directory)
        self.backlog_now = self.backlog.scan()
        self.gate = IntakeGate(config.backlog_high_events, config.low_water)
        self.quota = RateQuota(config.max_events_per_s)
        self._backlog_at = 0.0
        self._flush_lock = threading.RLock()  # flush() may also be called from outside
        self._buf: deque[_Msg] = deque()
        self._buf_lock = threading.Lock()
        self._holding = False  # paused or over quota: new messages are not acknowledged
        self._unacked: set[int] = set()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.connected = threading.Event()
        self.client = _IngestClient(CallbackAPIVersion.VERSION2,
                                    client_id=f"shelflife-ingest-{config.region}-"
                                              f"{config.worker_id}",
                                    clean_session=False, protocol=mqtt.MQTTv311,
                                    manual_ack=True)
        self.client.holds = self._holds
        if config.username:
            self.client.username_pw_set(config.username, config.password)
        if config.tls_ca:
            self.client.tls_set(ca_certs=config.tls_ca)
        self.client.max_inflight_messages_set(1000)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *a: self.connected.clear()
        self.client.on_message = self._on_message
        self.metrics = IngestMetrics(registry)
        self.metrics.bind(self)

    @property
    def paused(self) -> bool:
        """True while the landing backlog keeps intake stopped."""
        return self.gate.paused

    # --- lifecycle ---------------------------------------------------------------------

    def start(self, *, wait_s: float = 10.0) -> None:
        self.client.reconnect_delay_set(min_delay=1, max_delay=5)
        self.client.connect_async(self.config.host, self.config.port, keepalive=30)
        self.client.loop_start()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"ingest-{self.config.region}")
        self._thread.start()
        if wait_s and not self.connected.wait(wait_s):
            log.warning("ingest %s: broker %s:%d not reachable yet; retrying in background",
                        self.config.region, self.config.host, self.config.port)

    def stop(self) -> None:
        """Land (and acknowledge) whatever is held, then disconnect."""
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=10)
        self.flush()
        self.client.disconnect()
        self.client.loop_stop()
        self.tracker.close()

    # --- MQTT --------------------------------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("ingest %s: broker refused connection: %s", self.config.region,
                      reason_code)
            return
        client.subscribe(f"shelflife/v1/{self.config.region}/+/events", qos=2)
        self.connected.set()

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        # Called at PUBREL (QoS 2): the broker keeps the message in the subscriber's
        # in-flight window until PUBCOMP, which we send now, or after landing if held.
        with self._buf_lock:
            hold = self._holding and msg.qos > 0
            self._buf.append(_Msg(msg.topic, bytes(msg.payload), now_ts(), time.monotonic(),
                                  msg.mid if hold else None, msg.qos))
            if hold:
                self._unacked.add(msg.mid)
                self.stats.held = len(self._unacked)
            self.stats.received += 1
            full = len(self._buf) >= self.config.max_batch
        if not hold and msg.qos > 0:
            client.ack(msg.mid, msg.qos)
        if full:
            self._wake.set()

    def _holds(self, mid: int) -> bool:
        with self._buf_lock:
            return mid in self._unacked

    # --- batching ----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.config.flush_interval_s)
            self._wake.clear()
            try:
                self._cycle()
            except OSError:
                # The landing zone is unwritable (disk full, permissions): keep the
                # messages in memory, hold new ones at the broker (as when paused) and
                # retry; nothing is acked meanwhile.
                with self._buf_lock:
                    self._holding = True
                log.exception("ingest %s: landing write failed; will retry",
                              self.config.region)
                time.sleep(1)

    def _cycle(self) -> None:
        """One turn of the loop: check the backlog and the quota, then land what may."""
        now = time.monotonic()
        if now - self._backlog_at >= self.config.backlog_check_s:
            self._backlog_at = now
            self.backlog_now = self.backlog.scan()
            was = self.gate.paused
            if self.gate.update(self.backlog_now.events) != was:
                log.warning("ingest %s: %s (landing backlog %d events in %d files)",
                            self.config.region,
                            "intake paused" if self.gate.paused else "intake resumed",
                            self.backlog_now.events, self.backlog_now.files)
        if self.gate.paused:
            with self._buf_lock:
                self._holding = True
            return
        allowance = self.quota.allowance()
        with self._buf_lock:
            waiting = len(self._buf)
            self._holding = allowance is not None and waiting >= allowance
        if allowance is not None and allowance < waiting:
            if allowance <= 0:
                return
            self.quota.spend(self.flush(limit=allowance))
        else:
            self.quota.spend(self.flush())

    def flush(self, *, limit: int | None = None) -> int:
        """Land what is buffered (at most ``limit`` messages); returns how many."""
        with self._flush_lock:
            return self._flush(limit)

    def _flush(self, limit: int | None) -> int:
        with self._buf_lock:
            n = len(self._buf) if limit is None else min(limit, len(self._buf))
            taken = [self._buf[i] for i in range(n)]
        if not taken:
            return 0
        records: list[LandedRecord] = []
        landed: dict[str, list[int]] = {}
        landed_at: list[float] = []
        dup_locations: set[str] = set()
        in_batch: set[tuple[str, int]] = set()
        for m in taken:
            try:
                event = decode_event(m.payload)
                _, topic_loc, _ = parse_topic(m.topic)
                if event["location_id"] != topic_loc:
                    raise ContractError("location_id", event["location_id"],
                                        f"location mismatch: topic is for {topic_loc!r}")
            except Exception as exc:  # noqa: BLE001 - any bad payload becomes a dead letter
                reason = str(exc) if isinstance(exc, ContractError) else f"unreadable: {exc!r}"
                records.append(LandedRecord("dead", m.topic, self.config.region,
                                            m.received_at, m.payload, reason))
                continue
            loc, seq = event["location_id"], event["seq"]
            if self.tracker.seen(loc, seq) or (loc, seq) in in_batch:
                self.stats.duplicates += 1
                dup_locations.add(loc)
                continue
            in_batch.add((loc, seq))
            landed.setdefault(loc, []).append(seq)
            landed_at.append(m.received_mono)
            records.append(LandedRecord("event", m.topic, self.config.region,
                                        m.received_at, m.payload))
        if records:
            _, path = self.writer.write(records)
            self.backlog.note(path.name, len(records))
            self.stats.batches += 1
        moved = self.tracker.mark(landed) if landed else {}
        with self._buf_lock:
            for _ in range(len(taken)):
                self._buf.popleft()
            held = [(m.mid, m.qos) for m in taken if m.mid is not None]
        for mid, qos in held:  # durable now: let the broker send the next ones
            self.client.ack(mid, qos)
        with self._buf_lock:
            self._unacked.difference_update(mid for mid, _ in held)
            self.stats.held = len(self._unacked)
        self.stats.landed += sum(len(v) for v in landed.values())
        self.stats.dead_letters += sum(1 for r in records if r.kind == "dead")
        self.stats.last_flush_at = time.time()
        # Duplicates mean an agent is re-sending: it may have missed its ack (e.g. the
        # broker lost its retained messages), so tell it again.
        for loc in dup_locations - set(moved):
            if self.tracker.contiguous.get(loc, 0) > 0:
                moved[loc] = self.tracker.contiguous[loc]
        # ingest_time lets agents estimate how far their clock is off (heartbeat hint).
        acked_at = utc_now_ms()
        for loc, acked in moved.items():
            self.client.publish(topic(self.config.region, loc, "ack"),
                                json.dumps({"acked_seq": acked, "ingest_time": acked_at}),
                                qos=1, retain=True)
            self.stats.acks_sent += 1
        now = time.monotonic()
        self.metrics.observe_acks(self.config.region, [now - t for t in landed_at])
        return len(taken)



def run_workers(configs: list[IngestConfig], *, stop: threading.Event,
                metrics_port: int = 0, metrics_host: str = "127.0.0.1",
                registry: Registry = REGISTRY) -> None:
    """Run several regions' workers until ``stop`` is set, logging progress every 10 s.

    ``metrics_port`` > 0 serves Prometheus metrics at ``http://metrics_host:port/metrics``.
    """
    workers = [IngestWorker(c, registry=registry) for c in configs]
    server = serve_metrics(registry, metrics_port, host=metrics_host) if metrics_port else None
    for w in workers:
        w.start(wait_s=0)
    try:
        last = time.monotonic()
        while not stop.wait(1.0):
            if time.monotonic() - last >= 10:
                last = time.monotonic()
                for w in workers:
                    s = w.stats
                    log.info("ingest %s: received=%d landed=%d duplicates=%d dead=%d "
                             "backlog=%d%s", w.config.region, s.received, s.landed,
                             s.duplicates, s.dead_letters, w.backlog_now.events,
                             " PAUSED" if w.paused else "")
    finally:
        for w in workers:
            w.stop()
        if server is not None:
            server.stop()
