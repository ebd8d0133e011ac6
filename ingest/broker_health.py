"""Each regional broker's own figures into silver ``broker_health``, every 30 s.

A broker that is alive but unwell shows first in its own numbers: clients dropping off
(stores offline, or a firewall change), messages piling up in its store (a subscriber
that stopped taking them: ingest stalled, or a queue that grows toward
``max_queued_messages``). mosquitto publishes them under ``$SYS/broker/...`` every
``sys_interval`` seconds (10 by default), retained, so a subscriber hears the current
values at once. Each region's ingest already holds a connection to its broker, so it
subscribes to the few topics below and appends one row per ``every_s``; the broker's ACL
lets the region's ingest user, and no store, read ``$SYS/broker/#``.

A write that fails keeps its rows for the next one, and nothing here can stop landing.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lakehouse.catalogue import BROKER_HEALTH

from .auth import SYS_FILTER
from .heartbeats import AppendLog

log = logging.getLogger(__name__)

EVERY_S = 30.0
SYS_TOPICS = {
    "$SYS/broker/clients/connected": "connected_clients",
    "$SYS/broker/clients/disconnected": "disconnected_clients",
    "$SYS/broker/store/messages/count": "stored_messages",
    "$SYS/broker/store/messages/bytes": "stored_bytes",
    "$SYS/broker/load/messages/received/1min": "received_per_min",
    "$SYS/broker/load/messages/sent/1min": "sent_per_min",
    "$SYS/broker/uptime": "uptime_s",
}
"""mosquitto's ``$SYS`` topic -> ``broker_health`` column."""
_FLOATS = {"received_per_min", "sent_per_min"}


def sys_value(column: str, payload: bytes) -> float | int | None:
    """A ``$SYS`` payload as a number: ``"42"``, ``"3.57"`` or ``"1234 seconds"``."""
    try:
        text = payload.decode("ascii").split()[0]
        return float(text) if column in _FLOATS else int(float(text))
    except (UnicodeDecodeError, IndexError, ValueError):
        return None


class BrokerHealthLog(AppendLog):
    """The latest ``$SYS`` figures of one region's broker, appended every ``every_s``."""

    table = BROKER_HEALTH
    name = "broker-health"

    def __init__(self, region: str, root: Path, *, flush_every_s: float = EVERY_S) -> None:
        self._latest: dict[str, float | int] = {}
        self._heard = False
        super().__init__(region, root, flush_every_s=flush_every_s)

    @classmethod
    def attach(cls, client: Any, region: str, root: Path, **options: Any
               ) -> BrokerHealthLog:
        """A log fed by ``client``'s ``$SYS`` messages; the caller subscribes to
        :func:`subscriptions` on every connect."""
        health = cls(region, root, **options)
        client.message_callback_add(SYS_FILTER, health.on_message)
        return health

    @staticmethod
    def subscriptions() -> list[tuple[str, int]]:
        return [(topic, 0) for topic in SYS_TOPICS]

    def on_message(self, _client: Any, _userdata: Any, msg: Any) -> None:
        column = SYS_TOPICS.get(msg.topic)
        if column is None:
            return
        value = sys_value(column, bytes(msg.payload))
        if value is None:
            log.warning("broker-health %s: unreadable %s: %r", self.region, msg.topic,
                        bytes(msg.payload)[:40])
            return
        with self._lock:
            self._latest[column] = value
            self._heard = True

    def flush(self) -> int:
        """Turn what was heard since the last row into a row, then append it."""
        with self._lock:
            if self._heard:
                self._pending.append({"region": self.region,
                                      "at": datetime.now(UTC).replace(tzinfo=None),
                                      **self._latest})
                self._heard = False
        return super().flush()
