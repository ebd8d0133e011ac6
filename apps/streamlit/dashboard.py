"""Shelflife — the operators' pages over gold, read without a JVM.

Run with ``streamlit run apps/streamlit/dashboard.py -- --lakehouse PATH [--users-file
FILE]`` (or set ``SHELFLIFE_LAKEHOUSE`` / ``SHELFLIFE_USERS_FILE``). Only the login form
shows until an operator from the users file signs in (:mod:`apps.streamlit.login`); then
``st.navigation`` offers one page per question (the scripts in ``screens/``), each told
the lakehouse and the operator through :mod:`apps.streamlit.parts`. Parts that follow the
stream rerun every two seconds; parts with a form (transfers, reorders, forecasts) rerun
only when someone acts on them. Each read is cached for at most a second and keyed on
the table version, so viewers share one read per commit.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# `streamlit run` puts only this folder on sys.path; the repository root is needed for
# `apps` and `lakehouse` when running from a checkout that is not pip-installed.
_REPO_ROOT = str(Path(__file__).resolve().parents[2])
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

import streamlit as st  # noqa: E402
from streamlit.navigation.page import StreamlitPage  # noqa: E402

from apps.auth.users import ENV_USERS_FILE, UsersFile, users_file_path  # noqa: E402
from apps.streamlit import login, parts  # noqa: E402
from apps.streamlit.sitemap import PAGES, SCREENS  # noqa: E402
from lakehouse import catalogue, readers  # noqa: E402
from lakehouse.options import env_option  # noqa: E402
from lakehouse.storage import ENV_ROOT, lake_url  # noqa: E402

# Page scripts run as Streamlit scripts: a bare string after a statement would be shown on
# the page ("magic"), so constants there are explained in comments, not docstrings.
TITLE = "Shelflife"
GOLD_TABLES = (catalogue.REGION_STATUS, catalogue.STOCK_LEVELS)


def parse_root(argv: list[str]) -> str:
    """The lakehouse root from ``--lakehouse``, else ``$SHELFLIFE_LAKEHOUSE``, else ./lakehouse.

    Unknown arguments are ignored so the page also runs under test runners and
    ``streamlit run`` flags never break it.
    """
    parser = argparse.ArgumentParser(prog="dashboard", add_help=False, allow_abbrev=False)
    env_option(parser, "--lakehouse", ENV_ROOT, "./lakehouse", "lakehouse root")
    known, _ = parser.parse_known_args(argv)
    return lake_url(known.lakehouse)


def parse_users_file(argv: list[str], root: str) -> Path:
    """The operators file from ``--users-file``, else ``$SHELFLIFE_USERS_FILE``, else
    ``<root>/_auth/users.yaml`` (what ``shelflife users`` writes by default)."""
    parser = argparse.ArgumentParser(prog="dashboard", add_help=False, allow_abbrev=False)
    parser.add_argument("--users-file", default=None,
                        help=f"operators file (env {ENV_USERS_FILE})")
    known, _ = parser.parse_known_args(argv)
    return users_file_path(known.users_file, root)


@st.fragment(run_every=parts.REFRESH_S)
def waiting_for_gold(root: str) -> None:
    """Until the stream's first commit: say so, then show the pages once it lands."""
    if all(readers.table_version(table, root) is None for table in GOLD_TABLES):
        st.info(parts.waiting_message(root))
        parts.startup_progress(root)
        return
    st.rerun(scope="app")


def navigation(*, signed_in: bool) -> StreamlitPage:
    """Every page, grouped as the sidebar shows them; Network today opens first.

    Declared on every run before the login form (hidden until someone has signed in, so
    nothing names a page before that): declared after it, a bookmarked ``/transfers``
    opened the first page instead."""
    first = PAGES["Today"][0][0]
    return st.navigation({
        section: [st.Page(SCREENS / script, title=title, icon=icon, default=script == first)
                  for script, title, icon in pages]
        for section, pages in PAGES.items()}, position="sidebar" if signed_in else "hidden")


def main() -> None:
    """Page entry point: the login until someone signs in; then the chosen page."""
    root = parse_root(sys.argv[1:])
    users = UsersFile(parse_users_file(sys.argv[1:], root))
    st.set_page_config(page_title=TITLE, layout="wide")
    # The login of the previous run, or a valid re-login cookie, decides whether the
    # sidebar lists the pages; the run of a password sign-in shows the page, and the list
    # comes with the rerun of the component that sets the cookie.
    page = navigation(signed_in=st.session_state.get("authentication_status") is True
                      or login.remembered(users))
    user = login.signed_in(users)
    if user is None:
        return
    parts.set_context(parts.Context(str(root), users, user))
    if all(readers.table_version(table, str(root)) is None for table in GOLD_TABLES):
        st.title(TITLE)
        waiting_for_gold(str(root))
        return
    page.run()


main()
