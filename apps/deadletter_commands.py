"""What ``shelflife deadletters list|redrive`` do once chosen (parsers and the redrive
parsing in :mod:`apps.deadletters`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from apps.connection import open_credentials
from apps.deadletter_table import (
    format_table,
    known_regions,
    read_dead_letters,
    show_time,
    stream_refused,
    to_jsonl,
)
from apps.deadletters import (
    EXIT_INVALID,
    EXIT_UNREACHABLE,
    RedriveError,
    land,
    parse_fixed,
    parse_ports,
    publish,
)
from lakehouse.contract import REGIONS


def cmd_list(args: argparse.Namespace) -> int:
    dead = read_dead_letters(args.lakehouse, region=args.region, since=args.since,
                             limit=args.limit)
    if args.jsonl:
        for line in to_jsonl(dead):
            print(line)
        return 0
    if dead.empty:
        print("no dead letters" + (f" in {args.region}" if args.region else "")
              + (f" since {show_time(args.since)}" if args.since else ""))
        return 0
    print(format_table(dead))
    return 0


def cmd_redrive(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"redrive: cannot read {path}: {exc}", file=sys.stderr)
        return EXIT_INVALID
    logins = None
    regions_of: dict[str, str] = {}
    creds = (None if args.dry_run and not Path(args.credentials).exists()
             else open_credentials(args, "redrive"))
    if creds is not None:
        regions_of = {loc: creds.region_of(loc) for r in REGIONS for loc in creds.locations(r)}
    try:
        lines = text.splitlines()
        needs_lookup = args.region is None
        if needs_lookup:
            regions_of = {**known_regions(args.lakehouse), **regions_of}
        redrives = parse_fixed(lines, region=args.region, regions_of=regions_of)
        if creds is not None:
            logins = {}
            for r in redrives:
                login = creds.credentials_for(r.event["location_id"])
                logins[r.event["location_id"]] = (login.username, login.password)
    except (RedriveError, KeyError) as exc:
        print(f"redrive: {path}: {exc.args[0] if isinstance(exc, KeyError) else exc}; "
              "nothing was sent", file=sys.stderr)
        return EXIT_INVALID
    if not redrives:
        print(f"redrive: {path} holds no events; nothing to send")
        return 0
    if args.dry_run:
        for r in redrives:
            print(f"line {r.line}: {r.event['event_id']} valid -> {r.topic}")
        print(f"dry run: {len(redrives)} event(s) valid; nothing sent")
        return 0
    try:
        ports = parse_ports(args.broker_ports)
    except argparse.ArgumentTypeError as exc:
        print(f"redrive: {exc}; nothing was sent", file=sys.stderr)
        return EXIT_INVALID
    refused = stream_refused(args.lakehouse)
    direct = [r for r in redrives if r.event["event_id"] in refused]
    redrives = [r for r in redrives if r.event["event_id"] not in refused]
    if direct:
        land(direct, args.lakehouse)
    try:
        sent = publish(redrives, host=args.host, ports=ports, logins=logins,
                       tls_ca=args.tls_ca) if redrives else 0
    except ConnectionError as exc:
        print(f"redrive: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    print(f"redrive: {sent} event(s) re-published; ingest validates and lands them "
          "(a (location, seq) already landed is dropped as a duplicate)"
          + (f"; {len(direct)} the stream had refused landed directly" if direct else ""))
    return 0
