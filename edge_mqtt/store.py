"""The store's SQLite database: expiry cohorts, the outbox and the agent's counters.

One file per location, in WAL mode so the publisher can read the outbox while the till
keeps recording. Every recorded event changes stock and joins the outbox in a single
transaction, so a kill at any instant leaves both or neither.

What each step relies on:

* **Atomic event.** Stock, outbox row and ``next_seq`` change in one transaction
  (``BEGIN IMMEDIATE`` ... ``COMMIT``): after any crash the file holds the whole event or
  none of it, and never a seq without its outbox row.
* **Durable once answered (``synchronous=FULL``, the default).** In WAL mode SQLite
  fsyncs the WAL before ``COMMIT`` returns, so an event the caller was told about (HTTP
  201, CLI exit 0, a returned dict) survives a power cut, and so does every seq the
  publisher could have sent (it reads only committed rows). One commit costs one fsync.
* **``synchronous=NORMAL`` (only when asked for).** The WAL is fsynced only at
  checkpoints: a killed process loses nothing (the WAL is in the page cache, which the
  kernel still writes), but a power cut or kernel crash can roll back the last commits.
  Those events may already have been answered and published; the agent would then
  record new, different events under the same seqs, and ingest drops them as duplicates
  of what it already holds. The agent logs a warning when opened this way.
* **What a SIGKILL test shows.** Killing the process proves atomicity (no half event,
  no seq reuse) but says nothing about fsync: the kernel keeps unsynced writes after a
  process dies. Only a dropped page cache (power cut, LazyFS, dm-flakey) tests FULL.
* **Acks.** The outbox is trimmed only by :meth:`StoreDB.apply_ack`, which refuses an
  ack beyond the last recorded seq, so a forged or corrupt ack cannot delete events that
  never left.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)

Synchronous = Literal["NORMAL", "FULL"]
SYNCHRONOUS_MODES: tuple[str, ...] = ("FULL", "NORMAL")
DEFAULT_SYNCHRONOUS: Synchronous = "FULL"
"""Power-safe: a commit is on disk before the caller hears about it."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cohorts (
    sku TEXT NOT NULL,
    lot TEXT NOT NULL,
    expires_on TEXT,
    quantity INTEGER NOT NULL,
    PRIMARY KEY (sku, lot)
);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS items (
    sku TEXT PRIMARY KEY,
    fields TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS lot_holds (
    sku TEXT NOT NULL,
    lot TEXT NOT NULL,
    on_hold INTEGER NOT NULL,
    at TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (sku, lot)
);
CREATE TABLE IF NOT EXISTS transfer_orders (
    order_id TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    received_at TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    event_id TEXT
);
"""
ORDER_STATUSES = ("pending", "dispatched", "cancelled")


class StoreDB:
    """A thin, typed wrapper over one location's SQLite file."""

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: Synchronous = DEFAULT_SYNCHRONOUS,
    ) -> None:
        if synchronous not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous: expected FULL or NORMAL, got {synchronous!r}")
        self.path = Path(path)
        self.synchronous: Synchronous = synchronous
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves so a transaction
        # takes the write lock up front instead of failing half-way.
        self.conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                    timeout=30)
        self.conn.execute("PRAGMA journal_mode=WAL")
        # FULL: the WAL is fsynced at every commit (see the module docstring); NORMAL
        # survives a killed process but not a power cut.
        self.conn.execute(f"PRAGMA synchronous={synchronous}")
        self.conn.executescript(SCHEMA)
        self._counters: tuple[int, int, dict[str, int]] | None = None
        """(data_version, next_seq, clock) as this connection last read or wrote them;
        None once a rollback may have undone them."""

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.rollback()
            raise
        else:
            self.conn.execute("COMMIT")

    def rollback(self, savepoint: str | None = None) -> None:
        """Roll back the transaction (or to ``savepoint``), and forget the counters kept
        in memory, which may name a seq that no longer exists. Also after SQLite has
        rolled back on its own (a failed COMMIT), when only the forgetting is left to do."""
        self._counters = None
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK" if savepoint is None else f"ROLLBACK TO {savepoint}")

    # --- meta ------------------------------------------------------------------------

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def set_meta(self, key: str, value: Any) -> None:
        if key in ("next_seq", "clock"):
            self._counters = None
        self.conn.execute("INSERT INTO meta(key, value) VALUES (?, ?) "
                          "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                          (key, json.dumps(value)))

    def seq_and_clock(self) -> tuple[int, dict[str, int]]:
        """The next seq to record and the vector clock (the hot path: call it inside the
        recording transaction).

        What this connection wrote last is still true while ``PRAGMA data_version`` is
        unchanged, i.e. no other connection (a CLI beside ``agent serve``) has committed
        since; only then are the counters taken from memory instead of the meta table.
        """
        version = self.conn.execute("PRAGMA data_version").fetchone()[0]
        if self._counters is None or self._counters[0] != version:
            rows = dict(self.conn.execute("SELECT key, value FROM meta "
                                          "WHERE key IN ('next_seq', 'clock')").fetchall())
            seq = rows.get("next_seq")  # a JSON integer is its own decimal text
            self._counters = (version, 1 if seq is None else int(seq),
                              json.loads(rows["clock"]) if "clock" in rows else {})
        return self._counters[1], dict(self._counters[2])

    def advance(self, next_seq: int, clock: dict[str, int]) -> None:
        """Store the next seq and the clock after recording an event, in one statement."""
        self.conn.execute("INSERT INTO meta(key, value) VALUES ('next_seq', ?), ('clock', ?) "
                          "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                          (str(next_seq), json.dumps(clock)))
        if self._counters is not None:
            self._counters = (self._counters[0], next_seq, dict(clock))

    # --- cohorts ---------------------------------------------------------------------

    def on_hand(self, sku: str) -> int:
        row = self.conn.execute("SELECT COALESCE(SUM(quantity), 0) FROM cohorts WHERE sku = ?",
                                (sku,)).fetchone()
        return int(row[0])

    def cohorts(self, sku: str | None = None) -> list[dict[str, Any]]:
        """Cohorts first-expired-first (unallocated stock, with no expiry, last)."""
        sql = ("SELECT sku, lot, expires_on, quantity FROM cohorts {where} "
               "ORDER BY sku, expires_on IS NULL, expires_on, lot")
        if sku is None:
            rows = self.conn.execute(sql.format(where=""))
        else:
            rows = self.conn.execute(sql.format(where="WHERE sku = ?"), (sku,))
        return [dict(zip(("sku", "lot", "expires_on", "quantity"), r, strict=True))
                for r in rows]

    def lots_of(self, sku: str) -> list[tuple[str, str | None, int]]:
        """One SKU's ``(lot, expires_on, quantity)`` first-expired-first: its on-hand and
        a FEFO draw from one read, as plain rows (every sale takes this path)."""
        return self.conn.execute("SELECT lot, expires_on, quantity FROM cohorts WHERE sku = ? "
                                 "ORDER BY expires_on IS NULL, expires_on, lot",
                                 (sku,)).fetchall()

    def cohort(self, sku: str, lot: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT expires_on, quantity FROM cohorts "
                                "WHERE sku = ? AND lot = ?", (sku, lot)).fetchone()
        return None if row is None else {"expires_on": row[0], "quantity": row[1]}

    def add_to_cohort(self, sku: str, lot: str, expires_on: str | None, delta: int, *,
                      held: int | None = None) -> None:
        """Change one lot by ``delta``; a lot left at zero is removed.

        ``held`` is the lot's quantity as read in this same transaction, when the caller
        has it (a sale's FEFO draw): the row is then updated or deleted outright.
        """
        if held is not None:
            if held + delta == 0:
                self.conn.execute("DELETE FROM cohorts WHERE sku = ? AND lot = ?", (sku, lot))
            else:
                self.conn.execute("UPDATE cohorts SET quantity = ? WHERE sku = ? AND lot = ?",
                                  (held + delta, sku, lot))
            return
        (left,) = self.conn.execute(
            "INSERT INTO cohorts(sku, lot, expires_on, quantity) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(sku, lot) DO UPDATE SET quantity = quantity + excluded.quantity, "
            "expires_on = COALESCE(cohorts.expires_on, excluded.expires_on) "
            "RETURNING quantity", (sku, lot, expires_on, delta)).fetchone()
        if left == 0:
            self.conn.execute("DELETE FROM cohorts WHERE sku = ? AND lot = ?", (sku, lot))

    def replace_cohorts(self, items: list[dict[str, Any]]) -> None:
        self.conn.execute("DELETE FROM cohorts")
        self.conn.executemany(
            "INSERT INTO cohorts(sku, lot, expires_on, quantity) VALUES (?, ?, ?, ?)",
            [(i["sku"], i["lot"], i["expires_on"], i["quantity"]) for i in items
             if i["quantity"] != 0])

    def set_item(self, sku: str, fields: dict[str, Any]) -> None:
        row = self.conn.execute("SELECT fields FROM items WHERE sku = ?", (sku,)).fetchone()
        merged = {**(json.loads(row[0]) if row else {}), **fields}
        self.conn.execute("INSERT INTO items(sku, fields) VALUES (?, ?) ON CONFLICT(sku) "
                          "DO UPDATE SET fields = excluded.fields", (sku, json.dumps(merged)))

    # --- transfer orders -----------------------------------------------------------

    def add_order(self, order: dict[str, Any], received_at: str) -> bool:
        """Keep an order the first time it arrives, or again after it was cancelled if it
        was approved anew (a later ``approved_at``); False when it is already known.

        The same order arriving again after its cancellation is a replay of the withdrawn
        approval (anyone on an open broker may have recorded it, signature and all), so it
        stays cancelled."""
        cur = self.conn.execute(
            "INSERT INTO transfer_orders(order_id, body, received_at) VALUES (?, ?, ?) "
            "ON CONFLICT(order_id) DO UPDATE SET body = excluded.body, status = 'pending', "
            "received_at = excluded.received_at WHERE transfer_orders.status = 'cancelled' "
            "AND json_extract(excluded.body, '$.approved_at') > "
            "json_extract(transfer_orders.body, '$.approved_at')",
            (order["order_id"], json.dumps(order), received_at))
        return cur.rowcount == 1

    def cancel_order(self, order_id: str) -> bool:
        """Withdraw a pending order; False when it is unknown or already dispatched."""
        cur = self.conn.execute("UPDATE transfer_orders SET status = 'cancelled' "
                                "WHERE order_id = ? AND status = 'pending'", (order_id,))
        return cur.rowcount == 1

    def set_hold(self, hold: dict[str, Any]) -> bool:
        """Keep a lot's hold or release if it is newer than the one known (a replayed
        hold must not undo a later release); True when it changed something. A hold also
        withdraws the pending transfer orders that would ship the lot."""
        cur = self.conn.execute(
            "INSERT INTO lot_holds(sku, lot, on_hold, at, body) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(sku, lot) DO UPDATE SET on_hold = excluded.on_hold, "
            "at = excluded.at, body = excluded.body WHERE excluded.at > lot_holds.at",
            (hold["sku"], hold["lot"], int(hold["on_hold"]), hold["at"], json.dumps(hold)))
        if cur.rowcount == 1 and hold["on_hold"]:
            self.conn.execute(
                "UPDATE transfer_orders SET status = 'cancelled' WHERE status = 'pending' "
                "AND json_extract(body, '$.sku') = ? AND json_extract(body, '$.lot') = ?",
                (hold["sku"], hold["lot"]))
        return cur.rowcount == 1

    def holds(self) -> list[dict[str, Any]]:
        """Every lot's last hold message (on hold or released), newest first."""
        return [json.loads(body) for (body,) in self.conn.execute(
            "SELECT body FROM lot_holds ORDER BY at DESC, sku, lot")]

    def lots_on_hold(self) -> dict[str, frozenset[str]]:
        """SKU -> the lots of it on hold now."""
        out: dict[str, set[str]] = {}
        for sku, lot in self.conn.execute("SELECT sku, lot FROM lot_holds WHERE on_hold = 1"):
            out.setdefault(sku, set()).add(lot)
        return {sku: frozenset(lots) for sku, lots in out.items()}

    def order(self, order_id: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT body, received_at, status, event_id FROM "
                                "transfer_orders WHERE order_id = ?", (order_id,)).fetchone()
        return None if row is None else _order_row(row)

    def orders(self, status: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT body, received_at, status, event_id FROM transfer_orders"
        rows = (self.conn.execute(sql + " ORDER BY received_at, order_id") if status is None
                else self.conn.execute(sql + " WHERE status = ? ORDER BY received_at, "
                                       "order_id", (status,)))
        return [_order_row(r) for r in rows]

    def mark_dispatched(self, order_id: str, event_id: str) -> bool:
        """Mark a pending order shipped; False when it is not pending (any more)."""
        cur = self.conn.execute("UPDATE transfer_orders SET status = 'dispatched', "
                                "event_id = ? WHERE order_id = ? AND status = 'pending'",
                                (event_id, order_id))
        return cur.rowcount == 1

    # --- outbox ----------------------------------------------------------------------

    def append_outbox(self, seq: int, body: bytes) -> None:
        self.conn.execute("INSERT INTO outbox(seq, body) VALUES (?, ?)", (seq, body))

    def outbox_after(self, seq: int, limit: int) -> list[tuple[int, bytes]]:
        return self.conn.execute("SELECT seq, body FROM outbox WHERE seq > ? ORDER BY seq "
                                 "LIMIT ?", (seq, limit)).fetchall()

    def outbox_depth(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def last_seq(self) -> int:
        """Highest seq recorded in this file (0 before the first event)."""
        return int(self.get_meta("next_seq", 1)) - 1

    def apply_ack(self, acked_seq: int) -> bool:
        """Drop outbox entries the lakehouse holds durably; False when nothing new.

        The only place the outbox shrinks. An ack beyond the last recorded seq cannot
        come from ingest (it acks only what this file sent), so it is refused with
        :class:`AckRefused` and nothing is deleted.
        """
        with self.transaction():
            acked = self.get_meta("acked_seq", 0)
            if acked_seq <= acked:
                return False
            last = self.last_seq()
            if acked_seq > last:
                raise AckRefused(acked_seq, acked, last)
            self.conn.execute("DELETE FROM outbox WHERE seq <= ?", (acked_seq,))
            self.set_meta("acked_seq", acked_seq)
        return True


class AckRefused(ValueError):
    """An ack outside [acked seq, last seq]: it would trim events that never landed."""

    def __init__(self, acked_seq: int, acked: int, last: int) -> None:
        super().__init__(f"acked_seq {acked_seq} is beyond the last recorded seq {last} "
                         f"(acked so far: {acked}); nothing deleted")
        self.acked_seq, self.acked, self.last = acked_seq, acked, last


def warn_if_unsafe(synchronous: str, where: str | Path) -> None:
    """Say what NORMAL risks, once per opening, so nobody runs it by accident."""
    if synchronous == "NORMAL":
        log.warning("%s: SQLite synchronous=NORMAL: a power cut can roll back events "
                    "already answered and published; their seqs would be reused and "
                    "ingest would drop the new events as duplicates", where)


def _order_row(row: tuple[str, str, str, str | None]) -> dict[str, Any]:
    body, received_at, status, event_id = row
    return {**json.loads(body), "received_at": received_at, "status": status,
            "event_id": event_id}
