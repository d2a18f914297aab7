"""htmx requests that fail, in a real browser (see tests/test_browser.py): a person's action
says so in a notice, in the server's words during a database outage; a live refresh that fails
says once, quietly, that live updates are paused, until one goes through
(static/js/requests.js)."""

from predictions.models import Prediction, Status

from . import test_browser
from .conftest import make_prediction
from .test_browser import expect, make_finished, sign_in
from .test_browser_outage import database_down

# test_browser.py's fixtures, assigned rather than imported (see test_browser_outage.py).
browser, page = test_browser.browser, test_browser.page

NOTHING_SAVED = "The database is unavailable; nothing was saved. Try again."
UNREACHABLE = (
    "Darkroom could not be reached. Try again in a moment; reloading the page shows what was done."
)


def csp_violations(page) -> list[str]:
    return [p for p in page.console.problems if "Content Security Policy" in p]


def press_twice(button, notice) -> None:
    """Presses `button` twice, each failing: the second notice replaces the first."""
    button.click()
    words = notice.locator("p")
    expect(words).to_have_count(1)
    words.evaluate("words => { words.dataset.first = 'yes' }")
    button.click()
    expect(notice.locator("p:not([data-first])")).to_have_count(1)
    expect(words).to_have_count(1)


def test_run_again_during_an_outage_says_the_servers_message_until_it_is_dismissed(
    live_server, page, team, member, simulator
):
    make_prediction("a heron at dawn", team=team, submitted_by=member, status=Status.SUCCEEDED)
    sign_in(page, live_server.url, member.username)
    page.goto(f"{live_server.url}/new/")
    run_again = page.get_by_role("button", name="Run again")
    notice = page.locator("#request-notice")
    expect(notice).to_have_attribute("role", "status")
    expect(notice).to_be_hidden()

    with database_down():
        press_twice(run_again, notice)
        expect(notice).to_be_visible()
        expect(notice.locator("p")).to_have_text(NOTHING_SAVED)

    assert Prediction.objects.count() == 1
    notice.get_by_role("button", name="Dismiss this notice").click()
    expect(notice).to_be_hidden()
    expect(notice).to_be_empty()
    expect(run_again).to_be_focused()  # where the keyboard was

    # The database is back: the same press runs it, and nothing is said.
    run_again.click()
    expect(page.locator("#studio-results .result")).to_have_count(2)
    expect(notice).to_be_empty()
    assert csp_violations(page) == []


def test_an_action_that_cannot_reach_darkroom_says_so(live_server, page, member):
    sign_in(page, live_server.url, member.username)
    banner = page.locator(".banner-demo")
    dismiss = banner.get_by_role("button", name="Dismiss the demo notice")
    notice = page.locator("#request-notice")
    page.route("**/demo-banner/dismiss", lambda route: route.abort())

    press_twice(dismiss, notice)

    expect(notice.locator("p")).to_have_text(UNREACHABLE)
    expect(banner).to_be_visible()
    page.unroute("**/demo-banner/dismiss")
    dismiss.click()
    expect(banner).to_have_count(0)
    # What failed stays said until it is dismissed.
    expect(notice.locator("p")).to_have_text(UNREACHABLE)
    assert csp_violations(page) == []


def test_an_action_left_unanswered_says_it_may_or_may_not_have_been_done(live_server, page, member):
    sign_in(page, live_server.url, member.username)
    page.evaluate("htmx.config.timeout = 1000")  # 30 s in base.html: the same, sooner
    held = []
    # It reached Darkroom, which never answered.
    page.route("**/demo-banner/dismiss", lambda route: held.append(route))

    page.get_by_role("button", name="Dismiss the demo notice").click()

    expect(page.locator("#request-notice p")).to_have_text(
        "Darkroom did not answer in time, so this may or may not have been done. "
        "Reload the page to see, then try again."
    )
    assert held
    assert csp_violations(page) == []


def test_a_star_pressed_in_the_lightbox_during_an_outage_is_said_over_the_lightbox(
    live_server, page, member
):
    make_finished(1, "frame", member)
    sign_in(page, live_server.url, member.username)
    page.goto(f"{live_server.url}/gallery/")
    page.locator(".tile-link").click()
    lightbox = page.locator("#lightbox")

    with database_down():
        lightbox.locator("#lightbox-star").click()
        # The rest of the page is behind the open dialog, and inert.
        notice = lightbox.locator("#request-notice")
        expect(notice.locator("p")).to_have_text(NOTHING_SAVED)
        expect(notice).to_be_visible()

    notice.get_by_role("button", name="Dismiss this notice").click()
    expect(notice).to_be_hidden()
    expect(lightbox).to_be_visible()

    # A notice still showing when the lightbox closes stays in sight, on the page.
    with database_down():
        lightbox.locator("#lightbox-star").click()
        expect(notice.locator("p")).to_have_text(NOTHING_SAVED)
    page.keyboard.press("Escape")
    expect(lightbox).to_be_hidden()
    expect(page.locator("body > #request-status #request-notice p")).to_have_text(NOTHING_SAVED)
    assert csp_violations(page) == []


def test_a_failed_live_refresh_says_live_updates_are_paused_until_one_goes_through(
    live_server, page, member
):
    sign_in(page, live_server.url, member.username)
    paused = page.get_by_text("Live updates paused")
    notice = page.locator("#request-notice")
    # The history asks every second whether predictions arrived (predictions/_arrivals.html).
    expect(page.locator("#arrivals[hx-trigger='every 1s']")).to_have_count(1)
    expect(paused).to_be_hidden()

    with database_down():
        with page.expect_response(lambda r: r.status == 503 and "hx-request" in r.request.headers):
            pass
        expect(paused).to_be_visible()
        # Again and again, and still one quiet line, no notice.
        with page.expect_response(lambda r: r.status == 503 and "hx-request" in r.request.headers):
            pass
        expect(paused).to_have_count(1)
        expect(notice).to_be_empty()

    # htmx kept asking: the first refresh that goes through clears the line.
    expect(paused).to_be_hidden()
    expect(notice).to_be_empty()
    assert csp_violations(page) == []


def test_a_live_refresh_left_unanswered_times_out_and_says_live_updates_are_paused(
    live_server, page, member
):
    sign_in(page, live_server.url, member.username)
    paused = page.get_by_text("Live updates paused")
    assert page.evaluate("htmx.config.timeout") == 30_000
    page.evaluate("htmx.config.timeout = 1000")  # the same, sooner
    held = []

    def hold_refreshes(route) -> None:  # accepted, never answered
        if "hx-request" in route.request.headers:
            held.append(route)
        else:
            route.continue_()

    page.route("**/*", hold_refreshes)

    expect(paused).to_be_visible()
    expect(paused).to_have_attribute("role", "status")
    assert held
    page.unroute("**/*")
    expect(paused).to_be_hidden()
    assert csp_violations(page) == []
