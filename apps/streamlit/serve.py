"""``streamlit run`` for the dashboard, with the pages' libraries imported first.

Streamlit runs every page script in the server's own process, so whatever the scripts
import stays imported; but it imports it on the first run, inside the first visitor's
page load (pandas, pyarrow, delta-rs, Altair and the login library: a second or two on a
small machine). Importing them here, before the server starts, moves that wait to the
start, where nobody is looking at a page. No data is read: the caches start empty.
"""

from __future__ import annotations

import sys
from pathlib import Path

_REPO_ROOT = str(Path(__file__).resolve().parents[2])
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)


def warm() -> None:
    """Import what the page scripts import."""
    import altair  # noqa: F401
    import deltalake  # noqa: F401
    import pandas  # noqa: F401
    import pyarrow  # noqa: F401
    import streamlit_authenticator  # noqa: F401

    import apps.streamlit.decision_views  # noqa: F401
    import apps.streamlit.login  # noqa: F401
    import apps.streamlit.network_views  # noqa: F401
    import apps.streamlit.parts  # noqa: F401
    import apps.streamlit.store_views  # noqa: F401
    import lakehouse.decisions  # noqa: F401
    import lakehouse.purchase_orders  # noqa: F401
    import lakehouse.recalls  # noqa: F401


def main() -> None:
    """Arguments as for ``streamlit run`` (script, flags, ``--`` and the script's own)."""
    warm()
    from streamlit.web import cli

    sys.argv = ["streamlit", "run", *sys.argv[1:]]
    cli.main()


if __name__ == "__main__":
    main()
