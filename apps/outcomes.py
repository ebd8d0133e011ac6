"""``shelflife outcomes``: the closed-loop outcome simulation's options (light: argparse
only; the handler, :mod:`apps.outcomes_command`, loads pandas and the decision code)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

DEFAULT_DEMAND = Path(__file__).resolve().parents[2] / "shared" / "data" / \
    "freshretailnet_daily.parquet"


def add_outcome_options(p: argparse.ArgumentParser) -> None:
    """The simulation's size and inputs; the defaults are the targets' size."""
    p.add_argument("--demand", type=Path,
                   default=Path(os.environ.get("SHELFLIFE_FRESHRETAIL", DEFAULT_DEMAND)),
                   help="FreshRetailNet-shaped daily parquet (env SHELFLIFE_FRESHRETAIL; "
                        "default ../shared/data/freshretailnet_daily.parquet)")
    p.add_argument("--stores", type=int, default=100, help="stores drawn by the seed (100)")
    p.add_argument("--weeks", type=int, default=4, help="scored weeks, the data's last (4)")
    p.add_argument("--seed", type=int, default=0, help="draws stores and unit rounding (0)")
    p.add_argument("--scale", type=float, default=10.0,
                   help="selling units per unit of the data's scaled sales (10)")
    p.add_argument("--paths", type=int, default=1000,
                   help="Monte Carlo demand paths of the transfer and reorder decisions "
                        "(1000, as the batch jobs run them)")
    p.add_argument("--cache", type=Path, default=None,
                   help="folder that keeps the weekly forecasts between runs")
    p.add_argument("--chart", type=Path, default=None, help="write a PNG chart here")
    p.add_argument("--report", type=Path, default=None,
                   help="write the full report (every policy, every transfer) as JSON here")


def add_outcomes_command(sub: argparse._SubParsersAction,
                         handler: Callable[[str], Callable[[argparse.Namespace], int]]
                         ) -> None:
    """``shelflife outcomes``, its handler named lazily (it loads pandas and the jobs)."""
    p = sub.add_parser("outcomes", help="simulate waste and stockouts of Shelflife's "
                                        "decisions against a day-old batch, on real demand")
    add_outcome_options(p)
    p.set_defaults(fn=handler("apps.outcomes_command:cmd_outcomes"))
