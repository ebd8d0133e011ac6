"""``streamlit run`` for the dashboard, with the pages' libraries imported first.

Streamlit runs every page script in the server's own process, so whatever the scripts
import stays imported; but it imports it on the first run, inside the first visitor's
page load (pandas, pyarrow, delta-rs and Altair: about two seconds on a small machine).
This module imports them at its top, before the server starts, which moves that wait to
the start, where nobody is looking at a page. No data is read: the caches start empty.

Not imported here: the modules that call Streamlit when imported (the login library, the
cached readers in ``apps.streamlit.parts``), whose caches and configuration would be set
up outside a running server.
"""

from __future__ import annotations

import sys
from pathlib import Path

_REPO_ROOT = str(Path(__file__).resolve().parents[2])
if _REPO_ROOT not in sys.path:  # run as a file, like the dashboard script
    sys.path.insert(0, _REPO_ROOT)

import altair  # noqa: E402, F401 - what the page scripts import, imported once here
import deltalake  # noqa: E402, F401
import pandas  # noqa: E402, F401
import pyarrow  # noqa: E402, F401
from streamlit.web import cli  # noqa: E402

import apps.streamlit.decision_views  # noqa: E402, F401
import apps.streamlit.network_views  # noqa: E402, F401
import apps.streamlit.store_views  # noqa: E402, F401
import apps.streamlit.views  # noqa: E402, F401
import lakehouse.decisions  # noqa: E402, F401
import lakehouse.purchase_orders  # noqa: E402, F401
import lakehouse.recalls  # noqa: E402, F401


def main() -> None:
    """Arguments as for ``streamlit run`` (script, flags, ``--`` and the script's own)."""
    sys.argv = ["streamlit", "run", *sys.argv[1:]]
    cli.main()


if __name__ == "__main__":
    main()
