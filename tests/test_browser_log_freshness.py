"""The log viewer's freshness line in a real browser: the clock times the server renders read as
"40 s ago" and "in about 20 s", tick every second, follow each poll, say when a check is due or
late, and go away once the prediction has ended; all within the page's CSP. A screenshot lands in
test-artifacts/."""

import re
from datetime import timedelta

from django.utils import timezone

from predictions.models import Prediction

from . import test_browser
from .conftest import make_prediction
from .test_browser import ARTIFACTS, expect, sign_in

# test_browser.py's fixtures, assigned rather than imported (see test_browser_detail.py).
browser, page = test_browser.browser, test_browser.page

LOG = "Using seed: 7\n"


def test_the_log_says_how_long_ago_the_provider_was_checked_and_keeps_ticking(
    live_server, page, member
):
    now = timezone.now()
    prediction = make_prediction(
        "a slow lighthouse",
        status="processing",
        provider_id="abc",
        logs=LOG,
        submitted_by=member,
        last_polled_at=now - timedelta(seconds=40),
        next_poll_at=now + timedelta(minutes=5),
    )
    sign_in(page, live_server.url, member.username)
    page.goto(live_server.url + prediction.get_absolute_url())
    line = page.locator("#log-freshness")

    expect(line).to_have_text(
        re.compile(r"^Checked \d+ s ago · next check in about [45] min$"), timeout=15_000
    )
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator("#log-viewer").screenshot(path=ARTIFACTS / "log-freshness.png")
    ticked = line.text_content()
    expect(line).not_to_have_text(ticked)  # a second later
    expect(line.locator("time[data-ago]")).to_have_attribute("title", re.compile(r"\d\d:\d\d"))

    # A poll that brought nothing new: the log stands still, the line starts again.
    prediction.apply_remote({"id": "abc", "status": "processing", "logs": LOG})
    expect(line).to_have_text(re.compile(r"^Checked (just now|\d s ago) · "), timeout=15_000)

    # A check due in a moment, under way once its time has come, then one long past its time
    # (its worker gone, say).
    rows = Prediction.objects.filter(pk=prediction.pk)
    rows.update(last_polled_at=timezone.now(), next_poll_at=timezone.now() + timedelta(seconds=5))
    expect(line).to_contain_text("next check in about", timeout=15_000)
    expect(line).to_contain_text("checking now", timeout=20_000)
    late = timezone.now() - timedelta(seconds=50)
    rows.update(last_polled_at=late - timedelta(seconds=10), next_poll_at=late)
    expect(line).to_have_text(
        re.compile(r"^Checked 1 min ago · next check overdue by \d+ s$"), timeout=15_000
    )

    prediction.apply_remote({"id": "abc", "status": "succeeded", "logs": LOG + "done\n"})
    expect(page.locator("#log-lines")).to_contain_text("done", timeout=15_000)
    expect(line).to_be_hidden()
    expect(line).to_have_text("")
    assert page.console.problems == []
