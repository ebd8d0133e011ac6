"""The rules behind the network, expiry, transfers, stores and pipeline pages, on small
frames, and every page rendered by AppTest on the demo lakehouse."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from apps.auth.users import ENV_USERS_FILE
from apps.streamlit import decision_views, network_views, store_views, views
from lakehouse.paths import ENV_ROOT
from tests.apps.pages import (
    APPROVER,
    APPROVER_PASSWORD,
    sign_in,
    write_operators,
    write_transfer_recommendations,
)
from tests.lakehouse.demo_tables import write_demo_lakehouse, write_demo_pages

DASHBOARD = Path(__file__).resolve().parents[2] / "apps" / "streamlit" / "dashboard.py"
NOW = pd.Timestamp("2025-06-10 15:00", tz="UTC")
PAGES = ("network", "stock", "stores", "pipeline", "transfers", "review", "reorders",
         "forecasts", "recall")


def metrics_frame() -> pd.DataFrame:
    rows = [  # region, category, day, received, sold, wasted, active, out
        ("east", "dairy", date(2025, 6, 9), 100, 80, 5, 10, 1),
        ("west", "dairy", date(2025, 6, 9), 100, 60, 15, 10, 3),
        ("east", "dairy", date(2025, 6, 10), 300, 240, 6, 10, 0),
        ("west", "bakery", date(2025, 6, 10), 100, 90, 14, 10, 2),
    ]
    return pd.DataFrame(rows, columns=["region", "category", "day", "received_units",
                                       "sold_units", "wasted_units", "skus_active",
                                       "skus_stocked_out"])


def test_network_rates_are_ratios_of_sums_day_over_day() -> None:
    network = network_views.daily_kpis(metrics_frame())
    # 20 wasted of 200 received yesterday, 20 of 400 today: a big store weighs more.
    assert network["waste_rate"].tolist() == [0.1, 0.05]
    assert network["stockout_rate"].tolist() == [0.2, 0.1]
    assert network_views.day_over_day(network, "sell_through") == (0.825, 0.7)
    by_region = network_views.daily_kpis(metrics_frame(), "region")
    west = by_region[by_region["region"] == "west"]
    assert west["waste_rate"].tolist() == [0.15, 0.14]


def test_value_at_risk_counts_lots_expiring_within_48h_at_catalogue_prices() -> None:
    cohorts = pd.DataFrame({
        "region": "east", "location_id": ["E1", "E1", "E2", "E2", "E3"],
        "sku": ["MILK", "MILK", "BREAD", "MILK", "MILK"],
        "lot": ["a", "b", "c", "d", "e"],
        "expires_on": [date(2025, 6, 11), date(2025, 6, 20), date(2025, 6, 12),
                       date(2025, 6, 9), date(2025, 6, 11)],
        "quantity": [10, 50, 4, 2, 0]})
    items = pd.DataFrame({"sku": ["MILK", "BREAD"], "category": ["dairy", "bakery"],
                          "price": [1.5, 2.0]})
    lots = network_views.expiring_lots(cohorts, items, NOW)
    # Lot b expires in 10 days, lot e is sold out; the expired lot d still needs a decision.
    assert lots["lot"].tolist() == ["d", "a", "c"]
    assert lots["when"].tolist() == ["expired", "tomorrow", "in 2 days"]
    by_category = network_views.at_risk_by(lots, "category").set_index("category")
    assert by_category.loc["dairy", "units"] == 12 and by_category.loc["dairy", "value"] == 18
    assert by_category.loc["bakery", "value"] == 8
    no_prices = network_views.expiring_lots(cohorts, None, NOW)
    assert set(no_prices["category"]) == {"unknown"} and no_prices["value"].isna().all()


def _recs() -> pd.DataFrame:
    rows = []
    for rec_id, value, cost in (("r-small", 10.0, 1.0), ("r-costly", 50.0, 45.0),
                                ("r-best", 30.0, 2.0)):
        rows.append({"recommendation_id": rec_id, "status": "proposed", "sku": "MILK",
                     "lot": "L1", "expires_on": date(2025, 6, 13), "source_location": "WH",
                     "destination_location": "E1", "quantity": 10, "transit_hours": 5.0,
                     "shelf_life_at_arrival_days": 2.5, "min_sellable_days": 1.5,
                     "waste_prob_source_before": 0.6, "waste_prob_source_after": 0.1,
                     "waste_prob_destination": 0.05, "expected_units_saved": 8.0,
                     "transfer_cost": cost, "value_saved": value, "reason": "spoils",
                     "decided_by": None})
    return pd.DataFrame(rows)


def test_transfers_rank_by_value_net_of_cost_and_say_why() -> None:
    ranked = decision_views.ranked_transfers(_recs(), ["proposed"])
    # 50 saved for 45 of transport ranks below 30 saved for 2.
    assert ranked["recommendation_id"].tolist() == ["r-best", "r-small", "r-costly"]
    assert ranked["net_value"].tolist() == [28.0, 9.0, 5.0]
    assert ranked["why"][0].startswith("Move 10 × MILK (lot L1) from WH to E1: 5 h")
    assert "falls from 60% to 10%" in ranked["why"][0]
    assert decision_views.top_proposed(ranked, 2) == ["r-best", "r-small"]


def test_a_recorded_decision_shows_at_once_and_leaves_the_top_n() -> None:
    decisions = pd.DataFrame({"recommendation_id": ["r-best", "r-best"],
                              "decision": ["rejected", "approved"],
                              "decided_by": ["vic", "ana"],
                              "decided_at": [NOW, NOW + pd.Timedelta(seconds=1)]})
    recs = decision_views.with_decisions(_recs(), decisions)
    ranked = decision_views.ranked_transfers(recs, ["proposed", "approved"])
    best = ranked.set_index("recommendation_id").loc["r-best"]
    assert (best["status"], best["decided_by"]) == ("approved", "ana")
    assert decision_views.top_proposed(ranked, 2) == ["r-small", "r-costly"]


def _beats(location: str, *, online_last: bool = True, minutes: int = 60,
           per_beat: int = 10, quiet_from: int | None = None, outbox: int = 0,
           skew: float | None = None) -> list[dict]:
    rows, seq = [], 100
    for i in range(minutes * 2 + 1):
        at = NOW - pd.Timedelta(seconds=30 * (minutes * 2 - i))
        seq += per_beat if quiet_from is None or i < quiet_from else 0
        last = i == minutes * 2
        rows.append({"region": "east", "location_id": location, "agent_version": "0.1.0",
                     "online": online_last or not last, "local_time": at,
                     "received_at": at, "outbox_depth": outbox if last else 0,
                     "last_seq": seq, "last_acked_seq": seq - (outbox if last else 0),
                     "clock_skew_hint_s": skew})
    return rows


def test_stores_are_online_offline_or_silent_with_outbox_and_skew() -> None:
    beats = pd.DataFrame(_beats("E-ON", outbox=7, skew=3.2) + _beats("E-OFF", online_last=False)
                         + [b for b in _beats("E-GONE")
                            if b["received_at"] <= NOW - pd.Timedelta(minutes=5)])
    status = store_views.store_status(beats, NOW).set_index("location_id")
    assert status["state"].to_dict() == {"E-OFF": "offline", "E-GONE": "silent",
                                         "E-ON": "online"}
    assert list(status.index) == ["E-OFF", "E-GONE", "E-ON"]  # the ones to look at first
    assert status.loc["E-GONE", "last_heard"] == "5 minutes ago"
    assert (status.loc["E-ON", "outbox_depth"], status.loc["E-ON", "not_acked"]) == (7, 7)
    assert bool(status.loc["E-ON", "replaying"]) and status.loc["E-ON", "clock_skew_s"] == 3.2


def test_a_store_whose_events_stop_while_it_beats_is_flagged_quiet() -> None:
    # 20 events a minute for 45 minutes, then nothing while heartbeats go on.
    beats = pd.DataFrame(_beats("E-QUIET", quiet_from=90) + _beats("E-STEADY")
                         + _beats("E-IDLE", per_beat=0))
    rates = store_views.event_rates(beats, NOW)
    flagged = store_views.quiet_stores(rates)
    assert flagged["location_id"].tolist() == ["E-QUIET"]
    assert flagged["usual_per_h"][0] == pytest.approx(1200, rel=0.02)


def test_dead_letters_group_by_cause_over_time() -> None:
    dead = pd.DataFrame({
        "region": "east", "topic": "t", "source": "ingest",
        "reason": ["payload.quantity: expected int (#1)", "payload.quantity: expected int (#2)",
                   "unreadable: b'x'"],
        "received_at": [NOW - pd.Timedelta(minutes=3), NOW - pd.Timedelta(minutes=3),
                        NOW - pd.Timedelta(minutes=1)]})
    causes = views.top_dead_letter_causes(dead)
    assert causes[["cause", "count"]].values.tolist() == [["payload.quantity", 2],
                                                         ["unreadable", 1]]
    over_time = views.dead_letters_over_time(dead)
    assert over_time["dead_letters"].tolist() == [2, 1]


@pytest.fixture(params=["folder", "s3"])
def demo(request: pytest.FixtureRequest, tmp_path: Path,
         monkeypatch: pytest.MonkeyPatch) -> AppTest:
    """The dashboard in AppTest over the demo lakehouse, signed in as an approver; the
    lakehouse in a folder, then in a bucket on moto's S3 server."""
    now = datetime.now(UTC)
    root = str(tmp_path) if request.param == "folder" else request.getfixturevalue("s3_lake")
    write_demo_lakehouse(root, now)
    write_demo_pages(root, now)
    write_transfer_recommendations(root, now)
    write_operators(tmp_path / "users.yaml")
    monkeypatch.setenv(ENV_ROOT, root)
    monkeypatch.setenv(ENV_USERS_FILE, str(tmp_path / "users.yaml"))
    return sign_in(AppTest.from_file(str(DASHBOARD), default_timeout=60).run(),
                   APPROVER, APPROVER_PASSWORD)


def test_every_page_renders_its_question_on_the_demo_lakehouse(demo: AppTest) -> None:
    assert [t.value for t in demo.title] == ["Shelflife — network today"]  # the first page
    seen = {}
    for page in PAGES:
        demo.switch_page(f"screens/{page}.py").run()
        assert not demo.exception, (page, [e.value for e in demo.exception])
        assert not demo.error, (page, [e.value for e in demo.error])
        seen[page] = demo
        assert [t.value for t in demo.title] == [
            "Shelflife — " + ("stock" if page == "stock" else page.replace("network",
                                                                            "network today"))]
        metrics = {m.label: m.value for m in demo.metric}
        if page == "network":
            assert metrics["Waste rate"] == "3.5%"  # 31 wasted of 880 received today
            # 52 MILK-1L at 1.20, 17 YOGURT-500 at 1.90 and 6 BREAD-WHT at 2.50
            assert metrics["Value at risk of expiry (48 h)"] == "109.70"
        if page == "stores":
            assert (metrics["Online"], metrics["Offline"], metrics["Silent"]) == ("3", "1", "1")
            assert any("W-S101" in w.value for w in demo.warning)  # its events went quiet
        if page == "transfers":
            assert metrics["Proposed"] == "2"
        if page == "recall":  # east's milk lot: 12 units at E-S001, which confirmed
            assert (metrics["Units still held"], metrics["Locations holding"]) == ("12", "1")
            assert metrics["Stores confirmed"].startswith("1 of ")
            assert [h.value for h in demo.subheader] == ["MILK-1L lot L-0917"]
        if page == "pipeline":  # the history charts, and each broker's latest figures
            assert "Over the last 6 hours" in [h.value for h in demo.subheader]
            assert not [i.value for i in demo.info if i.value.startswith("No ")]
            assert (metrics["east: clients connected"],
                    metrics["west: clients connected"]) == ("100", "99")


def test_an_approver_orders_the_most_urgent_that_fit_the_spend_limit(
        demo: AppTest, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from lakehouse import purchase_orders as po
    from lakehouse.catalogue import PURCHASE_ORDERS
    from lakehouse.readers import read_table

    # Two suggestions, equally urgent: east's milk (36 x 1.20 = 43.20) does not fit a
    # limit of 40, west's bread (12 x 2.50 = 30.00) does.
    monkeypatch.setenv(po.ENV_SPEND_LIMIT, "40")
    demo.switch_page("screens/reorders.py").run()
    button = next(b for b in demo.button if b.label.startswith("Approve"))
    assert button.label == f"Approve 1 purchase orders (30.00) as {APPROVER}"
    button.click().run()
    assert not demo.exception and not demo.error, [e.value for e in demo.error]
    assert any(f"1 purchase orders approved by {APPROVER}" in s.value for s in demo.success)
    lines = read_table(PURCHASE_ORDERS, os.environ[ENV_ROOT])
    assert lines[["location_id", "sku", "quantity", "value", "approved_by"]].values.tolist() \
        == [["W-S100", "BREAD-WHT", 12, 30.0, APPROVER]]
    assert {m.label: m.value for m in demo.metric}["Spent today"] == "30"
    # Ordered once: on the next run the bread is not offered again, and the milk still
    # does not fit, so there is nothing to approve.
    demo.run()
    button = next(b for b in demo.button if b.label.startswith("Approve"))
    assert button.label == f"Approve 0 purchase orders (0.00) as {APPROVER}"
    assert button.disabled


def test_silenced_or_halved_stores_are_flagged_within_15_minutes_and_few_others() -> None:
    """An hour of a 300-store fleet, heartbeats every 30 s carrying each store's seq:
    Poisson trade at rates from 60 to 5,000 events an hour, drifting up or down by a
    quarter over the hours as trade does. Half an hour in, three stores stop recording
    events and three record half as many, while all keep beating. The page's check runs
    every minute on the last three hours of heartbeats, as the stores page reads them."""
    rng = np.random.default_rng(3)
    stores = [f"S{i:03d}" for i in range(300)]
    rates = dict(zip(stores, np.exp(rng.uniform(np.log(60), np.log(5000), 300)), strict=True))
    drift = dict(zip(stores, rng.uniform(-0.25, 0.25, 300), strict=True))  # per 4 hours
    silenced, halved = set(stores[:3]), set(stores[3:6])
    start = pd.Timestamp("2026-12-01 08:00", tz="UTC")
    hour0 = start + pd.Timedelta(hours=3)  # three hours of history, then the scored hour
    fault = hour0 + pd.Timedelta(minutes=30)
    beat_s, rows = 30, []
    for store in stores:
        seq = 0
        for k in range(int(4 * 3600 / beat_s) + 1):
            at = start + pd.Timedelta(seconds=k * beat_s)
            rate = rates[store] * (1 + drift[store] * k * beat_s / (4 * 3600))
            if at > fault and store in silenced:
                rate = 0.0
            elif at > fault and store in halved:
                rate /= 2
            seq += int(rng.poisson(rate * beat_s / 3600))
            rows.append({"region": "east", "location_id": store, "agent_version": "1",
                         "online": True, "local_time": at, "received_at": at,
                         "outbox_depth": 0, "last_seq": seq, "last_acked_seq": seq,
                         "clock_skew_hint_s": 0.0})
    beats = pd.DataFrame(rows)
    first_flag: dict[str, pd.Timestamp] = {}
    false_flags = checks = 0
    for minute in range(1, 61):
        now = hour0 + pd.Timedelta(minutes=minute)
        window = beats[(beats["received_at"] > now - pd.Timedelta(hours=3))
                       & (beats["received_at"] <= now)]
        flagged = set(store_views.quiet_stores(store_views.event_rates(window, now))[
            "location_id"])
        ordinary = [s for s in stores if s not in silenced | halved or now <= fault]
        checks += len(ordinary)
        false_flags += len(flagged & set(ordinary))
        for store in flagged & (silenced | halved):
            if now > fault:
                first_flag.setdefault(store, now)
    assert false_flags / checks < 0.01, f"{false_flags} false flags in {checks} checks"
    late = {s: first_flag.get(s) for s in silenced | halved
            if s not in first_flag or first_flag[s] - fault > pd.Timedelta(minutes=15)}
    assert not late, f"not flagged within 15 minutes of the drop: {late}"


def test_an_approver_puts_a_lot_on_hold_and_releases_it(demo: AppTest) -> None:
    import os

    from lakehouse import recalls

    root = os.environ[ENV_ROOT]
    demo.switch_page("screens/recall.py").run()
    demo.selectbox(key="recall_sku").set_value("BREAD-WHT")
    demo.text_input(key="recall_lot").input("B-77")
    demo.text_input(key="recall_reason").input("notice 2026-120")
    next(b for b in demo.button if b.label == f"Put on hold as {APPROVER}").click().run()
    assert not demo.exception and not demo.error, [e.value for e in demo.error]
    assert any(f"BREAD-WHT lot B-77 put on hold by {APPROVER}" in s.value
               for s in demo.success)
    assert ("BREAD-WHT", "B-77") in recalls.lots_on_hold(root)
    assert "BREAD-WHT lot B-77" in [h.value for h in demo.subheader]
    # the same lot again is refused in words
    demo.selectbox(key="recall_sku").set_value("BREAD-WHT")
    demo.text_input(key="recall_lot").input("B-77")
    demo.text_input(key="recall_reason").input("twice")
    next(b for b in demo.button if b.label == f"Put on hold as {APPROVER}").click().run()
    assert any("already on hold" in e.value for e in demo.error)
    hold = recalls.hold_id("BREAD-WHT", "B-77")
    demo.text_input(key=f"release_reason_{hold}").input("supplier cleared it")
    release = [b for b in demo.button if b.label == f"Release as {APPROVER}"]
    release[[h.value for h in demo.subheader].index("BREAD-WHT lot B-77")].click().run()
    assert ("BREAD-WHT", "B-77") not in recalls.lots_on_hold(root)
    assert ("MILK-1L", "L-0917") in recalls.lots_on_hold(root)
