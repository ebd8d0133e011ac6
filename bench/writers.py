"""Writers sharing a table, at once, on S3: commits lost, and what a maintenance round
costs per table.

Every pair of ``tests/lakehouse/writer_pairs.py`` (two regions' record writers, two
regions' gold writers, the dashboard and the CLI logging decisions, two regions'
heartbeat logs, two stream processes' catalogue) runs on a fresh prefix of a local S3
server (moto's, in a process of its own, as the tests use it) with ``shelflife maintain``
looping beside it. Then the pairs run again, without maintenance, into one lakehouse,
and one ``maintain`` round over what they left is timed, table by table.

    python bench/writers.py                  # 12 commits per writer, about a minute
    python bench/writers.py --commits 50 --json
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lakehouse.maintenance import maintain  # noqa: E402
from tests.lakehouse.writer_pairs import PAIRS, commits_lost, run_pairs  # noqa: E402
from tests.s3 import fresh_lake, moto_server  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--commits", type=int, default=12, help="commits per writer")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args()
    with moto_server():
        results = run_pairs(fresh_lake, args.commits,
                            say=(lambda _m: None) if args.json else print)
        lake = fresh_lake()  # one lakehouse holding every pair's tables, then one round
        for pair in PAIRS.values():
            pair(lake, args.commits, beside=False)
        rounds = maintain(lake, say=(lambda _m: None) if args.json else print)
    lost = commits_lost(results)
    if args.json:
        print(json.dumps({"commits_lost": lost, "pairs": [asdict(r) for r in results],
                          "maintain": [asdict(r) for r in rounds]}, default=str))
    else:
        print(f"commits lost over {sum(r.commits for r in results)} commits in "
              f"{len(results)} pairs: {lost}")
    sys.exit(1 if lost else 0)


if __name__ == "__main__":
    main()
