"""One request shape for every door into the agent (HTTP, CLI), checked before recording.

A request is a flat JSON object: ``event_type`` plus the keyword arguments of the matching
:class:`~edge_mqtt.agent.StoreAgent` method, e.g.
``{"event_type": "sold", "sku": "MILK", "quantity": 2, "unit_price": 1.29,
"transaction_ref": "T-88"}``. Fields the agent derives itself (``lots`` of a sale,
``stock_before``, ``system_quantity``, ``delta``, the envelope) are never sent. Every event
type also takes an optional ``occurred_at`` (``YYYY-MM-DDTHH:MM:SS.mmmZ``; default: now).

Checking keys, JSON types and the agent's own limits (:mod:`edge_mqtt.bounds`: sizes,
control characters) here, before the agent runs, means a malformed request can only ever
end as a :class:`ContractError` naming the field and the value; the agent's own
validation (the contract) then checks the values, before anything enters the outbox.
Errors name fields as the contract does: ``payload.<name>`` for payload fields,
``occurred_at`` / ``causation_id`` / ``event_type`` for envelope fields, and a key the
request should not have by the key as sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lakehouse.contract import ITEM_FIELDS, PAYLOAD_FIELDS, ContractError

from .agent import StoreAgent
from .bounds import check_values


@dataclass(frozen=True)
class RequestShape:
    """The keys one event type accepts and the agent method that records it."""

    method: str
    """Name of the StoreAgent method called with the request's keys as keyword arguments."""
    required: tuple[str, ...]
    """Keys that must be present and not null."""
    optional: tuple[str, ...] = ()
    """Keys that may be left out (or null); ``occurred_at`` is always optional."""


REQUEST_SHAPES: dict[str, RequestShape] = {
    "received": RequestShape("receive", ("sku", "quantity", "lot", "expires_on",
                                         "supplier_ref", "unit_cost")),
    "sold": RequestShape("sell", ("sku", "quantity", "unit_price", "transaction_ref")),
    "transfer_out": RequestShape("transfer_out", ("sku", "quantity", "destination",
                                                  "transfer_id", "expected_transit_hours")),
    "transfer_in": RequestShape("transfer_in", ("sku", "quantity", "source", "transfer_id",
                                                "lots", "causation_id")),
    "wasted": RequestShape("waste", ("sku", "quantity", "lot", "reason_code",
                                     "disposal_method")),
    "adjusted": RequestShape("adjust", ("sku", "lot", "counted_quantity"), ("expires_on",)),
    "counted": RequestShape("count", ("items",)),
    "item_updated": RequestShape("update_item", ("sku",), ITEM_FIELDS),
}

ENVELOPE_KEYS = ("occurred_at", "causation_id")
"""Request keys that land in the event envelope rather than its payload."""

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "id": (str,), "str": (str,), "date": (str,), "reason": (str,),
    "stock": (int,), "quantity": (int,), "count": (int,), "days": (int,),
    "money": (int, float), "hours": (int, float),
    "lots": (list,), "items": (list,),
}
_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", list: "a list"}


def field_name(key: str) -> str:
    """How errors name a request key: the contract's name for the same field."""
    return key if key in ENVELOPE_KEYS or key == "event_type" else f"payload.{key}"


def _check_type(key: str, value: Any) -> None:
    kinds = (str,) if key in ENVELOPE_KEYS else _JSON_TYPES[PAYLOAD_FIELDS[key].kind]
    if isinstance(value, bool) or not isinstance(value, kinds):
        wanted = _TYPE_NAMES[kinds[-1]]
        raise ContractError(field_name(key), value,
                            f"expected {wanted}, got {type(value).__name__}")


def parse_request(request: Any) -> tuple[RequestShape, dict[str, Any]]:
    """Split a request into its shape and the method's keyword arguments, or raise."""
    if not isinstance(request, dict):
        raise ContractError("body", request, "expected a JSON object")
    event_type = request.get("event_type")
    if not isinstance(event_type, str) or event_type not in REQUEST_SHAPES:
        raise ContractError("event_type", event_type,
                            f"expected one of {', '.join(REQUEST_SHAPES)}")
    shape = REQUEST_SHAPES[event_type]
    allowed = {"event_type", "occurred_at", *shape.required, *shape.optional}
    extra = sorted(set(request) - allowed)
    if extra:
        raise ContractError(extra[0], request[extra[0]],
                            f"not a key of {event_type} requests (expected "
                            f"{', '.join(sorted(allowed - {'event_type'}))})")
    for key in shape.required:
        if request.get(key) is None:
            raise ContractError(field_name(key), None, f"required for {event_type} requests")
    kwargs: dict[str, Any] = {}
    for key in (*shape.required, *shape.optional, "occurred_at"):
        value = request.get(key)
        if value is None:
            continue
        _check_type(key, value)
        kwargs[key] = value
    # Before the agent looks anything up: SQLite cannot bind 10**30 or a lone surrogate.
    check_values(kwargs, field_name)
    return shape, kwargs


OPERATOR_ACTIONS = frozenset({"adjusted"})
"""Request types that change the books by a person's word rather than a till's: they
need an authenticated operator, whose name the event records (``recorded_by``)."""


def record(agent: StoreAgent, request: Any, *, recorded_by: str | None = None
           ) -> dict[str, Any]:
    """Record one request as an event; returns the event as it entered the outbox.
    ``recorded_by`` (the authenticated operator) is added to operator actions only."""
    shape, kwargs = parse_request(request)
    if recorded_by is not None and request.get("event_type") in OPERATOR_ACTIONS:
        kwargs["recorded_by"] = recorded_by
    return getattr(agent, shape.method)(**kwargs)
