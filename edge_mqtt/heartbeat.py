"""The agent's heartbeat: what an operator needs to tell a quiet store from a dead one.

Published retained on ``shelflife/v1/{region}/{location}/heartbeat``, so whoever
subscribes later (a dashboard, ``agent_health``) sees every agent's last word at once.
The same topic carries the agent's MQTT will (``online: false``), so a store that drops
off the network, or whose process is killed, says so within one keep-alive.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from lakehouse.contract import ContractError, check_id, check_region, check_timestamp, parse_ts

HEARTBEAT_VERSION = 1


@dataclass(frozen=True)
class Heartbeat:
    """One heartbeat; ``None`` means the agent did not know (e.g. in its will)."""

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

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Heartbeat:
        """Parse and check a heartbeat off the wire; ContractError names what is wrong."""
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ContractError("heartbeat", raw[:80], "not UTF-8 JSON") from exc
        if not isinstance(data, dict):
            raise ContractError("heartbeat", data, "expected a JSON object")
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
