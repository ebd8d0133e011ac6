"""One region's ingest worker: MQTT in, validated durable landing batches out, then acks.

Order of operations per batch matters and is the delivery guarantee: validate, drop
seqs already landed, write the batch file durably, remember the landed seqs, and only
then publish each location's end-to-end ack (the highest seq landed with every lower
one). A bad payload becomes a dead letter in the same batch and the stream moves on.

Acknowledged only once landed. Ingest subscribes at QoS 1 (the stores still publish at
QoS 2, so each store-to-broker hop is exactly once) and sends each message's PUBACK
only after the batch holding it is durable. A message ingest had in memory when it was
killed is therefore re-sent by the broker from the persistent session on reconnect,
payload and all. With QoS 2 towards ingest that was not so: after PUBREC the broker keeps
only the message id, so a bad payload (which no agent's outbox holds) could vanish with
a killed worker instead of becoming a dead letter. The price of QoS 1 is a possible
re-delivery after a crash: events are deduplicated by (location, seq) as always, and a
dead letter may be recorded twice, never lost.

Backpressure and quota. When the region's landing backlog (events landed but not yet
consumed by the stream) reaches ``backlog_high_events``, or the region's
``max_events_per_s`` quota is used up, the worker keeps reading and simply stops
landing, so it stops acknowledging. The broker counts a message against the subscriber's
in-flight window until its PUBACK, so after ``max_inflight_messages`` (1,000 on
Shelflife's brokers) it stops sending and queues the rest in the persistent session, on
disk. Nothing is dropped and nothing is re-ordered, the connection and its keepalive
stay up, and intake memory stays bounded by that window. The alternatives were worse:
unsubscribing would make the broker discard new messages (no subscription, no queue),
and not reading the socket lets keepalive expire and turns a pause into reconnect churn.
Intake resumes below ``backlog_low_events``. A batch is landed early once it holds half
that window, so the window never throttles a healthy worker.

Failures. Any error in the loop (an unwritable or full landing disk, a locked dedup
database, a bug) is logged, counted (``shelflife_ingest_loop_errors_total``) and retried
with backoff; nothing is acknowledged that is not landed, and intake memory stays
bounded by the broker's in-flight window. A batch that got as far as being renamed into place is
never written twice: only its remaining steps are retried. If the loop keeps failing
for ``give_up_after_s`` (or stops turning at all), :func:`run_workers` returns non-zero
so a supervisor restarts the process. Nothing is lost by that: what ingest held is
still in the broker's persistent session or, for what the broker already handed over,
in the agents' outboxes, which re-send from the last end-to-end ack.

Signed acks. With ``credentials`` (the secure brokers' ``credentials.json``) the worker
logs in as ``ingest@<region>`` and signs each ack with its store's key
(:func:`lakehouse.contract.build_ack`), so an agent can tell ingest's acks from a
stranger's. A location the file does not list gets no ack (its agent could not verify
one), with a warning once.
"""

from __future__ import annotations

import logging
import math
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import paho.mqtt.client as mqtt
from prometheus_client import CollectorRegistry

from lakehouse.contract import (
    MAX_EVENT_BYTES,
    ContractError,
    build_ack,
    build_ingest_status,
    check_region,
    decode_event,
    encode_message,
    ingest_status_topic,
    parse_topic,
    topic,
    utc_now_ms,
)
from lakehouse.credentials import Credentials, SigningKeys
from lakehouse.landing import (
    LandedRecord,
    PreparedBatch,
    landing_backlog,
    landing_url,
    landing_writer,
    now_ts,
)
from lakehouse.metrics import REGISTRY, serve_metrics
from lakehouse.mqtt import BrokerAddress, make_client
from lakehouse.paths import lakehouse_root
from lakehouse.ratelimit import TokenBucket
from lakehouse.storage import check_bucket, is_s3, lake_url

from .backpressure import IntakeGate
from .broker_health import BrokerHealthLog
from .brokers import MAX_INFLIGHT_MESSAGES
from .dedup import SeqTracker
from .heartbeats import HeartbeatLog, heartbeat_filter
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
    """Longest time an event waits in memory before its batch is written (on a local
    landing folder; see ``s3_flush_interval_s``)."""
    s3_flush_interval_s: float = 0.5
    """The same wait when the landing zone is on S3 and ``land_ahead_s`` is 0. There every
    batch is a PUT here and a LIST entry, an open and a GET for the stream, a few round
    trips each: fewer, larger batches keep the stream's per-file cost from outgrowing its
    one-second trigger."""
    land_ahead_s: float = 0.2
    """On S3, land once per stream trigger, this long before the stream's next batch
    starts (0: every ``s3_flush_interval_s`` instead). Spark starts a processing-time
    trigger's batches on whole multiples of its period on the wall clock, so a batch
    landed earlier in the period only waits longer for the same listing: one object per
    period, PUT just before the listing, gives fewer requests and a shorter wait. It
    assumes ingest's clock within a few tens of milliseconds of the stream's (NTP); a
    clock further off costs at most one period of latency, never an event."""
    trigger_s: float = 1.0
    """The stream's trigger period (``shelflife stream --trigger-s``)."""
    ack_every_s: float = 0.5
    """A store's end-to-end ack is published at most this often; what lands meanwhile is
    covered by its next one. At ten events a second per store an ack per landing was one
    retained publish (and its PUBACK) per event, a fifth of ingest's CPU; the agents'
    re-send timer (15 s) is far longer than this wait."""
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
    retry_max_s: float = 5.0
    """Longest wait between two attempts of a failing landing (backoff starts at 0.25 s)."""
    give_up_after_s: float = 60.0
    """A loop that keeps failing (or stops turning) this long ends the process, so its
    supervisor restarts it."""
    health_stall_s: float = 15.0
    """``/health`` reports the worker down once its loop has not completed a turn for
    this long (and at once while a turn fails)."""
    broker_health_every_s: float = 30.0
    """How often a row of the broker's own figures goes to silver broker_health."""

    worker_id: str = "w1"
    """Distinguishes workers of one region in batch names."""
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls_ca: str | None = None
    """CA certificate (PEM) to connect over TLS; None = plain TCP on loopback/VPN."""
    credentials: str | None = None
    """The secure brokers' ``credentials.json``: log in as ``ingest@<region>`` (unless
    ``username`` is given) and sign every ack with its store's key. None = anonymous,
    unsigned acks (an open broker)."""

    def __post_init__(self) -> None:
        check_region(self.region)
        for name in ("flush_interval_s", "s3_flush_interval_s", "retry_max_s",
                     "give_up_after_s", "health_stall_s", "broker_health_every_s",
                     "trigger_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)!r}")
        if not self.land_ahead_s >= 0:
            raise ValueError(f"land_ahead_s: must be >= 0, got {self.land_ahead_s!r}")
        IntakeGate(self.backlog_high_events, self.low_water)  # raises on a bad pair
        if not self.max_events_per_s >= 0:
            raise ValueError("max_events_per_s: must be >= 0 (0 = no limit), got "
                             f"{self.max_events_per_s!r}")

    def address(self) -> BrokerAddress:
        """The broker and login, as the shared client factory takes them."""
        address = BrokerAddress(self.host, self.port, self.username, self.password,
                                tls_ca=self.tls_ca)
        if self.credentials and not self.username:
            login = Credentials.open(Path(self.credentials), create=False
                                     ).ingest_credentials(self.region)
            address = address.with_login(login.username, login.password)
        return address

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
    """Messages received but not yet landed, so not yet acknowledged to the broker (more
    of them while paused, over quota or failing; never more than its in-flight window)."""
    loop_errors: int = 0
    """Turns of the loop that ended in an error (each retried)."""


class _Msg(NamedTuple):
    topic: str
    payload: bytes
    """The payload, or only its first ``TOO_LARGE_KEEP`` bytes when ``size`` is over
    :data:`MAX_EVENT_BYTES`."""
    received_at: str
    received_mono: float
    mid: int | None
    """Set while the broker still waits for this message's PUBCOMP (or PUBACK)."""
    qos: int
    size: int
    """The payload's size on the wire."""


RECV_CHUNK = 1 << 16
"""Bytes asked of the socket per read (many events at once)."""
READ_TURN_MAX_PACKETS = 100_000
"""Packets read in one turn at most; the broker's in-flight window bounds it first."""
TOO_LARGE_KEEP = 4096
"""Bytes of an oversized message kept in its dead letter (enough to see what sent it)."""


@dataclass
class _Landing:
    """A batch taken from the buffer, kept until every step of landing it has succeeded,
    so a retry after a failure resumes it instead of writing it again."""

    taken: int
    records: list[LandedRecord]
    landed: dict[str, list[int]]
    landed_at: list[float]
    dup_locations: set[str]
    held: list[tuple[int, int]]
    batch: PreparedBatch | None = None


class _IngestClient(mqtt.Client):
    """paho's client, also answering a PUBREL for a message ingest no longer holds.

    With manual acks paho leaves every PUBREL to the application. After a reconnect the
    broker re-sends PUBREL for each message whose PUBCOMP went down with the old
    connection; for one that ingest already landed and acknowledged, nobody would
    answer, and it would occupy a slot of the broker's in-flight window for ever.
    """

    holds: object = None  # Callable[[int], bool], set by the worker
    _rbuf: bytes = b""
    _rpos: int = 0

    # paho reads a packet with one recv for its type, one per length byte and one for the
    # rest, after a select for each packet: four system calls for a 400-byte event. These
    # read what the socket holds in one recv and hand it out from memory, and one read
    # turn takes every packet that is already there.

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._rpos >= len(self._rbuf):
            data = super()._sock_recv(RECV_CHUNK)  # BlockingIOError: nothing more yet
            if len(data) <= bufsize:
                return data  # b"" (closed) or a short read, as it came
            self._rbuf, self._rpos = data, 0
        out = self._rbuf[self._rpos:self._rpos + bufsize]
        self._rpos += len(out)
        return out

    def loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        """paho's read turn, until the socket has nothing more (paho's stops after as
        many packets as it has messages in flight, often one, and select()s again;
        bytes already read into memory would wait for the next network event)."""
        for _ in range(READ_TURN_MAX_PACKETS):
            if self._sock is None:
                return mqtt.MQTTErrorCode.MQTT_ERR_NO_CONN
            rc = self._packet_read()
            if rc > 0:
                return self._loop_rc_handle(rc)
            if rc == mqtt.MQTTErrorCode.MQTT_ERR_AGAIN and self._rpos >= len(self._rbuf):
                return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
            # paho also stops a long payload after 100 reads; what is in memory goes on.
        return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS

    def _handle_on_message(self, message: mqtt.MQTTMessage) -> None:
        # An event goes straight to on_message: no per-message callback (heartbeats, the
        # broker's $SYS figures) matches shelflife/.../events, and paho's matcher walked
        # its topic tree for each one.
        topic_bytes = message._topic
        if (topic_bytes.startswith(b"shelflife/") and topic_bytes.endswith(b"/events")
                and self.on_message is not None):
            with self._in_callback_mutex:
                try:
                    self.on_message(self, self._userdata, message)
                except Exception as err:
                    self._easy_log(mqtt.MQTT_LOG_ERR, "Caught exception in on_message: %s",
                                   err)
                    if not self.suppress_exceptions:
                        raise
            return
        super()._handle_on_message(message)

    def reconnect(self) -> mqtt.MQTTErrorCode:
        self._rbuf, self._rpos = b"", 0  # bytes of the old connection mean nothing now
        return super().reconnect()

    def ack_many(self, held: list[tuple[int, int]]) -> None:
        """Acknowledge many received messages with one queued write: ``ack`` per message
        woke the network thread and sent one packet each, two system calls a message.
        The bytes are those of ``ack`` (PUBACK for QoS 1, PUBCOMP for QoS 2)."""
        queue = getattr(self, "_packet_queue", None)
        if queue is None:  # paho changed inside: one at a time, as documented
            for mid, qos in held:
                self.ack(mid, qos)
            return
        data = b"".join(struct.pack("!BBH", mqtt.PUBACK if qos == 1 else mqtt.PUBCOMP, 2, mid)
                        for mid, qos in held if qos in (1, 2))
        if data:
            queue(mqtt.PUBACK, data, 0, 1)

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


def until_landing(now: float, period: float, ahead: float) -> float:
    """Seconds from ``now`` (wall clock) to the next ``k * period - ahead``: just before
    the stream's next trigger. (A wait that ends a hair early lands twice, the second
    time the few messages in between.)"""
    return (math.floor((now + ahead) / period) + 1) * period - ahead - now


class IngestWorker:
    """Consumes ``shelflife/v1/<region>/+/events`` and lands batches durably."""

    def __init__(self, config: IngestConfig, *, registry: CollectorRegistry = REGISTRY) -> None:
        self.config = config
        lake = lake_url(config.lakehouse)
        check_bucket(lake)  # before a store's events are taken in: a clear error now
        root = lakehouse_root(lake)  # this machine's state: the seq database
        self.writer = landing_writer(config.region, lake, config.worker_id)
        on_s3 = is_s3(landing_url(config.region, lake))
        self._flush_s = config.s3_flush_interval_s if on_s3 else config.flush_interval_s
        self._land_ahead_s = config.land_ahead_s if on_s3 else 0.0
        if self._land_ahead_s >= config.trigger_s:
            raise ValueError(f"land_ahead_s: must be below the stream's trigger_s "
                             f"({config.trigger_s:g} s) to land before it, got "
                             f"{config.land_ahead_s:g}")
        # On S3 a backlog scan is a LIST request: once a second, not four times.
        self._backlog_every = max(config.backlog_check_s, 1.0 if on_s3 else 0.0)
        self.tracker = SeqTracker(root / "_ingest" / f"{config.region}.sqlite")
        self._settle_interrupted_batches()
        self.stats = IngestStats()
        self.backlog = landing_backlog(config.region, lake)
        self.backlog_now = self.backlog.scan()
        self.gate = IntakeGate(config.backlog_high_events, config.low_water)
        self.quota = TokenBucket(config.max_events_per_s)
        """The intake quota: at most a second's worth at once, then its rate."""
        self._backlog_at = 0.0
        self._flush_lock = threading.RLock()  # flush() may also be called from outside
        self._buf: deque[_Msg] = deque()
        self._buf_lock = threading.Lock()
        self._ack_lock = threading.Lock()
        self._acks_due: dict[str, int] = {}  # store -> contiguous seq not yet published
        self._ack_sent: dict[str, float] = {}  # store -> when its last ack went out
        self._failing = False  # the last turn failed: back off before the next
        self._failing_since: float | None = None
        self._retry_s = 0.0
        self._landing: _Landing | None = None
        self._unacked: set[int] = set()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_turn_at = time.monotonic()
        """When the loop last completed a turn without error."""
        self.last_error: str | None = None
        self.failure: str | None = None
        """Set when the worker gave up; :func:`run_workers` then ends the process."""
        self.connected = threading.Event()
        self.keys = SigningKeys(Path(config.credentials)) if config.credentials else None
        """Every store's signing key (secure mode), or None: acks go out unsigned."""
        self._unsigned: set[str] = set()
        self.client = make_client(config.address(),
                                  client_id=f"shelflife-ingest-{config.region}-"
                                            f"{config.worker_id}",
                                  clean_session=False, client_class=_IngestClient,
                                  manual_ack=True)
        self.client.holds = self._holds
        self.client.max_inflight_messages_set(MAX_INFLIGHT_MESSAGES)
        self._early_batch = max(1, min(config.max_batch, MAX_INFLIGHT_MESSAGES // 2))
        """Land at this many buffered messages: half the broker's in-flight window, so
        the unacknowledged messages never fill it while the worker keeps up."""
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *a: self.connected.clear()
        self.client.on_message = self._on_message
        self.heartbeats = HeartbeatLog.attach(self.client, config.region, lake)
        self.broker_health = BrokerHealthLog.attach(
            self.client, config.region, lake, flush_every_s=config.broker_health_every_s)
        self._announced: tuple[str, float] | None = None
        """The state last told to the stores (see :meth:`_announce`) and when."""
        self._saturated_at = -math.inf
        """When the broker's in-flight window to this worker was last full."""
        self.metrics = IngestMetrics.of(registry)
        self.metrics.bind(self)

    def _settle_interrupted_batches(self) -> None:
        """Finish what a killed predecessor left between writing a batch and marking it.

        An intent whose temporary file is still there was never renamed: the batch is
        dropped (its agents re-send, as nothing was acked). One whose temporary file is
        gone was renamed into place (the stream may have consumed it since): its seqs
        are landed. Temporary files with no intent died before the intent was recorded.
        """
        for batch_id, landed in self.tracker.pending().items():
            if f"-{self.config.worker_id}-" not in batch_id:
                continue  # another worker of this region; it settles its own
            if self.writer.tmp_path(batch_id).exists():
                self.tracker.forget(batch_id)
                self.writer.discard(batch_id)
                log.warning("ingest %s: dropped batch %s, interrupted before it was "
                            "renamed into place", self.config.region, batch_id)
            else:
                self.tracker.mark(landed, batch_id=batch_id)
                log.warning("ingest %s: batch %s was landed before a restart; its %d "
                            "seqs are now known", self.config.region, batch_id,
                            sum(len(v) for v in landed.values()))
        for batch_id in self.writer.stray_batches():
            self.writer.discard(batch_id)

    @property
    def paused(self) -> bool:
        """True while the landing backlog keeps intake stopped."""
        return self.gate.paused

    # --- lifecycle ---------------------------------------------------------------------

    def start(self, *, wait_s: float = 10.0) -> None:
        self.client.reconnect_delay_set(min_delay=1, max_delay=5)
        self.client.connect_async(self.config.host, self.config.port, keepalive=30)
        self.client.loop_start()
        self.last_turn_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"ingest-{self.config.region}")
        self._thread.start()
        if wait_s and not self.connected.wait(wait_s):
            log.warning("ingest %s: broker %s:%d not reachable yet; retrying in background",
                        self.config.region, self.config.host, self.config.port)

    def stop(self) -> None:
        """Land (and acknowledge) whatever is held, then disconnect.

        If landing still fails, what is held stays unacknowledged: the broker re-sends it
        to the next run, and the agents re-send what the broker no longer has.
        """
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=10)
        if self.failure is None:
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - shutting down: say so, lose nothing
                log.exception("ingest %s: could not land %d buffered messages at shutdown; "
                              "they will be re-sent", self.config.region, len(self._buf))
        self._send_acks(every=True)
        self.abandon()
        self.heartbeats.close()
        self.broker_health.close()
        self.tracker.close()

    def abandon(self) -> None:
        """Disconnect without landing anything more (the worker gave up or is stuck)."""
        self._stop.set()
        self.client.disconnect()
        self.client.loop_stop()

    @property
    def failing(self) -> bool:
        """True while the loop's last turn failed (new messages are held)."""
        return self._failing

    def give_up_reason(self) -> str | None:
        """Why this worker is beyond saving (it gave up, its thread is gone, or its loop
        is stuck), or None; the process should then exit and be restarted."""
        if self.failure is not None:
            return self.failure
        if self._thread is not None and not self._thread.is_alive():
            return "worker thread ended"
        stuck = time.monotonic() - self.last_turn_at
        if stuck >= self.config.give_up_after_s:
            return f"loop stuck for {stuck:.0f} s" + (
                f" (last error: {self.last_error})" if self.last_error else "")
        return None

    def health(self) -> dict[str, Any]:
        """Whether the loop runs and turns: ``up``, and ``reason`` when it is not."""
        since = time.monotonic() - self.last_turn_at
        alive = self._thread is not None and self._thread.is_alive()
        reason = None
        if self.failure is not None:
            reason = self.failure
        elif not alive:
            reason = "worker thread is not running"
        elif self._failing:
            reason = (f"landing failing for {time.monotonic() - (self._failing_since or 0):.0f}"
                      f" s, messages held: {self.last_error}")
        elif since >= self.config.health_stall_s:
            reason = f"no loop turn completed for {since:.0f} s"
        return {"region": self.config.region, "up": reason is None, "reason": reason,
                "connected": self.connected.is_set(), "last_turn_s_ago": round(since, 1),
                "held": self.stats.held, "loop_errors": self.stats.loop_errors}

    # --- MQTT --------------------------------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("ingest %s: broker refused connection: %s", self.config.region,
                      reason_code)
            return
        client.subscribe([(f"shelflife/v1/{self.config.region}/+/events", 1),
                          (heartbeat_filter(self.config.region), 0),
                          *BrokerHealthLog.subscriptions()])
        self.connected.set()
        self._announced = None  # say where intake stands on every (re)connect
        self._announce()

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        # The broker keeps the message in the subscriber's in-flight window, and in the
        # persistent session, until its PUBACK, which :meth:`_land` sends once the
        # message's batch is durable. An oversized payload (a broker without
        # message_size_limit) is kept only in part: it becomes a dead letter undecoded.
        size = len(msg.payload)
        payload = bytes(msg.payload if size <= MAX_EVENT_BYTES else
                        msg.payload[:TOO_LARGE_KEEP])
        hold = msg.qos > 0
        with self._buf_lock:
            self._buf.append(_Msg(msg.topic, payload, now_ts(), time.monotonic(),
                                  msg.mid if hold else None, msg.qos, size))
            if hold:
                self._unacked.add(msg.mid)
                self.stats.held = len(self._unacked)
            self.stats.received += 1
            full = len(self._buf) >= self._early_batch
            if len(self._unacked) >= MAX_INFLIGHT_MESSAGES:
                self._saturated_at = time.monotonic()  # the broker holds the rest
        if full:
            self._wake.set()

    def _holds(self, mid: int) -> bool:
        with self._buf_lock:
            return mid in self._unacked

    # --- batching ----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if self._failing:  # back off; a full buffer must not cut the wait short
                    self._stop.wait(self._retry_s)
                else:
                    self._wake.wait(self._until_landing())
                self._wake.clear()
                if self._stop.is_set():
                    break
                try:
                    self._cycle()
                except Exception as exc:  # noqa: BLE001 - every failure is retried, then fatal
                    if self._failed_turn(exc):
                        return
                    continue
                self._good_turn()
        except BaseException as exc:
            self.failure = f"worker loop ended: {type(exc).__name__}: {exc}"
            log.exception("ingest %s: %s", self.config.region, self.failure)
            raise

    def _until_landing(self) -> float:
        """Seconds to wait before the next landing (a full buffer cuts it short)."""
        if not self._land_ahead_s:
            return self._flush_s
        return until_landing(time.time(), self.config.trigger_s, self._land_ahead_s)

    def _failed_turn(self, exc: Exception) -> bool:
        """Hold new messages and plan the retry; True once it is time to give up."""
        now = time.monotonic()
        with self._buf_lock:
            self._failing = True
        self.stats.loop_errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        first = self._failing_since is None
        if first:
            self._failing_since = now
        failing_for = now - (self._failing_since or now)
        self._retry_s = min(max(self._retry_s * 2, 0.25), self.config.retry_max_s)
        if failing_for >= self.config.give_up_after_s:
            self.failure = f"landing failed for {failing_for:.0f} s: {self.last_error}"
            log.critical("ingest %s: %s; giving up so the process is restarted "
                         "(%d held messages stay with the broker)", self.config.region,
                         self.failure, self.stats.held)
            return True
        log.error("ingest %s: landing failed (%s); %d messages held, retry in %.2g s",
                  self.config.region, self.last_error, self.stats.held, self._retry_s,
                  exc_info=first)
        return False

    def _good_turn(self) -> None:
        self.last_turn_at = time.monotonic()
        if self._failing:
            log.warning("ingest %s: landing works again after %.1f s and %d errors",
                        self.config.region, self.last_turn_at - (self._failing_since or 0),
                        self.stats.loop_errors)
            with self._buf_lock:
                self._failing = False
            self._failing_since, self._retry_s = None, 0.0

    def _cycle(self) -> None:
        """One turn of the loop: acks that came due, the backlog and the quota, then land
        what may."""
        self._send_acks()
        now = time.monotonic()
        if now - self._backlog_at >= self._backlog_every:
            self._backlog_at = now
            self.backlog_now = self.backlog.scan()
            was = self.gate.paused
            if self.gate.update(self.backlog_now.events) != was:
                log.warning("ingest %s: %s (landing backlog %d events in %d files)",
                            self.config.region,
                            "intake paused" if self.gate.paused else "intake resumed",
                            self.backlog_now.events, self.backlog_now.files)
            self._announce()
        if self.gate.paused:
            if self._landing is not None:  # finish a batch a failure interrupted
                self.flush()
            return
        allowance = self.quota.allowance()
        with self._buf_lock:
            waiting = len(self._buf)
        if allowance is not None and allowance < waiting:
            if allowance <= 0:
                return
            self.quota.spend(self.flush(limit=allowance))
        else:
            self.quota.spend(self.flush())

    def flush(self, *, limit: int | None = None) -> int:
        """Land what is buffered (at most ``limit`` messages); returns how many.

        A batch interrupted by a failure is finished first (and counts as this call's).
        """
        with self._flush_lock:
            if self._landing is None:
                self._landing = self._take(limit)
            if self._landing is None:
                return 0
            return self._land(self._landing)

    def _take(self, limit: int | None) -> _Landing | None:
        """Validate and deduplicate the oldest buffered messages into a batch."""
        with self._buf_lock:
            n = len(self._buf) if limit is None else min(limit, len(self._buf))
            taken = [self._buf[i] for i in range(n)]
        if not taken:
            return None
        batch = _Landing(len(taken), [], {}, [], set(),
                         [(m.mid, m.qos) for m in taken if m.mid is not None])
        in_batch: set[tuple[str, int]] = set()
        for m in taken:
            try:
                if m.size > MAX_EVENT_BYTES:
                    raise ContractError("payload", m.size,
                                        f"message too large: the limit is {MAX_EVENT_BYTES} "
                                        f"bytes (the first {len(m.payload)} are kept)")
                event = decode_event(m.payload)
                _, topic_loc, _ = parse_topic(m.topic)
                if event["location_id"] != topic_loc:
                    raise ContractError("location_id", event["location_id"],
                                        f"location mismatch: topic is for {topic_loc!r}")
            except Exception as exc:  # noqa: BLE001 - any bad payload becomes a dead letter
                reason = str(exc) if isinstance(exc, ContractError) else f"unreadable: {exc!r}"
                batch.records.append(LandedRecord("dead", m.topic, self.config.region,
                                                  m.received_at, m.payload, reason))
                continue
            loc, seq = event["location_id"], event["seq"]
            if self.tracker.seen(loc, seq) or (loc, seq) in in_batch:
                self.stats.duplicates += 1
                batch.dup_locations.add(loc)
                continue
            in_batch.add((loc, seq))
            batch.landed.setdefault(loc, []).append(seq)
            batch.landed_at.append(m.received_mono)
            batch.records.append(LandedRecord("event", m.topic, self.config.region,
                                              m.received_at, m.payload))
        return batch

    def _land(self, batch: _Landing) -> int:
        """Write, publish and mark one batch, then acknowledge it; every step may fail
        and be retried from where it stopped (see :mod:`lakehouse.landing` for the order)."""
        if batch.records and batch.batch is None:
            prepared = self.writer.prepare(batch.records)
            try:
                self.tracker.intend(prepared.batch_id, batch.landed)
            except BaseException:
                self.writer.discard(prepared)  # nothing refers to it: write it anew later
                raise
            batch.batch = prepared
        if batch.batch is not None:
            path = self.writer.publish(batch.batch)
            self.backlog.note(path.name, batch.batch.lines)
        moved = self.tracker.mark(batch.landed,
                                  batch_id=batch.batch.batch_id if batch.batch else None)
        # Landed and marked: from here on nothing may repeat this batch.
        self._landing = None
        with self._buf_lock:
            for _ in range(batch.taken):
                self._buf.popleft()
        if batch.batch is not None:
            self.stats.batches += 1
        self.stats.landed += sum(len(v) for v in batch.landed.values())
        self.stats.dead_letters += sum(1 for r in batch.records if r.kind == "dead")
        self.stats.last_flush_at = time.time()
        # Durable now: let the broker send the next ones.
        self.client.ack_many(batch.held)
        with self._buf_lock:
            self._unacked.difference_update(mid for mid, _ in batch.held)
            self.stats.held = len(self._unacked)
        # Duplicates mean an agent is re-sending: it may have missed its ack (e.g. the
        # broker lost its retained messages), so tell it again.
        for loc in batch.dup_locations - set(moved):
            if self.tracker.contiguous.get(loc, 0) > 0:
                moved[loc] = self.tracker.contiguous[loc]
        with self._ack_lock:
            for loc, acked in moved.items():
                self._acks_due[loc] = max(acked, self._acks_due.get(loc, 0))
        self._send_acks()
        now = time.monotonic()
        self.metrics.observe_acks(self.config.region, [now - t for t in batch.landed_at])
        return batch.taken

    ANNOUNCE_EVERY_S = 5.0
    """How often a pause is told again: an agent holds its re-sends for a minute after
    the last word, so a dead ingest cannot hold them for good."""
    BEHIND_FOR_S = 3.0
    """Ingest is *behind* for this long after its in-flight window was last full."""

    def _announce(self) -> None:
        """Tell the region's stores, retained, whether intake is paused or behind.

        Either way acks come late, and stores would take the silence for loss and re-send
        everything unacked, adding load exactly when there is none to spare. *paused*: the
        landing backlog is over its high-water mark; *behind*: the broker's in-flight
        window to ingest was full within the last few seconds, so the broker holds more
        for it. Told on a change (at most once a second: every store receives it) and
        every few seconds while not ``ok``."""
        now = time.monotonic()
        state = ("paused" if self.gate.paused else
                 "behind" if now - self._saturated_at < self.BEHIND_FOR_S else "ok")
        last = self._announced
        if last is not None and (now - last[1] < 1.0 or last[0] == state and (
                state == "ok" or now - last[1] < self.ANNOUNCE_EVERY_S)):
            return
        if not self.client.is_connected():
            return
        status = build_ingest_status(self.config.region, state, int(self.backlog_now.events))
        self.client.publish(ingest_status_topic(self.config.region), encode_message(status),
                            qos=1, retain=True)
        self._announced = (state, now)

    def _send_acks(self, *, every: bool = False) -> None:
        """Publish the acks due: each store's at most every ``ack_every_s`` (all of them
        when ``every``)."""
        now = time.monotonic()
        with self._ack_lock:
            due = [(loc, acked) for loc, acked in self._acks_due.items()
                   if every or now - self._ack_sent.get(loc, -math.inf)
                   >= self.config.ack_every_s]
            for loc, _ in due:
                del self._acks_due[loc]
                self._ack_sent[loc] = now
        if due:
            # ingest_time lets agents estimate how far their clock is off (heartbeat hint).
            acked_at = utc_now_ms()
            for loc, acked in due:
                self._publish_ack(loc, acked, acked_at)

    def _publish_ack(self, location_id: str, acked: int, acked_at: str) -> None:
        """The retained end-to-end ack, signed with the store's key in secure mode."""
        key = None
        if self.keys is not None:
            key = self.keys.key_for(location_id)
            if key is None:
                if location_id not in self._unsigned:
                    self._unsigned.add(location_id)
                    log.warning("ingest %s: %s is not in %s, so it has no signing key and "
                                "gets no ack (its events are landed)", self.config.region,
                                location_id, self.keys.path)
                return
        ack = build_ack(location_id, acked, ingest_time=acked_at, key=key)
        self.client.publish(topic(self.config.region, location_id, "ack"),
                            encode_message(ack), qos=1, retain=True)
        self.stats.acks_sent += 1


def worker_health(workers: list[IngestWorker]) -> tuple[int, dict[str, Any]]:
    """``/health``: 200 while every region's worker runs and turns, else 503 with why."""
    regions = [w.health() for w in workers]
    down = [f"{h['region']}: {h['reason']}" for h in regions if not h["up"]]
    body: dict[str, Any] = {"status": "down" if down else "ok", "regions": regions}
    if down:
        body["reason"] = "; ".join(down)
    return (503 if down else 200), body


def run_workers(configs: list[IngestConfig], *, stop: threading.Event,
                metrics_port: int = 0, metrics_host: str = "127.0.0.1",
                registry: CollectorRegistry = REGISTRY) -> int:
    """Run several regions' workers until ``stop`` is set, logging progress every 10 s.

    ``metrics_port`` > 0 serves Prometheus metrics at ``http://metrics_host:port/metrics``
    and :func:`worker_health` at ``/health``. Returns 0 after ``stop``, or 1 as soon as
    a worker gives up (see the module docstring): the caller exits with it and its
    supervisor starts a fresh process.
    """
    workers = [IngestWorker(c, registry=registry) for c in configs]
    server = (serve_metrics(registry, metrics_port, host=metrics_host,
                            health=lambda: worker_health(workers))
              if metrics_port else None)
    for w in workers:
        w.start(wait_s=0)
    failed: list[IngestWorker] = []
    try:
        last = time.monotonic()
        while not stop.wait(1.0):
            for w in workers:
                why = w.give_up_reason()
                if why is not None:
                    log.critical("ingest %s: %s; exiting so the process is restarted",
                                 w.config.region, why)
                    failed.append(w)
            if failed:
                return 1
            if time.monotonic() - last >= 10:
                last = time.monotonic()
                for w in workers:
                    s = w.stats
                    log.info("ingest %s: received=%d landed=%d duplicates=%d dead=%d "
                             "backlog=%d%s%s", w.config.region, s.received, s.landed,
                             s.duplicates, s.dead_letters, w.backlog_now.events,
                             " PAUSED" if w.paused else "",
                             f" FAILING ({w.last_error})" if w.failing else "")
        return 0
    finally:
        for w in workers:
            if w in failed:
                w.abandon()  # its loop may be stuck holding the landing lock
            else:
                w.stop()
        if server is not None:
            server.stop()
