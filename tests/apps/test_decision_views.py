"""What the decision tabs show: the right rows, in the order a person acts on them."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from apps.streamlit import decision_views
from apps.streamlit.views import SchemaError


def _rec(rec_id: str, status: str, value: float, qty: int) -> dict:
    row = dict.fromkeys(decision_views.TRANSFER_COLUMNS, None)
    row.update(recommendation_id=rec_id, status=status, value_saved=value, quantity=qty,
               expected_units_saved=qty * 0.8, transfer_cost=qty * 0.1)
    return row


def test_transfer_tab_lists_chosen_statuses_most_value_first_and_totals_proposed_only():
    recs = pd.DataFrame([_rec("a", "proposed", 10.0, 20), _rec("b", "approved", 99.0, 50),
                         _rec("c", "proposed", 30.0, 40)])
    table = decision_views.transfer_table(recs, ["proposed"])
    assert table["recommendation_id"].tolist() == ["c", "a"]
    totals = decision_views.transfer_totals(recs)
    assert totals["proposed"] == 2 and totals["approved"] == 1
    assert totals["units"] == 60 and totals["value_saved"] == 40.0
    assert totals["units_saved"] == pytest.approx(48.0)


def test_a_table_missing_a_column_names_it():
    with pytest.raises(SchemaError, match="reason"):
        decision_views.transfer_table(pd.DataFrame([_rec("a", "proposed", 1, 1)]).drop(
            columns=["reason"]), ["proposed"])


def test_accuracy_by_day_sums_error_over_sales():
    acc = pd.DataFrame({"day": [date(2026, 11, 20)] * 2 + [date(2026, 11, 21)],
                        "forecast": [10.0, 8.0, 5.0], "actual": [14.0, 6.0, 0.0],
                        "abs_error": [4.0, 2.0, 5.0], "within_interval": [True, False, False],
                        "complete": [True, True, False]})
    out = decision_views.accuracy_by_day(acc).set_index("day")
    assert out.loc[date(2026, 11, 20), "wape"] == pytest.approx(6 / 20)
    assert out.loc[date(2026, 11, 20), "bias"] == pytest.approx(18 / 20 - 1)
    assert out.loc[date(2026, 11, 20), "inside"] == 0.5
    assert pd.isna(out.loc[date(2026, 11, 21), "wape"])  # nothing sold: no ratio to show
    assert out.index[0] == date(2026, 11, 21)  # newest first


def test_transfer_efficiency_per_day_and_category():
    metrics = pd.DataFrame({"day": [date(2026, 11, 20)] * 2, "category": ["dairy"] * 2,
                            "forecast_units": [10.0, None], "forecast_abs_error": [2.0, None],
                            "sold_units": [12, 3], "transferred_in_units": [20, 20],
                            "transferred_sold_48h": [15, 5]})
    out = decision_views.outcome_by_day(metrics)
    assert out.loc[0, "transfer_efficiency"] == pytest.approx(20 / 40)
    assert out.loc[0, "forecast_units"] == 10.0
