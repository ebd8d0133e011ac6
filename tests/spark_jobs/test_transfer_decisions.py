"""How a transfers run carries people's decisions: a re-proposal of a move someone
rejected today is not offered again, to a person or to the auto-approval rule."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd

from spark_jobs.decisions.jobs import _fresh_id, _with_decisions

NOW = datetime(2026, 12, 1, 6, tzinfo=UTC)


def _rows(*rows: tuple[str, int]) -> pd.DataFrame:
    return pd.DataFrame({"recommendation_id": [r for r, _ in rows],
                         "quantity": [q for _, q in rows],
                         "created_at": [pd.Timestamp(NOW)] * len(rows)})


def test_a_rejected_re_proposal_is_not_proposed_again_under_the_next_id():
    # Ana approved 10 units of a move; the next run proposed 5 more under a fresh id,
    # which Bo rejected. This run's recommender finds the same move once more.
    first = "a1b2c3d4e5f60718"
    again = _fresh_id(first, {first})
    previous = _rows((first, 10), (again, 5))
    decisions = pd.DataFrame({
        "recommendation_id": [first, again], "decision": ["approved", "rejected"],
        "decided_by": ["ana", "bo"], "decided_at": [pd.Timestamp(NOW)] * 2})
    out = _with_decisions(_rows((first, 4)), previous, decisions, NOW)
    assert sorted(zip(out["recommendation_id"], out["status"], out["quantity"],
                      strict=True)) == sorted([(first, "approved", 10),
                                               (again, "rejected", 5)])


def test_an_approved_move_proposed_again_gets_an_id_of_its_own():
    first = "a1b2c3d4e5f60718"
    decisions = pd.DataFrame({"recommendation_id": [first], "decision": ["approved"],
                              "decided_by": ["ana"], "decided_at": [pd.Timestamp(NOW)]})
    out = _with_decisions(_rows((first, 4)), _rows((first, 10)), decisions, NOW)
    proposed = out[out["status"] == "proposed"]
    assert proposed["recommendation_id"].tolist() == [_fresh_id(first, {first})]
    assert proposed["quantity"].tolist() == [4]
