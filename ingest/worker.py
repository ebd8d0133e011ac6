"""One region's ingest worker: MQTT in, validated durable landing batches out, then acks.

Order of operations per batch matters and is the delivery guarantee: validate, drop
seqs already landed, write the batch file durably, remember the landed seqs, and only
then publish each location's end-to-end ack (the highest seq landed with every lower
one). A bad payload becomes a dead letter in the same batch and the stream moves on.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

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
from lakehouse.paths import lakehouse_root, landing_dir

from .dedup import SeqTracker
from .landing import LandedRecord, LandingWriter, now_ts

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


class IngestWorker:
    """Consumes ``shelflife/v1/<region>/+/events`` and lands batches durably."""

    def __init__(self, config: IngestConfig) -> None:
        self.config = config
        root = lakehouse_root(config.lakehouse)
        self.writer = LandingWriter(landing_dir(config.region, root), config.worker_id)
        self.tracker = SeqTracker(root / "_ingest" / f"{config.region}.sqlite")
        self.stats = IngestStats()
        self._buf: deque[tuple[str, bytes, str]] = deque()
        self._buf_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.connected = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"shelflife-ingest-{config.region}-{config.worker_id}",
                                  clean_session=False, protocol=mqtt.MQTTv311)
        if config.username:
            self.client.username_pw_set(config.username, config.password)
        if config.tls_ca:
            self.client.tls_set(ca_certs=config.tls_ca)
        self.client.max_inflight_messages_set(1000)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *a: self.connected.clear()
        self.client.on_message = self._on_message

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
        with self._buf_lock:
            self._buf.append((msg.topic, bytes(msg.payload), now_ts()))
            full = len(self._buf) >= self.config.max_batch
        if full:
            self._wake.set()

    # --- batching ----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.config.flush_interval_s)
            self._wake.clear()
            try:
                self.flush()
            except OSError:
                # The landing zone is unwritable (disk full, permissions): keep the
                # messages in memory and retry; nothing is acked meanwhile.
                log.exception("ingest %s: landing write failed; will retry",
                              self.config.region)
                time.sleep(1)

    def flush(self) -> int:
        """Land everything buffered; returns the number of messages handled."""
        with self._buf_lock:
            taken = list(self._buf)
        if not taken:
            return 0
        records: list[LandedRecord] = []
        landed: dict[str, list[int]] = {}
        dup_locations: set[str] = set()
        in_batch: set[tuple[str, int]] = set()
        for topic_name, raw, received_at in taken:
            try:
                event = decode_event(raw)
                _, topic_loc, _ = parse_topic(topic_name)
                if event["location_id"] != topic_loc:
                    raise ContractError("location_id", event["location_id"],
                                        f"location mismatch: topic is for {topic_loc!r}")
            except Exception as exc:  # noqa: BLE001 - any bad payload becomes a dead letter
                reason = str(exc) if isinstance(exc, ContractError) else f"unreadable: {exc!r}"
                records.append(LandedRecord("dead", topic_name, self.config.region,
                                            received_at, raw, reason))
                continue
            loc, seq = event["location_id"], event["seq"]
            if self.tracker.seen(loc, seq) or (loc, seq) in in_batch:
                self.stats.duplicates += 1
                dup_locations.add(loc)
                continue
            in_batch.add((loc, seq))
            landed.setdefault(loc, []).append(seq)
            records.append(LandedRecord("event", topic_name, self.config.region,
                                        received_at, raw))
        if records:
            self.writer.write(records)
            self.stats.batches += 1
        moved = self.tracker.mark(landed) if landed else {}
        with self._buf_lock:
            for _ in range(len(taken)):
                self._buf.popleft()
        self.stats.received += len(taken)
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
        return len(taken)


def run_workers(configs: list[IngestConfig], *, stop: threading.Event) -> None:
    """Run several regions' workers until ``stop`` is set, logging progress every 10 s."""
    workers = [IngestWorker(c) for c in configs]
    for w in workers:
        w.start(wait_s=0)
    try:
        last = time.monotonic()
        while not stop.wait(1.0):
            if time.monotonic() - last >= 10:
                last = time.monotonic()
                for w in workers:
                    s = w.stats
                    log.info("ingest %s: received=%d landed=%d duplicates=%d dead=%d",
                             w.config.region, s.received, s.landed, s.duplicates,
                             s.dead_letters)
    finally:
        for w in workers:
            w.stop()

