"""The outcome simulation at a small size, on a cut of the real demand file: what it reports
must add up, every policy must face the same customers, and the shelf-life rule must hold
where the units actually land."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from pathlib import Path

import pandas as pd
import pytest

from apps.outcomes import DEFAULT_DEMAND
from apps.outcomes_command import cmd_outcomes, source_categories
from spark_jobs.decisions.outcomes import TUNED_SERVICE_LEVELS

pytestmark = pytest.mark.server
JSON_KEYS = {"waste_reduction", "stockout_reduction", "post_transfer_waste_reduction",
             "inventory_change", "horizon_weeks", "stores", "transfers_per_store_week",
             "estimate_error_worst_decile", "auto_approval", "demand", "policies"}


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    if not DEFAULT_DEMAND.exists():
        pytest.skip(f"the FreshRetailNet file is not at {DEFAULT_DEMAND}")
    tmp = tmp_path_factory.mktemp("outcomes")
    data = pd.read_parquet(DEFAULT_DEMAND, filters=[("city_id", "==", 0)])
    data = data[data["first_category_id"].isin(list(source_categories()))]
    stores = sorted(data["store_id"].unique())[:2]
    data = data[data["store_id"].isin(stores)]
    products = sorted(data["product_id"].unique())[:12]  # few series: a quick forecast
    demand = tmp / "demand.parquet"
    data[data["product_id"].isin(products)].to_parquet(demand)
    args = argparse.Namespace(demand=demand, stores=2, weeks=2, seed=3, scale=10.0,
                              paths=100, cache=None, chart=None, report=tmp / "report.json")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cmd_outcomes(args) == 0
    last = out.getvalue().strip().splitlines()[-1]
    return json.loads(last), json.loads(Path(args.report).read_text())


def test_the_last_line_is_json_with_the_headline_keys(outcome: tuple[dict, dict]) -> None:
    line, _ = outcome
    assert set(line) >= JSON_KEYS
    assert line["stores"] == 2 and line["horizon_weeks"] == 2
    assert set(line["policies"]) == {"day_old_batch", "quantity_only", "shelflife"}


def test_stock_is_conserved_in_every_policy(outcome: tuple[dict, dict]) -> None:
    _, report = outcome
    for name, figures in report["policies"].items():
        b = figures["balance"]
        assert b["start_stock"] + b["receipts"] == pytest.approx(
            b["sold"] + b["waste"] + b["end_stock"]), name
        assert b["balanced"], name


def test_every_policy_faces_the_same_demand(outcome: tuple[dict, dict]) -> None:
    _, report = outcome
    demand = {p["demand_units"] for p in report["policies"].values()}
    assert len(demand) == 1 and demand.pop() > 0
    for p in report["policies"].values():
        assert p["sold_units"] + p["lost_sales_units"] == p["demand_units"]
        assert p["stockout_incidents"] >= (1 if p["lost_sales_units"] else 0)


def test_shelflife_transfers_never_land_below_the_minimum(outcome: tuple[dict, dict]) -> None:
    _, report = outcome
    margin = report["policies"]["shelflife"]["min_arrival_margin_days"]
    assert margin is None or margin >= 0  # life on arrival minus the destination's minimum
    assert report["policies"]["day_old_batch"]["transfers"] == 0


def test_every_transfer_estimate_is_set_against_a_replay_of_what_it_did(
        outcome: tuple[dict, dict]) -> None:
    line, report = outcome
    est = report["estimates"]
    assert 0 <= est["measured"] <= est["recommendations"]
    assert sum(d["recommendations"] for d in est["deciles"]) == est["measured"]
    assert line["estimate_error_worst_decile"] == est["worst_decile_error_shipped"]
    # replayed with its move, a move that shipped does what it did in the run
    assert est["shipped_replays_matching_run"] == est["shipped_measured"]
    assert "estimate_error_worst_decile" in line["targets_met"]


def test_both_sides_are_tuned_on_the_same_weeks(outcome: tuple[dict, dict]) -> None:
    """The day-old batch's safety stock and Shelflife's service level are both picked per
    category on the weeks before the scored ones; the run says what each picked."""
    line, report = outcome
    levels = line["shelflife_tuning"]["service_level"]
    assert set(levels) == set(line["baseline_tuning"]["safety_days"])
    assert set(levels.values()) <= set(TUNED_SERVICE_LEVELS)
    assert report["shelflife_tuning"] == line["shelflife_tuning"]
