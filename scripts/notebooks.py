"""Runs every analyst notebook in a Jupyter kernel and saves it with its outputs, so the
notebooks read well on a code host before anyone runs them.

    python scripts/notebooks.py                       # on the demo tables the tests use
    python scripts/notebooks.py --lakehouse var/lakehouse   # on a real lakehouse (the demo's)

Needs the ``notebooks`` extra (JupyterLab, ipykernel, nbclient), which the setup script
installs. Prints one line per notebook.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import nbformat  # noqa: E402

from tests.apps.pages import write_transfer_recommendations  # noqa: E402
from tests.lakehouse.demo_tables import write_demo_lakehouse, write_demo_pages  # noqa: E402
from tests.notebooks.test_notebooks import NOTEBOOKS, execute  # noqa: E402


def demo_lakehouse(folder: Path) -> str:
    """The small lakehouse the tests and the screenshots use, written under ``folder``."""
    now = datetime.now(UTC)
    write_demo_lakehouse(folder, now)
    write_demo_pages(folder, now)
    write_transfer_recommendations(folder, now, count=5)
    return str(folder)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lakehouse", help="lakehouse to run on (default: the demo tables)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.lakehouse or demo_lakehouse(Path(tmp))
        os.environ["SHELFLIFE_LAKEHOUSE"] = root
        for path in NOTEBOOKS:
            began = time.monotonic()
            book = execute(path)
            for cell in book.cells:  # keep the saved file stable: no run counters' noise
                cell.get("metadata", {}).pop("execution", None)
            nbformat.write(book, path)
            print(f"notebooks: {path.name} run on {root} and saved "
                  f"({time.monotonic() - began:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
