"""The ``shelflife`` command: one entry point for every component and the demo.

Each option falls back to an environment variable named in its ``--help``, so the same
settings work from a shell, a service file or the demo.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from apps.auth.cli import add_user_commands
from apps.batch import add_batch_commands, add_master_option
from apps.connection import (
    BROKER_DIR,
    add_connection_options,
    default_credentials,
    open_credentials,
)
from apps.deadletters import add_deadletter_commands, parse_ports
from apps.lazy import handler
from apps.outcomes import add_outcomes_command
from apps.recall import add_recall_commands
from apps.review import add_review_commands
from apps.streamlit.launch import run_dashboard
from edge_mqtt.cli import add_agent_commands
from edge_mqtt.simulator import FleetConfig, run_fleet
from ingest.brokers import BrokerError, TlsFiles, run_brokers_forever
from lakehouse.contract import DEFAULT_PORTS, REGIONS
from lakehouse.credentials import Credentials, CredentialsMissing
from lakehouse.options import env_option, env_switch
from lakehouse.shutdown import stop_event
from lakehouse.storage import StorageError

API_KEYS_HELP = "API keys file (hashed tokens only)"
API_KEYS_DEFAULT = "<lakehouse>/_auth/api_keys.json"


def _regions(text: str) -> list[str]:
    regions = [r.strip() for r in text.split(",") if r.strip()]
    for r in regions:
        if r not in REGIONS:
            raise argparse.ArgumentTypeError(f"region {r!r}: expected one of {', '.join(REGIONS)}")
    return regions


def _common(p: argparse.ArgumentParser, *, lakehouse: bool = True) -> None:
    env_option(p, "--regions", "SHELFLIFE_REGIONS", ",".join(REGIONS), "comma-separated regions")
    if lakehouse:
        env_option(p, "--lakehouse", "SHELFLIFE_LAKEHOUSE", "./lakehouse", "lakehouse root folder")


def _metrics_options(p: argparse.ArgumentParser, env: str, default: int) -> None:
    env_option(p, "--metrics-port", env, default, "Prometheus /metrics port (0 = off)", type=int)
    env_option(p, "--metrics-host", "SHELFLIFE_METRICS_HOST", "127.0.0.1",
               "address /metrics listens on (0.0.0.0 for a remote Prometheus)")


def _locations(path: str | None) -> dict[str, list[str]] | None:
    """``{region: [location ids]}`` from a JSON file, for per-store credentials."""
    if not path:
        return None
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise SystemExit(f"--locations {path}: expected a JSON object region -> [location ids]")
    return data


def cmd_broker(args: argparse.Namespace) -> int:
    tls = None
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            raise SystemExit("--tls-cert and --tls-key go together")
        tls = TlsFiles(Path(args.tls_cert), Path(args.tls_key))
    if args.insecure and args.secure:
        raise SystemExit("--secure and --insecure contradict each other")
    try:
        run_brokers_forever(Path(args.data_dir), _regions(args.regions),
                            ports=args.broker_ports, locations=_locations(args.locations),
                            secure=not args.insecure, tls=tls)
    except BrokerError as exc:
        raise SystemExit(f"broker: {exc}") from exc
    return 0


def cmd_credentials(args: argparse.Namespace) -> int:
    """One store's settings for its agent, as environment lines (``> store.env``)."""
    try:
        creds = Credentials.open(Path(args.credentials), create=False)
        login = creds.credentials_for(args.location)
        key = creds.signing_key(args.location)
    except (CredentialsMissing, KeyError) as exc:
        print(f"credentials: {exc.args[0] if isinstance(exc, KeyError) else exc}",
              file=sys.stderr)
        return 2
    print(f"SHELFLIFE_LOCATION={args.location}\n"
          f"SHELFLIFE_REGION={creds.region_of(args.location)}\n"
          f"SHELFLIFE_BROKER_USER={login.username}\n"
          f"SHELFLIFE_BROKER_PASSWORD={login.password}\n"
          f"SHELFLIFE_AGENT_KEY={key.hex()}")
    return 0


def _metrics_port(port: int, host: str, what: str) -> int:
    """The port to serve metrics on, or 0 when it is taken (the component still runs)."""
    if not port:
        return 0
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            logging.getLogger("shelflife").error(
                "%s: cannot serve metrics on %s:%d (%s); running without /metrics",
                what, host, port, exc.strerror or exc)
            return 0
    return port


def cmd_simulate(args: argparse.Namespace) -> int:
    creds = open_credentials(args, "simulate")
    config = FleetConfig(stores=args.stores, regions=tuple(_regions(args.regions)),
                         events_per_s=args.events_per_s, data_dir=args.data_dir,
                         duration_s=args.duration_s, seed=args.seed,
                         ports=args.broker_ports,
                         credentials=creds.path if creds else None, tls_ca=args.tls_ca)
    summary = run_fleet(config, stop=stop_event())
    print(f"simulate: {summary}", flush=True)
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    return run_dashboard(args.lakehouse, port=args.port, users_file=args.users_file)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shelflife",
                                     description="Real-time perishable inventory.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("broker", help="run one MQTT broker per region on loopback")
    _common(p, lakehouse=False)
    env_option(p, "--data-dir", "SHELFLIFE_BROKER_DIR", BROKER_DIR,
               "broker config/state; secure brokers keep every login in "
               "<data-dir>/credentials.json")
    env_switch(p, "--insecure", "SHELFLIFE_INSECURE",
               "accept anyone, anonymous included, on any topic; without it every store, "
               "ingest worker and dispatcher logs in with its own password and touches "
               "only its own topics")
    p.add_argument("--secure", action="store_true", help=argparse.SUPPRESS)  # the default
    env_option(p, "--broker-ports", "SHELFLIFE_BROKER_PORTS",
               ",".join(f"{r}={port}" for r, port in DEFAULT_PORTS.items()),
               "each region's port, region=port,...", type=parse_ports)
    env_option(p, "--locations", "SHELFLIFE_LOCATIONS_FILE", None,
               "JSON file {region: [location ids]} to issue credentials for")
    env_option(p, "--tls-cert", "SHELFLIFE_TLS_CERT", None, "PEM certificate for TLS listeners")
    env_option(p, "--tls-key", "SHELFLIFE_TLS_KEY", None, "PEM private key for TLS listeners")

    p.set_defaults(fn=cmd_broker)

    p = sub.add_parser("credentials", help="one store's login and signing key, as "
                                           "environment lines for its agent")
    p.add_argument("location", help="location id")
    env_option(p, "--credentials", "SHELFLIFE_CREDENTIALS", default_credentials(),
               "the secure brokers' credentials.json")
    p.set_defaults(fn=cmd_credentials)

    p = sub.add_parser("ingest", help="run the regional ingest workers")
    _common(p)
    add_connection_options(p, env_option, who="logs in as ingest@<region> and signs acks")
    env_option(p, "--broker-host", "SHELFLIFE_BROKER_HOST", "127.0.0.1", "host of the brokers")
    env_option(p, "--broker-ports", "SHELFLIFE_BROKER_PORTS",
               ",".join(f"{r}={port}" for r, port in DEFAULT_PORTS.items()),
               "each region's broker port, region=port,...", type=parse_ports)
    env_option(p, "--give-up-after-s", "SHELFLIFE_INGEST_GIVE_UP_S", 60.0,
               "exit non-zero (for a supervisor to restart) once landing has failed this long",
               type=float)
    env_option(p, "--backlog-high", "SHELFLIFE_INGEST_BACKLOG_HIGH", 50_000,
               "pause intake while this many landed events wait for the stream", type=int)
    env_option(p, "--backlog-low", "SHELFLIFE_INGEST_BACKLOG_LOW", None,
               "resume intake below this backlog (default: half of --backlog-high)", type=int)
    env_option(p, "--max-events-per-s", "SHELFLIFE_INGEST_MAX_EVENTS_PER_S", 0.0,
               "each region's intake quota in events/s (0 = no limit)", type=float)
    env_option(p, "--trigger-s", "SHELFLIFE_TRIGGER_S", 1.0,
               "the stream's micro-batch trigger (an S3 landing zone is written just "
               "before each)", type=float)
    env_option(p, "--land-ahead-s", "SHELFLIFE_INGEST_LAND_AHEAD_S", 0.2,
               "on S3, land this long before each trigger (0 = every 0.5 s)", type=float)
    _metrics_options(p, "SHELFLIFE_INGEST_METRICS_PORT", 9810)
    p.set_defaults(fn=handler("apps.serve:cmd_ingest"))

    p = sub.add_parser("stream", help="run the Spark streaming queries (one per region)")
    _common(p)
    env_option(p, "--trigger-s", "SHELFLIFE_TRIGGER_S", 1.0, "micro-batch trigger", type=float)
    env_option(p, "--record-every-s", "SHELFLIFE_RECORD_EVERY_S", 10.0,
               "how often bronze/silver are written from the spill", type=float)
    env_option(p, "--state-every-s", "SHELFLIFE_STATE_EVERY_S", 10.0,
               "how often each region's whole state is saved (a restart re-applies the batches "
               "after the last save)", type=float)
    add_master_option(p, env_option)
    _metrics_options(p, "SHELFLIFE_STREAM_METRICS_PORT", 9811)
    p.set_defaults(fn=handler("apps.serve_stream:cmd_stream"))

    for name, helptext in (("simulate", "run a simulated store fleet"),
                           ("demo", "run brokers, fleet, ingest, streaming and dashboard")):
        p = sub.add_parser(name, help=helptext)
        _common(p)
        env_option(p, "--stores", "SHELFLIFE_STORES", 300, "stores in the fleet", type=int)
        env_option(p, "--events-per-s", "SHELFLIFE_EVENTS_PER_S", 300.0, "fleet event rate",
                   type=float)
        env_option(p, "--data-dir", "SHELFLIFE_DATA_DIR", "./var", "agents' SQLite files etc.")
        if name == "simulate":
            add_connection_options(p, env_option, who="each store logs in as itself; "
                                                      "locations it lacks are added")
            env_option(p, "--broker-ports", "SHELFLIFE_BROKER_PORTS",
                       ",".join(f"{r}={port}" for r, port in DEFAULT_PORTS.items()),
                       "each region's broker port, region=port,...", type=parse_ports)
            env_option(p, "--duration-s", "SHELFLIFE_DURATION_S", None,
                       "stop after (default: never)", type=float)
            env_option(p, "--seed", "SHELFLIFE_SEED", 7, "random seed", type=int)
            p.set_defaults(fn=cmd_simulate)
        else:
            env_option(p, "--port", "SHELFLIFE_DASHBOARD_PORT", 8501, "dashboard port", type=int)
            env_option(p, "--users-file", "SHELFLIFE_USERS_FILE", None,
                       "operators file; the demo adds `demo` with a random password when it is "
                       "empty (default <lakehouse>/_auth/users.yaml)")
            env_switch(p, "--insecure", "SHELFLIFE_INSECURE",
                       "open brokers, anonymous clients, unsigned acks and orders")
            p.set_defaults(fn=handler("apps.serve:cmd_demo"))

    p = sub.add_parser("maintain", help="compact and vacuum the tables, beside the writers")
    env_option(p, "--lakehouse", "SHELFLIFE_LAKEHOUSE", "./lakehouse",
               "lakehouse root folder or s3://bucket/prefix")
    env_option(p, "--every", "SHELFLIFE_MAINTAIN_EVERY_S", 3600.0,
               "seconds between rounds", type=float)
    p.add_argument("--once", action="store_true", help="one round, then exit")
    env_option(p, "--retain-hours", "SHELFLIFE_RETAIN_HOURS", 168,
               "keep replaced files this long, for tables that declare no retention of "
               "their own (rewritten gold keeps 1 h)", type=int)
    p.add_argument("--table", action="append", metavar="LAYER/NAME",
                   help="only this table (repeatable; default: every table)")
    p.set_defaults(fn=handler("apps.maintain_command:cmd_maintain"))

    p = sub.add_parser("dashboard", help="serve the Streamlit dashboard")
    env_option(p, "--lakehouse", "SHELFLIFE_LAKEHOUSE", "./lakehouse", "lakehouse root folder")
    env_option(p, "--port", "SHELFLIFE_DASHBOARD_PORT", 8501, "dashboard port", type=int)
    env_option(p, "--users-file", "SHELFLIFE_USERS_FILE", None,
               "operators who may sign in (default <lakehouse>/_auth/users.yaml)")
    p.set_defaults(fn=cmd_dashboard)

    p = sub.add_parser("api", help="serve stock availability to other systems (read API)")
    env_option(p, "--lakehouse", "SHELFLIFE_LAKEHOUSE", "./lakehouse",
               "lakehouse root folder or s3://bucket/prefix")
    env_option(p, "--host", "SHELFLIFE_API_HOST", "127.0.0.1",
               "address to listen on; another than loopback wants --tls-cert/--tls-key")
    env_option(p, "--port", "SHELFLIFE_API_PORT", 8600, "port", type=int)
    env_option(p, "--keys-file", "SHELFLIFE_API_KEYS_FILE", None, API_KEYS_HELP,
               shown=API_KEYS_DEFAULT)
    env_option(p, "--tls-cert", "SHELFLIFE_API_TLS_CERT", None, "PEM certificate for HTTPS")
    env_option(p, "--tls-key", "SHELFLIFE_API_TLS_KEY", None, "PEM private key for HTTPS")
    p.set_defaults(fn=handler("apps.api.server:cmd_api"))

    keys = sub.add_parser("api-keys", help="keys of the systems that may use the read API")
    ksub = keys.add_subparsers(dest="keys_command", required=True)
    for action, helptext in (("add", "add a key for a system; prints its token once"),
                             ("list", "systems with a key (no tokens)"),
                             ("remove", "remove a system's key; its token stops working")):
        p = ksub.add_parser(action, help=helptext)
        env_option(p, "--lakehouse", "SHELFLIFE_LAKEHOUSE", "./lakehouse",
                   "lakehouse root folder")
        env_option(p, "--keys-file", "SHELFLIFE_API_KEYS_FILE", None, API_KEYS_HELP,
                   shown=API_KEYS_DEFAULT)
        if action != "list":
            p.add_argument("name", help="the system, e.g. webshop: lower-case letters, "
                                        "digits, '.', '_', '-'")
        if action == "add":
            p.add_argument("--reset", action="store_true",
                           help="replace the system's existing key")
        p.set_defaults(fn=handler(f"apps.api.commands:cmd_keys_{action}"))

    p = sub.add_parser("purchase-orders",
                       help="approved purchase orders: what is on order, and the outbox")
    p.add_argument("action", choices=("list", "export"),
                   help="list: today's spend and the lines not yet received; export: write "
                        "the document of every approval that has none yet")
    env_option(p, "--lakehouse", "SHELFLIFE_LAKEHOUSE", "./lakehouse",
               "lakehouse root folder or s3://bucket/prefix")
    p.set_defaults(fn=handler("apps.purchase_orders_command:cmd_purchase_orders"))

    add_deadletter_commands(sub, env_option)
    add_batch_commands(sub, env_option)
    add_review_commands(sub, env_option)
    add_recall_commands(sub, env_option)
    add_user_commands(sub, env_option)
    add_agent_commands(sub)
    add_outcomes_command(sub, handler)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)
    try:
        return int(args.fn(args) or 0)
    except StorageError as exc:  # a wrong bucket or credentials: one line, not a trace
        raise SystemExit(f"shelflife {args.command}: {exc}") from None
    finally:
        # Free Arrow's dataset scanners now, while Arrow is whole: left to the
        # interpreter's teardown, a scanner thread can abort the process on exit
        # ("terminate called without an active exception", exit -6) after a command
        # that has already said everything and chosen its exit code.
        gc.collect()


if __name__ == "__main__":
    sys.exit(main())
