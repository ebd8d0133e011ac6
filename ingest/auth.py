"""Who may connect to a regional broker, and which topics each user may touch.

Without this any client that reaches a broker can publish events under any store's
topic, and the lakehouse would count them. With it, every store signs in as its location
id and may publish only to its own ``events`` and ``heartbeat`` topics and read only its
own ``ack`` and transfer ``orders``; the region's ingest user reads every store's events
and heartbeats and writes their acks; the region's dispatcher user writes transfer orders
and nothing else. Ingest and the dispatcher have separate logins because mosquitto runs
with ``use_username_as_clientid``: two processes sharing one login would share one client
id, and each connection would throw the other off (ingest's persistent session with it).

Passwords are generated once into ``credentials.json`` (mode 0600) next to the brokers'
data, and kept on later starts, so a store configured once keeps working. Each store also
gets a signing key there: ingest signs the store's acks and the dispatcher its orders with
it, and the agent refuses any it cannot verify (why a separate key and not one derived
from the password: :mod:`lakehouse.contract`, "acks and orders carry proof"). The topic rules
are plain data (:class:`TopicRules`): mosquitto's ``acl_file`` is made from them, and
calling them answers the same question in Python.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
import stat
import subprocess
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lakehouse.contract import (
    REGIONS,
    SIGNING_KEY_BYTES,
    TOPIC_ROOT,
    check_id,
    check_region,
)
from lakehouse.durable import fsync_dir, replace_durably

log = logging.getLogger(__name__)

CREDENTIALS_FILE = "credentials.json"
Access = Literal["read", "write"]
Action = Literal["publish", "subscribe"]
_MOSQUITTO_PASSWD = Path("/usr/bin/mosquitto_passwd")
# mosquitto 2.x's own choice for `mosquitto_passwd` (sha512-pbkdf2, 101 rounds, 12-byte salt)
_PBKDF2_ROUNDS, _SALT_BYTES = 101, 12


def ingest_username(region: str) -> str:
    """The ingest user of a region; the '@' keeps it apart from every valid location id."""
    return f"ingest@{check_region(region)}"


def dispatcher_username(region: str) -> str:
    """The user that sends a region's transfer orders (``shelflife transfers dispatch``)."""
    return f"dispatcher@{check_region(region)}"


@dataclass(frozen=True)
class Login:
    """A username and password; the password stays out of reprs and logs."""

    username: str
    password: str = field(repr=False)


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` atomically and durably with a file only its owner can read."""
    replace_durably(path, text, mode=0o600)


class CredentialsMissing(FileNotFoundError):
    """No credentials file where a client expected the secure brokers' one."""


class Credentials:
    """One generated password per location and per region's ingest and dispatcher users,
    and one signing key per location, kept on disk.

    ``Credentials.open(path, locations)`` loads the file, adds a password and key for any
    location or region it does not know yet, and writes it back; existing ones never
    change.
    """

    def __init__(self, path: Path, ingest: dict[str, str],
                 locations: dict[str, tuple[str, str]],
                 dispatcher: dict[str, str] | None = None,
                 keys: dict[str, str] | None = None) -> None:
        self.path = Path(path)
        self._ingest = ingest
        self._dispatcher = dispatcher or {}
        self._locations = locations  # location id -> (region, password)
        self._keys = keys or {}  # location id -> signing key (hex)

    @classmethod
    def open(cls, path: Path, locations: Mapping[str, Iterable[str]] | None = None, *,
             create: bool = True) -> Credentials:
        """Load (or create) the store, adding the given ``{region: [location ids]}``.

        Clients pass ``create=False``: a file they would create holds passwords no broker
        knows, so a missing one raises :class:`CredentialsMissing` saying what to do.
        """
        path = Path(path)
        ingest: dict[str, str] = {}
        dispatcher: dict[str, str] = {}
        known: dict[str, tuple[str, str]] = {}
        keys: dict[str, str] = {}
        if path.exists():
            ingest, dispatcher, known, keys = cls._read(path)
        elif not create:
            raise CredentialsMissing(
                f"{path}: no credentials file; start `shelflife broker` (it issues them "
                "into <data-dir>/credentials.json), point --credentials at its file, or "
                "pass --insecure for an open broker")
        changed = not path.exists()
        for users in (ingest, dispatcher):  # a file from before the dispatcher gets one
            for region in REGIONS:
                if region not in users:
                    users[region] = secrets.token_urlsafe(24)
                    changed = True
        for region, ids in (locations or {}).items():
            check_region(region)
            for location_id in ids:
                check_id("location_id", location_id)
                if location_id not in known:
                    known[location_id] = (region, secrets.token_urlsafe(24))
                    changed = True
                elif known[location_id][0] != region:
                    raise ValueError(
                        f"location {location_id!r}: listed in region {region!r} but "
                        f"{path} has it in {known[location_id][0]!r}; a store belongs to "
                        "one region (remove it from the file to move it)")
        for location_id in known:  # a file from before signed acks gets keys
            if location_id not in keys:
                keys[location_id] = secrets.token_hex(SIGNING_KEY_BYTES)
                changed = True
        creds = cls(path, ingest, known, dispatcher, keys)
        if changed:
            path.parent.mkdir(parents=True, exist_ok=True)
            creds._write()
        return creds

    @staticmethod
    def _read(path: Path) -> tuple[dict[str, str], dict[str, str],
                                   dict[str, tuple[str, str]], dict[str, str]]:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            log.warning("%s was readable by others (mode %o); restricting it to 0600",
                        path, mode)
            path.chmod(0o600)
        try:
            data = json.loads(path.read_text())
            ingest = {check_region(r): str(pw) for r, pw in data["ingest"].items()}
            dispatcher = {check_region(r): str(pw)
                          for r, pw in data.get("dispatcher", {}).items()}
            known = {check_id("location_id", loc): (check_region(v["region"]),
                                                     str(v["password"]))
                     for loc, v in data["locations"].items()}
            keys = {loc: bytes.fromhex(v["signing_key"]).hex()
                    for loc, v in data["locations"].items() if "signing_key" in v}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{path}: not a Shelflife credentials file ({exc}); "
                             "restore it from backup or delete it to issue new "
                             "passwords to every store") from exc
        return ingest, dispatcher, known, keys

    def _write(self) -> None:
        data = {
            "version": 1,
            "ingest": dict(sorted(self._ingest.items())),
            "dispatcher": dict(sorted(self._dispatcher.items())),
            "locations": {loc: {"region": region, "password": pw,
                                "signing_key": self._keys[loc]}
                          for loc, (region, pw) in sorted(self._locations.items())},
        }
        write_private(self.path, json.dumps(data, indent=2) + "\n")

    def credentials_for(self, location_id: str) -> Login:
        """The login of one store's agent (its username is its location id)."""
        if location_id not in self._locations:
            raise KeyError(f"location {location_id!r}: no credentials in {self.path}; "
                           "list it in `locations` when starting the brokers")
        return Login(location_id, self._locations[location_id][1])

    def signing_key(self, location_id: str) -> bytes:
        """The key ingest signs this store's acks with and the dispatcher its orders; the
        store's agent verifies them with it (``SHELFLIFE_AGENT_KEY``, hex)."""
        if location_id not in self._keys:
            raise KeyError(f"location {location_id!r}: no signing key in {self.path}")
        return bytes.fromhex(self._keys[location_id])

    def ingest_credentials(self, region: str) -> Login:
        """The login of a region's ingest workers."""
        return Login(ingest_username(region), self._ingest[check_region(region)])

    def dispatcher_credentials(self, region: str) -> Login:
        """The login of a region's order dispatcher (``transfers dispatch``)."""
        return Login(dispatcher_username(region), self._dispatcher[check_region(region)])

    def region_of(self, location_id: str) -> str:
        return self._locations[location_id][0]

    def locations(self, region: str) -> list[str]:
        """Location ids of one region, sorted."""
        return sorted(loc for loc, (r, _) in self._locations.items() if r == region)

    def logins(self, region: str) -> list[Login]:
        """Everyone allowed on that region's broker: its ingest and dispatcher users,
        then its stores."""
        return [self.ingest_credentials(region), self.dispatcher_credentials(region),
                *(self.credentials_for(loc) for loc in self.locations(region))]

    def rules(self, region: str) -> TopicRules:
        return TopicRules.for_region(region, self.locations(region))


class SigningKeys:
    """Every store's signing key from a credentials file, for ingest and the dispatcher.

    Stores are added while ingest runs (a simulator or an operator issues credentials and
    the broker picks them up), so a location not known yet makes it read the file again
    when the file has changed since; there is no need to restart ingest for a new store.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._creds = self._load()

    def _load(self) -> Credentials:
        st = self.path.stat() if self.path.exists() else None
        creds = Credentials.open(self.path, create=False)
        self._stamp = (st.st_mtime_ns, st.st_size) if st else None
        return creds

    def key_for(self, location_id: str) -> bytes | None:
        """The store's key, or None when the file does not list the location."""
        with self._lock:
            try:
                return self._creds.signing_key(location_id)
            except KeyError:
                pass
            st = self.path.stat()
            if (st.st_mtime_ns, st.st_size) == self._stamp:
                return None
            self._creds = self._load()
            try:
                return self._creds.signing_key(location_id)
            except KeyError:
                return None


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


def covers(rule_levels: list[str], filter_levels: list[str]) -> bool:
    """Whether every topic a subscription filter can match is also matched by a rule."""
    for i, rule in enumerate(rule_levels):
        if rule == "#":
            return True
        if i >= len(filter_levels) or filter_levels[i] == "#":
            return False
        if rule != "+" and filter_levels[i] != rule:
            return False
    return len(filter_levels) == len(rule_levels)


@dataclass(frozen=True)
class TopicRules:
    """The topic filters each user may read (subscribe to) or write (publish to).

    A user not listed may do nothing. :meth:`mosquitto_acl` is the rules as mosquitto's
    ``acl_file``; calling the object applies them as mosquitto does, in Python.
    """

    grants: Mapping[str, tuple[tuple[Access, str], ...]]
    _split: dict[str, list[tuple[Access, list[str]]]] = field(
        init=False, repr=False, compare=False)

    @classmethod
    def for_region(cls, region: str, location_ids: Iterable[str]) -> TopicRules:
        base = f"{TOPIC_ROOT}/{check_region(region)}"
        grants: dict[str, tuple[tuple[Access, str], ...]] = {
            ingest_username(region): (("read", f"{base}/+/events"),
                                      ("read", f"{base}/+/heartbeat"),
                                      ("write", f"{base}/+/ack")),
            dispatcher_username(region): (("write", f"{base}/+/orders/+"),),
        }
        for loc in location_ids:
            check_id("location_id", loc)
            grants[loc] = (("write", f"{base}/{loc}/events"),
                           ("write", f"{base}/{loc}/heartbeat"),
                           ("read", f"{base}/{loc}/ack"),
                           ("read", f"{base}/{loc}/orders/+"))
        return cls(grants)

    def __post_init__(self) -> None:
        split = {user: [(access, f.split("/")) for access, f in rules]
                 for user, rules in self.grants.items()}
        object.__setattr__(self, "_split", split)  # frozen: set once, here

    def __call__(self, username: str | None, action: Action, topic: str) -> bool:
        """May ``username`` publish to this topic, or subscribe to this filter?"""
        rules = self._split.get(username or "")
        if not rules:
            return False
        levels = topic.split("/")
        if action == "publish":
            return any(a == "write" and matches(r, levels) for a, r in rules)
        return any(a == "read" and covers(r, levels) for a, r in rules)

    def mosquitto_acl(self) -> str:
        """mosquitto ``acl_file`` text: one ``user`` block per user."""
        lines = ["# Shelflife topic rules (generated from credentials.json at each start)"]
        for user, rules in self.grants.items():
            lines += ["", f"user {user}", *(f"topic {a} {f}" for a, f in rules)]
        return "\n".join(lines) + "\n"


def find_mosquitto_passwd() -> str | None:
    found = shutil.which("mosquitto_passwd")
    if found:
        return found
    return str(_MOSQUITTO_PASSWD) if _MOSQUITTO_PASSWD.exists() else None


def mosquitto_hash(password: str) -> str:
    """The ``$7$`` (sha512-pbkdf2) hash ``mosquitto_passwd`` writes, for where it is absent."""
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, _PBKDF2_ROUNDS)
    b64 = base64.b64encode
    return f"$7${_PBKDF2_ROUNDS}${b64(salt).decode()}${b64(digest).decode()}"


def write_password_file(path: Path, logins: Iterable[Login], *,
                        tool: str | None = None) -> None:
    """mosquitto's ``password_file``: salted hashes only, readable by its owner alone.

    ``mosquitto_passwd -U`` hashes it in place when ``tool`` is given; the plain text
    exists only in a 0600 file that is replaced before mosquitto reads it.
    """
    path = Path(path)
    logins = list(logins)
    for login in logins:
        if ":" in login.username or "\n" in login.username + login.password:
            raise ValueError(f"username {login.username!r}: ':' and newlines cannot be "
                             "stored in a mosquitto password file")
    if tool is None:
        write_private(path, "".join(f"{x.username}:{mosquitto_hash(x.password)}\n"
                                    for x in logins))
        return
    staging = path.with_name(f".{path.name}.plain")
    write_private(staging, "".join(f"{x.username}:{x.password}\n" for x in logins))
    try:
        done = subprocess.run([tool, "-U", str(staging)], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} -U {staging} failed (exit {done.returncode}): "
                               f"{(done.stderr or done.stdout).strip()}")
        staging.chmod(0o600)
        os.replace(staging, path)
        fsync_dir(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            staging.unlink()
