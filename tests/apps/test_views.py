"""The stock page: its rules on small frames, and the real page rendered by AppTest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from apps.auth.users import ENV_USERS_FILE
from apps.streamlit import views
from lakehouse import startup
from lakehouse.paths import ENV_ROOT
from tests.apps.pages import APPROVER, APPROVER_PASSWORD, sign_in, write_operators
from tests.lakehouse.demo_tables import write_demo_lakehouse

DASHBOARD = Path(__file__).resolve().parents[2] / "apps" / "streamlit" / "dashboard.py"
NOW = pd.Timestamp("2025-06-10 15:00", tz="UTC")


def stock_frame() -> pd.DataFrame:
    rows = [
        ("east", "E-S001", "MILK-1L", 30, 2, date(2025, 6, 11)),  # tomorrow
        ("east", "E-S001", "BREAD-WHT", 8, 1, date(2025, 6, 15)),  # in 5 days
        ("east", "E-S002", "MILK-1L", 4, 1, date(2025, 6, 12)),  # day starts in 33 h
        ("east", "E-S002", "CHEESE-200", 5, 1, date(2025, 6, 13)),  # day starts in 57 h
        ("central", "C-S010", "YOGURT-500", -3, 0, None),  # negative, unallocated
        ("west", "W-DC01", "MILK-1L", 0, 0, None),  # empty shelf
        ("west", "W-S100", "SALAD-MIX", 6, 1, date(2025, 6, 8)),  # already expired
    ]
    frame = pd.DataFrame(
        rows, columns=["region", "location_id", "sku", "on_hand", "cohorts", "earliest_expiry"]
    )
    frame["last_seq"] = range(1, len(frame) + 1)
    frame["updated_at"] = NOW - pd.Timedelta(seconds=2)
    return frame


def cohort_frame() -> pd.DataFrame:
    rows = [
        ("east", "E-S001", "MILK-1L", "L-2", date(2025, 6, 16), 18),
        ("east", "E-S001", "MILK-1L", "L-1", date(2025, 6, 11), 12),
        ("east", "E-S001", "MILK-1L", "L-0", date(2025, 6, 1), 0),  # sold out, history
        ("east", "E-S001", "BREAD-WHT", "B-77", date(2025, 6, 15), 8),
        ("central", "C-S010", "YOGURT-500", "Y-1", date(2025, 6, 20), 2),
        ("central", "C-S010", "YOGURT-500", "(none)", None, -5),
    ]
    frame = pd.DataFrame(
        rows, columns=["region", "location_id", "sku", "lot", "expires_on", "quantity"]
    )
    frame["updated_at"] = NOW
    return frame


def status_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "region": ["west", "east", "central"],
            "mode": ["syncing", "live", "live"],
            "events_total": [56, 1234, 880],
            "events_last_batch": [50, 17, 0],
            "batch_duration_s": [1.9, 0.8, 0.4],
            "last_event_at": [NOW - pd.Timedelta(minutes=23), NOW, NOW - pd.Timedelta(seconds=95)],
            "lag_s": [23 * 60.0, 1.2, 0.9],
            "updated_at": [NOW, NOW - pd.Timedelta(seconds=3), NOW - pd.Timedelta(seconds=31)],
        }
    )


def test_expiring_within_48h_is_relative_to_now() -> None:
    rows = views.filter_stock(stock_frame(), NOW, expiring_only=True)
    # Tomorrow, the day after (starts 33 h from now) and expired stock; not 57 h away.
    assert set(zip(rows["location_id"], rows["sku"], strict=True)) == {
        ("E-S001", "MILK-1L"),
        ("E-S002", "MILK-1L"),
        ("W-S100", "SALAD-MIX"),
    }
    later = views.filter_stock(stock_frame(), NOW + pd.Timedelta(hours=12), expiring_only=True)
    assert ("E-S002", "CHEESE-200") in set(zip(later["location_id"], later["sku"], strict=True))


def test_days_to_expiry_and_flags() -> None:
    rows = views.filter_stock(stock_frame(), NOW).set_index(["location_id", "sku"])
    assert rows.loc[("E-S001", "MILK-1L"), "days_to_expiry"] == 1
    assert rows.loc[("W-S100", "SALAD-MIX"), "days_to_expiry"] == -2
    assert pd.isna(rows.loc[("C-S010", "YOGURT-500"), "days_to_expiry"])
    assert rows.loc[("W-S100", "SALAD-MIX"), "flag"] == "expired"
    assert rows.loc[("E-S001", "MILK-1L"), "flag"] == "expires within 48 h"
    assert rows.loc[("C-S010", "YOGURT-500"), "flag"] == "negative stock"
    assert rows.loc[("W-DC01", "MILK-1L"), "flag"] == "no stock"
    assert rows.loc[("E-S001", "BREAD-WHT"), "flag"] == ""


def test_soonest_expiry_leads_and_undated_rows_trail() -> None:
    rows = views.filter_stock(stock_frame(), NOW)
    assert rows.iloc[0]["sku"] == "SALAD-MIX"
    assert rows["days_to_expiry"].tail(2).isna().all()


def test_negative_or_zero_stock_filter() -> None:
    rows = views.filter_stock(stock_frame(), NOW, non_positive_only=True)
    assert sorted(rows["location_id"]) == ["C-S010", "W-DC01"]
    assert (rows["on_hand"] <= 0).all()


def test_region_location_and_sku_search_combine() -> None:
    stock = stock_frame()
    assert set(views.filter_stock(stock, NOW, regions=["west"])["region"]) == {"west"}
    milk = views.filter_stock(stock, NOW, sku_search=" milk ")
    assert sorted(milk["location_id"]) == ["E-S001", "E-S002", "W-DC01"]
    one = views.filter_stock(stock, NOW, regions=["east"], locations=["E-S002"], sku_search="MILK")
    assert list(zip(one["location_id"], one["sku"], strict=True)) == [("E-S002", "MILK-1L")]
    none = views.filter_stock(stock, NOW, regions=["east"], non_positive_only=True)
    assert none.empty


def test_cohort_breakdown_adds_up_to_on_hand() -> None:
    stock = stock_frame().set_index(["location_id", "sku"])
    lots = views.cohort_breakdown(cohort_frame(), "E-S001", "MILK-1L", NOW)
    assert list(lots["lot"]) == ["L-1", "L-2"]  # oldest expiry first, sold-out lot dropped
    assert list(lots["days_left"]) == [1, 6]
    assert lots["quantity"].sum() == stock.loc[("E-S001", "MILK-1L"), "on_hand"]

    yogurt = views.cohort_breakdown(cohort_frame(), "C-S010", "YOGURT-500", NOW)
    assert list(yogurt["lot"]) == ["Y-1", "(none)"]  # unallocated, undated lot last
    assert yogurt["quantity"].sum() == stock.loc[("C-S010", "YOGURT-500"), "on_hand"]


def test_region_cards_mark_stale_and_syncing() -> None:
    cards = views.region_cards(status_frame(), NOW).set_index("region")
    assert list(cards.index) == ["central", "east", "west"]
    assert bool(cards.loc["central", "stale"])  # 31 s without an update
    assert not bool(cards.loc["east", "stale"])
    assert cards.loc["west", "headline"] == "Region west: syncing (23 minutes behind)"
    assert cards.loc["east", "age_s"] == pytest.approx(3.0)
    assert views.updated_ago(cards.loc["east", "updated_at"], NOW) == "updated 3 s ago"


def test_missing_column_names_the_table() -> None:
    with pytest.raises(views.SchemaError, match=r"gold/stock_levels: missing column\(s\) on_hand"):
        views.filter_stock(stock_frame().drop(columns=["on_hand"]), NOW)


def test_latest_dead_letters_newest_first_without_raw_bytes() -> None:
    dead = pd.DataFrame(
        {
            "region": ["east"] * 30,
            "topic": ["shelflife/v1/east/E-S001/events"] * 30,
            "raw": [b"x"] * 30,
            "reason": [f"reason {i}" for i in range(30)],
            "received_at": [NOW - pd.Timedelta(seconds=i) for i in range(30)],
            "source": ["ingest"] * 30,
        }
    )
    latest = views.latest_dead_letters(dead)
    assert len(latest) == 20
    assert latest.iloc[0]["reason"] == "reason 0"
    assert "raw" not in latest.columns


def _rendered_text(at: AppTest) -> str:
    """Every string and table cell the page put on screen, joined for searching."""
    parts: list[str] = []
    for kind in ("title", "markdown", "caption", "info", "warning", "error", "subheader"):
        parts += [str(element.value) for element in getattr(at, kind)]
    parts += [f"{metric.label} {metric.value}" for metric in at.metric]
    for frame in at.dataframe:
        parts.append(frame.value.to_string())
    parts += [str(option) for box in at.selectbox for option in box.options]
    return "\n".join(parts)


def _signed_in(root: Path, users_file: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    """The page in AppTest, after the approver signed in through its login form."""
    write_operators(users_file)
    monkeypatch.setenv(ENV_ROOT, str(root))
    monkeypatch.setenv(ENV_USERS_FILE, str(users_file))
    return sign_in(AppTest.from_file(str(DASHBOARD), default_timeout=30).run(),
                   APPROVER, APPROVER_PASSWORD)


def test_page_shows_regions_and_stock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_demo_lakehouse(tmp_path, datetime.now(UTC))
    at = _signed_in(tmp_path, tmp_path / "users.yaml", monkeypatch)
    assert not at.exception, [e.value for e in at.exception]
    at.switch_page("screens/stock.py").run()
    assert not at.exception, [e.value for e in at.exception]
    text = _rendered_text(at)
    assert "Shelflife — stock" in text
    assert "MILK-1L" in text and "YOGURT-500" in text
    assert "Region west: syncing (23 minutes behind)" in text
    assert "Region central: stale" in text
    # The region cards and dead letters moved to the pipeline page.
    text = _rendered_text(at.switch_page("screens/pipeline.py").run())
    for region in ("east", "central", "west"):
        assert f"**{region}**" in text
    assert "Region west: syncing (23 minutes behind)" in text
    assert "Region central: stale" in text
    assert "Dead letters 25" in text
    at.switch_page("screens/stock.py").run()

    # Choosing a row shows the lots behind it.
    at.selectbox(key="cohort_choice").set_value(("E-S001", "MILK-1L")).run()
    lots = [frame.value for frame in at.dataframe if "lot" in frame.value.columns]
    assert lots and list(lots[0]["lot"]) == ["L-0917", "L-0921"]

    # The negative/zero filter leaves only the empty and the negative shelf.
    at.checkbox(key="non_positive_only").check().run()
    stock = next(frame.value for frame in at.dataframe if "on_hand" in frame.value.columns)
    assert sorted(stock["sku"]) == ["MILK-1L", "YOGURT-500"]
    assert (stock["on_hand"] <= 0).all()


def test_empty_lakehouse_says_it_is_waiting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "lakehouse"
    at = _signed_in(root, tmp_path / "users.yaml", monkeypatch)
    assert not at.exception, [e.value for e in at.exception]
    messages = [info.value for info in at.info]
    assert f"Waiting for the first data from the lakehouse at {root}" in messages
    assert any("No component has reported its start yet" in c.value for c in at.caption)

    # The stream records its steps as it starts; the page shows how far it has come.
    startup.Progress(root, "stream", 5).step(2, "starting Spark")
    at.run()
    bars = [(el.proto.value, el.proto.text) for el in at.get("progress")]
    assert len(bars) == 1 and bars[0][0] == 40, bars
    assert bars[0][1].startswith("stream: starting Spark — step 2 of 5"), bars
    # A stream that died on the way says so instead of a bar that never moves.
    step = json.loads((root / "_startup" / "stream.json").read_text())
    dead = subprocess.Popen(["true"])
    dead.wait()
    (root / "_startup" / "stream.json").write_text(json.dumps({**step, "pid": dead.pid}))
    at.run()
    assert [e.value for e in at.error] == [
        "stream: stopped at step 2 of 5 (starting Spark); see its log"]

    # Once Spark commits, the next refresh shows the data instead.
    write_demo_lakehouse(root, datetime.now(UTC))
    at.run()
    assert not any("Waiting" in info.value for info in at.info)
    assert "MILK-1L" in _rendered_text(at.switch_page("screens/stock.py").run())


def test_page_runs_without_pyspark(tmp_path: Path) -> None:
    # The dashboard host has no JVM: rendering the page must not even import pyspark.
    write_demo_lakehouse(tmp_path, datetime.now(UTC))
    write_operators(tmp_path / "users.yaml")
    probe = (
        "import sys\n"
        "from streamlit.testing.v1 import AppTest\n"
        "from tests.apps.pages import APPROVER, APPROVER_PASSWORD, sign_in\n"
        f"at = AppTest.from_file({str(DASHBOARD)!r}, default_timeout=30).run()\n"
        "at = sign_in(at, APPROVER, APPROVER_PASSWORD)\n"
        "at = at.switch_page('screens/stock.py').run()\n"
        "assert not at.exception, [e.value for e in at.exception]\n"
        "assert [t.value for t in at.title] == ['Shelflife — stock']\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pyspark', 'py4j')))\n"
    )
    env = {**os.environ, ENV_ROOT: str(tmp_path), ENV_USERS_FILE: str(tmp_path / "users.yaml"),
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
