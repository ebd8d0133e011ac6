"""What every page of the dashboard shares: who is signed in, cached table reads, and
the two kinds of page part (live, on demand).

Pages are scripts that ``st.navigation`` runs after the login; they find the lakehouse
root and the signed-in operator in :func:`context`, which the entry script set in this
browser session's state (never in a module global: two browsers are two operators).
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
import streamlit as st
from deltalake.exceptions import DeltaError

from apps.auth.users import User, UsersFile
from apps.streamlit import views
from lakehouse import readers, startup
from lakehouse.catalogue import Table

REFRESH_S = 2.0
CACHE_TTL_S = 1.0
READ_ERRORS = (DeltaError, OSError, pa.ArrowException)
_CONTEXT_KEY = "shelflife_context"


@dataclass(frozen=True)
class Context:
    """The lakehouse a page reads and the operator it acts for."""

    root: str
    users: UsersFile
    user: User


def set_context(context: Context) -> None:
    """Called by the entry script after the login, before the chosen page runs."""
    st.session_state[_CONTEXT_KEY] = context


def context() -> Context:
    """The lakehouse and operator of this browser session (set by the entry script)."""
    found = st.session_state.get(_CONTEXT_KEY)
    if not isinstance(found, Context):
        raise RuntimeError("a page ran before the login: open the dashboard's entry script")
    return found


def waiting_message(path: str | os.PathLike[str]) -> str:
    """What a page says before Spark has committed the table it needs."""
    return f"Waiting for the first data from the lakehouse at {path}"


def startup_progress(root: str, now: float | None = None) -> None:
    """What each starting component is doing, as a progress bar per component: the
    stream's steps take minutes on a fresh machine (Spark, the Delta jars, state)."""
    steps = startup.read(root)
    if not steps:
        st.caption("No component has reported its start yet: `shelflife stream` records "
                   "its steps here once it runs.")
        return
    now = time.time() if now is None else now
    for step in steps:
        if not startup.alive(step) and not step.done:
            st.error(f"{step.component}: stopped at step {step.number} of {step.of} "
                     f"({step.doing}); see its log")
            continue
        st.progress(min(step.number / step.of, 1.0),
                    text=f"{step.component}: {step.doing} — step {step.number} of "
                         f"{step.of}, for {now - step.since:.0f} s "
                         f"({now - step.began:.0f} s since it started)")


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False, max_entries=64, hash_funcs={Table: str})
def load_table(
    root: str,
    table: Table,
    version: int,
    columns: tuple[str, ...] | None = None,
    regions: tuple[str, ...] = (),
) -> pd.DataFrame | None:
    """One table at one version; every input is an argument so the cache key is complete."""
    filters = [("region", "in", list(regions))] if regions else None
    return readers.read_table(table, root, filters=filters, columns=columns, version=version)


def current_table(
    root: str,
    table: Table,
    *,
    columns: tuple[str, ...] | None = None,
    regions: tuple[str, ...] = (),
) -> pd.DataFrame | None:
    """The latest version of a table, or None while it does not exist yet."""
    version = readers.table_version(table, root)
    if version is None:
        return None
    return load_table(root, table, version, columns, regions)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False, max_entries=16, hash_funcs={Table: str})
def load_since(root: str, table: Table, version: int, column: str,
               since: pd.Timestamp) -> pd.DataFrame | None:
    """Rows of one table version whose ``column`` is at or after ``since`` (pushed down to
    the files' statistics, so a growing log is not read whole)."""
    return readers.read_since(table, root, column, since.to_pydatetime(), version=version)


def recent_rows(root: str, table: Table, column: str, hours: int) -> pd.DataFrame | None:
    """The last ``hours`` of an append-only log (from the start of the hour, so the cache
    key changes once an hour, not on every read); None while the table does not exist."""
    version = readers.table_version(table, root)
    if version is None:
        return None
    since = pd.Timestamp.now(tz="UTC").floor("h") - pd.Timedelta(hours=hours)
    return load_since(root, table, version, column, since)


def guarded(render: Callable[..., None]) -> Callable[..., None]:
    """A page part that says in words when the lakehouse cannot be read, and retries on
    its next refresh, instead of showing a traceback."""

    @functools.wraps(render)
    def part(root: str, *args: object) -> None:
        try:
            render(root, *args)
        except views.SchemaError as exc:
            st.error(f"The page and the lakehouse disagree on a table's shape: {exc}")
        except READ_ERRORS as exc:
            st.warning(f"Could not read the lakehouse at {root} ({exc}); retrying.")

    return part


def live(render: Callable[..., None], *, every_s: float = REFRESH_S) -> Callable[..., None]:
    """A part that moves with the stream: its own fragment, rerun every ``every_s``
    (two seconds unless its data changes more slowly)."""
    return st.fragment(run_every=every_s)(guarded(render))


def on_demand(render: Callable[..., None]) -> Callable[..., None]:
    """A part with a form a person is filling in: it reruns when they act, never on a
    timer, so an Approve button is not rebuilt under the pointer every two seconds."""
    return st.fragment(guarded(render))


def seconds(value: object) -> str:
    """'1.2 s', or a dash where the stream has no figure yet."""
    return "—" if pd.isna(value) else f"{float(value):.1f} s"
