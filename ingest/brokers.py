"""The regional MQTT brokers: one per region (east, central, west).

Each region gets its own broker so a region replaying a long backlog never slows the
others. The brokers are mosquitto (``apt-get install mosquitto``; ``scripts/setup.sh``
installs it): it keeps sessions on disk across restarts, which is what lets a store's
events and ingest's unacknowledged messages survive a broker restart.

``shelflife broker`` (:func:`run_brokers_forever`) turns on sign-in and per-store topic
rules unless told ``--insecure``; the library's :func:`start_brokers` takes
``secure=True, locations={"east": ["s001", ...], ...}`` for the same:

* ``<data_dir>/credentials.json`` (mode 0600) gets one generated password per location and
  per region's ingest and dispatcher users, and a signing key per location, once; later
  starts keep them and add new locations. Give each
  store its own (``Credentials.credentials_for``) and each ingest worker its region's
  (``Credentials.ingest_credentials``). Locations already in the file need not be listed
  again.
* A store (username = its location id) may publish only to its own
  ``shelflife/v1/<region>/<location>/events`` and ``.../heartbeat`` and read only its own
  ``.../ack`` and ``.../orders/+``; ``ingest@<region>`` reads ``+/events`` and
  ``+/heartbeat`` and writes ``+/ack`` of its region; ``dispatcher@<region>`` writes
  ``+/orders/+`` (transfer orders) and nothing else. Anonymous clients are refused
  (``allow_anonymous false``).
* mosquitto gets ``<data_dir>/<region>/passwd`` (hashed with ``mosquitto_passwd -U``, mode
  0600) and ``<data_dir>/<region>/acl``, both rewritten at every start (:mod:`ingest.auth`).
* While :func:`run_brokers_forever` runs, a change to ``credentials.json`` (``shelflife
  simulate`` issuing its stores', an operator adding one) is applied within a second:
  the files are rewritten and mosquitto reloads them on SIGHUP, without dropping anyone.
* ``tls=TlsFiles(certfile, keyfile)`` makes every listener TLS-only, so passwords do not
  cross the network in clear; clients then need the CA (or the self-signed certificate).
"""

from __future__ import annotations

import logging
import os
import pwd  # the brokers run on Linux (mosquitto from Debian)
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ingest.auth import TopicRules, find_mosquitto_passwd, write_password_file
from lakehouse.contract import DEFAULT_PORTS, MAX_EVENT_BYTES, REGIONS, check_region
from lakehouse.credentials import CREDENTIALS_FILE, Credentials, write_private
from lakehouse.shutdown import set_on_signals

log = logging.getLogger(__name__)
_DEBIAN_MOSQUITTO = Path("/usr/sbin/mosquitto")

# A store offline for a day can queue tens of thousands of events for its region's ingest
# subscriber; mosquitto's default of 1,000 queued messages would silently drop the rest.
MAX_QUEUED_MESSAGES = 1_000_000
# mosquitto applies this to outgoing messages and, for MQTT 3.1.1 clients, as the limit on
# unacknowledged incoming QoS 1/2 messages: a publisher that pipelines more is disconnected.
MAX_INFLIGHT_MESSAGES = 1000


class BrokerError(RuntimeError):
    """A regional broker could not be started; the message says which and why."""


@dataclass(frozen=True)
class BrokerSpec:
    """Where one region's broker listens."""

    region: str
    host: str = "127.0.0.1"
    port: int = 0

    def __post_init__(self) -> None:
        check_region(self.region)
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not (
            1 <= self.port <= 65535
        ):
            raise ValueError(f"port: expected an integer 1-65535, got {self.port!r}")
        if not isinstance(self.host, str) or not self.host.strip():
            raise ValueError(f"host: expected a host name or address, got {self.host!r}")


@dataclass(frozen=True)
class TlsFiles:
    """A listener's certificate chain and private key (PEM files)."""

    certfile: Path
    keyfile: Path

    def __post_init__(self) -> None:
        for name in ("certfile", "keyfile"):
            path = Path(getattr(self, name)).resolve()
            if not path.is_file():
                raise ValueError(f"{name}: no such file {path}")
            object.__setattr__(self, name, path)


def mosquitto_config(spec: BrokerSpec, data_dir: Path, *, secure: bool = False,
                     tls: TlsFiles | None = None) -> str:
    """A mosquitto 2.x config keeping persistent sessions and a deep offline backlog.

    ``secure`` refuses anonymous clients and points at the region's ``passwd`` and ``acl``
    files (written by :func:`start_brokers`); ``tls`` makes the listener TLS-only.
    """
    region_dir = Path(data_dir).resolve() / spec.region
    lines = [
        f"# Shelflife regional broker: {spec.region}",
        f"listener {spec.port} {spec.host}",
    ]
    if tls is not None:
        lines += [f"certfile {tls.certfile}", f"keyfile {tls.keyfile}"]
    if secure:
        # use_username_as_clientid: mosquitto hands a persistent session to whoever
        # presents its client id, so a store saying "I am ingest's client id" would take
        # ingest's queued events (and kick it off); keyed by username it cannot.
        lines += ["allow_anonymous false",
                  f"password_file {region_dir / 'passwd'}",
                  f"acl_file {region_dir / 'acl'}",
                  "use_username_as_clientid true"]
    else:
        lines.append("allow_anonymous true")
    lines += [
        "persistence true",
        f"persistence_location {region_dir}/",
        "autosave_interval 5",
        f"max_queued_messages {MAX_QUEUED_MESSAGES}",
        "max_queued_bytes 0",
        f"max_inflight_messages {MAX_INFLIGHT_MESSAGES}",
        # A larger payload is no event (the contract's limit): mosquitto completes the
        # QoS flow and drops it, so a stranger cannot make every subscriber hold it.
        f"message_size_limit {MAX_EVENT_BYTES}",
        "queue_qos0_messages false",
        "persistent_client_expiration 14d",
        "set_tcp_nodelay true",
        # $SYS/broker/... every 10 s: ingest records clients and held messages from it.
        "sys_interval 10",
        f"log_dest file {region_dir / 'mosquitto.log'}",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        "connection_messages true",
        "log_timestamp true",
        "log_timestamp_format %Y-%m-%dT%H:%M:%S",
    ]
    if hasattr(os, "geteuid"):
        # Run as whoever started Shelflife: as root, mosquitto would otherwise switch to
        # the "mosquitto" user, which cannot write the persistence files under data_dir.
        lines.append(f"user {pwd.getpwuid(os.geteuid()).pw_name}")
    return "\n".join(lines) + "\n"


def find_mosquitto() -> str | None:
    """Path of the mosquitto binary, or None when it is not installed."""
    found = shutil.which("mosquitto")
    if found:
        return found
    return str(_DEBIAN_MOSQUITTO) if _DEBIAN_MOSQUITTO.exists() else None


def require_mosquitto() -> str:
    """Path of the mosquitto binary; a :class:`BrokerError` saying how to install it
    when it is missing."""
    binary = find_mosquitto()
    if binary is None:
        raise BrokerError("mosquitto is not installed: the regional brokers are mosquitto "
                          "(apt-get install mosquitto, or run scripts/setup.sh)")
    return binary


@dataclass
class RunningBroker:
    """A started mosquitto; ``stop()`` shuts it down (saving its sessions first)."""

    spec: BrokerSpec
    process: subprocess.Popen[bytes]
    log_path: Path
    secure: bool = False
    tls: bool = False
    _stopped: bool = field(default=False, repr=False)

    def stop(self, timeout: float = 10.0) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)


def _bind_problem(host: str, port: int) -> str | None:
    """Why mosquitto could not listen there (e.g. the port is in use), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _tail(*paths: Path, lines: int = 15) -> str:
    out = []
    for path in paths:
        if path.exists():
            text = path.read_text(errors="replace").strip().splitlines()[-lines:]
            if text:
                out.append(f"--- {path} ---\n" + "\n".join(text))
    return "\n".join(out) or "(no log output)"


def _start_mosquitto(binary: str, spec: BrokerSpec, data_dir: Path, timeout: float,
                     creds: Credentials | None, tls: TlsFiles | None) -> RunningBroker:
    region_dir = Path(data_dir).resolve() / spec.region
    region_dir.mkdir(parents=True, exist_ok=True)
    conf = region_dir / "mosquitto.conf"
    if creds is None and tls is None:
        conf.write_text(mosquitto_config(spec, data_dir))
    else:
        if creds is not None:
            _write_auth_files(region_dir, spec.region, creds)
        conf.write_text(mosquitto_config(spec, data_dir, secure=creds is not None, tls=tls))
    log_path, console = region_dir / "mosquitto.log", region_dir / "mosquitto.console.log"
    problem = _bind_problem(spec.host, spec.port)
    if problem is not None:
        raise BrokerError(f"region {spec.region}: cannot listen on {spec.host}:{spec.port} "
                          f"({problem}); stop what holds the port or choose another")
    with console.open("ab") as out:
        proc = subprocess.Popen([binary, "-c", str(conf)], stdout=out, stderr=out,
                                stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BrokerError(f"region {spec.region}: mosquitto exited with code "
                              f"{proc.returncode}\n{_tail(log_path, console)}")
        if _accepts(spec.host, spec.port):
            return RunningBroker(spec, proc, log_path, secure=creds is not None,
                                 tls=tls is not None)
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise BrokerError(f"region {spec.region}: mosquitto did not accept connections on "
                      f"{spec.host}:{spec.port} within {timeout:.0f} s\n"
                      f"{_tail(log_path, console)}")


def start_brokers(
    data_dir: Path,
    regions: Iterable[str] = REGIONS,
    *,
    ports: Mapping[str, int] = DEFAULT_PORTS,
    host: str = "127.0.0.1",
    timeout: float = 10.0,
    locations: Mapping[str, list[str]] | None = None,
    secure: bool = False,
    tls: TlsFiles | None = None,
) -> list[RunningBroker]:
    """Start one broker per region and return once every port accepts TCP connections.

    With ``secure`` only users in ``<data_dir>/credentials.json`` may connect, each to its
    own topics (module docstring); ``locations`` (``{region: [location ids]}``) adds
    stores to that file and is ignored otherwise.
    """
    specs = []
    for region in regions:
        if region not in ports:
            raise ValueError(f"ports: no port given for region {region!r}")
        specs.append(BrokerSpec(region, host, ports[region]))
    binary = require_mosquitto()
    creds = Credentials.open(credentials_path(data_dir), locations) if secure else None
    started: list[RunningBroker] = []
    try:
        for spec in specs:
            started.append(_start_mosquitto(binary, spec, data_dir, timeout, creds, tls))
    except BaseException:
        stop_brokers(started)
        raise
    return started


def credentials_path(data_dir: Path) -> Path:
    """Where the secure brokers keep every generated password."""
    return Path(data_dir).resolve() / CREDENTIALS_FILE


def _write_auth_files(region_dir: Path, region: str, creds: Credentials) -> None:
    write_password_file(region_dir / "passwd", creds.logins(region),
                        tool=find_mosquitto_passwd())
    write_private(region_dir / "acl", TopicRules.of(creds, region).mosquitto_acl())


def reload_credentials(brokers: Iterable[RunningBroker], data_dir: Path) -> Credentials:
    """Apply the current ``credentials.json`` to running secure brokers: new stores may
    connect, each to its own topics. mosquitto rereads its password and ACL files on
    SIGHUP. Connected clients stay connected."""
    creds = Credentials.open(credentials_path(data_dir), create=False)
    for b in brokers:
        if not b.secure:
            continue
        region = b.spec.region
        if b.process.poll() is None:
            _write_auth_files(Path(data_dir).resolve() / region, region, creds)
            b.process.send_signal(signal.SIGHUP)
    return creds


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_size


def stop_brokers(brokers: Iterable[RunningBroker]) -> None:
    """Stop every broker, newest first."""
    for broker in reversed(list(brokers)):
        broker.stop()


def run_brokers_forever(
    data_dir: Path,
    regions: Iterable[str] = REGIONS,
    *,
    ports: Mapping[str, int] = DEFAULT_PORTS,
    host: str = "127.0.0.1",
    locations: Mapping[str, list[str]] | None = None,
    secure: bool = True,
    tls: TlsFiles | None = None,
) -> None:
    """Start the brokers, print one line each, and keep them up until Ctrl-C or SIGTERM;
    secure ones take up changes to ``credentials.json`` as they happen."""
    if not secure:
        log.warning("INSECURE brokers: anyone who reaches them may publish events as any "
                    "store and read every store's acks and orders; agents without a "
                    "signing key trust whatever ack or order arrives. Use --insecure only "
                    "on a machine nobody else can reach.")
    brokers = start_brokers(data_dir, regions, ports=ports, host=host,
                            locations=locations, secure=secure, tls=tls)
    creds_file = credentials_path(data_dir)
    seen = _stamp(creds_file)
    done = threading.Event()
    previous = set_on_signals(done, (signal.SIGTERM,))[signal.SIGTERM]
    try:
        for b in brokers:
            notes = (" tls" if b.tls else "") + (" secure" if b.secure else "")
            print(f"{b.spec.region:<8} mosquitto  {b.spec.host}:{b.spec.port}{notes}",
                  flush=True)
        if secure:
            print(f"credentials: {credentials_path(data_dir)}", flush=True)
        while not done.wait(0.5):
            if secure and _stamp(creds_file) != seen:
                seen = _stamp(creds_file)
                try:
                    creds = reload_credentials(brokers, data_dir)
                except (OSError, ValueError, RuntimeError) as exc:
                    log.error("credentials: %s changed but could not be applied: %s",
                              creds_file, exc)
                else:
                    print("credentials: reloaded, "
                          + ", ".join(f"{b.spec.region} {len(creds.locations(b.spec.region))}"
                                      f" locations" for b in brokers), flush=True)
            dead = [b for b in brokers if b.process.poll() is not None]
            if dead:
                raise BrokerError(f"region {dead[0].spec.region}: mosquitto exited\n"
                                  f"{_tail(dead[0].log_path)}")
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop_brokers(brokers)
