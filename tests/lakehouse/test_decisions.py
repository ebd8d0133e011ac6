"""The decision log without a JVM: what the dashboard, the CLI and the dispatcher use."""

from __future__ import annotations

import pyarrow as pa
import pytest
from deltalake import write_deltalake

from lakehouse.catalogue import TRANSFER_RECOMMENDATIONS
from lakehouse.decisions import (
    SHIP_AFTER_APPROVAL_SLACK,
    approved_since,
    decision_history,
    read_decisions,
    record_decision,
    transfer_progress,
)


@pytest.fixture
def lake(tmp_path):
    recs = pa.table({"recommendation_id": ["r1", "r2"]})
    write_deltalake(str(TRANSFER_RECOMMENDATIONS.path(tmp_path)), recs)
    return tmp_path


def test_the_latest_decision_counts_and_the_history_is_kept(lake):
    assert decision_history(lake) is None and read_decisions(lake).empty
    record_decision("r1", "approved", "ana", root=lake)
    record_decision("r1", "rejected", " bo ", note="truck full", root=lake)
    record_decision("r2", "approved", "ana", root=lake)
    latest = read_decisions(lake).set_index("recommendation_id")
    assert latest.loc["r1", ["decision", "decided_by"]].tolist() == ["rejected", "bo"]
    history = decision_history(lake)
    assert history["decision"].tolist() == ["approved", "rejected", "approved"]
    ids, since = approved_since(history, ["r1", "r2"])
    assert sorted(ids) == ["r1", "r2"]
    assert since == history["decided_at"].min().to_pydatetime() - SHIP_AFTER_APPROVAL_SLACK
    assert approved_since(latest.reset_index(), ["r1"]) == ([], None)
    assert transfer_progress(lake, ids, since) == {}  # no silver events yet


@pytest.mark.parametrize(("rec", "decision", "who", "field"), [
    ("r1", "maybe", "ana", "decision"), ("r1", "approved", "  ", "decided_by"),
    ("nope", "approved", "ana", "recommendation_id")])
def test_a_bad_decision_is_refused_naming_the_field(lake, rec, decision, who, field):
    with pytest.raises(ValueError, match=field):
        record_decision(rec, decision, who, root=lake)
    assert decision_history(lake) is None
