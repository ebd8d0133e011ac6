"""Shelflife — stock: the operator's live view of gold, read without a JVM.

Run with ``streamlit run apps/streamlit/dashboard.py -- --lakehouse PATH [--users-file
FILE]`` (or set ``SHELFLIFE_LAKEHOUSE`` / ``SHELFLIFE_USERS_FILE``). Only the login form
shows until an operator from the users file signs in (:mod:`apps.streamlit.login`); the
transfers tab records that operator as the decider. Each part of the page is a fragment of
its own: the parts that follow the stream rerun every two seconds, so stock moves on screen
as Spark commits, while the parts with a form (transfers, reorders, forecasts) rerun only
when someone acts on them. Each read is cached for at most a second and keyed on the table
version, so viewers share one read per commit.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path

# `streamlit run` puts only this folder on sys.path; the repository root is needed for
# `apps` and `lakehouse` when running from a checkout that is not pip-installed.
_REPO_ROOT = str(Path(__file__).resolve().parents[2])
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402
import streamlit as st  # noqa: E402
from deltalake.exceptions import DeltaError  # noqa: E402

from apps.auth.exceptions import AuthError  # noqa: E402
from apps.auth.users import ENV_USERS_FILE, User, UsersFile, users_file_path  # noqa: E402
from apps.streamlit import decision_views, login, views  # noqa: E402
from lakehouse import catalogue, readers  # noqa: E402
from lakehouse.catalogue import Table  # noqa: E402
from lakehouse.contract import REGIONS  # noqa: E402
from lakehouse.decisions import record_decision  # noqa: E402
from lakehouse.options import env_option  # noqa: E402
from lakehouse.paths import ENV_ROOT, lakehouse_root  # noqa: E402
from lakehouse.transfer_status import TRANSFER_STATUSES  # noqa: E402

TITLE = "Shelflife — stock"
REFRESH_S = 2.0
CACHE_TTL_S = 1.0
GOLD_TABLES = (catalogue.REGION_STATUS, catalogue.STOCK_LEVELS)
READ_ERRORS = (DeltaError, OSError, pa.ArrowException)


def parse_root(argv: list[str]) -> Path:
    """The lakehouse root from ``--lakehouse``, else ``$SHELFLIFE_LAKEHOUSE``, else ./lakehouse.

    Unknown arguments are ignored so the page also runs under test runners and
    ``streamlit run`` flags never break it.
    """
    parser = argparse.ArgumentParser(prog="dashboard", add_help=False, allow_abbrev=False)
    env_option(parser, "--lakehouse", ENV_ROOT, "./lakehouse", "lakehouse root")
    known, _ = parser.parse_known_args(argv)
    return lakehouse_root(known.lakehouse)


def parse_users_file(argv: list[str], root: Path) -> Path:
    """The operators file from ``--users-file``, else ``$SHELFLIFE_USERS_FILE``, else
    ``<root>/_auth/users.yaml`` (what ``shelflife users`` writes by default)."""
    parser = argparse.ArgumentParser(prog="dashboard", add_help=False, allow_abbrev=False)
    parser.add_argument("--users-file", default=None,
                        help=f"operators file (env {ENV_USERS_FILE})")
    known, _ = parser.parse_known_args(argv)
    return users_file_path(known.users_file, root)


def waiting_message(path: str | os.PathLike[str]) -> str:
    """What the page says before Spark has committed the table it needs."""
    return f"Waiting for the first data from the lakehouse at {path}"


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


def _seconds(value: object) -> str:
    return "—" if pd.isna(value) else f"{float(value):.1f} s"


def render_regions(root: str, now: pd.Timestamp) -> pd.DataFrame | None:
    """Status cards, one per region; stale or syncing regions say so in words."""
    st.subheader("Regions")
    status = current_table(root, catalogue.REGION_STATUS)
    if status is None or status.empty:
        st.info(waiting_message(catalogue.REGION_STATUS.path(root)))
        return None
    cards = views.region_cards(status, now)
    for card in cards[cards["mode"] == "syncing"].itertuples():
        st.warning(f"{card.headline}: its stock, trends and availability below are "
                   "catching up and stale until it is live again.")
    for column, card in zip(st.columns(len(cards)), cards.itertuples(), strict=True):
        with column.container(border=True):
            st.markdown(f"**{card.region}** · {card.mode}")
            st.metric(
                "Events applied",
                f"{int(card.events_total):,}",
                delta=f"{int(card.events_last_batch):,} in last batch",
                delta_color="off",
            )
            st.caption(f"lag {_seconds(card.lag_s)} · {views.updated_ago(card.updated_at, now)}")
            if card.stale:
                st.warning(
                    f"Region {card.region}: stale, no update for "
                    f"{views.describe_duration(card.age_s)}"
                )
            if card.mode == "syncing":
                backlog = getattr(card, "backlog_events", None)
                st.info(card.headline + (f" · {int(backlog):,} events waiting"
                                         if backlog is not None and pd.notna(backlog) else ""))
    return status


def render_stock(root: str, now: pd.Timestamp, known_regions: list[str]) -> None:
    """Filters, the stock table, and the expiry cohorts behind one chosen row."""
    st.subheader("Stock by location and SKU")
    region_col, location_col, sku_col, flag_col = st.columns([2, 2, 2, 2])
    regions = region_col.multiselect("Region", known_regions, key="regions")
    stock = current_table(root, catalogue.STOCK_LEVELS, regions=tuple(sorted(regions)))
    if stock is None:
        st.info(waiting_message(catalogue.STOCK_LEVELS.path(root)))
        return
    views.require_columns(stock, views.STOCK_COLUMNS, "gold/stock_levels")
    locations = location_col.multiselect(
        "Location", sorted(stock["location_id"].unique()), key="locations"
    )
    sku_search = sku_col.text_input("SKU contains", key="sku_search")
    expiring_only = flag_col.checkbox("Only expiring within 48 h", key="expiring_only")
    non_positive_only = flag_col.checkbox("Only negative/zero stock", key="non_positive_only")

    rows = views.filter_stock(
        stock,
        now,
        regions=regions,
        locations=locations,
        sku_search=sku_search,
        expiring_only=expiring_only,
        non_positive_only=non_positive_only,
    )
    table = views.stock_table(rows)
    shown = (
        f"{len(rows):,} rows"
        if len(rows) <= len(table)
        else (f"showing the first {len(table):,} of {len(rows):,} rows; narrow the filters")
    )
    st.caption(f"{shown} · on hand {int(rows['on_hand'].sum()):,} units")
    st.dataframe(
        table,
        hide_index=True,
        column_config={
            "location_id": st.column_config.TextColumn("location"),
            "on_hand": st.column_config.NumberColumn("on hand", format="%d"),
            "earliest_expiry": st.column_config.DateColumn("earliest expiry"),
            "days_to_expiry": st.column_config.NumberColumn("days to expiry", format="%d"),
            "updated_at": st.column_config.DatetimeColumn("updated (UTC)"),
        },
    )
    render_cohorts(root, now, table)


def render_cohorts(root: str, now: pd.Timestamp, table: pd.DataFrame) -> None:
    """The lots (and their expiry dates) that make up one location's stock of a SKU."""
    keys = views.stock_keys(table)
    if not keys:
        return
    choice = st.selectbox(
        "Expiry cohorts for",
        keys,
        format_func=lambda key: f"{key[0]} · {key[1]}",
        key="cohort_choice",
    )
    if choice is None:
        return
    location_id, sku = choice
    region = table.loc[table["location_id"] == location_id, "region"].iloc[0]
    cohorts = current_table(root, catalogue.STOCK_COHORTS, regions=(region,))
    if cohorts is None:
        st.info(waiting_message(catalogue.STOCK_COHORTS.path(root)))
        return
    lots = views.cohort_breakdown(cohorts, location_id, sku, now)
    on_hand = int(
        table.loc[(table["location_id"] == location_id) & (table["sku"] == sku), "on_hand"].iloc[0]
    )
    lots_col, chart_col = st.columns([3, 2])
    with lots_col:
        st.dataframe(
            lots,
            hide_index=True,
            column_config={
                "expires_on": st.column_config.DateColumn("expires on"),
                "quantity": st.column_config.NumberColumn("quantity", format="%d"),
                "days_left": st.column_config.NumberColumn("days left", format="%d"),
            },
        )
        total = int(lots["quantity"].sum())
        if total != on_hand:
            # Levels and cohorts are separate commits; the next refresh brings them level.
            st.caption(f"lots add up to {total:,}, on hand reads {on_hand:,}: a batch apart")
    with chart_col:
        if not lots.empty:
            st.bar_chart(lots, x="lot", y="quantity", height=220)


def render_dead_letters(root: str) -> None:
    """How many inputs were refused, and why, so a bad producer is noticed early."""
    dead = current_table(root, catalogue.DEAD_LETTERS, columns=views.DEAD_LETTER_COLUMNS)
    count = 0 if dead is None else len(dead)
    st.metric("Dead letters", f"{count:,}")
    if count:
        with st.expander("Latest 20 reasons"):
            st.dataframe(views.latest_dead_letters(dead), hide_index=True)


def render_review(root: str) -> None:
    """Quantity conflicts for a person to judge; resolved with ``shelflife review``."""
    queue = current_table(root, catalogue.REVIEW_QUEUE)
    if queue is None or queue.empty:
        st.success("No quantity conflicts: every store's stock_before matches the lakehouse.")
        return
    counts = queue["status"].value_counts()
    cols = st.columns(4)
    for col, status in zip(cols, ("open", "waiting", "closed", "resolved"), strict=True):
        col.metric(status.capitalize(), int(counts.get(status, 0)))
    show = st.multiselect("Status", ["open", "waiting", "closed", "resolved"],
                          default=["open", "waiting"])
    rows = queue[queue["status"].isin(show)].sort_values("detected_at", ascending=False)
    st.dataframe(rows[["item_id", "status", "sku", "store_before", "lakehouse_before",
                       "difference", "cause", "note", "detected_at", "resolved_by"]],
                 hide_index=True)
    st.caption("waiting = seqs below the event are missing; it is judged again when they "
               "arrive. Resolve: `shelflife review resolve ITEM --user NAME --how TEXT`.")


def render_network(root: str) -> None:
    """Per SKU and region: what the network holds and where it runs low."""
    avail = current_table(root, catalogue.NETWORK_AVAILABILITY)
    if avail is None or avail.empty:
        st.info("Network availability is written every 10 s once stock flows.")
        return
    st.dataframe(avail.sort_values(["sku", "region"]).drop(columns=["updated_at"]),
                 hide_index=True)
    trends = current_table(root, catalogue.DEMAND_TRENDS)
    if trends is not None and not trends.empty:
        st.subheader("Soonest projected stockouts (sales only, counts excluded)")
        soon = trends.dropna(subset=["days_of_cover"]).sort_values("days_of_cover").head(25)
        st.dataframe(soon[["location_id", "sku", "on_hand", "burn_rate_per_day",
                           "days_of_cover", "projected_stockout_at"]], hide_index=True)


def render_business(root: str) -> None:
    """Waste and stockout rates per location, category and day."""
    metrics = current_table(root, catalogue.BUSINESS_METRICS)
    if metrics is None or metrics.empty:
        st.info("Business metrics are written every 10 s once stock flows.")
        return
    by_day = metrics.groupby(["day", "category"], as_index=False)[
        ["received_units", "sold_units", "wasted_units", "skus_active",
         "skus_stocked_out"]].sum()
    by_day["waste_rate"] = by_day["wasted_units"] / by_day["received_units"].where(
        by_day["received_units"] > 0)
    by_day["stockout_rate"] = by_day["skus_stocked_out"] / by_day["skus_active"]
    st.dataframe(by_day.sort_values(["day", "category"], ascending=[False, True]),
                 hide_index=True)
    if "transferred_in_units" in metrics:
        st.subheader("Forecast error and transfer efficiency (from the batch jobs)")
        st.dataframe(decision_views.outcome_by_day(metrics), hide_index=True)


def render_transfers(root: str, users: UsersFile, user: User) -> None:
    """Transfers a person approves: each with its lot, transit, life at arrival and why.

    The decider is the signed-in operator; a viewer sees the list without the form."""
    recs = current_table(root, catalogue.TRANSFER_RECOMMENDATIONS)
    if recs is None:
        st.info("Transfer recommendations appear after the first `shelflife batch transfers` "
                "run (the demo runs it every 5 minutes).")
        return
    totals = decision_views.transfer_totals(recs)
    cols = st.columns(4)
    cols[0].metric("Proposed", totals["proposed"])
    cols[1].metric("Units to move", f"{totals['units']:,}")
    cols[2].metric("Units expected saved", f"{totals['units_saved']:,.0f}")
    cols[3].metric("Value saved / cost", f"{totals['value_saved']:,.0f} / {totals['cost']:,.0f}")
    show = st.multiselect("Status", list(TRANSFER_STATUSES),
                          default=["proposed"], key="transfer_status")
    rows = decision_views.transfer_table(recs, show)
    st.dataframe(rows, hide_index=True)
    st.caption("A lot is never proposed if it would reach the destination's shelf (after "
               "transit and handling) with less life than the category's minimum there.")
    proposed = rows[rows["status"] == "proposed"]["recommendation_id"].tolist()
    if not proposed:
        return
    if not user.may_decide:
        st.info(f"Signed in as {user.name} ({user.role}): viewers see transfers but cannot "
                "approve or reject them.")
        return
    with st.form("transfer_decision", clear_on_submit=True):
        pick = st.selectbox("Recommendation", proposed, key="transfer_pick")
        note = st.text_input("Note (optional)", key="transfer_note")
        approve, reject = st.columns(2)
        decision = ("approved" if approve.form_submit_button(f"Approve as {user.name}") else
                    "rejected" if reject.form_submit_button(f"Reject as {user.name}") else None)
    if decision:
        try:
            who = login.decider(users, user, "approve or reject transfers").name
            record_decision(pick, decision, who, note=note, root=root)
            st.success(f"{pick}: {decision} by {who}")
        except (AuthError, ValueError) as exc:
            st.error(str(exc))


def render_reorders(root: str) -> None:
    """What each store should order now, and what it would waste if it ordered more."""
    sugg = current_table(root, catalogue.REORDER_SUGGESTIONS)
    if sugg is None or sugg.empty:
        st.info("Reorder suggestions appear after `shelflife batch reorders` (every 5 minutes "
                "in the demo); none means every store's stock covers its forecast.")
        return
    regions = ["all", *sorted(sugg["region"].unique())]
    region = st.selectbox("Region", regions, key="reorder_region")
    st.dataframe(decision_views.reorder_table(sugg, None if region == "all" else region),
                 hide_index=True)
    st.caption("Orders never exceed what the forecast says will sell before the new lot "
               "stops being sellable; counts and adjustments are not demand.")


def render_forecasts(root: str) -> None:
    """Forecast accuracy as actuals arrive, and the forecasts themselves."""
    accuracy = current_table(root, catalogue.FORECAST_ACCURACY)
    if accuracy is not None and not accuracy.empty:
        st.subheader("Accuracy (forecast made before the day vs sales)")
        st.dataframe(decision_views.accuracy_by_day(accuracy), hide_index=True)
    forecasts = current_table(root, catalogue.DEMAND_FORECASTS)
    if forecasts is None or forecasts.empty:
        st.info("Forecasts appear after `shelflife batch forecasts` (half-hourly in the demo).")
        return
    st.subheader("Demand forecasts")
    st.caption(", ".join(f"{m}: {n}" for m, n in forecasts.drop_duplicates(
        ["location_id", "sku"])["model"].value_counts().items()))
    keys = sorted(forecasts["location_id"].unique())
    loc = st.selectbox("Location", keys, key="forecast_location")
    rows = forecasts[forecasts["location_id"] == loc]
    sku = st.selectbox("SKU", sorted(rows["sku"].unique()), key="forecast_sku")
    one = rows[rows["sku"] == sku].sort_values("forecast_date")
    st.line_chart(one.set_index("forecast_date")[["lower", "forecast", "upper"]])


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


def live(render: Callable[..., None]) -> Callable[..., None]:
    """A part that moves with the stream: its own fragment, rerun every two seconds."""
    return st.fragment(run_every=REFRESH_S)(guarded(render))


def on_demand(render: Callable[..., None]) -> Callable[..., None]:
    """A part with a form a person is filling in: it reruns when they act, never on a
    timer, so an Approve button is not rebuilt under the pointer every two seconds."""
    return st.fragment(guarded(render))


@live
def live_regions(root: str) -> None:
    """The region cards, and the moment they were read."""
    now = pd.Timestamp.now(tz="UTC")
    render_regions(root, now)
    st.caption(f"as of {now:%Y-%m-%d %H:%M:%S} UTC · refreshes every {REFRESH_S:.0f} s")


@live
def live_stock(root: str) -> None:
    status = current_table(root, catalogue.REGION_STATUS, columns=("region",))
    known = set(REGIONS) if status is None else set(REGIONS) | set(status["region"])
    render_stock(root, pd.Timestamp.now(tz="UTC"), sorted(known))


@on_demand
def transfers_part(root: str, users: UsersFile, user: User) -> None:
    st.button("Refresh transfers", key="transfers_refresh")  # a click reruns this part
    render_transfers(root, users, user)


live_review = live(render_review)
live_network = live(render_network)
live_business = live(render_business)
live_dead_letters = live(render_dead_letters)
reorders_part = on_demand(render_reorders)
forecasts_part = on_demand(render_forecasts)


@live
def waiting_for_gold(root: str) -> None:
    """Until the stream's first commit: say so, then show the whole page once it lands."""
    if all(readers.table_version(table, root) is None for table in GOLD_TABLES):
        st.info(waiting_message(root))
        return
    st.rerun(scope="app")


def dashboard(root: str, users: UsersFile, user: User) -> None:
    """The regions, the tabs and the dead-letter count; each part refreshes on its own."""
    if all(readers.table_version(table, root) is None for table in GOLD_TABLES):
        waiting_for_gold(root)
        return
    live_regions(root)
    main_col, side_col = st.columns([5, 1])
    with main_col:
        stock, review, transfers, reorders, forecasts, network, business = st.tabs(
            ["Stock", "Review queue", "Transfers to approve", "Reorders", "Forecasts",
             "Network & trends", "Business metrics"])
        with stock:
            live_stock(root)
        with review:
            live_review(root)
        with transfers:
            transfers_part(root, users, user)
        with reorders:
            reorders_part(root)
        with forecasts:
            forecasts_part(root)
        with network:
            live_network(root)
        with business:
            live_business(root)
    with side_col:
        live_dead_letters(root)


def main() -> None:
    """Page entry point: the login until someone signs in; then title and live fragment."""
    root = parse_root(sys.argv[1:])
    users = UsersFile(parse_users_file(sys.argv[1:], root))
    st.set_page_config(page_title=TITLE, layout="wide")
    user = login.signed_in(users)
    if user is None:
        return
    st.title(TITLE)
    dashboard(str(root), users, user)


main()
