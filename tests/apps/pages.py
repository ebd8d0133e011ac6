"""Helpers for tests of the served dashboard: operators, transfer recommendations, a
real ``streamlit run`` on a free port, and signing in through the page's own form."""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from pathlib import Path

import pandas as pd
from streamlit.testing.v1 import AppTest

from apps.auth.users import UsersFile
from apps.streamlit.launch import dashboard_command
from lakehouse.catalogue import TRANSFER_RECOMMENDATIONS
from spark_jobs.decisions.jobs import write_table
from tests.conftest import free_port
from tests.served import served

APPROVER, APPROVER_PASSWORD = "ana", "ana's long passphrase"
VIEWER, VIEWER_PASSWORD = "vic", "vic only looks around"


def write_operators(path: Path) -> UsersFile:
    """An approver and a viewer, added the way ``shelflife users add`` adds them."""
    users = UsersFile(path)
    users.add(APPROVER, APPROVER_PASSWORD, "approver")
    users.add(VIEWER, VIEWER_PASSWORD, "viewer")
    return users


MORE_RECOMMENDATIONS = (("rec-cream-00003", 9.0, 8), ("rec-cheese-0004", 7.5, 6),
                        ("rec-butter-0005", 5.0, 4))


def write_transfer_recommendations(root: Path, now: datetime, *, count: int = 2
                                   ) -> list[str]:
    """``count`` (2 to 5) proposed transfers in gold, as the transfers job writes them;
    their ids, most valuable first (the order the dashboard lists them in)."""
    rows = []
    for rec_id, value, qty in ((("rec-yogurt-0001", 42.0, 30), ("rec-milk-000002", 12.5, 10))
                               + MORE_RECOMMENDATIONS)[:count]:
        rows.append({
            "recommendation_id": rec_id, "created_at": now, "region": "east",
            "sku": "DAIRY-YOG-500", "category": "dairy", "lot": "L-0917",
            "expires_on": date.today() + timedelta(days=4), "source_location": "WH-EAST-1",
            "source_kind": "warehouse", "destination_location": "E-S001",
            "destination_region": "east", "destination_kind": "store", "quantity": qty,
            "transit_hours": 5.5, "handling_hours": 8.0, "arrival_at": now + timedelta(hours=6),
            "shelf_life_at_arrival_days": 3.2, "min_sellable_days": 1.5,
            "waste_prob_source_before": 0.6, "waste_prob_source_after": 0.1,
            "waste_prob_destination": 0.05, "expected_units_saved": qty * 0.8,
            "transfer_cost": qty * 0.1, "value_saved": value, "status": "proposed",
            "reason": "the warehouse lot would spoil before it sells",
            "decided_by": None, "decided_at": None})
    write_table(TRANSFER_RECOMMENDATIONS, pd.DataFrame(rows), root)
    return [r["recommendation_id"] for r in rows]


@contextmanager
def served_dashboard(lakehouse: Path, users_file: Path, log: Path) -> Iterator[str]:
    """``streamlit run`` of the real dashboard, as ``shelflife dashboard`` starts it; its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
            return resp.status == 200

    with served(dashboard_command(str(lakehouse), port, str(users_file)), log, healthy,
                "dashboard", env={**os.environ, "SHELFLIFE_LAKEHOUSE": str(lakehouse)}):
        yield url


def sign_in(at: AppTest, name: str, password: str) -> AppTest:
    """Fill the page's login form in an AppTest run and submit it."""
    fields = {box.label: box for box in at.text_input}
    fields["User"].input(name)
    fields["Password"].input(password)
    next(b for b in at.button if b.label == "Sign in").click()
    return at.run()
