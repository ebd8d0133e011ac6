"""``shelflife demo``: every component as its own process, on default settings.

brokers -> ingest -> streaming -> dashboard -> batch decisions (forecasts half-hourly,
transfers and reorders every 5 minutes) -> table upkeep (``maintain``, every 10 minutes)
-> approved transfers sent down to the stores (``transfers dispatch``), then the
simulated fleet once the brokers answer; its stores ship the transfers they are sent.
Output of each process is prefixed with its name; Ctrl-C stops them all.

No operator ships with Shelflife: on a lakehouse whose users file is empty the demo adds
one approver, ``demo``, with a random password, and prints it once next to the dashboard
URL (``shelflife users add NAME`` adds more; ``--reset`` replaces a forgotten password).

Secure unless ``--insecure``: before anything starts, the demo issues a login and a
signing key for every simulated location into ``<data-dir>/brokers/credentials.json``
(the brokers' own file), so the brokers accept the fleet from the first second; ingest,
the dispatcher and the fleet all log in from that file, and acks and orders are signed.

The demo is also ingest's supervisor: ingest exits non-zero when it cannot land events
for a while (``--give-up-after-s``), expecting a fresh process, so an ingest that exits is
started again (and the demo says so); the broker's persistent session and the agents'
outboxes hold what it had not landed. Any other process exiting stops the demo.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from apps.api.keys import ApiKeysFile, keys_file_path
from apps.auth.users import UsersFile, users_file_path
from apps.streamlit.launch import dashboard_command
from edge_mqtt.simulator import FleetConfig, fleet_layout
from ingest.brokers import BrokerError, credentials_path, require_mosquitto
from lakehouse.credentials import Credentials
from lakehouse.shutdown import stop_event
from lakehouse.storage import StorageError, check_bucket, lake_url

COMPONENT_START_TIMEOUT_S = 60
RESTARTED = frozenset({"ingest"})
"""Components the demo starts again when they exit."""
RESTART_DELAY_S = 2.0
MAX_RESTARTS = 5
RESTART_WINDOW_S = 300.0
"""More than MAX_RESTARTS within this window is a crash loop: the demo stops instead."""


MAINTAIN_EVERY_S = 600
"""The demo's tables are compacted and vacuumed every 10 minutes, so an afternoon's run
stays small (a deployment keeps ``shelflife maintain``'s hourly default)."""

DEMO_USER = "demo"


def ensure_demo_user(users: UsersFile) -> str | None:
    """Add the approver ``demo`` with a fresh random password when the file has no users;
    that password (to print once), or None when operators exist already."""
    if users.users():
        return None
    password = secrets.token_urlsafe(15)  # 20 characters, about 120 random bits
    users.add(DEMO_USER, password, "approver")
    return password


API_PORT = 8600


def ensure_demo_key(keys: ApiKeysFile) -> str | None:
    """A read-API key for ``demo`` when the keys file has none; its token (to print once),
    or None when keys exist already."""
    if keys.keys():
        return None
    return keys.add(DEMO_USER)


def _api_banner(keys: ApiKeysFile, token: str | None) -> str:
    where = f"http://127.0.0.1:{API_PORT}"
    if token is None:
        return (f"  read API: {where}/docs (keys in {keys.path}; "
                "`shelflife api-keys add NAME` for another)\n")
    return (f"  read API: {where}/docs, e.g.\n"
            f"    curl -H 'Authorization: Bearer {token}' "
            f"'{where}/v1/availability?location_id=E-S001'\n"
            "    (the key is shown only now)\n")


def _login_banner(users: UsersFile, password: str | None) -> str:
    if password is None:
        return (f"  sign in as an operator from {users.path} (`shelflife users list`; "
                "`shelflife users add NAME` for more)\n")
    return (f"  sign in as {DEMO_USER} / {password}  (shown only now; it approves transfers "
            f"from the CLI too: --user {DEMO_USER})\n  operators: {users.path}\n")


def _pipe(name: str, proc: subprocess.Popen) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write(f"[{name}] {line}")
        sys.stdout.flush()


def _wait_port(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.2)
    return False


class Restarts:
    """When a restarted component last exited, to tell a restart from a crash loop."""

    def __init__(self) -> None:
        self._times: dict[str, list[float]] = {}

    def allow(self, name: str, now: float) -> bool:
        recent = [t for t in self._times.get(name, []) if now - t < RESTART_WINDOW_S]
        recent.append(now)
        self._times[name] = recent
        return len(recent) <= MAX_RESTARTS


def _start(name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    threading.Thread(target=_pipe, args=(name, proc), daemon=True).start()
    return proc


def supervise(procs: list[tuple[str, subprocess.Popen]], commands: dict[str, list[str]],
              env: dict[str, str], stop: threading.Event, *,
              restarted: frozenset[str] = RESTARTED, delay_s: float = RESTART_DELAY_S) -> int:
    """Watch the children until ``stop``: start a ``restarted`` one again when it exits
    (saying so), return 1 when any other exits or a restarted one crash-loops."""
    restarts = Restarts()
    while not stop.wait(1.0):
        for i, (name, proc) in enumerate(procs):
            if proc.poll() is None:
                continue
            if name in restarted and restarts.allow(name, time.monotonic()):
                print(f"demo: {name} exited with {proc.returncode}; restarting it in "
                      f"{delay_s:g} s (what it had not landed is sent again)", flush=True)
                if stop.wait(delay_s):
                    return 0
                procs[i] = (name, _start(name, commands[name], env))
                print(f"demo: {name} restarted (pid {procs[i][1].pid})", flush=True)
                continue
            print(f"demo: {name} exited with {proc.returncode}; stopping", flush=True)
            return 1
    return 0


def issue_fleet_credentials(brokers_dir: Path, stores: int) -> Path:
    """Logins and signing keys for every location the demo's fleet simulates, in the
    brokers' ``credentials.json``; existing ones are kept. Returns the file."""
    wanted: dict[str, list[str]] = {}
    for location_id, region, _kind in fleet_layout(FleetConfig(stores=stores)):
        wanted.setdefault(region, []).append(location_id)
    path = credentials_path(brokers_dir)
    Credentials.open(path, wanted)
    return path


def demo_plan(*, lake: str, var: Path, port: int, stores: int, events_per_s: float,
              insecure: bool, users_path: str | None = None) -> list[tuple[str, list[str]]]:
    """Each component's name and command line, in start order."""
    cli = [sys.executable, "-m", "apps.cli"]
    if insecure:
        login = ["--insecure"]
    else:
        login = ["--credentials", str(issue_fleet_credentials(var / "brokers", stores))]
    return [
        ("broker", cli + ["broker", "--data-dir", str(var / "brokers")]
         + (["--insecure"] if insecure else [])),
        ("ingest", cli + ["ingest", "--lakehouse", lake] + login),
        ("stream", cli + ["stream", "--lakehouse", lake]),
        ("dashboard", dashboard_command(lake, port, users_path)),
        ("api", cli + ["api", "--lakehouse", lake, "--port", str(API_PORT)]),
        ("batch", cli + ["batch", "schedule", "--lakehouse", lake]),
        ("maintain", cli + ["maintain", "--lakehouse", lake, "--every",
                            str(MAINTAIN_EVERY_S)]),
        ("orders", cli + ["transfers", "dispatch", "--lakehouse", lake] + login),
        ("fleet", cli + ["simulate", "--stores", str(stores), "--events-per-s",
                         str(events_per_s), "--data-dir", str(var / "fleet")] + login),
    ]


def run_demo(*, lakehouse: str, data_dir: str, port: int, stores: int,
             events_per_s: float, users_file: str | None = None,
             insecure: bool = False) -> int:
    try:
        require_mosquitto()  # before anything starts, not as one failing component of six
    except BrokerError as exc:
        raise SystemExit(f"demo: {exc}") from exc
    lake = lake_url(lakehouse)
    try:
        check_bucket(lake, create=True)  # the demo makes its own bucket
    except StorageError as exc:
        raise SystemExit(f"demo: {exc}") from exc
    var = Path(data_dir).resolve()
    users = UsersFile(users_file_path(users_file, lake))
    password = ensure_demo_user(users)
    keys = ApiKeysFile(keys_file_path(None, lake))
    token = ensure_demo_key(keys)
    env = {**os.environ, "SHELFLIFE_LAKEHOUSE": lake, "SHELFLIFE_USERS_FILE": str(users.path),
           "PYTHONUNBUFFERED": "1"}
    plan = demo_plan(lake=lake, var=var, port=port, stores=stores,
                     events_per_s=events_per_s, insecure=insecure,
                     users_path=str(users.path))
    procs: list[tuple[str, subprocess.Popen]] = []
    stop = stop_event()
    try:
        for name, cmd in plan:
            procs.append((name, _start(name, cmd, env)))
            if name == "broker" and not _wait_port(18831, COMPONENT_START_TIMEOUT_S):
                print("demo: brokers did not start; see [broker] lines above", flush=True)
                return 1
        print(f"\n  Shelflife dashboard: http://127.0.0.1:{port}\n"
              + _login_banner(users, password)
              + _api_banner(keys, token)
              + f"  lakehouse: {lake}\n"
              + ("  INSECURE: open brokers, unsigned acks and orders\n" if insecure else
                 f"  secure brokers; logins in {var / 'brokers' / 'credentials.json'}\n")
              + "  stock appears once Spark has started "
              "(first run downloads the Delta jars).\n", flush=True)
        return supervise(procs, dict(plan), env, stop)
    finally:
        for _name, proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _name, proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
