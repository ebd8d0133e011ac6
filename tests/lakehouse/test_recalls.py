"""Recalls in the lakehouse: the log's rules, and what transfers and reorders make of a
lot on hold. (Holds reaching the stores: tests/ingest/test_recalls.py.)"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from lakehouse import recalls
from lakehouse.catalogue import (
    REORDER_SUGGESTIONS,
)
from lakehouse.readers import read_table
from tests.apps.pages import APPROVER, APPROVER_PASSWORD, write_operators
from tests.lakehouse.demo_tables import write_one_store_of_milk

ROOT = Path(__file__).resolve().parents[2]


def test_the_log_keeps_every_decision_and_its_latest_is_the_state(tmp_path: Path) -> None:
    t0 = datetime(2026, 12, 1, 9, tzinfo=UTC)
    recalls.place_hold(tmp_path, "MILK", "L1", by="ana", reason="notice 114", now=t0)
    recalls.place_hold(tmp_path, "MILK", "L2", by="ana", reason="notice 114",
                       now=t0 + timedelta(minutes=1))
    with pytest.raises(recalls.HoldError, match="not on hold"):
        recalls.release_hold(tmp_path, "MILK", "L3", by="ana", reason="never held")
    recalls.release_hold(tmp_path, "MILK", "L1", by="bo", reason="cleared",
                         now=t0 + timedelta(hours=1))
    assert recalls.lots_on_hold(tmp_path) == {("MILK", "L2")}
    log = recalls.hold_log(tmp_path)
    assert log[["lot", "on_hold", "decided_by"]].values.tolist() == [
        ["L1", True, "ana"], ["L2", True, "ana"], ["L1", False, "bo"]]
    cohorts = pd.DataFrame({"sku": ["MILK", "MILK", "BREAD"], "lot": ["L1", "L2", "L2"],
                            "quantity": [1, 2, 3]})
    assert recalls.without_held(cohorts, {("MILK", "L2")})["quantity"].tolist() == [1, 3]


def test_reorders_replace_a_held_lot_instead_of_counting_it_on_hand(tmp_path: Path) -> None:
    from spark_jobs.decisions.jobs import run_reorders_job

    now = datetime.now(UTC)
    write_one_store_of_milk(tmp_path, now, {"L1": 20, "L2": 20}, forecast=12.0)

    def ordered() -> int:
        run_reorders_job(tmp_path, now=now, say=lambda _: None)
        sugg = read_table(REORDER_SUGGESTIONS, tmp_path)
        return 0 if sugg is None or sugg.empty else int(sugg["order_quantity"].sum())

    before = ordered()
    recalls.place_hold(tmp_path, "MILK-1L", "L1", by="ana", reason="notice 114")
    after = ordered()
    # 40 on hand cover the week's forecast; with 20 of them recalled they do not
    assert before == 0 < after, (before, after)


def test_the_command_holds_lists_and_releases_as_the_logged_in_operator(tmp_path: Path
                                                                        ) -> None:
    users = tmp_path / "users.yaml"
    write_operators(users)
    env = {"SHELFLIFE_USERS_FILE": str(users), "SHELFLIFE_PASSWORD": APPROVER_PASSWORD,
           "PATH": "/usr/bin:/bin"}
    cli = [sys.executable, "-m", "apps.cli", "recall"]
    lake = ["--lakehouse", str(tmp_path / "lake")]

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*cli, *args, *lake], cwd=ROOT, capture_output=True,
                              text=True, env=env, timeout=60)

    done = run("hold", "MILK", "L1", "--reason", "notice 114", "--user", APPROVER)
    assert done.returncode == 0, done.stderr
    assert f"MILK lot L1 on hold by {APPROVER}" in done.stdout
    shown = run("list")
    assert "MILK lot L1: on hold since" in shown.stdout and "notice 114" in shown.stdout
    again = run("hold", "MILK", "L1", "--reason", "twice", "--user", APPROVER)
    assert again.returncode != 0 and "already on hold" in again.stderr
    nobody = run("release", "MILK", "L1", "--reason", "cleared")
    assert nobody.returncode == 2 and "--user" in nobody.stderr
    assert run("release", "MILK", "L1", "--reason", "cleared", "--user",
               APPROVER).returncode == 0
    assert "no lot on hold" in run("list").stdout
