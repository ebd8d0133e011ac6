"""Who may connect to a regional broker, and which topics each user may touch.

Without this any client that reaches a broker can publish events under any store's
topic, and the lakehouse would count them. With it, every store signs in as its location
id and may publish only to its own ``events`` and ``heartbeat`` topics and read only its
own ``ack`` and transfer ``orders`` and the region's ingest status; the region's ingest
user reads every store's events and heartbeats (and the broker's own ``$SYS`` figures)
and writes their acks and its status; the
region's dispatcher user writes transfer orders and nothing else. Ingest and the
dispatcher have separate logins because mosquitto runs with ``use_username_as_clientid``:
two processes sharing one login would share one client id, and each connection would
throw the other off (ingest's persistent session with it).

Every login comes from ``credentials.json`` (:mod:`lakehouse.credentials`). The topic rules
are plain data (:class:`TopicRules`): mosquitto's ``acl_file`` is made from them, and
calling them answers the same question in Python.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lakehouse.contract import (
    TOPIC_ROOT,
    check_id,
    check_region,
    ingest_status_topic,
)
from lakehouse.credentials import (
    Credentials,
    Login,
    dispatcher_username,
    ingest_username,
    write_private,
)
from lakehouse.durable import fsync_dir

SYS_FILTER = "$SYS/broker/#"
"""The broker's own figures, which the region's ingest user alone may read
(:mod:`ingest.broker_health`). Defined here, not there: the store agent's install, which
has no pyarrow, imports these rules."""
Access = Literal["read", "write"]
Action = Literal["publish", "subscribe"]
_MOSQUITTO_PASSWD = Path("/usr/bin/mosquitto_passwd")
# mosquitto 2.x's own choice for `mosquitto_passwd` (sha512-pbkdf2, 101 rounds, 12-byte salt)
_PBKDF2_ROUNDS, _SALT_BYTES = 101, 12


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
                                      ("write", f"{base}/+/ack"),
                                      ("write", ingest_status_topic(region)),
                                      ("read", SYS_FILTER)),
            dispatcher_username(region): (("write", f"{base}/+/orders/+"),),
        }
        for loc in location_ids:
            check_id("location_id", loc)
            grants[loc] = (("write", f"{base}/{loc}/events"),
                           ("write", f"{base}/{loc}/heartbeat"),
                           ("read", f"{base}/{loc}/ack"),
                           ("read", f"{base}/{loc}/orders/+"),
                           ("read", ingest_status_topic(region)))
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

    @classmethod
    def of(cls, creds: Credentials, region: str) -> TopicRules:
        """The rules of a region's broker for everyone its credentials list."""
        return cls.for_region(region, creds.locations(region))

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
