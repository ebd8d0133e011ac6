"""The served dashboard asks who you are, and the transfers tab records that name.

A real ``streamlit run`` on a free port, driven by Debian's chromium through Playwright;
approvals are read back from silver ``transfer_decisions`` with deltalake.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import deltalake
import pytest
from streamlit.testing.v1 import AppTest

from apps.auth.users import ENV_USERS_FILE, UsersFile
from apps.streamlit.login import NO_USERS
from lakehouse import catalogue
from lakehouse.paths import ENV_ROOT
from tests.apps.pages import (
    APPROVER,
    APPROVER_PASSWORD,
    VIEWER,
    VIEWER_PASSWORD,
    served_dashboard,
    write_operators,
    write_transfer_recommendations,
)
from tests.lakehouse.demo_tables import write_demo_lakehouse

CHROMIUM = "/usr/bin/chromium"
DASHBOARD = Path(__file__).resolve().parents[2] / "apps" / "streamlit" / "dashboard.py"
playwright = pytest.importorskip("playwright.sync_api")
pytestmark = [pytest.mark.timeout(300),
              pytest.mark.skipif(not shutil.which(CHROMIUM),
                                 reason=f"{CHROMIUM} missing (scripts/setup.sh installs it)")]


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, list[str]]]:
    """One served dashboard over a demo lakehouse with two proposed transfers."""
    root = tmp_path_factory.mktemp("lakehouse")
    write_demo_lakehouse(root, datetime.now(UTC))
    recs = write_transfer_recommendations(root, datetime.now(UTC))
    users_file = root / "_auth" / "users.yaml"
    write_operators(users_file)
    with served_dashboard(root, users_file, root.parent / "dashboard.log") as url:
        yield url, root, recs


@pytest.fixture
def page(browser, site):
    """A fresh browser context (no cookies) on the dashboard."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    tab = context.new_page()
    tab.goto(site[0])
    tab.get_by_text("Shelflife — sign in").wait_for(timeout=60_000)
    yield tab
    context.close()


def _sign_in(page, name: str, password: str) -> None:
    page.get_by_label("User", exact=True).fill(name)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Sign in").click()


def _wait_signed_in(page, who: str) -> None:
    page.get_by_test_id("stSidebarUserContent").get_by_text(f"Signed in as {who}").wait_for(
        timeout=30_000)


def _open_transfers_tab(page, until) -> None:
    """Click the tab until ``until`` shows: the reruns right after a login (the cookie
    being set) can rebuild the tabs and drop a click made in between."""
    for _ in range(10):
        page.get_by_role("tab", name="Transfers to approve").click()
        try:
            until.wait_for(timeout=5_000)
            return
        except playwright.TimeoutError:
            continue
    until.wait_for(timeout=5_000)


def _decisions(root: Path) -> list[dict]:
    path = catalogue.TRANSFER_DECISIONS.path(root)
    if not (path / "_delta_log").exists():
        return []
    return deltalake.DeltaTable(str(path)).to_pyarrow_table().to_pylist()


def test_only_the_login_form_shows_until_a_right_password(page, site) -> None:
    body = page.inner_text("body")
    assert "Shelflife — sign in" in body
    for secret in ("Shelflife — stock", "MILK-1L", "Transfers to approve", "Dead letters",
                   "east"):
        assert secret not in body

    _sign_in(page, APPROVER, "not ana's passphrase")
    page.get_by_text("Login refused: unknown user or wrong password.").wait_for()
    _sign_in(page, "mallory", APPROVER_PASSWORD)
    page.get_by_text("Login refused: unknown user or wrong password.").wait_for()
    body = page.inner_text("body")
    assert "Shelflife — stock" not in body and "MILK-1L" not in body


def test_an_approver_approves_as_themselves_and_can_log_out(page, site) -> None:
    _url, root, recs = site
    _sign_in(page, APPROVER, APPROVER_PASSWORD)
    _wait_signed_in(page, "ana (approver)")
    approve = page.get_by_role("button", name=f"Approve as {APPROVER}")
    _open_transfers_tab(page, approve)
    assert page.get_by_label("Your name").count() == 0  # nobody types who they are
    before = len(_decisions(root))
    approve.click(timeout=90_000)  # reruns under load detach it for a while
    page.get_by_text(f"{recs[0]}: approved by {APPROVER}").wait_for(timeout=30_000)
    rows = _decisions(root)[before:]
    assert [(r["recommendation_id"], r["decision"], r["decided_by"]) for r in rows] == [
        (recs[0], "approved", APPROVER)]

    page.get_by_role("button", name="Log out").click()
    page.get_by_text("Shelflife — sign in").wait_for(timeout=30_000)
    assert "Shelflife — stock" not in page.inner_text("body")
    page.reload()  # the re-login cookie went with the logout
    page.get_by_text("Shelflife — sign in").wait_for(timeout=60_000)
    assert "Shelflife — stock" not in page.inner_text("body")


def test_a_viewer_sees_transfers_without_approve_or_reject(page, site) -> None:
    _url, root, _recs = site
    before = len(_decisions(root))
    _sign_in(page, VIEWER, VIEWER_PASSWORD)
    _wait_signed_in(page, "vic (viewer)")
    _open_transfers_tab(page, page.get_by_text(
        re.compile(r"vic \(viewer\): viewers see transfers but cannot approve or reject")))
    assert page.get_by_role("button", name=re.compile(r"^(Approve|Reject)")).count() == 0
    assert len(_decisions(root)) == before


def test_no_users_yet_says_how_to_add_one_instead_of_a_login_form(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_demo_lakehouse(tmp_path, datetime.now(UTC))
    users = UsersFile(tmp_path / "_auth" / "users.yaml")
    monkeypatch.setenv(ENV_ROOT, str(tmp_path))
    monkeypatch.setenv(ENV_USERS_FILE, str(users.path))
    at = AppTest.from_file(str(DASHBOARD), default_timeout=30).run()
    assert not at.exception, [e.value for e in at.exception]
    assert [i.value for i in at.info] == [NO_USERS]
    assert not at.text_input and not at.title  # no login form, nothing of the dashboard
