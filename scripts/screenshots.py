"""Signs in to a served dashboard over the demo lakehouse and saves a screenshot of every
page to docs/screenshots/ (the README's "Pages" section shows them).

Run from the repository root: ``python scripts/screenshots.py [OUT_DIR]``; it needs
Playwright and Debian's chromium, like the browser tests.
"""

from __future__ import annotations

import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image, ImageChops  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402

from apps.streamlit.sitemap import PAGES  # noqa: E402
from tests.apps.pages import (  # noqa: E402
    APPROVER,
    APPROVER_PASSWORD,
    served_dashboard,
    write_operators,
    write_transfer_recommendations,
)
from tests.lakehouse.demo_tables import write_demo_lakehouse, write_demo_pages  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
SIDEBAR_PX = 320


def write_demo(root: Path) -> None:
    """The demo lakehouse, as if the stream had just committed (regions current)."""
    now = datetime.now(UTC)
    write_demo_lakehouse(root, now)
    write_demo_pages(root, now)


def trim(path: Path) -> None:
    """Cut the empty page below the content, so the README shows the page, not margin."""
    image = Image.open(path).convert("RGB")
    main = image.crop((SIDEBAR_PX, 0, image.width, image.height))  # the sidebar is grey
    box = ImageChops.difference(main, Image.new("RGB", main.size, "white")).getbbox()
    if box:
        image.crop((0, 0, image.width, min(image.height, box[3] + 24))).save(path)


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="shelflife-shots-"))
    write_demo(root)
    write_transfer_recommendations(root, datetime.now(UTC), count=5)
    users = root / "_auth" / "users.yaml"
    write_operators(users)
    with served_dashboard(root, users, root / "dashboard.log") as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1440, "height": 1700})
        page.goto(url)
        page.get_by_text("Shelflife — sign in").wait_for(timeout=60_000)
        page.get_by_label("User", exact=True).fill(APPROVER)
        page.get_by_label("Password", exact=True).fill(APPROVER_PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        nav = page.get_by_test_id("stSidebarNav")
        nav.wait_for(timeout=60_000)
        time.sleep(3)
        for pages in PAGES.values():
            for script, title, _icon in pages:
                write_demo(root)
                nav.get_by_role("link", name=title, exact=True).click()
                page.get_by_role("heading", level=1).first.wait_for(timeout=60_000)
                time.sleep(5)  # charts draw after the page's first paint
                shot = out / script.replace(".py", ".png")
                page.screenshot(path=str(shot))
                trim(shot)
                print(shot, "exceptions:", page.get_by_test_id("stException").count())
        browser.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/screenshots"))
