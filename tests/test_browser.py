"""Darkroom in a real browser: Debian's Chromium driven by Playwright, against a live server,
a real Celery worker and the simulator. Screenshots of every page land in test-artifacts/.

Skipped, with a printed notice, where no Chromium is installed (CI installs it).
"""

import os
import re
import shutil
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from django.urls import reverse
from django.utils import timezone

from accounts.models import Role
from costs.models import Budget, PriceRule
from outputs.models import ArchiveState, Board, Output, ShareLink
from predictions.models import Prediction

from .conftest import make_output, make_prediction, make_team, make_user, save_copy

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
PASSWORD = "correct horse 42"

if not Path(CHROMIUM).exists():
    print("NOTICE: no Chromium at /usr/bin/chromium; skipping the browser tests")
    pytest.skip("no Chromium installed", allow_module_level=True)

# Playwright's sync API runs an event loop in this thread; the ORM calls made here are fine.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield browser
        browser.close()


class Console:
    """Collects what the page complains about: CSP violations and other errors."""

    def __init__(self, page) -> None:
        self.problems: list[str] = []
        page.on("console", self.note)

    def note(self, message) -> None:
        if message.type == "error" or "Content Security Policy" in message.text:
            self.problems.append(message.text)


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(20_000)
    page = context.new_page()
    page.console = Console(page)
    yield page
    context.close()


def record_polls(page) -> list[str]:
    """The URLs of the htmx requests the page makes from now on."""
    polls: list[str] = []
    page.on("request", lambda r: r.headers.get("hx-request") and polls.append(r.url))
    return polls


def sign_in(page, url: str, username: str) -> None:
    page.goto(f"{url}/sign-in/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{url}/")


@pytest.mark.usefixtures("worker", "scheduler")
def test_a_job_runs_live_from_the_form_to_its_saved_outputs_and_the_lightbox(
    live_server, page, member, simulator
):
    simulator.engine.speed = 8  # slow enough to watch the progress bar move
    sign_in(page, live_server.url, member.username)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="New images").click()
    page.locator("#id_prompt").fill("a lighthouse in a storm")
    page.get_by_label("Images per prediction").fill("2")
    page.get_by_role("button", name="Generate").click()
    # The studio keeps the page; the prediction's own page is a click away.
    page.locator("#studio-results .result-prompt").first.click()

    page.wait_for_url("**/predictions/*/")
    expect(page.locator(".log-bar progress").first).to_be_visible()
    expect(page.locator("#prediction-live .status")).to_contain_text("Succeeded")
    expect(page.locator(".log-bar progress").first).to_have_attribute("value", "100")
    expect(page.locator("#log-lines")).to_contain_text("Total safe images")
    # The page keeps refreshing until both outputs are saved, then shows Darkroom's copies.
    saved = page.locator(".output-grid img[src^='/outputs/']")
    expect(saved).to_have_count(2)
    expect(page.locator(".output-facts").first).to_contain_text("Saved")
    expect(saved.first).to_have_js_property("complete", True)
    assert saved.first.evaluate("img => img.naturalWidth") > 0
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1

    # The prediction's outputs open in the gallery's lightbox, keys included.
    links = page.locator(".output-grid .tile-link")
    links.first.click()
    expect(page.locator("#lightbox")).to_be_visible()
    image = page.locator("#lightbox-image")
    expect(image).to_have_attribute("src", re.compile(r"^/outputs/\d+/file"))
    first_src = image.get_attribute("src")
    expect(page.locator("#lightbox-download")).to_be_visible()
    expect(page.locator("#lightbox-open")).to_be_hidden()
    expect(image).to_have_js_property("complete", True)
    page.keyboard.press("ArrowRight")
    expect(image).not_to_have_attribute("src", first_src)
    page.keyboard.press("Escape")
    expect(page.locator("#lightbox")).to_be_hidden()
    expect(links.nth(1)).to_be_focused()

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Gallery").click()
    tile = page.locator(".tile-link").first
    expect(tile).to_contain_text("a lighthouse in a storm")
    expect(tile.locator("img")).to_have_attribute("src", re.compile(r"^/outputs/\d+/thumb"))
    tile.focus()
    page.keyboard.press("Enter")
    expect(page.locator("#lightbox")).to_be_visible()
    expect(page.locator("#lightbox-prompt")).to_have_text("a lighthouse in a storm")
    with page.expect_download() as download:
        page.locator("#lightbox-download").click()
    assert download.value.suggested_filename == "a-lighthouse-in-a-storm-1.webp"
    expect(page.locator("#lightbox")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#lightbox")).to_be_hidden()
    expect(tile).to_be_focused()
    assert page.console.problems == []


def signed_in_page(browser, url: str, username: str, path: str, height: int = 900):
    """A page of a browser context of its own (a person of their own), at `path`."""
    context = browser.new_context(viewport={"width": 1280, "height": height})
    context.set_default_timeout(20_000)
    page = context.new_page()
    page.console = Console(page)
    sign_in(page, url, username)
    page.goto(url + path)
    return page


@pytest.mark.usefixtures("worker", "scheduler")
def test_a_teammates_prediction_shows_up_live_in_open_lists_and_nowhere_else(
    live_server, browser, page, team, member, simulator
):
    simulator.engine.speed = 1  # flux-dev then runs about 5 s: time to see it run
    theo = make_user("theo", team, Role.MEMBER)
    olga = make_user("olga", make_team("Elsewhere"), Role.OWNER)
    make_finished(60, "an older frame", theo)
    history = signed_in_page(browser, live_server.url, theo.username, "/")
    gallery = history.context.new_page()
    gallery.console = Console(gallery)
    gallery.goto(f"{live_server.url}/gallery/")
    scrolled = signed_in_page(browser, live_server.url, theo.username, "/", height=500)
    scrolled.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    expect(scrolled.locator("tbody.rows tr").nth(45)).to_be_in_viewport()
    elsewhere = signed_in_page(browser, live_server.url, olga.username, "/")
    sign_in(page, live_server.url, member.username)
    page.goto(f"{live_server.url}/new/?model=black-forest-labs/flux-dev")
    page.locator("#id_prompt").fill("a heron at dawn")

    page.get_by_role("button", name="Generate").click()
    submitted = time.monotonic()
    history.get_by_role("link", name="a heron at dawn").wait_for()
    in_history = time.monotonic() - submitted
    gallery.locator(".tile-running", has_text="a heron at dawn").wait_for()
    in_gallery = time.monotonic() - submitted

    assert in_history < 2.0, f"the history showed it after {in_history:.1f} s"
    assert in_gallery < 2.0, f"the gallery showed it after {in_gallery:.1f} s"
    # flux-dev runs about 5 s here, longer than expect's usual wait.
    expect(history.locator("tbody.rows tr").first).to_contain_text("Succeeded", timeout=20_000)
    heron = gallery.locator(".tile:not(.tile-running)").first
    expect(heron).to_contain_text("a heron at dawn")
    expect(heron.locator("img")).to_be_visible()
    expect(gallery.locator(".tile-running")).to_have_count(0)
    # The reader who scrolled down keeps their place, and is told what came.
    bar = scrolled.get_by_role("link", name="1 new prediction: show")
    expect(bar).to_be_visible()
    expect(scrolled.get_by_role("link", name="a heron at dawn")).to_have_count(0)
    bar.click()
    expect(scrolled.locator("tbody.rows tr").first).to_contain_text("a heron at dawn")
    # Another team's open history learns nothing.
    elsewhere.wait_for_timeout(1500)
    expect(elsewhere.get_by_text("a heron at dawn")).to_have_count(0)
    expect(elsewhere.locator(".arrivals-bar")).to_have_count(0)
    for each in (history, gallery, scrolled, elsewhere, page):
        assert each.console.problems == []
    for context in {history.context, scrolled.context, elsewhere.context}:
        context.close()


@pytest.mark.usefixtures("worker", "scheduler")
def test_the_studio_generates_with_ctrl_enter_and_shows_results_live_beside_the_form(
    live_server, page, member, simulator
):
    simulator.engine.speed = 2
    sign_in(page, live_server.url, member.username)
    page.goto(f"{live_server.url}/new/")
    prompt = page.locator("#id_prompt")
    prompt.fill("a kingfisher over a pond")
    expect(page.locator(".prompt-count")).to_have_text("24 / 2,000 characters")

    prompt.press("Control+Enter")
    prompt.press("Control+Enter")  # a double press sends it once

    result = page.locator("#studio-results .result").first
    expect(result).to_contain_text("a kingfisher over a pond")
    # Still the same page, the form as it was, beside the results.
    assert page.url == f"{live_server.url}/new/"
    expect(prompt).to_have_value("a kingfisher over a pond")
    form_box, results_box = (
        page.locator(selector).bounding_box() for selector in (".new-images", "#studio-results")
    )
    assert results_box["x"] > form_box["x"] + form_box["width"] - 1
    expect(result.locator(".status")).to_contain_text("Succeeded", timeout=20_000)
    expect(result.locator(".tile img")).to_be_visible()
    # A second Generate from the same page is a new prediction, on top.
    prompt.fill("a kingfisher diving")
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#studio-results .result-prompt")).to_have_text(
        ["a kingfisher diving", "a kingfisher over a pond"]
    )
    assert Prediction.objects.count() == 2
    assert page.console.problems == []


def test_switching_models_keeps_shared_inputs_and_back_never_runs_another_model(
    live_server, page, member
):
    sign_in(page, live_server.url, member.username)
    page.goto(f"{live_server.url}/new/")
    page.get_by_label("Aspect ratio").select_option("16:9")
    page.get_by_label("Seed").fill("42")

    page.locator("#pick-model").select_option("black-forest-labs/flux-1.1-pro")

    legend = page.locator("#model-inputs legend")
    expect(legend).to_contain_text("black-forest-labs/flux-1.1-pro")
    expect(page.get_by_label("Aspect ratio")).to_have_value("16:9")
    expect(page.get_by_label("Seed")).to_have_value("42")
    # Away, and back: the page shows, and Generate runs, the model it names.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="History").click()
    page.wait_for_url(f"{live_server.url}/")
    page.go_back()
    expect(legend).to_contain_text("black-forest-labs/flux-1.1-pro")
    expect(page.locator("#pick-model")).to_have_value("black-forest-labs/flux-1.1-pro")
    page.go_back()
    expect(legend).to_contain_text("black-forest-labs/flux-schnell")
    expect(page.locator("#pick-model")).to_have_value("black-forest-labs/flux-schnell")
    page.go_forward()
    expect(legend).to_contain_text("black-forest-labs/flux-1.1-pro")
    page.locator("#id_prompt").fill("a lighthouse, after going back")
    page.locator("#id_prompt").press("Control+Enter")
    expect(page.locator("#studio-results .result").first).to_contain_text("after going back")
    sent = Prediction.objects.get(input__prompt="a lighthouse, after going back")
    assert sent.model == "black-forest-labs/flux-1.1-pro"
    assert page.console.problems == []


def make_finished(count: int, prompt: str, member, outputs: int = 1) -> None:
    """`count` succeeded predictions, numbered, each with `outputs` archived outputs."""
    for n in range(count):
        prediction = make_prediction(f"{prompt} {n}", status="succeeded", submitted_by=member)
        for _ in range(outputs):
            make_output(prediction)


def test_the_lightbox_moves_with_the_arrow_keys_and_esc_returns_focus(live_server, page, member):
    make_finished(3, "frame", member)
    sign_in(page, live_server.url, member.username)
    page.goto(f"{live_server.url}/gallery/")
    tiles = page.locator(".tile-link")
    expect(tiles).to_have_count(3)

    tiles.first.click()
    expect(page.locator("#lightbox-prompt")).to_have_text("frame 2")
    page.keyboard.press("ArrowRight")
    expect(page.locator("#lightbox-prompt")).to_have_text("frame 1")
    page.keyboard.press("ArrowLeft")
    expect(page.locator("#lightbox-prompt")).to_have_text("frame 2")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("Escape")

    expect(page.locator("#lightbox")).to_be_hidden()
    expect(tiles.nth(1)).to_be_focused()
    assert page.console.problems == []


def test_a_starred_output_stays_in_the_starred_gallery(live_server, page, member):
    make_finished(2, "frame", member)
    sign_in(page, live_server.url, member.username)
    page.goto(f"{live_server.url}/gallery/")
    first = page.locator(".tile").first

    first.hover()
    first.get_by_role("button", name="Star").click()
    expect(first.get_by_role("button", name="Star")).to_have_attribute("aria-pressed", "true")
    page.get_by_label("Starred only").check()
    page.get_by_role("button", name="Filter").click()

    expect(page.locator(".tile")).to_have_count(1)
    expect(page.locator(".tile-link")).to_contain_text("frame 1")
    assert page.console.problems == []


def share_board(page, hide_prompts: bool = False) -> str:
    """From a board's page: a new share link for it, read off the page that shows it once."""
    share = page.get_by_role("form", name="Share the board")
    share.get_by_label("Hide prompts").set_checked(hide_prompts)
    share.get_by_role("button", name="Share board").click()
    expect(page.get_by_role("heading", name="Share link created")).to_be_visible()
    return page.locator("#share-url").input_value()


def open_signed_out(browser, url: str):
    """`url` in a fresh browser context: no cookies, nobody signed in."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(20_000)
    guest = context.new_page()
    guest.console = Console(guest)
    guest.goto(url)
    return guest


def test_tiles_selected_by_click_range_and_keyboard_go_to_a_board_whose_link_downloads_signed_out(
    live_server, browser, page, member
):
    make_finished(3, "a quiet harbour at dawn", member)
    newest = Prediction.objects.order_by("-submitted_at", "-pk").first()
    sign_in(page, live_server.url, member.username)
    page.goto(f"{live_server.url}/gallery/")
    boxes = page.locator(".tile-select")
    expect(boxes).to_have_count(3)
    count = page.locator("[data-selection-count]")
    clear = page.get_by_role("button", name="Clear selection")
    expect(clear).to_be_hidden()

    boxes.nth(0).click()
    expect(count).to_have_text("1 selected")
    expect(clear).to_be_visible()
    boxes.nth(2).click(modifiers=["Shift"])  # the range from the first: all three
    expect(count).to_have_text("3 selected")
    boxes.nth(1).focus()
    page.keyboard.press("Space")  # the checkbox's own key
    expect(boxes.nth(1)).not_to_be_checked()
    expect(count).to_have_text("2 selected")
    page.locator(".tile-link").nth(1).focus()
    page.keyboard.press("Space")  # Space on a tile ticks it too, without opening it
    expect(boxes.nth(1)).to_be_checked()
    expect(page.locator("#lightbox")).to_be_hidden()
    expect(count).to_have_text("3 selected")

    toolbar = page.locator("#selection")
    toolbar.get_by_label("New board name").fill("Seaside")
    toolbar.get_by_role("button", name="Add to board").click()
    expect(page.locator(".messages")).to_contain_text("Added 3 images to “Seaside”.")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Boards").click()
    page.get_by_role("link", name=re.compile("Seaside")).click()
    expect(page.locator(".tile")).to_have_count(3)
    board_url = page.url

    url = share_board(page)
    assert url.startswith(f"{live_server.url}/s/")
    guest = open_signed_out(browser, url)
    expect(guest.get_by_role("heading", name="Seaside")).to_be_visible()
    expect(guest.get_by_role("link", name="Sign out")).to_have_count(0)
    images = guest.locator(".tile img")
    expect(images).to_have_count(3)
    for n in range(3):
        expect(images.nth(n)).to_have_js_property("complete", True)
        assert images.nth(n).evaluate("img => img.naturalWidth") > 0
    guest.locator(".tile-link").first.click()
    expect(guest.locator("#lightbox-prompt")).to_have_text("a quiet harbour at dawn 2")
    # A share page is read-only: no star, no boards.
    expect(guest.locator("#lightbox-star, #lightbox-board")).to_have_count(0)
    with guest.expect_download() as download:
        guest.locator("#lightbox-download").click()
    assert download.value.suggested_filename == "a-quiet-harbour-at-dawn-2-1.png"
    assert guest.console.problems == []
    guest.context.close()

    # Shared again with prompts hidden: no prompt on the page, none in the file's name.
    page.goto(board_url)
    url = share_board(page, hide_prompts=True)
    guest = open_signed_out(browser, url)
    expect(guest.locator(".tile img")).to_have_count(3)
    assert "quiet harbour" not in guest.content()
    guest.locator(".tile-link").first.click()
    with guest.expect_download() as download:
        guest.locator("#lightbox-download").click()
    assert download.value.suggested_filename == f"darkroom-{newest.pk}-1.png"
    assert guest.console.problems == []
    guest.context.close()
    assert page.console.problems == []


def test_the_lightbox_stars_the_image_it_shows_and_adds_it_to_a_board_and_takes_it_off(
    live_server, page, member, team
):
    make_finished(2, "frame", member)
    favourites = Board.objects.create(team=team, name="Favourites", created_by=member)
    sign_in(page, live_server.url, member.username)
    page.goto(f"{live_server.url}/gallery/")
    link = page.locator(".tile-link").nth(1)
    shown = Output.objects.get(pk=link.get_attribute("data-output"))
    link.click()
    lightbox = page.locator("#lightbox")
    expect(lightbox.locator("#lightbox-prompt")).to_have_text("frame 0")

    star = lightbox.locator("#lightbox-star")
    expect(star).to_have_attribute("aria-pressed", "false")
    expect(star).to_have_text("☆ Star")
    star.click()
    expect(star).to_have_attribute("aria-pressed", "true")
    expect(star).to_have_text("★ Starred")
    tile_star = page.locator(".tile").nth(1).get_by_role("button", name="Star")
    expect(tile_star).to_have_attribute("aria-pressed", "true")
    shown.refresh_from_db()
    assert shown.starred

    # Arrow keys in the board's fields move the caret, not the lightbox.
    lightbox.get_by_label("New board name").fill("x")
    page.keyboard.press("ArrowLeft")
    expect(lightbox.locator("#lightbox-prompt")).to_have_text("frame 0")
    lightbox.get_by_label("Board", exact=True).select_option(label="Favourites")
    expect(lightbox.get_by_label("New board name")).to_have_value("")
    lightbox.get_by_role("button", name="Add to board").click()
    expect(page.locator(".messages")).to_contain_text("Added 1 image to “Favourites”.")
    assert list(favourites.outputs.values_list("pk", flat=True)) == [shown.pk]

    page.goto(live_server.url + favourites.get_absolute_url())
    page.locator(".tile-link").first.click()
    # The board page's own board is not offered to add to.
    expect(lightbox.locator("#lightbox-board option")).to_have_text(["New board…"])
    lightbox.get_by_role("button", name="Remove from “Favourites”").click()
    expect(page.locator(".messages")).to_contain_text("Removed 1 image from “Favourites”.")
    assert not favourites.outputs.exists()
    assert page.console.problems == []


def test_a_toolbar_error_keeps_the_ticks_and_add_without_a_board_says_so_in_place(
    live_server, page, member, team
):
    make_finished(3, "frame", member)
    Board.objects.create(team=team, name="Favourites", created_by=member)
    Board.objects.create(team=team, name="Supercalifragilistic" * 5, created_by=member)
    sign_in(page, live_server.url, member.username)
    page.goto(f"{live_server.url}/gallery/")
    toolbar = page.locator("#selection")
    # A 100-character board name is cut short rather than widen the toolbar.
    assert toolbar.get_by_role("combobox", name="Board").bounding_box()["width"] <= 16 * 16
    boxes = page.locator(".tile-select")
    boxes.nth(0).click()
    boxes.nth(2).click()

    toolbar.get_by_role("button", name="Add to board").click()
    error = toolbar.get_by_role("alert")
    expect(error).to_have_text("Choose a board, or name a new one, to add to.")
    name = toolbar.get_by_label("New board name")
    expect(name).to_be_focused()
    expect(name).to_have_attribute("aria-invalid", "true")
    expect(page.locator(".messages")).to_have_count(0)  # nothing was posted
    name.fill("favourites")
    expect(error).to_be_hidden()

    toolbar.get_by_role("button", name="Add to board").click()
    expect(page.locator(".message-error")).to_contain_text("already has a board called")
    expect(page.locator("[data-selection-count]")).to_have_text("2 selected")
    expect(boxes.nth(0)).to_be_checked()
    expect(boxes.nth(1)).not_to_be_checked()
    expect(boxes.nth(2)).to_be_checked()

    # Only the page that came back with the error: the next visit starts afresh.
    page.goto(f"{live_server.url}/gallery/")
    expect(page.locator("[data-selection-count]")).to_have_text(
        "Tick images to act on several at once."
    )
    expect(page.locator(".tile-select:checked")).to_have_count(0)
    assert page.console.problems == []


def test_on_a_phone_filters_and_actions_fold_away_and_a_caption_is_one_line(
    live_server, browser, member
):
    make_finished(3, "a lighthouse on a basalt cliff at dusk, long exposure, crashing", member)
    context = browser.new_context(
        viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
    )
    context.set_default_timeout(20_000)
    page = context.new_page()
    page.console = Console(page)
    sign_in(page, live_server.url, member.username)
    page.goto(f"{live_server.url}/gallery/")

    expect(page.get_by_label("Prompt contains")).to_be_hidden()
    add = page.get_by_role("button", name="Add to board")
    expect(add).to_be_hidden()
    tile = page.locator(".tile").first
    assert tile.bounding_box()["y"] < 600  # images on the first screen, under the header
    caption = tile.locator(".caption")
    expect(caption).to_be_visible()  # no hover on a touch screen
    assert caption.bounding_box()["height"] < tile.bounding_box()["height"] / 4

    page.locator(".tile-select").first.click()
    expect(page.locator("[data-selection-count]")).to_have_text("1 selected")
    top = page.locator(".tile").nth(2).bounding_box()["y"]
    page.locator("#selection summary").click()
    expect(add).to_be_visible()
    assert page.locator(".tile").nth(2).bounding_box()["y"] == top  # opened over the tiles
    page.get_by_role("heading", name="Gallery").click()  # a tap elsewhere folds it again
    expect(add).to_be_hidden()

    page.goto(f"{live_server.url}/gallery/?starred=on")
    expect(page.get_by_label("Starred only")).to_be_checked()
    expect(page.get_by_label("Prompt contains")).to_be_visible()  # open while filtered
    assert page.console.problems == []
    context.close()


def test_ticks_on_the_prediction_page_survive_its_refreshes_and_go_to_a_board_in_bulk(
    live_server, page, member, simulator
):
    prediction = finished_at_the_simulator(simulator, member, "two moons", num_outputs=2)
    first, second = prediction.outputs.order_by("index")
    first.archive()
    sign_in(page, live_server.url, member.username)
    page.goto(live_server.url + prediction.get_absolute_url())
    boxes = page.locator(".output-grid .tile-select")
    expect(boxes).to_have_count(2)
    # The second output is still being saved, so the live part keeps refreshing.
    expect(page.locator("#prediction-live")).to_have_attribute("hx-trigger", re.compile("every"))

    boxes.first.click()
    expect(page.locator("[data-selection-count]")).to_have_text("1 selected")
    page.locator("#selection").get_by_label("New board name").fill("Moons")
    boxes.first.evaluate("box => { box.dataset.old = 'yes' }")
    expect(boxes.first).not_to_have_attribute("data-old", "yes")  # swapped for a new tile
    expect(boxes.first).to_be_checked()
    save_copy(second)
    expect(page.locator(".output-grid img[src^='/outputs/']")).to_have_count(2)
    expect(boxes.first).to_be_checked()
    expect(page.locator("#selection").get_by_label("New board name")).to_have_value("Moons")

    page.keyboard.press("Escape")  # clears the selection: no dialog is open
    expect(boxes.first).not_to_be_checked()
    boxes.first.click()
    boxes.nth(1).click(modifiers=["Shift"])
    expect(page.locator("[data-selection-count]")).to_have_text("2 selected")
    page.locator("#selection").get_by_role("button", name="Add to board").click()
    expect(page.locator(".messages")).to_contain_text("Added 2 images to “Moons”.")
    board = Board.objects.get(name="Moons")
    assert set(board.outputs.values_list("pk", flat=True)) == {first.pk, second.pk}
    assert page.console.problems == []


def test_the_gallery_scrolls_on_forever_and_the_history_pages_by_link(live_server, page, member):
    make_finished(60, "tile", member)
    sign_in(page, live_server.url, member.username)

    page.goto(f"{live_server.url}/gallery/")
    expect(page.locator(".tile")).to_have_count(24)
    for _ in range(8):
        page.mouse.wheel(0, 5000)
        page.wait_for_timeout(250)
    expect(page.locator(".tile")).to_have_count(60)
    ids = page.eval_on_selector_all(".tile", "tiles => tiles.map(t => t.id)")
    assert len(set(ids)) == 60

    page.goto(f"{live_server.url}/")
    expect(page.locator("tbody.rows tr")).to_have_count(50)
    page.get_by_role("link", name="Older predictions").click()
    expect(page.locator("tbody.rows tr")).to_have_count(60)


def test_polling_stops_once_nothing_on_the_page_can_change(live_server, page, member):
    prediction = make_prediction("almost done", status="processing", provider_id="abc")
    polls = record_polls(page)
    sign_in(page, live_server.url, member.username)
    page.goto(live_server.url + prediction.get_absolute_url())
    page.wait_for_timeout(2500)  # Playwright delivers its events only while it is called
    assert len(polls) >= 2

    prediction.apply_remote({"id": "abc", "status": "succeeded", "logs": "done\n"})
    expect(page.locator("#prediction-live .status")).to_contain_text("Succeeded")
    page.wait_for_timeout(1500)
    settled = len(polls)
    page.wait_for_timeout(3000)

    assert len(polls) == settled
    assert page.locator("[hx-trigger*='every']").count() == 0


PAGES = {
    "sign-in": "/sign-in/",
    "new-images": "/new/",
    "history": "/",
    "gallery": "/gallery/",
    "prediction": None,  # filled in with a finished prediction's page
    "boards": "/boards/",
    "board": None,  # a board of that prediction's outputs
    "share-links": "/shares/",
    "shared": None,  # the board's share page
    "team": "/team/",
    "provider-keys": "/team/credentials/",
    "api": "/team/api/",
    "provider-health": "/team/providers/health/",
    "track": "/predictions/track",
}


def finished_at_the_simulator(simulator, member, prompt: str, **input):
    """A prediction the simulator really ran, recorded as the poller would record it."""
    payload = httpx.post(
        f"{simulator.base_url}/models/black-forest-labs/flux-schnell/predictions",
        json={"input": {"prompt": prompt, **input}},
        headers={"Authorization": "Bearer demo", "Prefer": "wait=10"},
    ).json()
    prediction = make_prediction(prompt, status="processing", submitted_by=member)
    prediction.apply_remote(payload)
    prediction.refresh_from_db()
    return prediction


def test_every_page_is_photographed_at_desktop_and_phone_width_in_light_and_dark(
    live_server, browser, team, simulator
):
    owner = make_user("otto", team, Role.OWNER)
    done = finished_at_the_simulator(
        simulator, owner, "a red fox in fresh snow, golden hour", num_outputs=2, aspect_ratio="4:3"
    )
    lighthouse = finished_at_the_simulator(
        simulator, owner, "a lighthouse in a storm", aspect_ratio="9:16"
    )
    for output in Output.objects.filter(state=ArchiveState.PENDING):
        output.archive()
    # A second output that could not be saved before the provider removed the files.
    Prediction.objects.filter(pk=lighthouse.pk).update(data_removed=True)
    Output.objects.create(
        team=team,
        prediction=lighthouse,
        index=1,
        source_url="https://replicate.delivery/lost.webp",
        state=ArchiveState.FAILED,
        reason="The file is larger than the 50 MB limit.",
        next_attempt_at=None,
    )
    make_prediction("a castle in the clouds", status="processing", submitted_by=owner)
    make_prediction("out of memory", status="failed", error="CUDA out of memory.")
    PAGES["prediction"] = done.get_absolute_url()
    foxes = Board.objects.create(team=team, name="Foxes in the snow", created_by=owner)
    foxes.add(list(done.outputs.all()))
    PAGES["board"] = foxes.get_absolute_url()
    _, token = ShareLink.create(team=team, created_by=owner, title=foxes.name, board=foxes)
    PAGES["shared"] = reverse("outputs:shared", args=[token])
    ARTIFACTS.mkdir(exist_ok=True)
    taken, too_wide = [], []
    for width, device in ((1280, "desktop"), (390, "phone")):
        for scheme in ("light", "dark"):
            # A phone is a touch screen: no hover, so captions and controls stay shown.
            context = browser.new_context(
                viewport={"width": width, "height": 900},
                color_scheme=scheme,
                is_mobile=device == "phone",
                has_touch=device == "phone",
            )
            page = context.new_page()
            console = Console(page)
            page.goto(f"{live_server.url}/sign-in/")
            page.screenshot(path=ARTIFACTS / f"sign-in-{device}-{scheme}.png", full_page=True)
            page.get_by_label("Username").fill("otto")
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(f"{live_server.url}/")
            for name, path in PAGES.items():
                if name == "sign-in":
                    continue
                response = page.goto(live_server.url + path)
                assert response.status == 200, name
                page.wait_for_load_state("networkidle")
                # Nothing is wider than the screen: a phone never scrolls sideways. Tables may
                # scroll inside themselves, but not the history: its status is what one looks for.
                if page.evaluate("document.documentElement.scrollWidth") > width:
                    too_wide.append(f"{name}-{device}")
                if name == "history" and page.locator(".table-wrap").evaluate(
                    "wrap => wrap.scrollWidth > wrap.clientWidth"
                ):
                    too_wide.append(f"{name}-{device}-table")
                shot = ARTIFACTS / f"{name}-{device}-{scheme}.png"
                page.screenshot(path=shot, full_page=True)
                taken.append(shot)
            # The lightbox of the prediction page, with a member's star and board forms.
            page.goto(live_server.url + PAGES["prediction"])
            page.locator(".output-grid .tile-link").first.click()
            expect(page.locator("#lightbox-image")).to_have_js_property("complete", True)
            expect(page.locator("#lightbox-star")).to_be_visible()
            lightbox = page.locator("#lightbox")
            if lightbox.evaluate("box => box.scrollWidth > box.clientWidth"):
                too_wide.append(f"lightbox-{device}")
            shot = ARTIFACTS / f"lightbox-{device}-{scheme}.png"
            page.screenshot(path=shot)
            taken.append(shot)
            # The gallery with an image ticked; on a phone, its actions opened over the tiles.
            page.goto(live_server.url + PAGES["gallery"])
            page.locator(".tile-select").first.click()
            if device == "phone":
                page.locator("#selection summary").click()
            expect(page.get_by_role("button", name="Add to board")).to_be_visible()
            shot = ARTIFACTS / f"gallery-selected-{device}-{scheme}.png"
            page.screenshot(path=shot)
            taken.append(shot)
            assert console.problems == [], (device, scheme, console.problems)
            context.close()
    assert all(shot.stat().st_size > 10_000 for shot in taken)
    assert too_wide == [], too_wide


def test_a_hidden_tab_polls_rarely_and_refreshes_when_shown_again(live_server, page, member):
    prediction = make_prediction("in the background", status="processing", provider_id="abc")
    polls = record_polls(page)
    sign_in(page, live_server.url, member.username)
    page.goto(live_server.url + prediction.get_absolute_url())
    page.wait_for_timeout(1500)

    page.evaluate(
        "Object.defineProperty(document, 'hidden', {configurable: true, get: () => true});"
        "document.dispatchEvent(new Event('visibilitychange'))"
    )
    page.wait_for_timeout(500)
    hidden_from = len(polls)
    page.wait_for_timeout(4000)
    while_hidden = len(polls) - hidden_from

    page.evaluate(
        "Object.defineProperty(document, 'hidden', {configurable: true, get: () => false});"
        "document.dispatchEvent(new Event('visibilitychange'))"
    )
    page.wait_for_timeout(300)

    assert while_hidden == 0  # four seconds of a 1 s poller, all skipped
    assert len(polls) > hidden_from  # shown again: refreshed at once


def test_without_javascript_every_page_still_works_through_plain_links(
    live_server, browser, member, worker, scheduler
):
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    sign_in(page, live_server.url, member.username)
    page.goto(f"{live_server.url}/new/")
    page.locator("#id_prompt").fill("no script needed")
    page.get_by_role("button", name="Generate").click()
    page.wait_for_url("**/predictions/*/")

    for _ in range(40):
        page.reload()
        if "Succeeded" in page.locator(".status").first.inner_text():
            break
        page.wait_for_timeout(250)
    expect(page.locator(".status").first).to_contain_text("Succeeded")
    expect(page.locator(".output-grid img")).to_have_count(1)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Gallery").click()
    expect(page.locator(".tile")).to_have_count(1)
    # On a phone's width the toolbar's actions fold under "Actions", a plain <details>.
    page.set_viewport_size({"width": 390, "height": 800})
    page.locator(".tile-select").check()
    page.locator("#selection summary").click()
    page.locator("#selection").get_by_role("button", name="★ Star").click()
    expect(page.locator(".messages")).to_contain_text("Starred 1 image.")
    page.locator(".tile-link").first.click()
    page.wait_for_url("**/predictions/*/")
    context.close()


def test_the_costs_pages_and_their_charts_read_in_both_themes_at_desktop_and_phone_width(
    live_server, browser, team, member
):
    owner = make_user("otto", team, Role.OWNER)
    now = timezone.now()
    # The team's own prices, which override the deployment's seeded ones.
    for provider, model, amount in (
        (provider, model, amount)
        for provider in ("replicate", "simulator")
        for model, amount in (("flux-schnell", "0.003"), ("flux-dev", "0.025"))
    ):
        PriceRule.objects.create(
            team=team,
            provider=provider,
            model=f"black-forest-labs/{model}",
            unit="per_image",
            amount=Decimal(amount),
            effective_from=now - timedelta(days=365),
        )
    # A month of history: charged images of two models and two members, some unpriced, one
    # timed out (possibly charged), one failed.
    for days_ago in range(0, 28, 2):
        for person, model, images in (
            (owner, "black-forest-labs/flux-schnell", 1 + days_ago % 4),
            (member, "black-forest-labs/flux-dev", 1),
        ):
            prediction = make_prediction(
                f"day {days_ago} {model}",
                team=team,
                submitted_by=person,
                provider="replicate",
                model=model,
                submitted_at=now - timedelta(days=days_ago),
            )
            prediction.apply_remote(
                {
                    "id": f"{days_ago}-{model}",
                    "status": "succeeded",
                    "metrics": {"image_count": images},
                }
            )
    for status, model in (("succeeded", "acme/painter"), ("failed", "acme/painter")):
        make_prediction(
            "no price", team=team, submitted_by=member, provider="replicate", model=model
        ).apply_remote({"id": f"p-{status}", "status": status})
    lost = make_prediction(
        "lost",
        team=team,
        submitted_by=member,
        provider="replicate",
        model="black-forest-labs/flux-dev",
        input={"prompt": "lost", "num_outputs": 2},
    )
    lost.apply_remote({"id": "lost", "status": "processing"})
    lost.time_out()
    Budget.objects.create(team=team, amount=Decimal("0.09"))
    Budget.objects.create(team=team, member=member, amount=Decimal("5"))
    pages = {
        "costs": "/costs/?period=last_30",
        "costs-prices": "/costs/prices/",
        "costs-budgets": "/costs/budgets/",
    }
    ARTIFACTS.mkdir(exist_ok=True)
    too_wide = []
    for width, device in ((1280, "desktop"), (390, "phone")):
        for scheme in ("light", "dark"):
            context = browser.new_context(
                viewport={"width": width, "height": 900},
                color_scheme=scheme,
                is_mobile=device == "phone",
                has_touch=device == "phone",
            )
            context.set_default_timeout(20_000)
            page = context.new_page()
            console = Console(page)
            sign_in(page, live_server.url, owner.username)
            for name, path in pages.items():
                response = page.goto(live_server.url + path)
                assert response.status == 200, name
                expect(page.locator(".banner-budget")).to_contain_text(
                    "of the team's monthly budget"
                )
                if page.evaluate("document.documentElement.scrollWidth") > width:
                    too_wide.append(f"{name}-{device}-{scheme}")
                page.screenshot(path=ARTIFACTS / f"{name}-{device}-{scheme}.png", full_page=True)
            # The chart: a column a day, each with its figures as a title; the bars take the
            # theme's accent, which stands out from the card behind them.
            page.goto(live_server.url + pages["costs"])
            chart = page.locator("svg.columns")
            expect(chart).to_be_visible()
            assert chart.bounding_box()["width"] <= width
            expect(chart.locator("a > title")).to_have_count(30)
            spent = chart.locator("rect.column-spent")
            assert spent.count() >= 14
            fill, card = spent.first.evaluate(
                "bar => [getComputedStyle(bar).fill,"
                " getComputedStyle(bar.closest('.chart')).backgroundColor]"
            )
            accent = "rgb(47, 85, 212)" if scheme == "light" else "rgb(138, 180, 248)"
            assert (fill, fill != card) == (accent, True)
            expect(chart.locator("rect.column-possibly")).to_have_count(1)
            expect(page.locator(".total-unpriced .total-amount")).to_have_text("2")
            page.get_by_text("The days as a table").click()
            expect(page.locator(".day-table tbody tr")).to_have_count(30)
            # A figure opens the history behind it.
            page.locator("#model-heading + .table-wrap").get_by_role(
                "link", name="black-forest-labs/flux-dev"
            ).first.click()
            page.wait_for_url("**/?*model=black-forest-labs*")
            expect(page.locator("tbody.rows tr")).to_have_count(15)
            assert console.problems == [], (device, scheme, console.problems)
            context.close()
    assert too_wide == [], too_wide

    # The New images form's estimate follows the inputs without a reload.
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    console = Console(page)
    sign_in(page, live_server.url, member.username)
    page.goto(f"{live_server.url}/new/")
    estimate = page.locator("#cost-estimate")
    expect(estimate).to_contain_text("Your own monthly limit")
    page.get_by_label("Images per prediction").fill("3")
    page.get_by_label("Variations").fill("2")
    page.get_by_label("Variations").blur()
    expect(estimate).to_contain_text("2 predictions, each 3 images")
    page.get_by_label("Model").select_option("black-forest-labs/flux-dev")
    expect(estimate).to_contain_text("× $0.025 per output image")
    page.screenshot(path=ARTIFACTS / "new-images-estimate-desktop-light.png", full_page=True)
    assert console.problems == []
    context.close()
