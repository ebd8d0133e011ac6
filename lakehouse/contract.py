"""Event contract v1: the one definition shared by the store agent, ingest and Spark.

The agent refuses an invalid event before it reaches the outbox, ingest dead-letters one
that arrives anyway, and the Spark jobs parse with the envelope the catalogue
(``lakehouse.catalogue.EVENT_ENVELOPE``) generates from the same field table. This module
imports neither Spark nor Arrow, so the agent (which runs without a JVM) can use it.

Decisions recorded here because DESIGN.md is silent on them:

* Quantities are whole units (``int``). Produce sold by weight is recorded in its
  selling unit (e.g. 250 g packs).
* ``counted`` carries no top-level ``sku``: its payload is ``items``, the full snapshot.
* Lots drawn by ``sold`` / ``transfer_out`` and lots of ``transfer_in`` are a list of
  ``{lot, expires_on, quantity}`` whose quantities add up to the event's ``quantity``.
  Stock sold beyond what the agent had on hand is drawn from :data:`UNALLOCATED_LOT`
  (``expires_on`` null), which is how a negative balance shows up.
* ``wasted`` and ``adjusted`` may also carry the lot's ``expires_on`` (the agent fills
  it in); the lakehouse keys cohorts by ``(location, sku, lot)``.
* ``transfer_in`` must name its ``transfer_out`` in ``causation_id``.
* ``adjusted`` and ``transfer_out`` may carry ``recorded_by``: the operator the agent
  authenticated for it (an HTTP login, or the OS user of a CLI call), never a name typed
  into the request. Silver tables made before the field existed keep their payload
  columns and leave it out.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from typing import Any, Literal

SCHEMA_VERSION = 1
UNALLOCATED_LOT = "(none)"
REGIONS = ("east", "central", "west")
DEFAULT_PORTS: dict[str, int] = {"east": 18831, "central": 18832, "west": 18833}
"""Each region's broker port on loopback, shared by brokers, agents and ingest."""

# --- bounds: what the tables and the domain can hold ------------------------------------
# Every number and string an event carries is bounded here, so a value the lakehouse
# cannot store (an int beyond int64, a date typed into a day count) is refused at the
# agent and dead-lettered at ingest instead of failing inside the stream.
MAX_EVENT_BYTES = 1_048_576
"""Largest MQTT message a broker, ingest or the agent accepts (a full count of a large
store, 10,000 lots, is about 900 KB)."""
MAX_SEQ = 2**53 - 1
"""Largest seq: exact in a JSON number everywhere (and far inside int64)."""
MAX_QUANTITY = 1_000_000
"""Most selling units one event may move or count for one lot."""
MAX_STOCK = 1_000_000_000
"""Largest on-hand magnitude an event may report (``stock_before``, system quantities)."""
MAX_MONEY = 1_000_000.0
"""Largest unit price or cost."""
MAX_HOURS = 24.0 * 90
"""Longest transit a transfer may expect (90 days)."""
MAX_DAYS = 3650
"""Longest shelf life or minimum sellable life, in days (ten years)."""
MAX_STR = 256
"""Longest free-text field, in characters."""
MAX_LOTS = 64
"""Most lots one sale or transfer may draw."""
MAX_ITEMS = 10_000
"""Most lines a count may carry."""
MAX_CLOCK = 64
"""Most entries in an event's vector clock."""

EventType = Literal[
    "received",
    "sold",
    "transfer_out",
    "transfer_in",
    "wasted",
    "adjusted",
    "counted",
    "item_updated",
]
Category = Literal["transactional", "operational", "metadata"]

CATEGORY_OF: dict[str, str] = {
    "received": "transactional",
    "sold": "transactional",
    "transfer_out": "transactional",
    "transfer_in": "transactional",
    "wasted": "transactional",
    "adjusted": "operational",
    "counted": "operational",
    "item_updated": "metadata",
}
EVENT_TYPES: tuple[str, ...] = tuple(CATEGORY_OF)
REASON_CODES = ("expired", "damaged", "temperature", "recall", "other")

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
_CAUSE_RE = re.compile(r"^(?P<loc>[A-Za-z0-9][A-Za-z0-9_.-]{0,63}):(?P<seq>[0-9]{1,16})\Z")
_BAD_CHARS_RE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
"""Control characters (C0, DEL, C1), lone surrogates and non-characters: they break
UTF-8 encoding, terminals, CSV exports or Parquet writers downstream."""
EARLIEST_DATE = date(1970, 1, 1)
LATEST_DATE = date(2199, 12, 31)
"""Dates and times outside these are refused: pandas, Arrow and the dashboards all hold
them, and nothing perishable is older or expires later."""
_TS_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z\Z")
_DATE_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")


class ContractError(ValueError):
    """An event (or part of one) breaks contract v1; names the field and the value."""

    def __init__(self, field: str, value: Any, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        shown = repr(value)
        if len(shown) > 120:
            shown = shown[:117] + "..."
        super().__init__(f"{field}: {reason} (got {shown})")


# --- field kinds -----------------------------------------------------------------------

Kind = Literal["id", "str", "stock", "quantity", "count", "days", "money", "hours", "date",
               "reason", "lots", "items"]


@dataclass(frozen=True)
class FieldSpec:
    """One payload field: its kind decides both validation and the column type."""

    name: str
    kind: Kind


PAYLOAD_FIELDS: dict[str, FieldSpec] = {
    f.name: f
    for f in (
        FieldSpec("sku", "id"),
        FieldSpec("lot", "str"),
        FieldSpec("quantity", "quantity"),
        FieldSpec("expires_on", "date"),
        FieldSpec("supplier_ref", "str"),
        FieldSpec("unit_cost", "money"),
        FieldSpec("unit_price", "money"),
        FieldSpec("transaction_ref", "str"),
        FieldSpec("lots", "lots"),
        FieldSpec("destination", "id"),
        FieldSpec("source", "id"),
        FieldSpec("transfer_id", "str"),
        FieldSpec("expected_transit_hours", "hours"),
        FieldSpec("reason_code", "reason"),
        FieldSpec("disposal_method", "str"),
        FieldSpec("counted_quantity", "count"),
        FieldSpec("system_quantity", "stock"),
        FieldSpec("delta", "stock"),
        FieldSpec("items", "items"),
        FieldSpec("description", "str"),
        FieldSpec("category", "str"),
        FieldSpec("price", "money"),
        FieldSpec("shelf_life_days", "days"),
        FieldSpec("min_sellable_days", "days"),
        FieldSpec("stock_before", "stock"),
        FieldSpec("recorded_by", "id"),
    )
}

# required / optional payload fields per event type
_REQ: dict[str, tuple[str, ...]] = {
    "received": ("sku", "lot", "quantity", "expires_on", "supplier_ref", "unit_cost",
                 "stock_before"),
    "sold": ("sku", "quantity", "unit_price", "transaction_ref", "lots", "stock_before"),
    "transfer_out": ("sku", "quantity", "destination", "transfer_id",
                     "expected_transit_hours", "lots", "stock_before"),
    "transfer_in": ("sku", "quantity", "source", "transfer_id", "lots", "stock_before"),
    "wasted": ("sku", "quantity", "lot", "reason_code", "disposal_method", "stock_before"),
    "adjusted": ("sku", "lot", "counted_quantity", "system_quantity", "delta",
                 "stock_before"),
    "counted": ("items",),
    "item_updated": ("sku",),
}
_OPT: dict[str, tuple[str, ...]] = {
    "wasted": ("expires_on",),
    "adjusted": ("expires_on", "recorded_by"),
    "transfer_out": ("recorded_by",),
    "item_updated": ("description", "category", "price", "shelf_life_days",
                     "min_sellable_days"),
}
ITEM_FIELDS = _OPT["item_updated"]
QUANTITY_EVENTS = frozenset(t for t, req in _REQ.items() if "stock_before" in req)
ENVELOPE_FIELDS = ("schema_version", "event_id", "location_id", "seq", "clock",
                   "occurred_at", "event_type", "category", "causation_id", "offline",
                   "agent_version", "payload")
_ENVELOPE_KEYS = frozenset(ENVELOPE_FIELDS)
_ALLOWED: dict[str, frozenset[str]] = {t: frozenset((*req, *_OPT.get(t, ()))) for t, req in
                                       _REQ.items()}
"""Payload fields each event type may carry."""


def payload_fields(event_type: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Required and optional payload fields of an event type."""
    return _REQ[event_type], _OPT.get(event_type, ())


# --- scalar checks ----------------------------------------------------------------------

def check_id(field: str, value: Any) -> str:
    """Location ids and SKUs: safe in MQTT topics, file names and event ids."""
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise ContractError(field, value, "expected 1-64 chars of letters, digits, '_', '-', "
                                          "'.', starting with a letter or digit")
    return value


def check_region(value: Any) -> str:
    if value not in REGIONS:
        raise ContractError("region", value, f"expected one of {', '.join(REGIONS)}")
    return value


def _check_int(field: str, value: Any, *, minimum: int, maximum: int) -> int:
    """Integers only (never bool or float), inside ``[minimum, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ContractError(field, value, f"expected an integer, got {type(value).__name__}")
    if value < minimum:
        raise ContractError(field, value, f"must be >= {minimum}")
    if value > maximum:
        raise ContractError(field, value, f"must be <= {maximum:,}")
    return value


def _check_number(field: str, value: Any, maximum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ContractError(field, value, f"expected a number, got {type(value).__name__}")
    if value != value or value < 0 or value > maximum:
        raise ContractError(field, value, f"must be a finite number from 0 to {maximum:,g}")
    return float(value)


def check_text(field: str, value: Any) -> str:
    """Free text: 1-256 characters, not blank, no control characters or lone surrogates."""
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_STR:
        raise ContractError(field, value,
                            f"expected a non-empty string of at most {MAX_STR} chars")
    bad = _BAD_CHARS_RE.search(value)
    if bad is not None:
        raise ContractError(field, value, f"contains the control or invalid character "
                                          f"U+{ord(bad.group()):04X} at {bad.start()}")
    return value


_check_str = check_text


def _check_day(field: str, value: Any, day: date) -> None:
    if not EARLIEST_DATE <= day <= LATEST_DATE:
        raise ContractError(field, value, f"must lie between {EARLIEST_DATE} and {LATEST_DATE}")


def check_date(field: str, value: Any) -> str:
    if not isinstance(value, str) or not _DATE_RE.match(value):
        raise ContractError(field, value, "expected a date YYYY-MM-DD")
    try:
        day = date.fromisoformat(value)
    except ValueError as exc:
        raise ContractError(field, value, "not a calendar date") from exc
    _check_day(field, value, day)
    return value


def check_timestamp(field: str, value: Any) -> str:
    if not isinstance(value, str) or not _TS_RE.match(value):
        raise ContractError(field, value, "expected UTC time YYYY-MM-DDTHH:MM:SS.mmmZ")
    try:
        moment = datetime.fromisoformat(value[:-1])
    except ValueError as exc:
        raise ContractError(field, value, "not a valid time") from exc
    _check_day(field, value, moment.date())
    return value


def _check_lots(field: str, value: Any, total: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise ContractError(field, value, "expected a non-empty list of {lot, expires_on, "
                                          "quantity}")
    if len(value) > MAX_LOTS:
        raise ContractError(field, f"{len(value)} lots", f"at most {MAX_LOTS} lots")
    summed = 0
    for i, lot in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(lot, dict) or set(lot) != {"lot", "expires_on", "quantity"}:
            raise ContractError(where, lot, "expected exactly {lot, expires_on, quantity}")
        _check_str(f"{where}.lot", lot["lot"])
        if lot["expires_on"] is not None:
            check_date(f"{where}.expires_on", lot["expires_on"])
        elif lot["lot"] != UNALLOCATED_LOT:
            raise ContractError(f"{where}.expires_on", None,
                                f"only lot {UNALLOCATED_LOT!r} may have no expiry")
        summed += _check_int(f"{where}.quantity", lot["quantity"], minimum=1,
                             maximum=MAX_QUANTITY)
    if summed != total:
        raise ContractError(field, value, f"lot quantities add up to {summed}, "
                                          f"not the event quantity {total}")
    return value


def _check_items(field: str, value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise ContractError(field, value, "expected a list of {sku, lot, expires_on, quantity}")
    if len(value) > MAX_ITEMS:
        raise ContractError(field, f"{len(value)} items", f"at most {MAX_ITEMS:,} items")
    seen: set[tuple[str, str]] = set()
    for i, item in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(item, dict) or set(item) != {"sku", "lot", "expires_on", "quantity"}:
            raise ContractError(where, item, "expected exactly {sku, lot, expires_on, quantity}")
        check_id(f"{where}.sku", item["sku"])
        _check_str(f"{where}.lot", item["lot"])
        if item["expires_on"] is not None:
            check_date(f"{where}.expires_on", item["expires_on"])
        _check_int(f"{where}.quantity", item["quantity"], minimum=0, maximum=MAX_QUANTITY)
        key = (item["sku"], item["lot"])
        if key in seen:
            raise ContractError(where, item, "sku and lot listed twice in one count")
        seen.add(key)
    return value


def _check_field(spec: FieldSpec, value: Any, payload: dict[str, Any]) -> None:
    name = f"payload.{spec.name}"
    match spec.kind:
        case "id":
            check_id(name, value)
        case "str":
            _check_str(name, value)
        case "stock":
            _check_int(name, value, minimum=-MAX_STOCK, maximum=MAX_STOCK)
        case "quantity":
            _check_int(name, value, minimum=1, maximum=MAX_QUANTITY)
        case "count":
            _check_int(name, value, minimum=0, maximum=MAX_QUANTITY)
        case "days":
            _check_int(name, value, minimum=0, maximum=MAX_DAYS)
        case "money":
            _check_number(name, value, MAX_MONEY)
        case "hours":
            _check_number(name, value, MAX_HOURS)
        case "date":
            check_date(name, value)
        case "reason":
            if value not in REASON_CODES:
                raise ContractError(name, value, f"expected one of {', '.join(REASON_CODES)}")
        case "lots":
            _check_lots(name, value, payload.get("quantity"))
        case "items":
            _check_items(name, value)


# --- whole events -----------------------------------------------------------------------

def validate_payload(event_type: str, payload: Any) -> dict[str, Any]:
    """Check a payload against its event type; returns it unchanged when valid."""
    if not isinstance(event_type, str) or event_type not in CATEGORY_OF:
        raise ContractError("event_type", event_type, f"expected one of {', '.join(EVENT_TYPES)}")
    if not isinstance(payload, dict):
        raise ContractError("payload", payload, "expected an object")
    required, optional = payload_fields(event_type)
    if not payload.keys() <= _ALLOWED[event_type]:
        unknown = sorted(set(payload) - _ALLOWED[event_type])
        raise ContractError(f"payload.{unknown[0]}", payload[unknown[0]],
                            f"not a field of {event_type} events")
    for name in required:
        if name not in payload or payload[name] is None:
            raise ContractError(f"payload.{name}", payload.get(name),
                                f"required for {event_type} events")
    for name in (*required, *optional):
        if payload.get(name) is not None:
            _check_field(PAYLOAD_FIELDS[name], payload[name], payload)
    if event_type == "adjusted" and (
        payload["delta"] != payload["counted_quantity"] - payload["system_quantity"]
    ):
        raise ContractError("payload.delta", payload["delta"],
                            "must equal counted_quantity - system_quantity")
    if event_type == "item_updated" and not any(payload.get(f) is not None for f in ITEM_FIELDS):
        raise ContractError("payload", payload,
                            f"item_updated needs one of {', '.join(ITEM_FIELDS)}")
    return payload


def validate_event(event: Any) -> dict[str, Any]:
    """Check a decoded event; returns it unchanged when valid, else raises ContractError."""
    if not isinstance(event, dict):
        raise ContractError("event", event, "expected a JSON object")
    if event.keys() != _ENVELOPE_KEYS:
        missing = [f for f in ENVELOPE_FIELDS if f not in event]
        if missing:
            raise ContractError(missing[0], None, "missing from the envelope")
        extra = sorted(set(event) - _ENVELOPE_KEYS)
        raise ContractError(extra[0], event[extra[0]], "not an envelope field of contract v1")
    if event["schema_version"] != SCHEMA_VERSION or isinstance(event["schema_version"], bool):
        raise ContractError("schema_version", event["schema_version"], "expected 1")
    loc = check_id("location_id", event["location_id"])
    seq = _check_int("seq", event["seq"], minimum=1, maximum=MAX_SEQ)
    if event["event_id"] != f"{loc}:{seq}":
        raise ContractError("event_id", event["event_id"], f"expected '{loc}:{seq}'")
    clock = event["clock"]
    if not isinstance(clock, dict):
        raise ContractError("clock", clock, "expected an object of location_id -> seq")
    if len(clock) > MAX_CLOCK:
        raise ContractError("clock", f"{len(clock)} entries", f"at most {MAX_CLOCK} entries")
    for k, v in clock.items():
        check_id("clock key", k)
        _check_int(f"clock.{k}", v, minimum=0, maximum=MAX_SEQ)
    if clock.get(loc) != seq:
        raise ContractError(f"clock.{loc}", clock.get(loc), f"must equal seq {seq}")
    check_timestamp("occurred_at", event["occurred_at"])
    et = event["event_type"]
    if not isinstance(et, str) or et not in CATEGORY_OF:
        raise ContractError("event_type", et, f"expected one of {', '.join(EVENT_TYPES)}")
    if event["category"] != CATEGORY_OF[et]:
        raise ContractError("category", event["category"],
                            f"{et} events are {CATEGORY_OF[et]}")
    cause = event["causation_id"]
    if cause is not None:
        found = _CAUSE_RE.match(cause) if isinstance(cause, str) else None
        if found is None or not 1 <= int(found["seq"]) <= MAX_SEQ:
            raise ContractError("causation_id", cause, "expected an event id 'location:seq'")
    elif et == "transfer_in":
        raise ContractError("causation_id", None, "transfer_in must name its transfer_out")
    if not isinstance(event["offline"], bool):
        raise ContractError("offline", event["offline"], "expected true or false")
    _check_str("agent_version", event["agent_version"])
    validate_payload(et, event["payload"])
    return event


def decode_json(raw: bytes, what: str = "payload bytes") -> Any:
    """Bytes off the wire to a JSON value, or ContractError: never any other exception,
    whatever the bytes (oversized, not UTF-8, nested too deep, a 5,000-digit number)."""
    if len(raw) > MAX_EVENT_BYTES:
        raise ContractError(what, f"{len(raw):,} bytes",
                            f"larger than {MAX_EVENT_BYTES:,} bytes")
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ContractError(what, bytes(raw[:40]), "not UTF-8") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ContractError(what, text[:80], f"not JSON: {exc.msg}") from exc
    except (ValueError, RecursionError) as exc:  # digit limit, nesting depth
        raise ContractError(what, text[:80], f"not usable JSON: {exc}") from exc


def decode_event(raw: bytes) -> dict[str, Any]:
    """Bytes off the wire to a validated event (UTF-8 JSON), or ContractError."""
    return validate_event(decode_json(raw))


_CANONICAL = json.JSONEncoder(separators=(",", ":"), sort_keys=True)


def encode_event(event: dict[str, Any]) -> bytes:
    """Compact canonical JSON, as sent over MQTT and written to landing files."""
    return _CANONICAL.encode(event).encode("utf-8")


def utc_now_ms() -> str:
    """The contract's timestamp format for the current time."""
    return format_ts(datetime.now(UTC))


def format_ts(moment: datetime) -> str:
    # isoformat truncates to the millisecond, as the format wants, and costs half strftime
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def parse_ts(value: str) -> datetime:
    """A contract timestamp (``YYYY-MM-DDTHH:MM:SS.sssZ``) as an aware UTC datetime; a
    trailing character other than ``Z`` counts as ``Z``, other forms may raise ValueError.
    The offset is parsed rather than set with ``replace``, which cost eight times the
    parse (the stream reads several per event)."""
    return datetime.fromisoformat(value[:-1] + "+00:00")


def build_event(
    *,
    location_id: str,
    seq: int,
    event_type: str,
    payload: dict[str, Any],
    clock: dict[str, int] | None = None,
    occurred_at: str | None = None,
    causation_id: str | None = None,
    offline: bool = False,
    agent_version: str = "0.1.0",
) -> dict[str, Any]:
    """Assemble and validate an envelope; the agent's only way to make events."""
    merged = dict(clock or {})
    merged[location_id] = seq
    event = {
        "schema_version": SCHEMA_VERSION,
        "event_id": f"{location_id}:{seq}",
        "location_id": location_id,
        "seq": seq,
        "clock": merged,
        "occurred_at": occurred_at or utc_now_ms(),
        "event_type": event_type,
        "category": CATEGORY_OF.get(event_type, "?"),
        "causation_id": causation_id,
        "offline": offline,
        "agent_version": agent_version,
        "payload": payload,
    }
    return validate_event(event)


# --- topics -------------------------------------------------------------------------------

TOPIC_ROOT = "shelflife/v1"


def topic(region: str, location_id: str, kind: Literal["events", "ack", "heartbeat"]) -> str:
    check_region(region)
    check_id("location_id", location_id)
    return f"{TOPIC_ROOT}/{region}/{location_id}/{kind}"


def parse_topic(name: str) -> tuple[str, str, str]:
    """``shelflife/v1/{region}/{location}/{kind}`` -> (region, location, kind)."""
    parts = name.split("/")
    if len(parts) != 5 or "/".join(parts[:2]) != TOPIC_ROOT:
        raise ContractError("topic", name, f"expected {TOPIC_ROOT}/<region>/<location>/<kind>")
    region, loc, kind = parts[2], parts[3], parts[4]
    check_region(region)
    check_id("topic location", loc)
    if kind not in ("events", "ack", "heartbeat"):
        raise ContractError("topic kind", kind, "expected events, ack or heartbeat")
    return region, loc, kind


# --- transfer orders: approved transfers on their way down to the source location -------

ORDER_KIND = "orders"
"""Topic level under a location for its transfer orders, one retained message per order:
``shelflife/v1/{region}/{location}/orders/{order_id}``. A retained message waits on the
broker for an agent that is offline when the transfer is approved."""


def order_topic(region: str, location_id: str, order_id: str | None = None) -> str:
    """One order's topic, or (no ``order_id``) the filter for all of a location's orders."""
    check_region(region)
    check_id("location_id", location_id)
    return (f"{TOPIC_ROOT}/{region}/{location_id}/{ORDER_KIND}/"
            + ("+" if order_id is None else check_id("order_id", order_id)))


def validate_order(order: Any) -> dict[str, Any]:
    """An approved transfer as the source agent receives it, checked field by field.

    ``{"order_id", "cancelled": true}`` withdraws an order not yet dispatched; otherwise
    ``order_id``, ``sku``, ``lot``, ``quantity`` (> 0), ``destination``, ``transit_hours``
    (>= 0), ``approved_by`` and ``approved_at`` are required.
    """
    if not isinstance(order, dict):
        raise ContractError("order", order, "expected a JSON object")
    check_id("order_id", order.get("order_id"))
    if order.get("kind") == HOLD_KIND:
        return validate_hold(order)
    if order.get("cancelled") is True:
        return {"order_id": order["order_id"], "cancelled": True}
    for name in ("sku", "lot", "approved_by"):
        _check_str(name, order.get(name))
    check_id("destination", order.get("destination"))
    _check_int("quantity", order.get("quantity"), minimum=1, maximum=MAX_QUANTITY)
    _check_number("transit_hours", order.get("transit_hours"), MAX_HOURS)
    check_timestamp("approved_at", order.get("approved_at"))
    return {k: order[k] for k in ("order_id", "sku", "lot", "quantity", "destination",
                                  "transit_hours", "approved_by", "approved_at")}


# --- acks and orders carry proof of who sent them ------------------------------------------
# On a broker that lets a stranger publish (anonymous, misconfigured, or not Shelflife's
# at all), an ack within the agent's range would delete events that never landed, and an
# order would ship goods nobody approved. So ingest and the dispatcher sign each ack and
# order with a key only they and that store hold, and an agent that has its key refuses
# anything unsigned or signed with another key.
#
# The key is a separate random secret per store (``Credentials.signing_key``), not one
# derived from the store's broker password: the agent sends its password to whatever
# broker it connects to (in clear without TLS), so a rogue or misconfigured broker, or
# anyone on the path, learns the password, but the signing key never leaves the agent,
# ingest and the dispatcher. The signature covers the location id, so an ack or order
# for one store cannot be replayed to another, and the message kind, so an ack cannot
# pass as an order. What it cannot stop: replaying a genuine message to its own store;
# an old ack moves nothing, and a withdrawn order returns only with a later approved_at
# (``StoreDB.add_order``).

SIGNATURE_FIELD = "sig"
SIGNING_KEY_BYTES = 32
_SIG_RE = re.compile(r"^[0-9a-f]{64}\Z")
MessageKind = Literal["ack", "order"]


def signature(kind: MessageKind, location_id: str, message: dict[str, Any],
              key: bytes) -> str:
    """HMAC-SHA256 (hex) over the canonical JSON of ``message`` (without ``sig``), the
    message kind and the location it is for."""
    body = {k: v for k, v in message.items() if k != SIGNATURE_FIELD}
    canonical = json.dumps({"kind": kind, "location_id": location_id, "message": body},
                           sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                           allow_nan=False)
    return hmac.new(key, canonical.encode("ascii"), hashlib.sha256).hexdigest()


def check_signature(kind: MessageKind, location_id: str, message: dict[str, Any],
                    key: bytes) -> None:
    """ContractError unless ``message['sig']`` is ``key``'s signature of it."""
    sig = message.get(SIGNATURE_FIELD)
    if sig is None:
        raise ContractError(SIGNATURE_FIELD, None, f"unsigned {kind}: this agent accepts "
                                                   f"only {kind}s signed with its key")
    if not isinstance(sig, str) or not _SIG_RE.match(sig):
        raise ContractError(SIGNATURE_FIELD, sig, "expected 64 hex digits")
    try:
        expected = signature(kind, location_id, message, key)
    except ValueError as exc:  # NaN or Infinity: nothing Shelflife signs
        raise ContractError(SIGNATURE_FIELD, sig, f"cannot be checked: {exc}") from exc
    if not hmac.compare_digest(expected, sig):
        raise ContractError(SIGNATURE_FIELD, sig, f"wrong signature: this {kind} was not "
                                                  f"signed with {location_id}'s key")


def build_ack(location_id: str, acked_seq: int, *, ingest_time: str | None = None,
              key: bytes | None = None) -> dict[str, Any]:
    """Ingest's end-to-end ack for one location: every seq up to ``acked_seq`` landed.

    ``ingest_time`` lets the agent estimate its clock skew; ``key`` (secure mode) adds
    the signature. Published retained on ``topic(region, location_id, "ack")``.
    """
    check_id("location_id", location_id)
    ack: dict[str, Any] = {"acked_seq": acked_seq, "ingest_time": ingest_time or utc_now_ms()}
    validate_ack(ack, location_id)
    if key is not None:
        ack[SIGNATURE_FIELD] = signature("ack", location_id, ack, key)
    return ack


def validate_ack(ack: Any, location_id: str, *, key: bytes | None = None) -> dict[str, Any]:
    """An ack as the agent may use it (without ``sig``), or ContractError.

    With ``key`` the signature must be that key's, over this ``location_id``.
    """
    if not isinstance(ack, dict):
        raise ContractError("ack", ack, f"expected a JSON object, got {type(ack).__name__}")
    _check_int("acked_seq", ack.get("acked_seq"), minimum=0, maximum=MAX_SEQ)
    if ack.get("ingest_time") is not None:
        check_timestamp("ingest_time", ack["ingest_time"])
    if key is not None:
        check_signature("ack", location_id, ack, key)
    return {k: v for k, v in ack.items() if k != SIGNATURE_FIELD}


def sign_order(order: dict[str, Any], location_id: str, key: bytes | None) -> dict[str, Any]:
    """A checked order (or ``{"order_id", "cancelled": true}``) for ``location_id`` (the
    location that ships it), signed with its key; unsigned when ``key`` is None."""
    checked = validate_order(order)
    if key is not None:
        checked[SIGNATURE_FIELD] = signature("order", location_id, checked, key)
    return checked


def validate_signed_order(order: Any, location_id: str, *,
                          key: bytes | None = None) -> dict[str, Any]:
    """An order as the agent may keep it, or ContractError; with ``key`` it must carry
    that key's signature over this ``location_id``, and no field it does not cover."""
    checked = validate_order(order)
    if key is not None:
        check_signature("order", location_id, order, key)
    return checked


def build_order(*, order_id: str, sku: str, lot: str, quantity: int, destination: str,
                transit_hours: float, approved_by: str, approved_at: datetime) -> dict[str, Any]:
    """An approved transfer as the dispatcher sends it to the location that ships it."""
    return validate_order({
        "order_id": order_id, "sku": sku, "lot": lot, "quantity": quantity,
        "destination": destination, "transit_hours": transit_hours,
        "approved_by": approved_by, "approved_at": format_ts(approved_at)})


def cancel_order(order_id: str) -> dict[str, Any]:
    """The withdrawal of an order not yet dispatched (its approval was overturned)."""
    return validate_order({"order_id": order_id, "cancelled": True})


# --- recalls: a lot on hold travels down the order channel ---------------------------------
# A recall puts one lot of one SKU on hold at every location: the same retained, signed
# message on each location's order topic, under an id derived from (sku, lot), so a
# release replaces the hold on the broker and an agent that was offline for both learns
# only the outcome. ``at`` orders them: an agent applies a hold message only if it is newer
# than the one it has, so a replayed hold cannot undo a later release.

HOLD_KIND = "hold"


def hold_id(sku: str, lot: str) -> str:
    """The one order id of a lot's hold (and of its release): stable, topic-safe."""
    digest = hashlib.sha256(f"{check_id('sku', sku)}\x00{check_text('lot', lot)}".encode())
    return f"hold-{digest.hexdigest()[:24]}"


def validate_hold(hold: Any) -> dict[str, Any]:
    """A lot's hold or release as an agent may apply it, or ContractError.

    ``{"order_id": hold_id(sku, lot), "kind": "hold", "sku", "lot", "on_hold": bool,
    "reason", "by", "at"}``; the order id must be the one :func:`hold_id` gives, so a hold
    cannot sit on another lot's topic.
    """
    if not isinstance(hold, dict):
        raise ContractError("hold", hold, "expected a JSON object")
    check_id("sku", hold.get("sku"))
    check_text("lot", hold.get("lot"))
    if hold.get("order_id") != hold_id(hold["sku"], hold["lot"]):
        raise ContractError("order_id", hold.get("order_id"),
                            f"expected {hold_id(hold['sku'], hold['lot'])} for this lot")
    if not isinstance(hold.get("on_hold"), bool):
        raise ContractError("on_hold", hold.get("on_hold"), "expected true or false")
    check_text("reason", hold.get("reason"))
    check_text("by", hold.get("by"))
    check_timestamp("at", hold.get("at"))
    return {k: hold[k] for k in ("order_id", "kind", "sku", "lot", "on_hold", "reason",
                                 "by", "at")}


def build_hold(*, sku: str, lot: str, on_hold: bool, reason: str, by: str,
               at: datetime) -> dict[str, Any]:
    """A recall's hold (``on_hold``) or release of one lot, as every location receives it."""
    return validate_hold({"order_id": hold_id(sku, lot), "kind": HOLD_KIND, "sku": sku,
                          "lot": lot, "on_hold": on_hold, "reason": reason, "by": by,
                          "at": format_ts(at)})


# --- acks, orders and heartbeats on the wire -------------------------------------------------
# Each message has one builder (``build_ack``, ``build_order``/``cancel_order`` then
# ``sign_order``, ``Heartbeat``) and one reader from bytes (``read_ack``, ``read_order``,
# ``Heartbeat.from_json``); :func:`encode_message` turns any of them into bytes.

def encode_message(message: dict[str, Any]) -> bytes:
    """Compact JSON of an ack or an order, as published."""
    return json.dumps(message, separators=(",", ":")).encode("utf-8")


def decode_object(raw: bytes, what: str) -> dict[str, Any]:
    """Bytes off the wire to a JSON object, or ContractError naming what arrived."""
    data = decode_json(raw, what)
    if not isinstance(data, dict):
        raise ContractError(what, data, f"expected a JSON object, got {type(data).__name__}")
    return data


def read_ack(raw: bytes, location_id: str, *, key: bytes | None = None) -> dict[str, Any]:
    """An ack off the wire as the agent may use it (see :func:`validate_ack`)."""
    return validate_ack(decode_object(raw, "ack"), location_id, key=key)


def read_order(raw: bytes, topic_name: str, location_id: str, *,
               key: bytes | None = None) -> dict[str, Any]:
    """An order off the wire as the agent may keep it: its ``order_id`` must be the one
    its topic names (see :func:`validate_signed_order`)."""
    order = decode_object(raw, "order")
    if order.get("order_id") != topic_name.rsplit("/", 1)[-1]:
        raise ContractError("order_id", order.get("order_id"),
                            f"does not match its topic {topic_name}")
    return validate_signed_order(order, location_id, key=key)


# --- ingest's status: late is not lost ----------------------------------------------------

INGEST_STATES = ("ok", "behind", "paused")
"""``paused``: ingest takes no messages for now (the lakehouse is behind); ``behind``: it
takes them as fast as it can and the broker holds more; either way acks will be late.
``ok``: it keeps up."""


def ingest_status_topic(region: str) -> str:
    """The region's one ingest status topic, retained; written by ingest alone and read
    by every store (four levels, so no store's topic can be it)."""
    return f"{TOPIC_ROOT}/{check_region(region)}/ingest"


def build_ingest_status(region: str, state: str, backlog_events: int) -> dict[str, Any]:
    """What ingest tells its stores: keeping up, behind or paused, and how much waits."""
    status = {"region": region, "state": state, "backlog_events": backlog_events,
              "at": utc_now_ms()}
    return validate_ingest_status(status, region)


def validate_ingest_status(status: Any, region: str) -> dict[str, Any]:
    """A status as an agent may act on it, or ContractError."""
    if not isinstance(status, dict):
        raise ContractError("ingest status", status,
                            f"expected a JSON object, got {type(status).__name__}")
    if status.get("region") != region:
        raise ContractError("region", status.get("region"), f"expected {region!r}")
    if status.get("state") not in INGEST_STATES:
        raise ContractError("state", status.get("state"), f"expected one of {INGEST_STATES}")
    _check_int("backlog_events", status.get("backlog_events"), minimum=0, maximum=MAX_SEQ)
    check_timestamp("at", status.get("at"))
    return status


def read_ingest_status(raw: bytes, region: str) -> dict[str, Any]:
    """An ingest status off the wire (see :func:`validate_ingest_status`)."""
    return validate_ingest_status(decode_object(raw, "ingest status"), region)


HEARTBEAT_VERSION = 1
MAX_HOLDS = 200
"""Lots one heartbeat can list as on hold; a network with more open recalls than this has
bigger trouble than a heartbeat's size."""


@dataclass(frozen=True)
class Heartbeat:
    """The agent's heartbeat: what an operator needs to tell a quiet store from a dead one.

    Published retained on ``topic(region, location, "heartbeat")``, so whoever subscribes
    later sees every agent's last word at once. The same topic carries the agent's MQTT
    will (``online: false``), so a store that drops off the network, or whose process is
    killed, says so within one keep-alive. ``None`` means the agent did not know (e.g. in
    its will).
    """

    location_id: str
    region: str
    agent_version: str
    online: bool
    """False in the will and in the last heartbeat of a clean shutdown."""
    local_time: str
    """The agent's own clock when it wrote this, UTC with ms (contract format)."""
    outbox_depth: int | None = None
    """Events recorded but not yet acked end to end."""
    last_seq: int | None = None
    """Highest seq recorded."""
    last_acked_seq: int | None = None
    """Highest seq ingest holds durably with every lower one."""
    refused_messages: int | None = None
    """Acks and orders refused since the publisher started (malformed, forged, too big)."""
    clock_skew_hint_s: float | None = None
    """Local clock minus ingest's clock, from the last live ack; positive = agent ahead."""
    holds: list[str] | None = None
    """Hold ids (:func:`hold_id`) of the lots this agent has on hold: how the lakehouse
    learns that a store has taken a recall in."""
    heartbeat_version: int = HEARTBEAT_VERSION

    def __post_init__(self) -> None:
        check_id("location_id", self.location_id)
        check_region(self.region)
        check_timestamp("local_time", self.local_time)
        if not isinstance(self.online, bool):
            raise ContractError("online", self.online, "expected true or false")
        for name in ("outbox_depth", "last_seq", "last_acked_seq", "refused_messages"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 0):
                raise ContractError(name, value, "expected a non-negative integer or null")
        if self.holds is not None:
            if not isinstance(self.holds, list) or len(self.holds) > MAX_HOLDS:
                raise ContractError("holds", self.holds,
                                    f"expected a list of at most {MAX_HOLDS} hold ids")
            for h in self.holds:
                check_id("holds", h)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Heartbeat:
        """Parse and check a heartbeat off the wire; ContractError names what is wrong."""
        data = decode_object(raw, "heartbeat")
        known = set(cls.__dataclass_fields__)
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as exc:
            raise ContractError("heartbeat", data, f"missing fields: {exc}") from exc


def skew_from_ack(ack: dict[str, Any], received_at: datetime) -> float | None:
    """Local clock minus ingest's ``ingest_time`` in an ack, or None without one.

    Only meaningful for an ack delivered live: a retained ack replayed on subscribe
    carries the time it was first written.
    """
    stamp = ack.get("ingest_time")
    if not isinstance(stamp, str):
        return None
    try:
        ingest_time = parse_ts(check_timestamp("ingest_time", stamp))
    except (ContractError, ValueError):
        return None
    return round((received_at.astimezone(UTC) - ingest_time).total_seconds(), 3)
