"""The secure brokers' ``credentials.json``: every login and every store's signing key.

Passwords are generated once into ``credentials.json`` (mode 0600) next to the brokers'
data, and kept on later starts, so a store configured once keeps working. Each store also
gets a signing key there: ingest signs the store's acks and the dispatcher its orders with
it, and the agent refuses any it cannot verify (why a separate key and not one derived
from the password: :mod:`lakehouse.contract`, "acks and orders carry proof").

The brokers issue the file (:mod:`ingest.brokers`), ingest and the dispatcher read their
logins and the keys from it, and a simulated fleet adds its stores to it; what each login
may touch on a broker is :mod:`ingest.auth`.
"""

from __future__ import annotations

import json
import logging
import secrets
import stat
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lakehouse.contract import REGIONS, SIGNING_KEY_BYTES, check_id, check_region
from lakehouse.durable import replace_durably

log = logging.getLogger(__name__)

CREDENTIALS_FILE = "credentials.json"


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
