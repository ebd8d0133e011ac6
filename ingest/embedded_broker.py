"""A small MQTT 3.1.1 broker in pure Python (asyncio, stdlib only).

Shelflife runs one mosquitto per region in production. Where mosquitto is not installed
(a laptop, a CI runner) this broker stands in so the demo and the tests still run with the
same clients. It covers what Shelflife relies on: persistent sessions kept in memory with
their subscriptions and queued QoS 1/2 messages, QoS 0/1/2 in both directions with the full
QoS 2 handshake, retained messages, ``+``/``#`` wildcards, keepalive, optional
username/password with a per-user topic check (``acl``), optional TLS, per-client in-order
delivery through a bounded inflight window.

With ``acl`` set the broker behaves as mosquitto does for MQTT 3.1.1: a publish the user may
not make is acknowledged and dropped (3.1.1 has no way to refuse it), a subscription it may
not hold gets SUBACK failure (0x80), and a will it may not publish refuses the CONNECT. With
``users`` set, a persistent session belongs to the user that created it: another user
connecting with the same client id is refused rather than handed that session's queue.

It keeps nothing on disk: a restart loses queued messages, which the agent's outbox covers
(DESIGN.md, "Delivery").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import ssl
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any, Literal

from lakehouse.contract import MAX_EVENT_BYTES

log = logging.getLogger("shelflife.embedded_broker")

MAX_INFLIGHT = 100
# (username or None, "publish" | "subscribe", topic or topic filter) -> allowed?
AclCheck = Callable[[str | None, Literal["publish", "subscribe"], str], bool]
_PID = struct.Struct("!H")

# packet types (high nibble of the first byte)
CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = range(8, 15)

# CONNACK return codes
_ACCEPTED, _BAD_PROTOCOL, _ID_REJECTED, _NOT_AUTHORIZED = 0, 1, 2, 5


class ProtocolError(Exception):
    """A client broke MQTT 3.1.1; its connection is closed."""


# --- wire format -------------------------------------------------------------------------

def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def _packet(first: int, body: bytes = b"") -> bytes:
    return bytes((first,)) + _remaining_length(len(body)) + body


def _ack(kind: int, pid: int) -> bytes:
    return bytes((kind << 4 | (2 if kind == PUBREL else 0), 2)) + _PID.pack(pid)


def _read_str(body: bytes, pos: int) -> tuple[bytes, int]:
    if pos + 2 > len(body):
        raise ProtocolError("truncated string")
    (n,) = _PID.unpack_from(body, pos)
    end = pos + 2 + n
    if end > len(body):
        raise ProtocolError("truncated string")
    return body[pos + 2:end], end


def valid_filter(topic_filter: str) -> bool:
    """MQTT 3.1.1 rules: ``#`` only as the whole last level, ``+`` only as a whole level."""
    if not topic_filter or "\x00" in topic_filter:
        return False
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return False
        if "+" in level and level != "+":
            return False
    return True


def matches(filter_levels: list[str], topic_levels: list[str]) -> bool:
    """Whether a split topic filter matches a split topic name (``$`` topics excepted)."""
    if topic_levels[0].startswith("$") and filter_levels[0] in ("+", "#"):
        return False
    n = len(topic_levels)
    for i, level in enumerate(filter_levels):
        if level == "#":
            return True
        if i >= n or (level != "+" and level != topic_levels[i]):
            return False
    return len(filter_levels) == n


class _Message:
    """One application message; the encoded header is shared by every delivery."""

    __slots__ = ("topic", "payload", "qos", "retain", "_head")

    def __init__(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        encoded = topic.encode("utf-8")
        self._head = _PID.pack(len(encoded)) + encoded

    def encode(self, qos: int, pid: int = 0, dup: bool = False) -> bytes:
        first = 0x30 | (0x08 if dup else 0) | qos << 1 | (1 if self.retain else 0)
        body = self._head + _PID.pack(pid) + self.payload if qos else self._head + self.payload
        return _packet(first, body)


# --- sessions ----------------------------------------------------------------------------

class _Session:
    """Everything kept for one client id while it is away (clean_session false)."""

    def __init__(self, client_id: str, clean: bool, owner: str | None = None) -> None:
        self.client_id = client_id
        self.clean = clean
        self.owner = owner  # the username that created it
        self.subs: dict[str, tuple[list[str], int]] = {}
        self.queue: deque[tuple[_Message, int]] = deque()
        # pid -> [message, qos, state]; state 0 = sent, 1 = PUBREC received (PUBREL sent)
        self.inflight: dict[int, list[Any]] = {}
        self.awaiting_rel: set[int] = set()  # inbound QoS 2 ids seen but not yet released
        self.conn: _Connection | None = None
        self.dropped = 0
        self._next_pid = 0
        self._cache: dict[str, int] = {}

    def granted_qos(self, topic: str) -> int:
        """Highest QoS among this session's matching subscriptions, -1 when none match."""
        cached = self._cache.get(topic)
        if cached is not None:
            return cached
        levels = topic.split("/")
        best = -1
        for filter_levels, qos in self.subs.values():
            if qos > best and matches(filter_levels, levels):
                best = qos
        if len(self._cache) > 50_000:
            self._cache.clear()
        self._cache[topic] = best
        return best

    def subscribe(self, topic_filter: str, qos: int) -> None:
        self.subs[topic_filter] = (topic_filter.split("/"), qos)
        self._cache.clear()

    def unsubscribe(self, topic_filter: str) -> None:
        self.subs.pop(topic_filter, None)
        self._cache.clear()

    def new_pid(self) -> int:
        while True:
            self._next_pid = self._next_pid % 65535 + 1
            if self._next_pid not in self.inflight:
                return self._next_pid


# --- one client connection -----------------------------------------------------------------

class _Connection(asyncio.Protocol):
    """Parses packets off one socket and batches the replies into one write per turn."""

    def __init__(self, broker: EmbeddedBroker) -> None:
        self.broker = broker
        self.transport: asyncio.Transport | None = None
        self.session: _Session | None = None
        self.username: str | None = None
        self.keepalive = 0
        self.last_rx = time.monotonic()
        self.will: _Message | None = None
        self.closed = False
        self._buf = bytearray()
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._timer: asyncio.TimerHandle | None = None

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.broker._connections.add(self)
        self._timer = self.broker._loop.call_later(30, self._check_connected)

    def data_received(self, data: bytes) -> None:
        self.last_rx = time.monotonic()
        buf = self._buf
        buf += data
        pos, n = 0, len(buf)
        try:
            while n - pos >= 2:
                first, i, length, shift, complete = buf[pos], pos + 1, 0, 0, False
                while i < n:
                    byte = buf[i]
                    i += 1
                    length |= (byte & 0x7F) << shift
                    if not byte & 0x80:
                        complete = True
                        break
                    shift += 7
                    if shift > 21:
                        raise ProtocolError("remaining length too long")
                if not complete or n - i < length:
                    break  # wait for the rest of the packet
                pos = i + length
                self.broker._handle(self, first, bytes(buf[i:pos]))
                if self.closed:
                    return
        except (ProtocolError, UnicodeDecodeError, struct.error) as exc:
            log.warning("client %s: %s; closing", self._name(), exc)
            self.close()
            return
        del buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
        self.broker._connections.discard(self)
        self.broker._detach(self, graceful=False)

    # outgoing
    def send(self, packet: bytes) -> None:
        self._out.append(packet)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.broker._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._out and self.transport is not None and not self.closed:
            self.transport.write(b"".join(self._out))
        self._out.clear()

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self._flush()
            self.closed = True
            self.transport.close()

    # timers
    def _check_connected(self) -> None:
        if self.session is None and not self.closed:
            log.info("no CONNECT within 30 s from %s; closing", self._peer())
            self.close()

    def start_keepalive(self, seconds: int) -> None:
        self.keepalive = seconds
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if seconds:
            self._timer = self.broker._loop.call_later(seconds / 2, self._check_keepalive)

    def _check_keepalive(self) -> None:
        if self.closed:
            return
        if time.monotonic() - self.last_rx > 1.5 * self.keepalive:
            log.info("client %s: keepalive of %d s expired; closing", self._name(), self.keepalive)
            if self.transport is not None:
                self.transport.abort()
            return
        self._timer = self.broker._loop.call_later(self.keepalive / 2, self._check_keepalive)

    def _peer(self) -> str:
        return str(self.transport.get_extra_info("peername")) if self.transport else "?"

    def _name(self) -> str:
        return self.session.client_id if self.session else self._peer()


# --- the broker ----------------------------------------------------------------------------

class EmbeddedBroker:
    """An in-memory MQTT 3.1.1 broker; ``start()`` runs it on a background thread."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 1883,
        *,
        users: dict[str, str] | None = None,
        acl: AclCheck | None = None,
        ssl_context: ssl.SSLContext | None = None,
        max_queued: int = 1_000_000,
        max_inflight: int = MAX_INFLIGHT,
        max_payload: int = MAX_EVENT_BYTES,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port: expected 0-65535, got {port!r}")
        if max_queued < 0 or max_inflight < 1:
            raise ValueError(f"max_queued {max_queued!r} / max_inflight {max_inflight!r}: "
                             "expected >= 0 and >= 1")
        self.host = host
        self.port = port  # becomes the bound port once started (port 0 picks a free one)
        self.users = users
        self.acl = acl
        self.ssl_context = ssl_context
        self.max_queued = max_queued
        self.max_inflight = max_inflight
        self.max_payload = max_payload
        """Larger payloads are acknowledged and dropped (mosquitto's message_size_limit)."""
        self._sessions: dict[str, _Session] = {}
        self._retained: dict[str, _Message] = {}
        self._connections: set[_Connection] = set()
        self._loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    # lifecycle
    def start(self) -> EmbeddedBroker:
        """Run on a daemon thread; returns once the port accepts connections."""
        if self._thread is not None:
            raise RuntimeError(f"broker on port {self.port} already started")
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,),
                                        name=f"shelflife-broker-{self.port}", daemon=True)
        self._thread.start()
        ready.wait(15)
        if self._error is not None:
            self._thread.join(5)
            self._thread = None
            raise OSError(f"embedded broker could not listen on {self.host}:{self.port}: "
                          f"{self._error}") from self._error
        if not ready.is_set():
            raise TimeoutError(f"embedded broker on {self.host}:{self.port} did not start")
        return self

    def _run(self, ready: threading.Event) -> None:
        try:
            asyncio.run(self.serve(ready))
        except OSError:
            if self._error is None:  # not a listen failure already reported by start()
                raise

    def stop(self) -> None:
        """Close every connection and the listener; in-memory sessions are dropped."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        if self._stop is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                self._loop.call_soon_threadsafe(self._stop.set)
        thread.join(10)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    async def serve(self, ready: threading.Event | None = None) -> None:
        """Listen until :meth:`stop` (or cancellation); ``ready`` is set once listening."""
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            server = await self._loop.create_server(
                lambda: _Connection(self), self.host, self.port, reuse_address=True,
                ssl=self.ssl_context)
        except OSError as exc:
            self._error = exc
            if ready is not None:
                ready.set()
            raise
        self.port = server.sockets[0].getsockname()[1]
        log.info("listening on %s:%d", self.host, self.port)
        if ready is not None:
            ready.set()
        try:
            await self._stop.wait()
        finally:
            server.close()
            for conn in list(self._connections):
                if conn.transport is not None:
                    conn.transport.abort()
            await asyncio.sleep(0)

    # packet handling
    def _handle(self, conn: _Connection, first: int, body: bytes) -> None:
        kind = first >> 4
        if conn.session is None:
            if kind != CONNECT:
                raise ProtocolError(f"expected CONNECT first, got packet type {kind}")
            self._on_connect(conn, body)
            return
        if kind == PUBLISH:
            self._on_publish(conn, first, body)
        elif kind in (PUBACK, PUBREC, PUBREL, PUBCOMP):
            if len(body) != 2:
                raise ProtocolError(f"packet type {kind}: expected 2 bytes, got {len(body)}")
            self._on_ack(conn.session, kind, _PID.unpack(body)[0])
        elif kind == SUBSCRIBE:
            self._on_subscribe(conn, body)
        elif kind == UNSUBSCRIBE:
            self._on_unsubscribe(conn, body)
        elif kind == PINGREQ:
            conn.send(b"\xd0\x00")
        elif kind == DISCONNECT:
            conn.will = None
            self._detach(conn, graceful=True)
            conn.close()
        else:
            raise ProtocolError(f"unexpected packet type {kind}")

    def _on_connect(self, conn: _Connection, body: bytes) -> None:
        name, pos = _read_str(body, 0)
        if name not in (b"MQTT", b"MQIsdp") or pos + 4 > len(body):
            raise ProtocolError(f"unknown protocol name {name!r}")
        level, flags = body[pos], body[pos + 1]
        (keepalive,) = _PID.unpack_from(body, pos + 2)
        pos += 4
        raw_id, pos = _read_str(body, pos)
        client_id = raw_id.decode("utf-8")
        will = None
        if flags & 0x04:
            will_topic, pos = _read_str(body, pos)
            will_payload, pos = _read_str(body, pos)
            will = _Message(will_topic.decode("utf-8"), will_payload, flags >> 3 & 3,
                            bool(flags & 0x20))
        username = password = None
        if flags & 0x80:
            raw, pos = _read_str(body, pos)
            username = raw.decode("utf-8")
        if flags & 0x40:
            password, pos = _read_str(body, pos)
        clean = bool(flags & 0x02)
        if level not in (3, 4):
            return self._refuse(conn, _BAD_PROTOCOL, f"protocol level {level}")
        if not client_id:
            if not clean:
                return self._refuse(conn, _ID_REJECTED, "empty client id with clean_session 0")
            client_id = f"auto-{id(conn):x}"
        expected = None if self.users is None else self.users.get(username or "")
        if self.users is not None and (
            expected is None or password != expected.encode("utf-8")
        ):
            return self._refuse(conn, _NOT_AUTHORIZED, f"client {client_id!r} user {username!r}")
        if will is not None and not self._allowed(username, "publish", will.topic):
            return self._refuse(conn, _NOT_AUTHORIZED,
                                f"client {client_id!r} user {username!r}: will topic "
                                f"{will.topic!r} not allowed")

        session = self._sessions.get(client_id)
        if self.users is not None and session is not None and session.owner != username:
            return self._refuse(conn, _ID_REJECTED,
                                f"client {client_id!r} user {username!r}: session belongs "
                                f"to user {session.owner!r}")
        if session is not None and session.conn is not None:  # take-over by the same id
            old = session.conn
            session.conn, old.session = None, None
            if old.will is not None:
                self._route(old.will)
            old.close()
        present = session is not None and not clean and not session.clean
        if session is None or clean or session.clean:
            session = _Session(client_id, clean, username)
            self._sessions[client_id] = session
        session.conn, conn.session, conn.will = conn, session, will
        conn.username = username
        conn.start_keepalive(keepalive)
        conn.send(bytes((0x20, 2, 1 if present else 0, _ACCEPTED)))
        log.info("client %s connected (clean=%s, session present=%s, queued=%d)",
                 client_id, clean, present, len(session.queue))
        for pid, (msg, qos, state) in session.inflight.items():  # resume, oldest first
            conn.send(msg.encode(qos, pid, dup=True) if state == 0 else _ack(PUBREL, pid))
        self._pump(session)

    def _refuse(self, conn: _Connection, code: int, why: str) -> None:
        log.warning("refused connection (code %d): %s", code, why)
        conn.send(bytes((0x20, 2, 0, code)))
        conn.close()

    def _detach(self, conn: _Connection, *, graceful: bool) -> None:
        session, conn.session = conn.session, None
        if session is None or session.conn is not conn:
            return
        session.conn = None
        if not graceful and conn.will is not None:
            self._route(conn.will)
        conn.will = None
        if session.clean:
            del self._sessions[session.client_id]

    def _on_publish(self, conn: _Connection, first: int, body: bytes) -> None:
        qos, retain = first >> 1 & 3, bool(first & 1)
        if qos == 3:
            raise ProtocolError("PUBLISH with QoS 3")
        raw_topic, pos = _read_str(body, 0)
        topic = raw_topic.decode("utf-8")
        if not topic or "+" in topic or "#" in topic:
            raise ProtocolError(f"invalid topic name {topic!r}")
        pid = 0
        if qos:
            (pid,) = _PID.unpack_from(body, pos)
            pos += 2
        payload = body[pos:]
        session = conn.session
        assert session is not None
        if qos == 2:
            conn.send(_ack(PUBREC, pid))
            if pid in session.awaiting_rel:
                return  # a resend of a message already routed: dedup until PUBREL
            session.awaiting_rel.add(pid)
        elif qos == 1:
            conn.send(_ack(PUBACK, pid))
        if not self._allowed(conn.username, "publish", topic):
            log.warning("client %s user %r: publish to %r denied; dropped",
                        session.client_id, conn.username, topic)
            return
        if len(payload) > self.max_payload:
            log.warning("client %s: %d-byte message to %r is over the %d-byte limit; "
                        "dropped", session.client_id, len(payload), topic, self.max_payload)
            return
        if retain:
            if payload:
                self._retained[topic] = _Message(topic, payload, qos, True)
            else:
                self._retained.pop(topic, None)
        self._route(_Message(topic, payload, qos, False))

    def _on_ack(self, session: _Session, kind: int, pid: int) -> None:
        conn = session.conn
        if kind == PUBREL:  # inbound QoS 2, step 3
            session.awaiting_rel.discard(pid)
            if conn is not None:
                conn.send(_ack(PUBCOMP, pid))
            return
        entry = session.inflight.get(pid)
        if kind == PUBREC:
            if entry is not None:
                entry[2] = 1
            if conn is not None:
                conn.send(_ack(PUBREL, pid))
            return
        if entry is not None:  # PUBACK or PUBCOMP: delivery done
            del session.inflight[pid]
            self._pump(session)

    def _on_subscribe(self, conn: _Connection, body: bytes) -> None:
        session = conn.session
        assert session is not None
        (pid,) = _PID.unpack_from(body, 0)
        pos, codes, granted = 2, bytearray(), []
        while pos < len(body):
            raw, pos = _read_str(body, pos)
            if pos >= len(body):
                raise ProtocolError("SUBSCRIBE without requested QoS")
            qos = body[pos] & 3
            pos += 1
            topic_filter = raw.decode("utf-8")
            if qos == 3 or not valid_filter(topic_filter):
                codes.append(0x80)
                continue
            if not self._allowed(conn.username, "subscribe", topic_filter):
                log.warning("client %s user %r: subscription to %r denied",
                            session.client_id, conn.username, topic_filter)
                codes.append(0x80)
                continue
            session.subscribe(topic_filter, qos)
            codes.append(qos)
            granted.append((topic_filter.split("/"), qos))
        if not codes:
            raise ProtocolError("SUBSCRIBE with no topic filter")
        conn.send(_packet(SUBACK << 4, _PID.pack(pid) + bytes(codes)))
        for filter_levels, qos in granted:
            for msg in list(self._retained.values()):
                if matches(filter_levels, msg.topic.split("/")):
                    self._deliver(session, msg, min(qos, msg.qos))

    def _on_unsubscribe(self, conn: _Connection, body: bytes) -> None:
        session = conn.session
        assert session is not None
        (pid,) = _PID.unpack_from(body, 0)
        pos = 2
        while pos < len(body):
            raw, pos = _read_str(body, pos)
            session.unsubscribe(raw.decode("utf-8"))
        conn.send(_packet(UNSUBACK << 4, _PID.pack(pid)))

    def _allowed(self, username: str | None, action: Literal["publish", "subscribe"],
                 topic: str) -> bool:
        return self.acl is None or self.acl(username, action, topic)

    # delivery
    def _route(self, msg: _Message) -> None:
        for session in self._sessions.values():
            granted = session.granted_qos(msg.topic)
            if granted >= 0:
                self._deliver(session, msg, min(granted, msg.qos))

    def _deliver(self, session: _Session, msg: _Message, qos: int) -> None:
        conn = session.conn
        if qos == 0:
            if conn is not None:
                conn.send(msg.encode(0))
            return
        if conn is not None and not session.queue and len(session.inflight) < self.max_inflight:
            pid = session.new_pid()
            session.inflight[pid] = [msg, qos, 0]
            conn.send(msg.encode(qos, pid))
        elif len(session.queue) < self.max_queued:
            session.queue.append((msg, qos))
        else:
            session.dropped += 1
            if session.dropped in (1, 10, 100) or session.dropped % 10_000 == 0:
                log.warning("client %s: queue full at %d messages; %d dropped so far",
                            session.client_id, self.max_queued, session.dropped)

    def _pump(self, session: _Session) -> None:
        conn = session.conn
        if conn is None:
            return
        queue, inflight = session.queue, session.inflight
        while queue and len(inflight) < self.max_inflight:
            msg, qos = queue.popleft()
            pid = session.new_pid()
            inflight[pid] = [msg, qos, 0]
            conn.send(msg.encode(qos, pid))


def main(argv: list[str] | None = None) -> None:
    """``python -m ingest.embedded_broker``: run one broker in the foreground."""
    parser = argparse.ArgumentParser(description="Shelflife embedded MQTT 3.1.1 broker")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--max-queued", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    broker = EmbeddedBroker(args.host, args.port, max_queued=args.max_queued)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(broker.serve())


if __name__ == "__main__":
    main()
