"""The store's operators: who may adjust stock or ship a transfer order over HTTP.

A till posting a sale needs no login (it runs on the store's own loopback), but an
adjustment rewrites what the books say is on the shelf and a shipment sends goods away:
the agent's HTTP API accepts those only with HTTP Basic credentials of an operator kept
here, and the event records the operator's name in ``recorded_by``. No operator exists
until one is added (``shelflife agent operators add NAME``); there is no default password.

Passwords are hashed with scrypt from the standard library (the agent runs with no
dependency beyond paho), each with its own random salt, and compared in constant time.
They live in the agent's own SQLite file, in a table of their own.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import sqlite3
import threading
from pathlib import Path

from lakehouse.contract import ContractError, check_id

MIN_PASSWORD = 12
_N, _R, _P = 2**14, 8, 1
"""scrypt cost: about 50 ms and 16 MiB a check, cheap for a person, dear for a guesser."""


class Operators:
    """Operators of one agent database (``operators`` table)."""

    def __init__(self, db_path: str | Path) -> None:
        self.path = Path(db_path)
        self.conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("CREATE TABLE IF NOT EXISTS operators (name TEXT PRIMARY KEY, "
                          "salt BLOB NOT NULL, hash BLOB NOT NULL, created_at TEXT NOT NULL "
                          "DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))")
        self.conn.commit()
        self._lock = threading.Lock()  # one connection, many HTTP handler threads

    def close(self) -> None:
        self.conn.close()

    def add(self, name: str, password: str, *, reset: bool = False) -> None:
        """Add an operator (or, with ``reset``, give an existing one a new password)."""
        check_id("operator", name)
        if not isinstance(password, str) or len(password) < MIN_PASSWORD:
            raise ContractError("password", "(hidden)",
                                f"must be at least {MIN_PASSWORD} characters")
        exists = self.conn.execute("SELECT 1 FROM operators WHERE name = ?",
                                   (name,)).fetchone()
        if exists and not reset:
            raise ContractError("operator", name, "already exists (use --reset)")
        salt = os.urandom(16)
        with self.conn:
            self.conn.execute("INSERT OR REPLACE INTO operators (name, salt, hash) "
                              "VALUES (?, ?, ?)", (name, salt, _hash(password, salt)))

    def remove(self, name: str) -> bool:
        with self.conn:
            return self.conn.execute("DELETE FROM operators WHERE name = ?",
                                     (name,)).rowcount > 0

    def names(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT name FROM operators ORDER BY name")]

    def verify(self, name: str, password: str) -> bool:
        """True for a known operator with that password (constant-time comparison; an
        unknown name costs the same hash, so timing does not tell names apart)."""
        with self._lock:
            row = self.conn.execute("SELECT salt, hash FROM operators WHERE name = ?",
                                    (name,)).fetchone()
        salt, want = row if row else (b"\0" * 16, b"")
        got = _hash(password, salt)
        return row is not None and hmac.compare_digest(got, want)


def _hash(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(password.encode("utf-8", "surrogatepass"), salt=salt, n=_N, r=_R,
                          p=_P, dklen=32)
