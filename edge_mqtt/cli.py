"""``shelflife agent ...``: record, look at stock and serve one store's agent from a shell.

Runs on store hardware, so it imports only the agent, its publisher and the standard
library (no Spark, pandas or Streamlit). ``record`` builds the same flat request as
``POST /events`` (:mod:`edge_mqtt.recording`), so both doors refuse the same input with the
same message. Refusals print ``error: <field>: <reason> (got <value>)`` and exit with 2.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import sqlite3
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from lakehouse.contract import DEFAULT_PORTS, MAX_EVENT_BYTES, ContractError, check_region
from lakehouse.options import env_option
from lakehouse.shutdown import stop_event

from .agent import StoreAgent
from .http_api import serve_agent
from .operators import Operators
from .publisher import Publisher, PublisherConfig
from .recording import REQUEST_SHAPES, field_name, record
from .store import DEFAULT_SYNCHRONOUS, ORDER_STATUSES, SYNCHRONOUS_MODES, StoreDB

EXIT_REFUSED = 2


def _json_arg(text: str) -> Any:
    """A JSON value, or ``@path`` to read it from a file (a full count can be long)."""
    try:
        if text.startswith("@"):
            path = Path(text[1:])
            if path.stat().st_size > MAX_EVENT_BYTES:
                raise ValueError(f"{path} is larger than {MAX_EVENT_BYTES} bytes")
            text = path.read_text(encoding="utf-8")
        elif len(text) > MAX_EVENT_BYTES:
            raise ValueError(f"longer than {MAX_EVENT_BYTES} characters")
        return json.loads(text)
    except (OSError, ValueError) as exc:
        raise argparse.ArgumentTypeError(f"expected JSON or @file: {exc}") from exc


# request key -> (flag, type, help); every flag of `agent record`
RECORD_OPTIONS: dict[str, tuple[str, Callable[[str], Any], str]] = {
    "sku": ("--sku", str, "item SKU"),
    "quantity": ("--qty", int, "whole units"),
    "lot": ("--lot", str, "lot / batch code"),
    "expires_on": ("--expires-on", str, "expiry date YYYY-MM-DD"),
    "unit_price": ("--unit-price", float, "selling price per unit (sold)"),
    "transaction_ref": ("--transaction-ref", str, "till transaction id (sold)"),
    "unit_cost": ("--unit-cost", float, "cost per unit (received)"),
    "supplier_ref": ("--supplier-ref", str, "delivery / purchase order (received)"),
    "destination": ("--destination", str, "receiving location id (transfer_out)"),
    "source": ("--source", str, "sending location id (transfer_in)"),
    "transfer_id": ("--transfer-id", str, "transfer document id"),
    "expected_transit_hours": ("--transit-hours", float, "expected hours in transit"),
    "lots": ("--lots", _json_arg, "transfer_in lots: JSON [{lot, expires_on, quantity}]"),
    "causation_id": ("--causation-id", str, "the transfer_out's event id (transfer_in)"),
    "reason_code": ("--reason", str, "expired|damaged|temperature|recall|other (wasted)"),
    "disposal_method": ("--disposal", str, "how it was disposed of (wasted)"),
    "counted_quantity": ("--counted", int, "units counted in the lot (adjusted)"),
    "items": ("--items", _json_arg,
              "counted snapshot: JSON [{sku, lot, expires_on, quantity}] or @file"),
    "description": ("--description", str, "item description (item_updated)"),
    "category": ("--category", str, "item category (item_updated)"),
    "price": ("--price", float, "shelf price (item_updated)"),
    "shelf_life_days": ("--shelf-life-days", int, "days from receipt to expiry"),
    "min_sellable_days": ("--min-sellable-days", int, "days before expiry it stops selling"),
    "occurred_at": ("--occurred-at", str, "UTC time YYYY-MM-DDTHH:MM:SS.mmmZ (default now)"),
}


def _agent_opts(p: argparse.ArgumentParser, *, json_flag: bool = True) -> None:
    env_option(p, "--db", "SHELFLIFE_AGENT_DB", "./var/agent.sqlite", "the agent's SQLite file")
    env_option(p, "--location", "SHELFLIFE_LOCATION", None, "location id",
               shown="the one the database belongs to")
    env_option(p, "--region", "SHELFLIFE_REGION", None, "east|central|west",
               shown="the database's")
    env_option(p, "--synchronous", "SHELFLIFE_AGENT_SYNCHRONOUS", DEFAULT_SYNCHRONOUS,
               "SQLite synchronous: FULL survives a power cut; NORMAL is faster but a power "
               "cut can roll back events already answered (a warning is logged)",
               _synchronous)
    if json_flag:
        p.add_argument("--json", action="store_true", help="print JSON for machines")


def _synchronous(text: str) -> str:
    mode = text.upper()
    if mode not in SYNCHRONOUS_MODES:
        raise argparse.ArgumentTypeError(f"expected FULL or NORMAL, got {text!r}")
    return mode


def add_agent_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``agent record|stock|orders|ship|serve`` to the ``shelflife`` command."""
    agent = subparsers.add_parser("agent", help="record events and query one store's agent")
    sub = agent.add_subparsers(dest="agent_command", required=True)

    p = sub.add_parser("record", help="record one event (same request as POST /events)",
                       description="Only the options of the event type apply; e.g. "
                                   "`record sold --sku MILK --qty 2 --unit-price 1.29 "
                                   "--transaction-ref T-88`.")
    p.add_argument("event_type", choices=tuple(REQUEST_SHAPES))
    for key, (flag, typ, helptext) in RECORD_OPTIONS.items():
        p.add_argument(flag, dest=key, type=typ, default=None, help=helptext)
    _agent_opts(p)
    p.set_defaults(fn=run_agent_command, agent_fn=cmd_record)

    p = sub.add_parser("stock", help="on-hand and expiry cohorts (first-expired first)")
    p.add_argument("--sku", default=None, help="one SKU only")
    _agent_opts(p)
    p.set_defaults(fn=run_agent_command, agent_fn=cmd_stock)

    p = sub.add_parser("orders", help="approved transfers sent to this location to ship")
    p.add_argument("--status", choices=ORDER_STATUSES, default=None, help="only these")
    _agent_opts(p)
    p.set_defaults(fn=run_agent_command, agent_fn=cmd_orders)

    p = sub.add_parser("ship", help="ship a transfer order: transfer_out of its lot")
    p.add_argument("order_id")
    _agent_opts(p)
    p.set_defaults(fn=run_agent_command, agent_fn=cmd_ship)

    p = sub.add_parser("operators", help="who may adjust stock or ship orders over HTTP")
    ops = p.add_subparsers(dest="operators_command", required=True)
    q = ops.add_parser("add", help="add an operator (password read from the terminal)")
    q.add_argument("name")
    q.add_argument("--password-stdin", action="store_true",
                   help="read the password from standard input (for scripts)")
    q.add_argument("--reset", action="store_true", help="give an existing operator a new "
                   "password")
    _agent_opts(q, json_flag=False)
    q.set_defaults(fn=run_agent_command, agent_fn=cmd_operators_add)
    q = ops.add_parser("list", help="operator names")
    _agent_opts(q, json_flag=False)
    q.set_defaults(fn=run_agent_command, agent_fn=cmd_operators_list)
    q = ops.add_parser("remove", help="remove an operator")
    q.add_argument("name")
    _agent_opts(q, json_flag=False)
    q.set_defaults(fn=run_agent_command, agent_fn=cmd_operators_remove)

    p = sub.add_parser("serve", help="HTTP API for POS/WMS plus the publisher to the broker")
    _agent_opts(p, json_flag=False)
    env_option(p, "--host", "SHELFLIFE_AGENT_HOST", "127.0.0.1", "HTTP listen address")
    env_option(p, "--port", "SHELFLIFE_AGENT_PORT", 8765, "HTTP port", int)
    env_option(p, "--broker-host", "SHELFLIFE_BROKER_HOST", "127.0.0.1", "region broker host")
    env_option(p, "--broker-port", "SHELFLIFE_BROKER_PORT", None, "region broker port", int,
               shown="the region's: east 18831, central 18832, west 18833")
    env_option(p, "--broker-user", "SHELFLIFE_BROKER_USER", None,
               "broker username (the location id on secure brokers); the password comes "
               "from env SHELFLIFE_BROKER_PASSWORD and the signing key acks and orders must "
               "carry from env SHELFLIFE_AGENT_KEY (hex); `shelflife credentials <location>` "
               "prints all three", shown="none")
    env_option(p, "--tls-ca", "SHELFLIFE_TLS_CA", None,
               "CA certificate (PEM) of the broker's TLS listener; set = connect over TLS",
               shown="none")
    p.set_defaults(fn=run_agent_command, agent_fn=cmd_serve)


# --- commands --------------------------------------------------------------------------

def open_agent(args: argparse.Namespace) -> StoreAgent:
    """The agent for ``--db``; location and region default to what the file records."""
    location, region = args.location, args.region
    if (location is None or region is None) and Path(args.db).is_file():
        db = StoreDB(args.db, synchronous=args.synchronous)
        try:
            location = location or db.get_meta("location_id")
            region = region or db.get_meta("region")
        finally:
            db.close()
    if location is None:
        raise ContractError("location", None,
                            "pass --location or set SHELFLIFE_LOCATION (new database)")
    if region is None:
        raise ContractError("region", None,
                            "pass --region or set SHELFLIFE_REGION (new database)")
    return StoreAgent(location, check_region(region), args.db, synchronous=args.synchronous)


def cmd_record(args: argparse.Namespace) -> int:
    shape = REQUEST_SHAPES[args.event_type]
    request: dict[str, Any] = {"event_type": args.event_type}
    for key in RECORD_OPTIONS:
        if getattr(args, key) is not None:
            request[key] = getattr(args, key)
    allowed = {*shape.required, *shape.optional, "occurred_at"}
    for key in request.keys() - allowed - {"event_type"}:
        flags = ", ".join(RECORD_OPTIONS[k][0] for k in RECORD_OPTIONS if k in allowed)
        raise ContractError(RECORD_OPTIONS[key][0], request[key],
                            f"does not apply to {args.event_type} (its options: {flags})")
    _, event = _with_agent(args, lambda a: record(a, request, recorded_by=os_operator()))
    if args.json:
        print(json.dumps(event))
    else:
        print(_describe(event))
    return 0


T = TypeVar("T")


def _with_agent(args: argparse.Namespace, use: Callable[[StoreAgent], T]
                ) -> tuple[StoreAgent, T]:
    """Open ``--db``'s agent, use it once, close it: a CLI call is one short session."""
    agent = open_agent(args)
    try:
        return agent, use(agent)
    finally:
        agent.close()


def cmd_stock(args: argparse.Namespace) -> int:
    agent, rows = _with_agent(args, lambda a: a.stock(args.sku))
    if args.json:
        print(json.dumps({"location_id": agent.location_id, "stock": rows}))
        return 0
    table = [("SKU", "ON HAND", "LOT", "EXPIRES", "QTY")]
    for entry in rows:
        for i, c in enumerate(entry["cohorts"]):
            table.append((entry["sku"] if i == 0 else "",
                          str(entry["on_hand"]) if i == 0 else "",
                          c["lot"], c["expires_on"] or "-", str(c["quantity"])))
    if len(table) == 1:
        print(f"{agent.location_id}: no stock" + (f" of {args.sku}" if args.sku else ""))
    else:
        print(_table(table, right=(1, 4)))
    return 0


def cmd_orders(args: argparse.Namespace) -> int:
    agent, rows = _with_agent(args, lambda a: a.orders(args.status))
    if args.json:
        print(json.dumps({"location_id": agent.location_id, "orders": rows}))
        return 0
    if not rows:
        print(f"{agent.location_id}: no transfer orders"
              + (f" {args.status}" if args.status else ""))
        return 0
    table = [("ORDER", "STATUS", "SKU", "LOT", "QTY", "TO", "TRANSIT", "APPROVED BY")]
    table += [(o["order_id"], o["status"], o["sku"], o["lot"], str(o["quantity"]),
               o["destination"], f"{o['transit_hours']:g} h", o["approved_by"]) for o in rows]
    print(_table(table, right=(4,)))
    return 0


def cmd_ship(args: argparse.Namespace) -> int:
    _, event = _with_agent(args, lambda a: a.dispatch_order(args.order_id,
                                                            recorded_by=os_operator()))
    print(json.dumps(event) if args.json else _describe(event))
    return 0


def os_operator() -> str:
    """Who runs a CLI operator action: the OS login that owns the agent's database (it
    authenticated to the machine already; anyone who can write the file could bypass any
    password), made safe for the contract's id format."""
    try:
        name = getpass.getuser()
    except (OSError, KeyError):
        name = f"uid{os.getuid()}"
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:64]
    return name if name[:1].isalnum() else f"u{name}"[:64]


def _operators(args: argparse.Namespace) -> Operators:
    if not Path(args.db).is_file():
        raise ContractError("db", args.db, "no agent database there")
    return Operators(args.db)


def cmd_operators_add(args: argparse.Namespace) -> int:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            raise ContractError("password", "(hidden)", "the two entries differ")
    ops = _operators(args)
    try:
        ops.add(args.name, password, reset=args.reset)
    finally:
        ops.close()
    print(f"operator {args.name} {'reset' if args.reset else 'added'}")
    return 0


def cmd_operators_list(args: argparse.Namespace) -> int:
    ops = _operators(args)
    try:
        names = ops.names()
    finally:
        ops.close()
    print("\n".join(names) if names else "no operators yet: shelflife agent operators add NAME")
    return 0


def cmd_operators_remove(args: argparse.Namespace) -> int:
    ops = _operators(args)
    try:
        removed = ops.remove(args.name)
    finally:
        ops.close()
    if not removed:
        raise ContractError("operator", args.name, "no such operator")
    print(f"operator {args.name} removed")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    key = _signing_key(os.environ.get("SHELFLIFE_AGENT_KEY"))
    agent = open_agent(args)
    broker_port = args.broker_port or DEFAULT_PORTS[agent.region]
    publisher = Publisher(agent, PublisherConfig(
        host=args.broker_host, port=broker_port, username=args.broker_user,
        password=os.environ.get("SHELFLIFE_BROKER_PASSWORD"), tls_ca=args.tls_ca,
        signing_key=key))
    stop = stop_event()
    server = serve_agent(agent, args.host, args.port, publisher=publisher)
    publisher.start()
    print(f"agent {agent.location_id} ({agent.region}): HTTP API on {server.url}, "
          f"broker {publisher.config.address()}, db {args.db}, acks and orders "
          + ("must be signed" if key else "trusted unsigned"), flush=True)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        server.shutdown()  # no new events first, then let the publisher go
        publisher.stop()
        agent.close()
    return 0


def _signing_key(text: str | None) -> bytes | None:
    """SHELFLIFE_AGENT_KEY (hex) as bytes; a malformed key is refused, never ignored."""
    if not text:
        return None
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        key = b""
    if len(key) < 16:
        raise ContractError("SHELFLIFE_AGENT_KEY", "(hidden)",
                            "expected the store's signing key as hex (at least 32 digits)")
    return key


def run_agent_command(args: argparse.Namespace) -> int:
    """Run one ``agent`` subcommand; refusals become ``error: ...`` and exit code 2."""
    try:
        return int(args.agent_fn(args) or 0)
    except ContractError as exc:
        key = exc.field.removeprefix("payload.")
        flag = RECORD_OPTIONS.get(key, ("",))[0] if args.agent_command == "record" else ""
        missing = exc.value is None and field_name(key) == exc.field
        hint = f" (set it with {flag})" if flag and missing else ""
        print(f"error: {exc}{hint}", file=sys.stderr)
        return EXIT_REFUSED
    except (OSError, sqlite3.Error) as exc:
        print(f"error: {args.db}: {exc}", file=sys.stderr)
        return 1


# --- output ----------------------------------------------------------------------------

def _describe(event: dict[str, Any]) -> str:
    p = event["payload"]
    head = f"recorded {event['event_id']} {event['event_type']}"
    if "sku" in p:
        head += f" {p['sku']}"
    for key in ("quantity", "counted_quantity"):
        if key in p:
            head += f" {key.replace('_', ' ')} {p[key]}"
    if "stock_before" in p:
        head += f" (stock before {p['stock_before']})"
    if event["offline"]:
        head += ", offline"
    lines = [head]
    if p.get("lots"):
        lots = [("", "LOT", "EXPIRES", "QTY")]
        lots += [("", lot["lot"], lot["expires_on"] or "-", str(lot["quantity"]))
                 for lot in p["lots"]]
        lines.append(_table(lots, right=(3,)))
    if "items" in p:
        lines.append(f"  {len(p['items'])} cohorts counted")
    return "\n".join(lines)


def _table(rows: Sequence[Sequence[str]], *, right: Sequence[int] = ()) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.rjust(w) if i in right else cell.ljust(w)
                  for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
        for row in rows)
