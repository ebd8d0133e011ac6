"""What ``shelflife maintain`` does once chosen (parser in :mod:`apps.cli`): compact and
vacuum the lakehouse's tables with delta-rs, once or on a schedule."""

from __future__ import annotations

import argparse
import threading

from lakehouse.catalogue import Table, table
from lakehouse.maintenance import maintain
from lakehouse.shutdown import stop_event
from lakehouse.storage import StorageError, check_bucket, lake_url


def _tables(names: list[str] | None) -> list[Table] | None:
    """The catalogue tables named ``layer/name``; None (every table) when none are."""
    if not names:
        return None
    chosen = []
    for name in names:
        layer, _, short = name.partition("/")
        try:
            chosen.append(table(layer, short))
        except (KeyError, ValueError) as exc:
            raise SystemExit(f"maintain: --table {name}: {exc.args[0]}") from None
    return chosen


def run_maintenance(root: str, *, every_s: float, once: bool, retain_hours: int,
                    tables: list[Table] | None, stop: threading.Event) -> int:
    """A round now, then one every ``every_s`` until ``stop``; 1 when the last round left
    a table failed (for ``--once`` in a cron job), else 0."""
    while True:
        print(f"maintain: {root}", flush=True)
        reports = maintain(root, retain_hours=retain_hours, tables=tables,
                           say=lambda line: print(line, flush=True))
        failed = [r.table for r in reports if r.status == "failed"]
        print(f"maintain: round done, {len(failed)} failed"
              + (f" ({', '.join(failed)})" if failed else ""), flush=True)
        if once or stop.wait(every_s):
            return 1 if failed else 0


def cmd_maintain(args: argparse.Namespace) -> int:
    root = lake_url(args.lakehouse)
    try:
        check_bucket(root)  # a wrong bucket would otherwise read as "no table yet"
    except StorageError as exc:
        raise SystemExit(f"maintain: {exc}") from None
    return run_maintenance(root, every_s=args.every, once=args.once,
                           retain_hours=args.retain_hours, tables=_tables(args.table),
                           stop=stop_event())
