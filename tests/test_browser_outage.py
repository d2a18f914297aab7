"""A Generate sent while the database is down, in a real browser (see tests/test_browser.py):
the studio says so in the form, which keeps everything typed, and the same press sends it once
the database is back. Screenshots land in test-artifacts/."""

from contextlib import contextmanager

from django.db import OperationalError, connections

from predictions.models import Prediction

from . import test_browser
from .test_browser import ARTIFACTS, expect, sign_in

# test_browser.py's fixtures, assigned rather than imported: a test's argument of the same name
# is then no redefinition of an import (ruff's F811).
browser, page = test_browser.browser, test_browser.page

OUTAGE = "The database is unavailable; nothing was sent. Try again."
# What Chromium itself logs for any answer of 400 and above, and htmx for one it leaves alone.
LOADING_FAILED = "Failed to load resource: the server responded with a status of 503"
ESTIMATE_FAILED = "Response Status Error Code 503 from /costs/estimate"


@contextmanager
def database_down():
    """The database refuses new connections, as with PostgreSQL stopped: each request of the
    live server opens one of its own (in a thread of its own), and so fails."""

    def refuse(self, conn_params) -> None:
        raise OperationalError("connection to server failed: Connection refused")

    wrapper = type(connections["default"])
    original = wrapper.get_new_connection
    wrapper.get_new_connection = refuse
    try:
        yield
    finally:
        wrapper.get_new_connection = original


def test_a_generate_during_an_outage_says_so_in_the_form_and_keeps_what_was_typed(
    live_server, page, member
):
    sign_in(page, live_server.url, member.username)
    page.goto(f"{live_server.url}/new/")
    form = page.locator("#studio-form")
    prompt = page.locator("#id_prompt")
    prompt.fill("a heron at dawn\nin the reeds")
    page.get_by_label("Aspect ratio").select_option("16:9")
    page.get_by_label("Seed").fill("42")
    key = page.locator("#id_request_key").input_value()
    generate = page.get_by_role("button", name="Generate")

    def press() -> int:
        with page.expect_response(lambda r: r.url.endswith("/predictions/new")) as answer:
            generate.click()
        return answer.value.status

    with database_down():
        assert press() == 503
        notice = form.locator(".outage-notice")
        expect(notice).to_have_text(OUTAGE)
        # Said once, in the form: not again in the page's notice of failed requests.
        expect(page.locator("#request-notice")).to_be_empty()
        # Pressed again at once: sent again (no double press), and the message is not doubled.
        notice.evaluate("notice => { notice.dataset.first = 'yes' }")
        assert press() == 503
        expect(form.locator(".outage-notice:not([data-first])")).to_have_text(OUTAGE)
        expect(notice).to_have_count(1)
        ARTIFACTS.mkdir(exist_ok=True)
        # caret="initial": Playwright's style hiding the caret is an inline one, which the CSP
        # refuses and reports.
        shot = ARTIFACTS / "studio-database-outage.png"
        page.screenshot(path=shot, full_page=True, caret="initial")

    expect(prompt).to_have_value("a heron at dawn\nin the reeds")
    expect(page.get_by_label("Aspect ratio")).to_have_value("16:9")
    expect(page.get_by_label("Seed")).to_have_value("42")
    expect(page.locator("#id_request_key")).to_have_value(key)
    assert not Prediction.objects.exists()

    # The database is back: the same press sends it, once, and the message goes.
    generate.click()
    expect(page.locator("#studio-results .result-prompt")).to_have_text(
        "a heron at dawn in the reeds"
    )
    expect(form.locator(".outage-notice")).to_have_count(0)
    made = Prediction.objects.get()
    assert str(made.request_key) == key
    assert made.input["seed"] == 42 and made.input["aspect_ratio"] == "16:9"
    # Beside Chromium's line for each 503, htmx logs the cost estimate's refreshes, which kept
    # the estimate as it was; nothing else complains, Generate's answers included.
    others = [p for p in page.console.problems if not p.startswith(LOADING_FAILED)]
    assert all(p.startswith(ESTIMATE_FAILED) for p in others), others
