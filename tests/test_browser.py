"""The minimal UI in a real browser: Debian's Chromium driven by Playwright.

Skipped, with a printed notice, where no Chromium is installed (CI installs it).
"""

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

if not Path(CHROMIUM).exists():
    print("NOTICE: no Chromium at /usr/bin/chromium; skipping the browser tests")
    pytest.skip("no Chromium installed", allow_module_level=True)

# Playwright's sync API runs an event loop in this thread; the ORM calls made here are fine.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture
def page():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(20_000)
        yield page
        browser.close()


def sign_in(page, url: str, username: str) -> None:
    page.goto(url)
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill("correct horse 42")
    page.get_by_role("button", name="Sign in").click()


@pytest.mark.usefixtures("worker", "scheduler")
def test_a_prediction_submitted_in_the_browser_updates_live_until_its_image_shows(
    live_server, page, member
):
    csp_violations = []
    page.on("console", lambda m: "Content Security Policy" in m.text and csp_violations.append(m))
    sign_in(page, live_server.url, member.username)
    page.get_by_label("Prompt").fill("a lighthouse in a storm")
    page.get_by_role("button", name="Generate").click()

    page.wait_for_url("**/predictions/*/")
    status = page.locator("#prediction-live .status")
    sync_api.expect(status).to_contain_text("Succeeded")
    sync_api.expect(page.locator(".outputs img")).to_have_count(1)
    sync_api.expect(page.locator(".logs")).to_contain_text("100%|")
    sync_api.expect(page.locator(".outputs img")).to_have_js_property("complete", True)
    assert page.locator(".outputs img").evaluate("img => img.naturalWidth") > 0
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1

    assert csp_violations == []

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "prediction-detail.png", full_page=True)
