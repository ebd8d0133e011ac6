"""Bad payloads for the fault bench, and the clients that send them.

Every payload is refused by the contract (or by the broker) on purpose; each carries a
number that makes its bytes unique, so its dead letter can be found again by the hash of
its first 4 KiB (what ingest keeps of an oversized message). Kinds:

* ``events``: junk bytes, text that is not JSON, wrong types, out-of-range values,
  lone surrogates, control characters, nesting and digits past the decoder's limits,
  envelope errors, a real store's valid event sent on the sender's own topic (location
  mismatch); published by a *rogue store* under its own valid login on its own events
  topic, so they reach ingest and the stream (expected: dead-lettered);
* ``oversized``: over the contract's 1 MiB, same sender (expected: dropped by the broker);
* ``cross_events``, ``forged_ack``, ``forged_order``: a rogue store, logged in as itself,
  writing a real store's events, ack or orders topics (expected: not authorised);
* ``anon_*``: the same from a client with no login or a wrong password (expected: refused
  at connect).
"""

from __future__ import annotations

import hashlib
import json
import random
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from lakehouse.contract import build_event, order_topic, topic

KEY_BYTES = 4096


def key_of(raw: bytes) -> str:
    """How a payload is found again among the dead letters."""
    return hashlib.sha1(bytes(raw[:KEY_BYTES])).hexdigest()


@dataclass
class Bad:
    n: int
    kind: str
    """events, oversized, cross_events, forged_ack, forged_order, anon_events, anon_ack,
    anon_order."""
    variant: str
    region: str
    sender: str
    """The rogue store's login, or "anonymous"/"wrong-password"."""
    topic: str
    payload: bytes
    target: str | None = None
    """The real store a forgery aims at."""
    outcome: str = "unsent"
    """unsent, published (broker took it: must be dead-lettered or dropped by size),
    refused_connect, not_authorised, no_subscribers (retried), other:<code>."""
    published_at: float | None = None
    tries: int = 0
    key: str = field(init=False)

    def __post_init__(self) -> None:
        self.key = key_of(self.payload)


def _event(location: str, seq: int, n: int, **payload_over: Any) -> dict[str, Any]:
    e = build_event(location_id=location, seq=seq, event_type="sold",
                    payload={"sku": "DAIRY-MILK-WH-1L", "quantity": 2, "unit_price": 2.5,
                             "transaction_ref": f"BAD{n}",
                             "lots": [{"lot": "L1", "expires_on": "2026-12-10",
                                       "quantity": 2}], "stock_before": 10},
                    clock={location: seq}, occurred_at=None, causation_id=None,
                    offline=False, agent_version=f"bad-{n}")
    e["payload"].update(payload_over)
    return e


def _item_event(location: str, seq: int, n: int, **fields: Any) -> dict[str, Any]:
    """A valid item update, then ``fields`` forced in (build_event would refuse them)."""
    e = build_event(location_id=location, seq=seq, event_type="item_updated",
                    payload={"sku": "DAIRY-MILK-WH-1L", "price": 2.0}, clock={location: seq},
                    occurred_at=None, causation_id=None, offline=False,
                    agent_version=f"bad-{n}")
    e["payload"].update(fields)
    return e


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def bad_event_body(variant: str, rogue: str, victim: str, n: int, rng: random.Random
                   ) -> bytes:
    """One contract-breaking payload of the given variant."""
    seq = rng.randint(1, 10_000)
    e = _event(rogue, seq, n)
    if variant == "junk":
        return bytes([0xFF, 0xFE]) + n.to_bytes(4, "big") + rng.randbytes(rng.randint(1, 200))
    if variant == "not_json":
        return f'{{"seq": {n}, "event_type": sold'.encode()
    if variant == "empty_object":
        return _dumps({"n": n})
    if variant == "json_array":
        return _dumps([n, "sold", {"seq": 1}])
    if variant == "seq_string":
        e["seq"] = str(seq)
    elif variant == "seq_2_63":
        e["seq"] = 2**63
        e["event_id"], e["clock"] = f"{rogue}:{2**63}", {rogue: 2**63}
    elif variant == "seq_zero":
        e["seq"], e["event_id"], e["clock"] = 0, f"{rogue}:0", {rogue: 0}
    elif variant == "quantity_2_63":
        e["payload"]["quantity"] = 2**63 - 1
    elif variant == "quantity_string":
        e["payload"]["quantity"] = "2"
    elif variant == "quantity_float":
        e["payload"]["quantity"] = 2.5
    elif variant == "quantity_bool":
        e["payload"]["quantity"] = True
    elif variant == "min_sellable_days":
        e = _item_event(rogue, seq, n, min_sellable_days=20261201)
    elif variant == "price_huge":
        e = _item_event(rogue, seq, n, price=1e300)
    elif variant == "stock_before_huge":
        e["payload"]["stock_before"] = -(2**62)
    elif variant == "expires_year":
        e["payload"]["lots"][0]["expires_on"] = "99999-01-01"
    elif variant == "lone_surrogate":
        e["payload"]["transaction_ref"] = f"BAD{n}\ud800"
    elif variant == "surrogate_sku":
        e["payload"]["sku"] = "\udfff" + str(n)
    elif variant == "control_chars":
        e["payload"]["transaction_ref"] = f"BAD{n}\x00\x1b[31m"
    elif variant == "payload_list":
        e["payload"] = [e["payload"]]
    elif variant == "offline_string":
        e["offline"] = "yes"
    elif variant == "clock_list":
        e["clock"] = [[rogue, seq]]
    elif variant == "missing_field":
        del e["payload"]["lots"]
    elif variant == "extra_field":
        e["shelflife_admin"] = True
    elif variant == "schema_version":
        e["schema_version"] = 99
    elif variant == "unknown_type":
        e["event_type"] = "teleported"
    elif variant == "category":
        e["category"] = "correction"
    elif variant == "event_id":
        e["event_id"] = f"{victim}:{seq}"
    elif variant == "deep":
        return (f"[{n}," + "[" * 20_000 + "]" * 20_001).encode()
    elif variant == "digits":
        return (f'{{"schema_version":1,"n":{n},"seq":' + "9" * 5000 + "}").encode()
    elif variant == "location_mismatch":
        # A real store's well-formed event, on the rogue's own topic: applied, it would
        # move that store's stock.
        e = _event(victim, seq + 1_000_000, n)
    else:
        raise ValueError(f"variant: unknown {variant!r}")
    return _dumps(e) if variant not in ("lone_surrogate", "surrogate_sku") else \
        json.dumps(e, separators=(",", ":"), ensure_ascii=True).encode()


EVENT_VARIANTS = ("junk", "not_json", "empty_object", "json_array", "seq_string", "seq_2_63",
                  "seq_zero", "quantity_2_63", "quantity_string", "quantity_float",
                  "quantity_bool", "min_sellable_days", "price_huge", "stock_before_huge",
                  "expires_year", "lone_surrogate", "surrogate_sku", "control_chars",
                  "payload_list", "offline_string", "clock_list", "missing_field",
                  "extra_field", "schema_version", "unknown_type", "category", "event_id",
                  "deep", "digits", "location_mismatch")


def forged_ack(victim_last: int, n: int) -> bytes:
    return _dumps({"acked_seq": victim_last + 100_000 + n, "ingest_time": None})


def forged_order(region: str, victim: str, n: int) -> tuple[str, bytes]:
    order_id = f"FORGED-{n}"
    body = {"order_id": order_id, "sku": "DAIRY-MILK-WH-1L", "lot": "L1", "quantity": 5,
            "destination": "X-THIEF", "transit_hours": 1.0, "approved_by": "mallory",
            "approved_at": "2026-12-01T10:00:00.000Z"}
    return order_topic(region, victim, order_id), _dumps(body)


def plan(total: int, *, regions: dict[str, list[str]], rogues: dict[str, list[str]],
         seed: int) -> list[Bad]:
    """``total`` payloads: 60% bad events on the rogue's own topic (a few oversized),
    the rest forgeries and anonymous attempts, in a shuffled order."""
    rng = random.Random(seed)
    out: list[Bad] = []
    shares = [("events", 0.60), ("cross_events", 0.10), ("forged_ack", 0.08),
              ("forged_order", 0.08), ("anon_events", 0.06), ("anon_ack", 0.04),
              ("anon_order", 0.04)]
    counts = {k: int(total * s) for k, s in shares}
    counts["events"] += total - sum(counts.values())
    n_oversized = max(2, total // 500)
    counts["events"] -= n_oversized
    counts["oversized"] = n_oversized
    region_names = list(regions)
    n = 0
    for kind, count in counts.items():
        for _ in range(count):
            n += 1
            region = region_names[n % len(region_names)]
            rogue_v5, rogue_311 = rogues[region]
            victim = rng.choice(regions[region])
            if kind == "events":
                variant = EVENT_VARIANTS[n % len(EVENT_VARIANTS)]
                out.append(Bad(n, kind, variant, region, rogue_v5,
                               topic(region, rogue_v5, "events"),
                               bad_event_body(variant, rogue_v5, victim, n, rng)))
            elif kind == "oversized":
                body = f'{{"n":{n},"pad":"'.encode() + b"x" * (1_048_576 + 64) + b'"}'
                out.append(Bad(n, kind, "over_1MiB", region, rogue_311,
                               topic(region, rogue_311, "events"), body))
            elif kind in ("cross_events", "anon_events"):
                body = _dumps(_event(victim, 1_000_000 + n, n))
                sender = rogue_v5 if kind == "cross_events" else (
                    "anonymous" if n % 2 else "wrong-password")
                out.append(Bad(n, kind, "valid_event_for_victim", region, sender,
                               topic(region, victim, "events"), body, target=victim))
            elif kind in ("forged_ack", "anon_ack"):
                sender = rogue_v5 if kind == "forged_ack" else (
                    "anonymous" if n % 2 else "wrong-password")
                out.append(Bad(n, kind, "acked_seq_beyond_last", region, sender,
                               topic(region, victim, "ack"), forged_ack(0, n), target=victim))
            else:
                t, body = forged_order(region, victim, n)
                sender = rogue_v5 if kind == "forged_order" else (
                    "anonymous" if n % 2 else "wrong-password")
                out.append(Bad(n, kind, "order_for_victim", region, sender, t, body,
                               target=victim))
    rng.shuffle(out)
    return out


# --- sending -----------------------------------------------------------------------------

def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s: str) -> bytes:
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def raw_connect(port: int, client_id: str, username: str | None, password: str | None,
                *, publish: tuple[str, bytes] | None = None, timeout: float = 5.0) -> int:
    """An MQTT 3.1.1 CONNECT from a bare socket; returns CONNACK's return code (5 = not
    authorised, 4 = bad username or password, -1 = no answer). When accepted, publishes
    ``publish`` at QoS 0 and disconnects: an open broker lets a stranger in."""
    flags = 0x02 | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    body = _str("MQTT") + bytes([4, flags]) + struct.pack("!H", 30) + _str(client_id)
    if username is not None:
        body += _str(username)
    if password is not None:
        body += _str(password)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"\x10" + _remaining_length(len(body)) + body)
        ack = b""
        try:
            while len(ack) < 4:
                chunk = s.recv(4 - len(ack))
                if not chunk:
                    break
                ack += chunk
        except OSError:
            return -1
        if len(ack) < 4 or ack[0] != 0x20:
            return -1
        rc = ack[3]
        if rc == 0 and publish is not None:
            t, payload = publish
            pub = _str(t) + payload
            s.sendall(b"\x30" + _remaining_length(len(pub)) + pub + b"\xe0\x00")
        return rc


class RogueClient:
    """A rogue store signed in as itself (MQTT 5 shows refusals in PUBACK reason codes;
    ``v311`` for oversized messages, which mosquitto takes and drops for 3.1.1 clients)."""

    def __init__(self, port: int, username: str, password: str | None, *,
                 v311: bool = False) -> None:
        self.username = username
        proto = mqtt.MQTTv311 if v311 else mqtt.MQTTv5
        kw = {"clean_session": True} if v311 else {}
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=username,
                                  protocol=proto, **kw)
        if password is not None:
            self.client.username_pw_set(username, password)
        self.client.max_queued_messages_set(0)
        self.client.on_publish = self._on_publish
        self.client.on_connect = self._on_connect
        self.lock = threading.Lock()
        self.by_mid: dict[int, Bad] = {}
        self.early: dict[int, Any] = {}
        self.retry: list[Bad] = []
        self.connected = threading.Event()
        self.refused: str | None = None
        self.client.reconnect_delay_set(0.5, 2)
        self.client.connect_async("127.0.0.1", port, 30)
        self.client.loop_start()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.refused = str(reason_code)
            return
        self.connected.set()

    def publish(self, bad: Bad) -> None:
        bad.tries += 1
        # paho runs on_publish holding its message lock, which publish() takes too:
        # calling publish() under our lock deadlocked the two (a full run hung here), so
        # the answer may come before the mid is registered and waits in ``early``.
        info = self.client.publish(bad.topic, bad.payload, qos=1)
        with self.lock:
            answer = self.early.pop(info.mid, None)
            if answer is None:
                self.by_mid[info.mid] = bad
        if answer is not None:
            self._settle(bad, answer)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self.lock:
            bad = self.by_mid.pop(mid, None)
            if bad is None:
                self.early[mid] = reason_code
                return
        self._settle(bad, reason_code)

    def _settle(self, bad: Bad, reason_code: Any) -> None:
        code = getattr(reason_code, "value", 0)
        bad.published_at = time.time()
        if code == 0:
            bad.outcome = "published"
        elif code == 135:
            bad.outcome = "not_authorised"
        elif code == 16:  # nobody subscribed: the broker dropped it; try again later
            bad.outcome = "no_subscribers"
            with self.lock:
                self.retry.append(bad)
        else:
            bad.outcome = f"other:{reason_code}"

    def unanswered(self) -> int:
        with self.lock:
            return len(self.by_mid)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def send_anonymous(port: int, bad: Bad) -> None:
    """One connection attempt per payload, as a stranger would try."""
    bad.tries += 1
    user, pw = (None, None) if bad.sender == "anonymous" else (bad.target or "x", "wrong")
    try:
        rc = raw_connect(port, f"stranger-{bad.n}", user, pw, publish=(bad.topic, bad.payload))
    except OSError:
        rc = -1
    bad.published_at = time.time()
    if rc == 0:
        bad.outcome = "published"
    elif rc in (4, 5):
        bad.outcome = "refused_connect"
    else:
        bad.outcome = "unsent"  # broker down right then: tried again later

