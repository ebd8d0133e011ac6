"""The served dashboard asks who you are, every page renders in a real browser, and the
transfers page records the signed-in name, one transfer at a time or the best N at once.

A real ``streamlit run`` on a free port, driven by Debian's chromium through Playwright;
approvals are read back from silver ``transfer_decisions`` with deltalake. Timeouts are
generous and navigation clicks are repeated until the page shows: a loaded two-core CI
machine reruns the page slowly, and a rerun right after the login can drop a click.
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
from tests.lakehouse.demo_tables import (
    write_demo_heartbeats,
    write_demo_lakehouse,
    write_demo_pages,
)

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
    write_demo_pages(root, datetime.now(UTC))
    recs = write_transfer_recommendations(root, datetime.now(UTC), count=5)
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


def _open_page(page, name: str, until) -> None:
    """Click the page's link in the sidebar until ``until`` shows: the reruns right after
    a login (the cookie being set) can rebuild the page and drop a click made in between."""
    link = page.get_by_test_id("stSidebarNav").get_by_role("link", name=name, exact=True)
    for _ in range(12):
        try:
            link.click(timeout=10_000)
            until.wait_for(timeout=10_000)
            return
        except playwright.TimeoutError:
            continue
    until.wait_for(timeout=30_000)


def _open_transfers_tab(page, until) -> None:
    _open_page(page, "Transfers", until)


def _decisions(root: Path) -> list[dict]:
    path = catalogue.TRANSFER_DECISIONS.path(root)
    if not (path / "_delta_log").exists():
        return []
    rows = deltalake.DeltaTable(str(path)).to_pyarrow_table().to_pylist()
    return sorted(rows, key=lambda r: r["decided_at"])  # files come back in no set order


def test_only_the_login_form_shows_until_a_right_password(page, site) -> None:
    body = page.inner_text("body")
    assert "Shelflife — sign in" in body
    for secret in ("Shelflife — stock", "MILK-1L", "Transfers", "Dead letters", "east",
                   "Network today"):
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
    # Nothing ships without a person unless the transfers job is told so; the page says why.
    off = page.get_by_text(re.compile(r"Auto-approval .* is off by default"))
    off.wait_for(timeout=30_000)  # it may draw after the viewer's caption
    assert off.count() == 1


def test_a_bookmarked_page_opens_after_the_login(browser, site) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        tab = context.new_page()
        tab.goto(f"{site[0]}/stores")
        tab.get_by_text("Shelflife — sign in").wait_for(timeout=60_000)
        assert "Stores" not in tab.inner_text("body")  # no page named before the sign-in
        _sign_in(tab, VIEWER, VIEWER_PASSWORD)
        # .first: while the page reruns after the sign-in, Streamlit may briefly keep the
        # previous run's heading beside the new one.
        tab.get_by_role("heading", name="Shelflife — stores").first.wait_for(timeout=60_000)
    finally:
        context.close()


def test_a_signed_in_browser_opens_another_page_without_the_form(browser, site) -> None:
    """The re-login cookie: a second tab of the same browser goes straight to the page,
    and the sign-in is not asked again when the page is reloaded."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        tab = context.new_page()
        tab.goto(site[0])
        tab.get_by_text("Shelflife — sign in").wait_for(timeout=60_000)
        _sign_in(tab, VIEWER, VIEWER_PASSWORD)
        _wait_signed_in(tab, "vic (viewer)")
        other = context.new_page()
        for _ in range(10):  # the cookie is set by a component just after the sign-in
            other.goto(f"{site[0]}/stock")
            heading = other.get_by_role("heading", name="Shelflife — stock").first
            try:
                heading.wait_for(timeout=15_000)
                break
            except playwright.Error:
                continue
        heading.wait_for(timeout=1_000)
        assert "Shelflife — sign in" not in other.inner_text("body")
        other.get_by_test_id("stSidebarNav").get_by_role(
            "link", name="Transfers", exact=True).wait_for(timeout=30_000)
        other.reload()
        other.get_by_role("heading", name="Shelflife — stock").first.wait_for(timeout=60_000)
        assert "Shelflife — sign in" not in other.inner_text("body")
    finally:
        context.close()


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


PAGES = {  # sidebar link -> what the page shows on the demo lakehouse once it rendered
    "Network today": "Waste rate",
    "Stock and expiry": "Expiring soon, by location",
    "Stores": "recorded far fewer events in the last 15 minutes than usual: W-S101",
    "Pipeline": "Top causes",
    "Transfers": "Net value of proposals",
    "Review": "No quantity conflicts",
    "Reorders": "Units to order",
    "Forecasts": "Demand forecasts",
    "Recall": "Units still held",
}


def test_every_page_renders_without_an_exception(page, site) -> None:
    _sign_in(page, VIEWER, VIEWER_PASSWORD)
    _wait_signed_in(page, "vic (viewer)")
    for name, shows in PAGES.items():
        if name == "Stores":  # heartbeats as of now: stores go silent 90 s after the last
            write_demo_heartbeats(site[1], datetime.now(UTC))
        _open_page(page, name, page.get_by_text(shows).first)
        page.wait_for_timeout(2_500)  # a live part's next refresh, too
        assert page.get_by_test_id("stException").count() == 0, name
        body = page.inner_text("body")
        assert "Could not read the lakehouse" not in body, name
        assert "disagree on a table's shape" not in body, name


def _ranked_proposals(root: Path) -> list[str]:
    """The proposals still waiting, best value net of transport first."""
    recs = deltalake.DeltaTable(str(catalogue.TRANSFER_RECOMMENDATIONS.path(root))
                                ).to_pyarrow_table().to_pylist()
    decided = {r["recommendation_id"] for r in _decisions(root)}
    waiting = [r for r in recs if r["recommendation_id"] not in decided]
    return [r["recommendation_id"] for r in sorted(
        waiting, key=lambda r: (-(r["value_saved"] - r["transfer_cost"]),
                                r["recommendation_id"]))]


def test_an_approver_approves_the_best_n_at_once_as_themselves(page, site) -> None:
    _url, root, _recs = site
    expected = _ranked_proposals(root)[:2]
    assert len(expected) == 2
    _sign_in(page, APPROVER, APPROVER_PASSWORD)
    _wait_signed_in(page, "ana (approver)")
    approve = page.get_by_role("button", name=f"Approve top N as {APPROVER}")
    _open_transfers_tab(page, approve)
    how_many = page.get_by_label("How many of the best proposals")
    how_many.fill("2", timeout=90_000)
    assert how_many.input_value() == "2"
    before = len(_decisions(root))
    approve.click(timeout=90_000)
    page.get_by_text(f"2 transfers approved by {APPROVER}").wait_for(timeout=60_000)
    rows = _decisions(root)[before:]
    assert [(r["recommendation_id"], r["decision"], r["decided_by"]) for r in rows] == [
        (rec_id, "approved", APPROVER) for rec_id in expected]
    # Decided transfers leave the proposals at once, without waiting for the next run.
    waiting = len(_ranked_proposals(root))
    page.get_by_test_id("stMetric").filter(
        has_text=re.compile(rf"Proposed\s*{waiting}\s*$")).wait_for(timeout=30_000)
