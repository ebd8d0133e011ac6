"""The region cards: is each region's stream live, syncing or stale, and how far behind.

Shown on the stock page (stock below a stale region is old) and the pipeline page.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from apps.streamlit import parts, views
from lakehouse import catalogue
from lakehouse.contract import REGIONS


def render_regions(root: str, now: pd.Timestamp) -> pd.DataFrame | None:
    """Status cards, one per region; stale or syncing regions say so in words."""
    st.subheader("Regions")
    status = parts.current_table(root, catalogue.REGION_STATUS)
    if status is None or status.empty:
        st.info(parts.waiting_message(catalogue.REGION_STATUS.uri(root)))
        return None
    cards = views.region_cards(status, now)
    for card in cards[cards["mode"] == "syncing"].itertuples():
        st.warning(f"{card.headline}: its stock, trends and availability are "
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
            st.caption(f"lag {parts.seconds(card.lag_s)} · "
                       f"{views.updated_ago(card.updated_at, now)}")
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


def render_freshness(root: str, now: pd.Timestamp) -> None:
    """One line per region that is syncing or stale, so an old figure is not read as
    today's; one caption when every region is live and current."""
    status = parts.current_table(root, catalogue.REGION_STATUS)
    if status is None or status.empty:
        st.info(parts.waiting_message(catalogue.REGION_STATUS.uri(root)))
        return
    cards = views.region_cards(status, now)
    for card in cards.itertuples():
        if card.mode == "syncing":
            st.warning(f"{card.headline}: its figures are catching up and stale until it "
                       "is live again.")
        elif card.stale:
            st.warning(f"Region {card.region}: stale, no update for "
                       f"{views.describe_duration(card.age_s)}; its figures may be behind.")
    if not (cards["stale"] | (cards["mode"] != "live")).any():
        st.caption(f"All {len(cards)} regions live · as of {now:%H:%M:%S} UTC · "
                   f"refreshes every {parts.REFRESH_S:.0f} s")


@parts.live
def live_freshness(root: str) -> None:
    """The freshness line on its own two-second timer."""
    render_freshness(root, pd.Timestamp.now(tz="UTC"))


@parts.live
def live_regions(root: str) -> None:
    """The region cards, and the moment they were read."""
    now = pd.Timestamp.now(tz="UTC")
    render_regions(root, now)
    st.caption(f"as of {now:%Y-%m-%d %H:%M:%S} UTC · refreshes every {parts.REFRESH_S:.0f} s")


def known_regions(root: str) -> list[str]:
    """The contract's regions and any other the stream reports, for region filters."""
    status = parts.current_table(root, catalogue.REGION_STATUS, columns=("region",))
    known = set(REGIONS) if status is None else set(REGIONS) | set(status["region"])
    return sorted(known)
