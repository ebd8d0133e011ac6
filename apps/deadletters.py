"""``shelflife deadletters``: see what ingest refused, fix it, and send it through again.

``list`` reads ``silver/dead_letters`` without a JVM. ``list --jsonl`` writes one
editable line per dead letter, ``{"id", "region", "topic", "reason", "event"}`` with the
raw payload parsed into ``event`` when it is JSON (else kept as text), so an operator can
correct the events in an editor, delete the lines to leave alone, and ``redrive --file``
the result. ``redrive`` also takes plain event objects, one per line.

Redriven events go back the way an agent's do: MQTT QoS 2 to the region's broker on the
location's ``events`` topic, so ingest validates, deduplicates and lands them like any
other (one whose ``(location_id, seq)`` was already landed is dropped as a duplicate).
The exception is an event the *stream* refused (``source = "stream"``): ingest landed
that seq once and would drop the correction as a duplicate, so it is written straight
into the region's landing folder, and the stream applies it once (it keeps such seqs
open for a correction).
Nothing is sent unless every line passes the event contract: the first bad line is named
with its field and value, and the command exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from apps.connection import add_connection_options
from apps.lazy import handler
from lakehouse.contract import (
    DEFAULT_PORTS,
    REGIONS,
    ContractError,
    check_region,
    encode_event,
    parse_topic,
    topic,
    validate_event,
)
from lakehouse.landing import LandedRecord, landing_writer, now_ts
from lakehouse.mqtt import BrokerAddress, make_client

EXIT_INVALID = 2
EXIT_UNREACHABLE = 1


# --- redrive --------------------------------------------------------------------------------

class RedriveError(ValueError):
    """A line of the fixed file cannot be sent; names the line and the problem."""


@dataclass(frozen=True)
class Redrive:
    """One corrected event and where it goes."""

    line: int
    region: str
    event: dict[str, Any]

    @property
    def topic(self) -> str:
        return topic(self.region, self.event["location_id"], "events")


def _region_hint(obj: Mapping[str, Any]) -> str | None:
    if obj.get("region") in REGIONS:
        return obj["region"]
    if isinstance(obj.get("topic"), str):
        try:
            return parse_topic(obj["topic"])[0]
        except ContractError:
            return None
    return None


def parse_fixed(lines: Iterable[str], *, region: str | None = None,
                regions_of: Mapping[str, str] | None = None) -> list[Redrive]:
    """Validate every line with the event contract; raise on the first bad one.

    A line is an event object, or ``{"event": {...}, "region"/"topic": ...}`` as
    ``list --jsonl`` writes it. The region comes from the line, else ``region``, else the
    location's region in ``regions_of``.
    """
    out: list[Redrive] = []
    for n, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except ValueError as exc:
            raise RedriveError(f"line {n}: not JSON ({exc})") from exc
        if not isinstance(obj, dict):
            raise RedriveError(f"line {n}: expected a JSON object, got {type(obj).__name__}")
        event = obj.get("event", obj)
        try:
            validate_event(event)
        except ContractError as exc:
            raise RedriveError(f"line {n}: {exc}") from exc
        loc = event["location_id"]
        where = (_region_hint(obj) if "event" in obj else None) or region or \
            (regions_of or {}).get(loc)
        if where is None:
            raise RedriveError(f"line {n}: cannot tell which region location {loc!r} "
                               "belongs to; pass --region")
        out.append(Redrive(n, check_region(where), event))
    return out


def land(redrives: Sequence[Redrive], root: str | os.PathLike[str] | None, *,
         out: TextIO | None = None) -> int:
    """Write corrections of stream-refused events into their region's landing folder
    (fsynced and renamed, as ingest lands); returns how many."""
    out = out or sys.stdout
    by_region: dict[str, list[Redrive]] = {}
    for r in redrives:
        by_region.setdefault(r.region, []).append(r)
    for region, items in by_region.items():
        writer = landing_writer(region, root, f"redrive-{uuid.uuid4().hex[:6]}")
        _, path = writer.write([LandedRecord("event", r.topic, region, now_ts(),
                                             encode_event(r.event)) for r in items])
        for r in items:
            print(f"line {r.line}: {r.event['event_id']} ({r.event['event_type']}) -> "
                  f"{path} (the stream refused it before; landed directly)", file=out)
    return len(redrives)


def publish(redrives: Sequence[Redrive], *, host: str, ports: Mapping[str, int],
            logins: Mapping[str, tuple[str, str]] | None = None, timeout: float = 15.0,
            out: TextIO | None = None, tls_ca: str | None = None) -> int:
    """Send each event at QoS 2 and wait for the broker's PUBCOMP; returns how many.

    ``logins`` maps a location to (username, password) for secure brokers, where a
    store may publish only to its own topic; then each location gets its own connection.
    ``tls_ca`` connects over TLS, checking the brokers' certificates against it.
    """
    out = out or sys.stdout
    groups: dict[tuple[str, str | None], list[Redrive]] = {}
    for r in redrives:
        key = (r.region, r.event["location_id"] if logins else None)
        groups.setdefault(key, []).append(r)
    sent = 0
    for (region, loc), items in groups.items():
        port = ports[region]
        address = BrokerAddress(host, port, *(logins[loc] if logins and loc is not None
                                              else (None, None)), tls_ca=tls_ca)
        client = make_client(address,
                             client_id=f"shelflife-redrive-{uuid.uuid4().hex[:10]}")
        try:
            client.connect(host, port, keepalive=30)
        except OSError as exc:
            raise ConnectionError(f"region {region}: cannot reach its broker at "
                                  f"{host}:{port} ({exc}); {sent} event(s) sent before "
                                  "this") from exc
        client.loop_start()
        try:
            for r in items:
                info = client.publish(r.topic, encode_event(r.event), qos=2)
                try:
                    info.wait_for_publish(timeout)
                except (RuntimeError, ValueError) as exc:  # paho: connection lost
                    raise ConnectionError(f"line {r.line}: the {region} broker dropped the "
                                          f"connection ({exc}); {sent} event(s) sent") from exc
                if not info.is_published():
                    raise ConnectionError(f"line {r.line}: the {region} broker did not "
                                          f"confirm {r.event['event_id']} within "
                                          f"{timeout:.0f} s; {sent} event(s) sent")
                sent += 1
                print(f"line {r.line}: {r.event['event_id']} ({r.event['event_type']}) -> "
                      f"{r.topic} (QoS 2, delivered to the broker)", file=out)
        finally:
            client.disconnect()
            client.loop_stop()
    return sent


# --- CLI ------------------------------------------------------------------------------------

def parse_since(text: str) -> datetime:
    """ISO time (``2026-11-27T10:00``, ``...Z``); a naive time is UTC."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--since {text!r}: expected an ISO time such as "
                                         "2026-11-27T10:00:00Z") from exc
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_ports(text: str) -> dict[str, int]:
    """``east=18831,central=18832,west=18833`` (regions left out keep their default)."""
    ports = dict(DEFAULT_PORTS)
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        if name not in REGIONS or not value.isdigit():
            raise argparse.ArgumentTypeError(f"broker ports: expected region=port, got "
                                             f"{part!r}")
        ports[name] = int(value)
    return ports


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"--limit: must be >= 1, got {value}")
    return value


def add_deadletter_commands(sub: argparse._SubParsersAction,
                            add_option: Callable[..., None]) -> None:
    """Register ``deadletters list`` and ``deadletters redrive`` on the CLI."""
    p = sub.add_parser("deadletters", help="list dead letters, or re-send corrected events")
    inner = p.add_subparsers(dest="deadletters_command", required=True)

    q = inner.add_parser("list", help="newest dead letters first (silver/dead_letters)")
    add_option(q, "--lakehouse", "SHELFLIFE_LAKEHOUSE", "./lakehouse", "lakehouse root folder")
    q.add_argument("--region", choices=REGIONS, help="only this region")
    q.add_argument("--since", type=parse_since, help="only dead letters received at or "
                   "after this ISO time (UTC unless it says otherwise)")
    q.add_argument("--limit", type=_positive, default=20, help="at most this many (20)")
    q.add_argument("--jsonl", action="store_true",
                   help="one editable JSON line each (payload parsed into 'event'), "
                        "the input `redrive --file` takes")
    q.set_defaults(fn=handler("apps.deadletter_commands:cmd_list"))

    r = inner.add_parser("redrive", help="re-publish corrected events at QoS 2")
    add_option(r, "--lakehouse", "SHELFLIFE_LAKEHOUSE", "./lakehouse",
               "lakehouse root folder (to find a location's region)")
    r.add_argument("--file", required=True,
                   help="JSON lines: events, or lines written by `list --jsonl`, edited")
    r.add_argument("--region", choices=REGIONS,
                   help="region of events whose line does not say")
    add_option(r, "--host", "SHELFLIFE_BROKER_HOST", "127.0.0.1", "broker host")
    add_option(r, "--broker-ports", "SHELFLIFE_BROKER_PORTS",
               ",".join(f"{k}={v}" for k, v in DEFAULT_PORTS.items()),
               "each region's broker port")
    add_connection_options(r, add_option, who="publishes as each event's store")
    r.add_argument("--dry-run", action="store_true", help="validate only, send nothing")
    r.set_defaults(fn=handler("apps.deadletter_commands:cmd_redrive"))


