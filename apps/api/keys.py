"""API keys for the read API: which other systems may ask the lakehouse for stock.

A key is for a system (the web shop, a warehouse system), not a person, so it is a
random token rather than a password: ``<id>.<secret>``, 32 random bytes of secret. Only
the secret's SHA-256 is stored. A fast hash is right here because the secret is random
and long (nothing to guess), and the API checks it on every request; bcrypt would cost a
quarter of a second each time.

The file is JSON at ``<lakehouse>/_auth/api_keys.json`` unless ``--keys-file`` /
``$SHELFLIFE_API_KEYS_FILE`` says otherwise, mode 0600 in a 0700 folder, replaced
atomically under a lock. The server rereads it when it changes, so a removed key stops
working at once without a restart. No key ships: an empty or missing file lets nobody in.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from apps.auth.exceptions import UsersFileError
from lakehouse.durable import private_lock, replace_durably
from lakehouse.paths import lakehouse_root

ENV_KEYS_FILE = "SHELFLIFE_API_KEYS_FILE"
_NAME = re.compile(r"[a-z][a-z0-9._-]{0,63}")
_TOKEN = re.compile(r"([0-9a-f]{12})\.([A-Za-z0-9_-]{43})")
_FORMAT_VERSION = 1


def keys_file_path(keys_file: str | os.PathLike[str] | None = None,
                   lakehouse: str | os.PathLike[str] | None = None) -> Path:
    """``keys_file`` if given, else ``$SHELFLIFE_API_KEYS_FILE``, else
    ``<lakehouse>/_auth/api_keys.json`` (this machine's state folder for an S3 lakehouse)."""
    chosen = keys_file or os.environ.get(ENV_KEYS_FILE)
    if chosen:
        return Path(chosen).resolve()
    return lakehouse_root(lakehouse) / "_auth" / "api_keys.json"


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    """One system's key as stored: its name, the token's id and the secret's hash."""

    name: str
    key_id: str
    sha256: str
    created_at: str


class ApiKeysFile:
    """The keys file at ``path``: add, list and remove keys, and check a token."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._cache: tuple[tuple[int, int], dict[str, ApiKey]] | None = None
        self._cache_lock = threading.Lock()

    def keys(self) -> dict[str, ApiKey]:
        """Every key by name; empty when the file does not exist yet."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        try:
            entries = json.loads(text).get("keys", {})
            return {name: ApiKey(name=name, key_id=e["id"], sha256=e["sha256"],
                                 created_at=e.get("created_at", ""))
                    for name, e in entries.items()}
        except (ValueError, AttributeError, KeyError, TypeError) as exc:
            raise UsersFileError("api keys file", str(self.path),
                                 f"not a Shelflife keys file ({exc})") from exc

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        return private_lock(self.path)

    def _write(self, keys: dict[str, ApiKey]) -> None:
        body = {"version": _FORMAT_VERSION, "keys": {
            k.name: {"id": k.key_id, "sha256": k.sha256, "created_at": k.created_at}
            for k in sorted(keys.values(), key=lambda k: k.name)}}
        replace_durably(self.path, json.dumps(body, indent=2) + "\n", mode=0o600)

    def add(self, name: str, *, reset: bool = False) -> str:
        """A new key for system ``name``; returns the token, which is shown once and
        stored only as a hash. ``reset`` replaces an existing key (the old one stops
        working)."""
        if not _NAME.fullmatch(name or ""):
            raise UsersFileError("name", name, "expected 1-64 lower-case letters, digits, "
                                               "'.', '_' or '-', starting with a letter")
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        with self._locked():
            keys = self.keys()
            if name in keys and not reset:
                raise UsersFileError("name", name, "already has a key (use --reset to "
                                                   "replace it)")
            keys[name] = ApiKey(name=name, key_id=key_id, sha256=_digest(secret),
                                created_at=datetime.now(UTC).isoformat(timespec="seconds"))
            self._write(keys)
        return f"{key_id}.{secret}"

    def remove(self, name: str) -> None:
        with self._locked():
            keys = self.keys()
            if name not in keys:
                raise UsersFileError("name", name, "no such key")
            del keys[name]
            self._write(keys)

    def _by_id(self) -> dict[str, ApiKey]:
        """Keys by id, reread only when the file changes (every request checks a token)."""
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_ino)
        except FileNotFoundError:
            return {}
        with self._cache_lock:
            if self._cache is None or self._cache[0] != stamp:
                self._cache = (stamp, {k.key_id: k for k in self.keys().values()})
            return self._cache[1]

    def check(self, token: str) -> str | None:
        """The name of the system whose key ``token`` is, or None."""
        match = _TOKEN.fullmatch(token or "")
        if not match:
            return None
        key = self._by_id().get(match.group(1))
        if key is None:
            return None
        return key.name if hmac.compare_digest(_digest(match.group(2)), key.sha256) else None
