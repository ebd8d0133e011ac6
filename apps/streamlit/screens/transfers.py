"""Transfers: which lots to move before they spoil, best value net of transport first,
each with why in words; an approver decides one, or the top N at once.

This page never reruns on a timer (a Refresh button instead), so an Approve button is
never rebuilt under the pointer. Every decision goes through
:func:`lakehouse.decisions.record_decision` with the signed-in operator's name, as the
CLI's do.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from apps.auth.exceptions import AuthError
from apps.auth.users import User, UsersFile
from apps.streamlit import decision_views, login, parts
from lakehouse import catalogue
from lakehouse.decisions import record_decision
from lakehouse.transfer_status import TRANSFER_STATUSES
from spark_jobs.decisions.approval import (
    AUTO_APPROVAL_ENV,
    AUTO_APPROVAL_RULE,
    AUTO_APPROVER,
    ESTIMATES_AS_MEASURED,
)

WHY_SHOWN = 10  # justifications spelt out under the table (the column is cut short)
MAX_AT_ONCE = 100  # the most one click decides: a morning's best, few enough to read
SHOWN = ["rank", "recommendation_id", "status", "net_value", "why", "sku", "lot",
         "expires_on", "source_location", "destination_location", "quantity", "decided_by"]


def decide(root: str, users: UsersFile, user: User, ids: list[str], decision: str,
           note: str) -> tuple[list[str], list[str]]:
    """Record ``decision`` on each id as the operator the users file says ``user`` is now;
    (decided ids, errors in words)."""
    try:
        who = login.decider(users, user, "approve or reject transfers").name
    except AuthError as exc:
        return [], [str(exc)]
    done, errors = [], []
    for rec_id in ids:
        try:
            record_decision(rec_id, decision, who, note=note, root=root)
            done.append(rec_id)
        except ValueError as exc:
            errors.append(f"{rec_id}: {exc}")
    return done, errors


def record(root: str, users: UsersFile, user: User, ids: list[str], decision: str,
           note: str) -> None:
    """Decide, then say what was recorded (and what was refused) in words."""
    done, errors = decide(root, users, user, ids, decision, note)
    if len(done) == 1:
        st.success(f"{done[0]}: {decision} by {user.name}")
    elif done:
        st.success(f"{len(done)} transfers {decision} by {user.name}: " + ", ".join(done))
    for error in errors:
        st.error(error)


def one_form(proposed: pd.DataFrame, user: User) -> tuple[list[str], str | None, str]:
    """Approve or reject the one transfer chosen from the ranked list."""
    with st.form("transfer_decision", clear_on_submit=True):
        st.markdown("**One transfer**")
        labels = dict(zip(proposed["recommendation_id"], proposed["rank"], strict=True))
        pick = st.selectbox("Recommendation", list(labels), key="transfer_pick",
                            format_func=lambda rec: f"#{labels[rec]} · {rec}")
        note = st.text_input("Note (optional)", key="transfer_note")
        approve, reject = st.columns(2)
        decision = ("approved" if approve.form_submit_button(f"Approve as {user.name}") else
                    "rejected" if reject.form_submit_button(f"Reject as {user.name}") else None)
    return [pick], decision, note


def top_form(ranked: pd.DataFrame, user: User) -> tuple[list[str], str | None, str]:
    """Approve or reject the N best proposals in one go."""
    waiting = int((ranked["status"] == "proposed").sum())
    with st.form("transfer_top_n", clear_on_submit=True):
        st.markdown("**The best N at once**")
        n = st.number_input("How many of the best proposals", min_value=1,
                            max_value=min(waiting, MAX_AT_ONCE), value=min(waiting, 5),
                            key="transfer_top_n_count")
        note = st.text_input("Note (optional)", key="transfer_top_note")
        approve, reject = st.columns(2)
        decision = ("approved" if approve.form_submit_button(f"Approve top N as {user.name}")
                    else "rejected" if reject.form_submit_button(f"Reject top N as {user.name}")
                    else None)
    return decision_views.top_proposed(ranked, int(n)), decision, note


def auto_approval_line(recs: pd.DataFrame) -> str:
    """What the auto-approval rule did, or why it is off, in one line."""
    by_rule = (int((recs["decided_by"] == AUTO_APPROVER).sum())
               if "decided_by" in recs else 0)
    if by_rule:
        return (f"{by_rule} of these were approved by the auto-approval rule, shown as "
                f"decided by '{AUTO_APPROVER}' (`{AUTO_APPROVAL_ENV}=on` for the transfers "
                f"job). The rule: {AUTO_APPROVAL_RULE}.")
    return (f"Auto-approval (`{AUTO_APPROVAL_ENV}=on` for the transfers job) is "
            f"{ESTIMATES_AS_MEASURED}. Its rule: {AUTO_APPROVAL_RULE}.")


def render_transfers(root: str, users: UsersFile, user: User) -> None:
    """Headline figures, the ranked list, and the decision forms for an approver."""
    recs = parts.current_table(root, catalogue.TRANSFER_RECOMMENDATIONS)
    if recs is None:
        st.info("Transfer recommendations appear after the first `shelflife batch transfers` "
                "run (the demo runs it every 5 minutes).")
        return
    recs = decision_views.with_decisions(
        recs, parts.current_table(root, catalogue.TRANSFER_DECISIONS))
    # Figures and list are filled last, so they show the decisions made in this run.
    headline = st.container()
    show = st.multiselect("Status", list(TRANSFER_STATUSES),
                          default=["proposed"], key="transfer_status")
    listing = st.container()
    ranked = decision_views.ranked_transfers(recs, list(TRANSFER_STATUSES))
    proposed = ranked[ranked["status"] == "proposed"]
    if not proposed.empty and not user.may_decide:
        st.info(f"Signed in as {user.name} ({user.role}): viewers see transfers but cannot "
                "approve or reject them.")
    elif not proposed.empty:
        one_col, top_col = st.columns(2)
        with one_col:
            one = one_form(proposed, user)
        with top_col:
            top = top_form(ranked, user)
        ids, decision, note = one if one[1] else top
        if decision:
            record(root, users, user, ids, decision, note)
            recs = decision_views.with_decisions(
                recs, parts.current_table(root, catalogue.TRANSFER_DECISIONS))
            ranked = decision_views.ranked_transfers(recs, list(TRANSFER_STATUSES))
    with headline:
        totals = decision_views.transfer_totals(recs)
        cols = st.columns(4)
        cols[0].metric("Proposed", totals["proposed"])
        cols[1].metric("Units to move", f"{totals['units']:,}")
        cols[2].metric("Net value of proposals",
                       f"{totals['value_saved'] - totals['cost']:,.0f}")
        cols[3].metric("Approved", totals["approved"])
        st.caption(auto_approval_line(recs))
    with listing:
        rows = ranked[ranked["status"].isin(show)]
        st.dataframe(rows[[c for c in SHOWN if c in rows]], hide_index=True,
                     column_config={
                         "rank": st.column_config.NumberColumn("#", width="small"),
                         "net_value": st.column_config.NumberColumn(
                             "net value", format="%.2f",
                             help="expected value saved minus transport cost"),
                         "why": st.column_config.TextColumn("why", width="large"),
                         "expires_on": st.column_config.DateColumn("expires on")})
        with st.expander(f"Why, in words: the first {min(len(rows), WHY_SHOWN)} shown",
                         expanded=True):
            st.markdown("\n".join(
                f"- **#{r.rank} {r.recommendation_id}** ({r.status}, net {r.net_value:,.2f}): "
                f"{r.why}" for r in rows.head(WHY_SHOWN).itertuples()) or "Nothing shown.")
        st.caption(f"{len(rows):,} shown, best expected value net of transport first. A lot "
                   "is never proposed if it would reach the destination's shelf (after "
                   "transit and handling) with less life than the category's minimum there.")


@parts.on_demand
def transfers_part(root: str, users: UsersFile, user: User) -> None:
    st.button("Refresh", key="transfers_refresh", icon=":material/refresh:")
    render_transfers(root, users, user)


def main() -> None:
    ctx = parts.context()
    st.title("Shelflife — transfers")
    transfers_part(ctx.root, ctx.users, ctx.user)


main()
