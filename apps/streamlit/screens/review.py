"""Review: where a store's count of its stock disagrees with the lakehouse's, for a
person to judge."""

from __future__ import annotations

import streamlit as st

from apps.streamlit import parts
from lakehouse import catalogue

STATUSES = ("open", "waiting", "closed", "resolved")


def render_review(root: str, show: list[str]) -> None:
    """Counts per status, then the items with the chosen statuses, newest first."""
    queue = parts.current_table(root, catalogue.REVIEW_QUEUE)
    if queue is None or queue.empty:
        st.success("No quantity conflicts: every store's stock_before matches the lakehouse.")
        return
    counts = queue["status"].value_counts()
    for col, status in zip(st.columns(4), STATUSES, strict=True):
        col.metric(status.capitalize(), int(counts.get(status, 0)))
    rows = queue[queue["status"].isin(show)].sort_values("detected_at", ascending=False)
    st.dataframe(rows[["item_id", "status", "location_id", "sku", "store_before",
                       "lakehouse_before", "difference", "cause", "note", "detected_at",
                       "resolved_by"]], hide_index=True)


live_review = parts.live(render_review)


def main() -> None:
    st.title("Shelflife — review")
    show = st.multiselect("Status", list(STATUSES), default=["open", "waiting"],
                          key="review_status")
    live_review(parts.context().root, show)
    st.caption("waiting = seqs below the event are missing; it is judged again when they "
               "arrive. Resolve: `shelflife review resolve ITEM --user NAME --how TEXT`.")


main()
