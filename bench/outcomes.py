"""Do Shelflife's decisions pay? A closed-loop simulation on real demand (FreshRetailNet-50K,
CC BY 4.0): a day-old batch system, a quantity-only real-time system and Shelflife on the
same demand, stores and starting stock. See docs/outcomes.md and
:mod:`spark_jobs.decisions.outcomes`.

    python bench/outcomes.py                          # 100 stores, 4 scored weeks
    python bench/outcomes.py --stores 5 --weeks 2     # a quick look

Prints progress, a table per policy, and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from apps.outcomes import add_outcome_options  # noqa: E402
from apps.outcomes_command import cmd_outcomes  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_outcome_options(parser)
    return cmd_outcomes(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
