"""The prediction page once it has ended, in a real browser: the outcome ends the timeline, a
log's bars stop where the run stopped, and the plumbing stays folded the way the reader left it
while the page refreshes. Screenshots land in test-artifacts/."""

from datetime import timedelta

import pytest
from django.utils import timezone

from . import test_browser
from .conftest import make_prediction
from .test_browser import ARTIFACTS, Console, expect, sign_in

# test_browser.py's fixtures, assigned rather than imported: a test's argument of the same name
# is then no redefinition of an import (ruff's F811).
browser, page = test_browser.browser, test_browser.page

OUTCOMES = ["succeeded", "failed", "canceled", "aborted", "timed_out", "submit_unknown"]
HALFWAY = " 45%|████▌     | 9/20 [00:01<00:01,  8.73it/s]\n"
CONFIRMED = "Cancel this prediction? The provider stops it, and it cannot be resumed."


def answer_yes(page, question: str) -> None:
    """Says yes to the page's confirmation (static/js/confirm.js), or to the browser's own."""
    page.on("dialog", lambda dialog: dialog.accept())
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_contain_text(question)
    dialog.locator("[data-confirm-action]").click()


@pytest.mark.usefixtures("worker", "scheduler")
def test_a_canceled_job_ends_its_timeline_as_canceled_and_its_bar_stops_without_an_eta(
    live_server, page, member, simulator
):
    simulator.engine.speed = 2  # darkroom/slow then runs about 30 s
    prediction = make_prediction("a very slow painting", model="darkroom/slow", submitted_by=member)
    sign_in(page, live_server.url, member.username)
    page.goto(live_server.url + prediction.get_absolute_url())
    bar = page.locator("#log-bar-current")
    expect(bar).to_contain_text("ETA", timeout=15_000)

    page.get_by_role("button", name="Cancel prediction").click()
    # The page keeps refreshing while it asks; the answer still cancels.
    internals = page.locator("#prediction-internals")
    asked_at = internals.text_content()
    expect(internals).not_to_have_text(asked_at)
    answer_yes(page, CONFIRMED)

    expect(page.locator("#prediction-live .status")).to_contain_text("Canceled", timeout=15_000)
    last = page.locator(".timeline li").last
    expect(last).to_have_class("is-done outcome outcome-canceled")
    expect(last.locator(".step-name")).to_have_text("Canceled")
    expect(bar).to_have_class("log-bar log-bar-stopped")
    expect(bar).to_contain_text("Stopped at")
    expect(page.locator(".log-bar", has_text="ETA")).to_have_count(0)
    expect(page.locator(".log-bar progress:not([value])")).to_have_count(0)
    assert page.console.problems == []


def test_the_details_fold_stays_as_the_reader_left_it_while_the_page_refreshes(
    live_server, page, member
):
    prediction = make_prediction("kept open", status="processing", provider_id="abc")
    sign_in(page, live_server.url, member.username)
    page.goto(live_server.url + prediction.get_absolute_url())
    details = page.locator("#prediction-internals")
    expect(details).to_have_js_property("open", False)
    # Checked before every paint: a fold the reader opened never shows closed, not even once.
    page.evaluate(
        "window.seenClosed = 0; (function look() {"
        " var fold = document.getElementById('prediction-internals');"
        " if (window.keepsOpen && fold && !fold.open) window.seenClosed++;"
        " requestAnimationFrame(look); })()"
    )

    details.locator("summary").click()
    expect(details).to_contain_text("abc")
    page.evaluate("window.keepsOpen = true")
    for polls, logs in ((1, "Using seed: 4242\n"), (2, "Using seed: 4242\n" + HALFWAY)):
        prediction.apply_remote({"id": "abc", "status": "processing", "logs": logs})
        expect(details).to_contain_text(f"{polls}, the last at")  # a refresh swapped it in
        expect(details).to_have_js_property("open", True)
    expect(page.locator("#prediction-live .facts").first).to_contain_text("4242")
    assert page.evaluate("window.seenClosed") == 0

    page.evaluate("window.keepsOpen = false")
    details.locator("summary").click()
    prediction.apply_remote({"id": "abc", "status": "succeeded", "logs": "done\n"})
    expect(page.locator("#prediction-live .status")).to_contain_text("Succeeded")
    expect(details).to_have_js_property("open", False)
    assert page.console.problems == []


def ended(status: str):
    now = timezone.now()
    started = None if status == "submit_unknown" else now - timedelta(seconds=4)
    return make_prediction(
        f"a lighthouse that ended {status}",
        status=status,
        provider_id="" if status == "submit_unknown" else f"id-{status}",
        created_at=now - timedelta(seconds=5),
        started_at=started,
        completed_at=now,
        logs="Using seed: 60392\n" + HALFWAY,
        error="" if status == "succeeded" else f"It ended {status}.",
    )


def look_of_the_end(page) -> dict:
    return page.locator(".timeline li").last.evaluate(
        """li => ({
            mark: li.querySelector('.step-mark').textContent,
            name: li.querySelector('.step-name').textContent,
            colour: getComputedStyle(li.querySelector('.step-name')).color,
            line: getComputedStyle(li).borderTopColor,
            style: getComputedStyle(li).borderTopStyle,
            badge: getComputedStyle(document.querySelector('#prediction-live .status')).color,
            waiting: getComputedStyle(li.parentElement.children[1]).borderTopColor,
        })"""
    )


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_outcome_ends_the_timeline_with_its_own_icon_in_its_badges_colour(
    live_server, browser, member, scheme
):
    predictions = {status: ended(status) for status in OUTCOMES}
    context = browser.new_context(viewport={"width": 1280, "height": 900}, color_scheme=scheme)
    page = context.new_page()
    console = Console(page)
    sign_in(page, live_server.url, member.username)
    ARTIFACTS.mkdir(exist_ok=True)

    ends = {}
    for status, prediction in predictions.items():
        page.goto(live_server.url + prediction.get_absolute_url())
        ends[status] = look_of_the_end(page)
        page.screenshot(path=ARTIFACTS / f"prediction-{status}-{scheme}.png", full_page=True)
    context.close()

    assert len({end["mark"] for end in ends.values()}) == len(OUTCOMES)
    assert ends["submit_unknown"]["name"] == "Submit outcome unknown"
    for status, end in ends.items():
        assert end["colour"] == end["line"] == end["badge"], status
        assert end["style"] == ("dashed" if status in ("timed_out", "submit_unknown") else "solid")
        if status != "succeeded":
            assert end["colour"] != ends["succeeded"]["colour"], status
    assert ends["failed"]["colour"] != ends["canceled"]["colour"]
    # Canceled is grey, but not the grey of a step that has not happened.
    assert ends["canceled"]["line"] != ends["submit_unknown"]["waiting"]
    assert console.problems == []
