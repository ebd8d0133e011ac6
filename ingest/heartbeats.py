"""Store heartbeats into silver ``store_heartbeats``, so the dashboard can say which
stores are offline, since when, how deep their outbox is and which agent they run.

Each region's worker subscribes to ``shelflife/v1/<region>/+/heartbeat`` at QoS 0 and
hands every message to a :class:`HeartbeatLog`, which appends the batch with delta-rs
every few seconds (300 stores beating every 30 s is ten rows a second: one commit per
batch, not per row). QoS 0 on purpose: a heartbeat is the latest word of a store, the
next one follows in 30 s, and at QoS 0 it never occupies a slot of the in-flight window
the events' acknowledgements depend on (the worker acknowledges by hand). Heartbeats are
retained, so a worker that (re)subscribes hears every store's last one at once.

A heartbeat that breaks the contract is logged and counted, never written; a write that
fails keeps its rows for the next attempt (bounded, oldest dropped first), because a
lost heartbeat is made good by the next one and must never stop event landing. One
small file per commit piles up (720 an hour per region); ``shelflife maintain``
(:mod:`lakehouse.maintenance`) merges them. The worker does not compact the table
itself: delta-rs commits two compactions of the same files made at once (each rewrites
them, both commits pass its conflict check), which doubles every row they hold, so a
table has one compactor.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import DeltaError

from lakehouse.catalogue import STORE_HEARTBEATS
from lakehouse.contract import TOPIC_ROOT, ContractError, Heartbeat, parse_topic, parse_ts
from lakehouse.logtidy import HOOKS, LogTidy
from lakehouse.storage import delta_options, ensure_parent

log = logging.getLogger(__name__)

FLUSH_EVERY_S = 5.0
MAX_PENDING = 50_000
"""Rows kept while writes fail (over an hour of a 300-store region); then oldest go."""


def heartbeat_filter(region: str) -> str:
    """The topic filter for every store's heartbeat in ``region``."""
    return f"{TOPIC_ROOT}/{region}/+/heartbeat"


def heartbeat_row(topic_name: str, payload: bytes, received_at: datetime) -> dict[str, Any]:
    """One heartbeat as a ``store_heartbeats`` row; ContractError when the payload breaks
    the contract or names another store or region than its topic."""
    region, location_id, _ = parse_topic(topic_name)
    beat = Heartbeat.from_json(payload)
    if (beat.region, beat.location_id) != (region, location_id):
        raise ContractError("heartbeat", f"{beat.region}/{beat.location_id}",
                            f"does not match its topic {topic_name}")
    return {"region": region, "location_id": location_id,
            "agent_version": beat.agent_version, "online": beat.online,
            "local_time": parse_ts(beat.local_time), "received_at": received_at,
            "outbox_depth": beat.outbox_depth, "last_seq": beat.last_seq,
            "last_acked_seq": beat.last_acked_seq,
            "refused_messages": beat.refused_messages,
            "clock_skew_hint_s": beat.clock_skew_hint_s,
            "heartbeat_version": beat.heartbeat_version,
            "holds": None if beat.holds is None else ",".join(beat.holds)}


class AppendLog:
    """Rows buffered in memory and appended to one table every few seconds, one commit
    per write; rows of a failed write are kept (bounded) for the next."""

    table = STORE_HEARTBEATS
    name = "heartbeats"

    def __init__(self, region: str, root: Path, *, flush_every_s: float = FLUSH_EVERY_S
                 ) -> None:
        if not flush_every_s > 0:
            raise ValueError(f"flush_every_s: must be > 0, got {flush_every_s!r}")
        self.commits = 0
        self.region = region
        self.path = self.table.uri(root)
        self._options = delta_options(self.path)
        self._table: DeltaTable | None = None
        """Kept open between appends: opening by path replays the table's log each time,
        which on S3 is a LIST and a GET per commit since the last checkpoint."""
        self._tidy = LogTidy(self.path)
        self.flush_every_s = flush_every_s
        self.written = 0
        self.refused = 0
        self._pending: deque[dict[str, Any]] = deque(maxlen=MAX_PENDING)
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"{self.name}-{region}")
        self._thread.start()

    def flush(self) -> int:
        """Append what is buffered as one commit; how many rows were written."""
        with self._write_lock:
            with self._lock:
                rows = list(self._pending)
                self._pending.clear()
            if not rows:
                return 0
            try:
                ensure_parent(self.path)
                data = pa.Table.from_pylist(rows, schema=self.table.schema)
                if self._table is None:  # the first write creates the table if need be
                    # merge: a table written before a column was added (heartbeats'
                    # ``holds``) takes it on, older rows reading null
                    write_deltalake(self.path, data, mode="append", schema_mode="merge",
                                    partition_by=list(self.table.partitions),
                                    configuration=dict(self.table.properties),
                                    storage_options=self._options)
                    self._table = DeltaTable(self.path, storage_options=self._options)
                else:
                    write_deltalake(self._table, data, mode="append", schema_mode="merge",
                                    post_commithook_properties=HOOKS)
                    self._tidy.committed(self._table)
            except (DeltaError, OSError) as exc:
                self._table = None  # reopened from the log on the next attempt
                with self._lock:  # keep them, older first, for the next attempt
                    self._pending.extendleft(reversed(rows))
                log.warning("%s %s: could not write %d rows to %s (%s); retrying",
                            self.name, self.region, len(rows), self.path, exc)
                return 0
            self.written += len(rows)
            self.commits += 1
            return len(rows)

    def close(self) -> None:
        """Stop the timer and write what is left."""
        self._stop.set()
        self._thread.join(timeout=10)
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_every_s):
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - this log must never stop the worker
                log.exception("%s %s: write failed", self.name, self.region)


class HeartbeatLog(AppendLog):
    """Buffers one region's heartbeats and appends them to the table every few seconds."""

    @classmethod
    def attach(cls, client: Any, region: str, root: Path, **options: Any) -> HeartbeatLog:
        """A log fed by ``client``'s heartbeat messages (paho routes them here and not to
        its ``on_message``); the caller still subscribes to :func:`heartbeat_filter`."""
        beats = cls(region, root, **options)
        client.message_callback_add(heartbeat_filter(region), beats.on_message)
        return beats

    def on_message(self, _client: Any, _userdata: Any, msg: Any) -> None:
        """paho callback: parse now (a bad heartbeat is named in the log), write later."""
        self.add(msg.topic, bytes(msg.payload))

    def add(self, topic_name: str, payload: bytes) -> None:
        """Keep one heartbeat for the next write."""
        try:
            row = heartbeat_row(topic_name, payload, datetime.now(UTC))
        except (ContractError, ValueError) as exc:
            self.refused += 1
            log.warning("heartbeats %s: refused a heartbeat on %s: %s", self.region,
                        topic_name, exc)
            return
        with self._lock:
            self._pending.append(row)
