"""Phone width and the polish people expect, in a real browser (see tests/test_browser.py): the
history as cards, the menu, the demo notice put away, questions before destructive actions, copy
buttons, and the tab's badge. Screenshots of the changed pages land in test-artifacts/."""

import hashlib
import re
from pathlib import Path

import pytest

from accounts.models import Invite, Membership, ProviderCredential, Role
from outputs.models import Board, ShareLink

from . import test_browser
from .conftest import make_output, make_prediction, make_team, make_user
from .test_browser import ARTIFACTS, Console, expect, sign_in

# test_browser.py's fixtures, assigned rather than imported: a test's argument of the same name
# is then no redefinition of an import (ruff's F811).
browser, page = test_browser.browser, test_browser.page

LONG_MODEL = "black-forest-labs/flux-1.1-pro-ultra-finetuned"
DEMO_NOTICE = "Demo provider: new images come from Darkroom's built-in simulator."


def device_page(browser, url: str, username: str, width: int = 390, scheme: str = "light"):
    """A signed-in page of a device of its own: a phone (a narrow touch screen) or a desktop."""
    phone = width < 640
    context = browser.new_context(
        viewport={"width": width, "height": 844 if phone else 900},
        is_mobile=phone,
        has_touch=phone,
        color_scheme=scheme,
    )
    context.set_default_timeout(20_000)
    page = context.new_page()
    page.console = Console(page)
    sign_in(page, url, username)
    return page


def wider_than_the_screen(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth > window.innerWidth")


def photograph(page, name: str, label: str, too_wide: list[str], full_page: bool = True) -> Path:
    """A screenshot in test-artifacts/, noting in `too_wide` a page wider than its screen."""
    if wider_than_the_screen(page):
        too_wide.append(f"{name}-{label}")
    shot = ARTIFACTS / f"{name}-{label}.png"
    page.screenshot(path=shot, full_page=full_page)
    return shot


def the_history_of_a_busy_team(member) -> None:
    """Rows of every kind: long prompts and model names, a teammate's, a running one, a failure."""
    teammate = make_user("theodora-with-a-long-name", make_team())
    done = make_prediction(
        "a lighthouse on a basalt cliff at dusk, long exposure, crashing waves, "
        "seen from the water, in the style of an old photogravure",
        status="succeeded",
        submitted_by=member,
        model=LONG_MODEL,
    )
    make_output(done)
    make_prediction("a heron at dawn", status="processing", submitted_by=teammate)
    make_prediction("out of memory", status="failed", submitted_by=member, error="CUDA OOM")


def set_hidden(page, hidden: bool) -> None:
    """Hide or show the tab, as far as the page's scripts can tell."""
    page.evaluate(
        "hidden => { Object.defineProperty(document, 'hidden', {configurable: true,"
        " get: () => hidden}); document.dispatchEvent(new Event('visibilitychange')) }",
        hidden,
    )


def end(prediction, status: str = "failed") -> None:
    """The provider's answer that `prediction` ended, recorded as the poller records it."""
    prediction.apply_remote({"id": f"remote-{prediction.pk}", "status": status, "error": "boom"})


def test_on_a_phone_the_history_is_cards_that_never_scroll_sideways(live_server, browser, member):
    the_history_of_a_busy_team(member)
    page = device_page(browser, live_server.url, member.username)

    rows = page.locator("tbody.rows tr")
    expect(rows).to_have_count(3)
    # A card says what each thing is: the columns' header is left to screen readers.
    assert page.locator(".history thead").bounding_box()["height"] <= 1
    card = rows.filter(has_text="a lighthouse").first
    for part in (".thumb img", ".prompt a", ".status", "td.model", "time"):
        expect(card.locator(part)).to_be_visible()
    thumb, prompt = card.locator(".thumb").bounding_box(), card.locator(".prompt").bounding_box()
    assert thumb["x"] < prompt["x"] and thumb["y"] <= prompt["y"]  # the image beside the text
    assert card.bounding_box()["x"] + card.bounding_box()["width"] <= 390
    assert not wider_than_the_screen(page)
    # A model's name stays one word: one line, cut short with an ellipsis, whole in its title.
    model = card.locator("td.model .cut")
    expect(model).to_have_attribute("title", LONG_MODEL)
    assert model.evaluate("cut => getComputedStyle(cut).whiteSpace") == "nowrap"
    assert model.evaluate("cut => getComputedStyle(cut).textOverflow") == "ellipsis"
    # The filters fold away until asked for.
    expect(page.get_by_label("Prompt contains")).to_be_hidden()
    page.locator(".filters-panel summary").click()
    expect(page.get_by_label("Prompt contains")).to_be_visible()
    assert page.console.problems == []
    page.context.close()


def test_the_smallest_phone_scrolls_no_page_sideways(live_server, browser, member):
    the_history_of_a_busy_team(member)
    page = device_page(browser, live_server.url, member.username, width=320)

    for path in ("/", "/gallery/", "/new/", "/boards/", "/shares/", "/team/", "/costs/"):
        page.goto(live_server.url + path)
        assert not wider_than_the_screen(page), path
    assert page.console.problems == []
    page.context.close()


def test_on_a_phone_the_navigation_opens_from_a_menu(live_server, browser, member):
    page = device_page(browser, live_server.url, member.username)
    gallery = page.get_by_role("navigation", name="Main").get_by_role("link", name="Gallery")
    expect(gallery).to_be_hidden()
    expect(page.get_by_role("button", name="Sign out")).to_be_hidden()

    page.locator(".menu > summary").click()
    expect(gallery).to_be_visible()
    assert not wider_than_the_screen(page)
    gallery.click()

    page.wait_for_url("**/gallery/")
    expect(gallery).to_be_hidden()  # folded again on the next page
    assert page.console.problems == []
    page.context.close()


def test_at_desktop_width_the_whole_navigation_shows_without_a_menu(live_server, page, member):
    sign_in(page, live_server.url, member.username)

    expect(page.locator(".menu > summary")).to_be_hidden()
    nav = page.get_by_role("navigation", name="Main")
    for name in ("New images", "History", "Gallery", "Boards", "Costs", "Team"):
        expect(nav.get_by_role("link", name=name)).to_be_visible()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    # One row: every link sits beside the brand.
    brand = page.locator(".brand").bounding_box()
    assert nav.get_by_role("link", name="Team").bounding_box()["y"] < brand["y"] + brand["height"]


def test_an_owners_navigation_fits_one_row_at_1280_and_1024_pixels(live_server, browser, team):
    owner = make_user("olive", team, Role.OWNER)
    for width in (1280, 1024):
        context = browser.new_context(viewport={"width": width, "height": 800})
        page = context.new_page()
        sign_in(page, live_server.url, owner.username)

        nav = page.get_by_role("navigation", name="Main")
        brand = page.locator(".brand").bounding_box()
        for name in ("New images", "History", "Gallery", "Boards", "Share links", "Costs", "Team"):
            box = nav.get_by_role("link", name=name).bounding_box()
            assert box["y"] < brand["y"] + brand["height"], f"{name} wrapped at {width} px"
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Team").click()
        team_nav = page.get_by_role("navigation", name="Team")
        team_nav.get_by_role("link", name="Provider health").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Provider health")
        context.close()


def test_signing_out_from_the_menu_says_so(live_server, browser, member):
    page = device_page(browser, live_server.url, member.username)

    page.locator(".menu > summary").click()
    page.get_by_role("button", name="Sign out").click()

    page.wait_for_url("**/sign-in/")
    expect(page.locator(".messages")).to_have_text("You are signed out.")
    expect(page.get_by_label("Username")).to_be_focused()  # not the closed dialog's button
    page.context.close()


def test_the_demo_notice_is_dismissed_in_place_and_stays_away_on_the_next_page(
    live_server, page, member
):
    sign_in(page, live_server.url, member.username)
    notice = page.get_by_text(DEMO_NOTICE)
    expect(notice).to_be_visible()
    page.evaluate("window.before = true")

    page.get_by_role("button", name="Dismiss the demo notice").click()

    expect(notice).to_have_count(0)
    assert page.evaluate("window.before") is True  # removed in place, not by a reload
    page.goto(f"{live_server.url}/gallery/")
    expect(page.get_by_role("heading", name="Gallery")).to_be_visible()
    expect(notice).to_have_count(0)
    assert page.console.problems == []


def test_without_javascript_the_notice_is_dismissed_and_a_removal_is_sent_at_once(
    live_server, browser, team, member
):
    owner = make_user("otto", team, Role.OWNER)
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    sign_in(page, live_server.url, owner.username)
    page.goto(f"{live_server.url}/team/")

    page.get_by_role("button", name="Dismiss the demo notice").click()
    page.wait_for_url("**/team/")
    expect(page.get_by_text(DEMO_NOTICE)).to_have_count(0)
    page.get_by_role("row", name=re.compile("mia")).get_by_role("button", name="Remove").click()

    expect(page.get_by_role("row", name=re.compile("mia"))).to_have_count(0)
    assert not Membership.objects.filter(user=member).exists()
    context.close()


def test_removing_a_member_asks_first_and_going_back_keeps_them(live_server, page, team, member):
    owner = make_user("otto", team, Role.OWNER)
    sign_in(page, live_server.url, owner.username)
    page.goto(f"{live_server.url}/team/")
    remove = page.get_by_role("row", name=re.compile("mia")).get_by_role("button", name="Remove")
    dialog = page.locator("#confirm-dialog")

    remove.click()
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("Remove mia from Studio? They lose access at once.")
    expect(dialog.get_by_role("button", name="Go back")).to_be_focused()
    dialog.get_by_role("button", name="Go back").click()
    expect(dialog).to_be_hidden()
    assert Membership.objects.filter(user=member).exists()
    remove.click()
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    assert Membership.objects.filter(user=member).exists()

    remove.click()
    dialog.get_by_role("button", name="Remove").click()

    expect(page.get_by_role("row", name=re.compile("mia"))).to_have_count(0)
    assert not Membership.objects.filter(user=member).exists()
    assert page.console.problems == []


def test_a_key_and_an_invite_are_removed_only_once_confirmed(live_server, page, team):
    owner = make_user("otto", team, Role.OWNER)
    Invite.objects.create(team=team, role=Role.MEMBER, created_by=owner)
    credential = ProviderCredential(team=team, provider="cometapi")
    credential.set_secret("sk-live-9f8e7d6c5b4a3210")
    credential.save()
    sign_in(page, live_server.url, owner.username)
    dialog = page.locator("#confirm-dialog")

    page.goto(f"{live_server.url}/team/credentials/")
    page.get_by_role("button", name="Remove").click()
    expect(dialog).to_contain_text("Remove the CometAPI key ending 3210?")
    dialog.get_by_role("button", name="Remove").click()
    expect(page.get_by_text("No keys yet")).to_be_visible()

    page.goto(f"{live_server.url}/team/")
    page.get_by_role("button", name="Revoke").click()
    expect(dialog).to_contain_text("Revoke this invite?")
    dialog.get_by_role("button", name="Revoke").click()
    expect(page.get_by_role("heading", name="Open invites")).to_have_count(0)
    assert not Invite.objects.exists() and not ProviderCredential.objects.exists()
    assert page.console.problems == []


def test_a_button_of_its_own_asks_its_own_question_on_a_page_without_the_toolbar(
    live_server, page, team, member
):
    ShareLink.create(team=team, created_by=member, title="Foxes")
    sign_in(page, live_server.url, member.username)
    page.goto(f"{live_server.url}/shares/")

    page.get_by_role("button", name="Revoke").click()
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_contain_text("Revoke this link? Anyone who has it can no longer open it.")
    dialog.get_by_role("button", name="Go back").click()

    assert ShareLink.objects.get().revoked_at is None
    assert page.console.problems == []


def test_a_new_invite_link_is_shown_once_and_copied_to_the_clipboard(live_server, page, team):
    owner = make_user("otto", team, Role.OWNER)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    sign_in(page, live_server.url, owner.username)
    page.goto(f"{live_server.url}/team/")
    page.get_by_role("button", name="Create invite link").click()

    page.get_by_role("button", name="Copy link").click()

    expect(page.get_by_role("status").filter(has_text="Copied")).to_have_text(
        "Copied to the clipboard."
    )
    link = page.evaluate("navigator.clipboard.readText()")
    assert link == page.get_by_label("Invite link").input_value()
    token = link.rstrip("/").rsplit("/", 1)[1]
    assert Invite.objects.get(team=team).token_hash == hashlib.sha256(token.encode()).hexdigest()
    page.reload()
    expect(page.get_by_label("Invite link")).to_have_count(0)
    assert page.console.problems == []


def test_a_new_share_link_is_copied_and_its_button_says_so(live_server, page, team, member):
    board = Board.objects.create(team=team, name="Foxes", created_by=member)
    board.add([make_output(make_prediction("a fox", status="succeeded", submitted_by=member))])
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    sign_in(page, live_server.url, member.username)
    page.goto(live_server.url + board.get_absolute_url())
    page.get_by_role("button", name="Share board").click()

    page.get_by_role("button", name="Copy").click()

    expect(page.get_by_role("button", name="Copied")).to_be_visible()
    link = page.get_by_label("Share link").input_value()
    assert page.evaluate("navigator.clipboard.readText()") == link
    expect(page.get_by_role("button", name="Copy")).to_be_visible()  # back to its name
    assert page.console.problems == []


def test_deleting_a_board_asks_once_even_where_the_toolbar_script_runs(
    live_server, page, team, member
):
    board = Board.objects.create(team=team, name="Foxes", created_by=member)
    sign_in(page, live_server.url, member.username)
    page.goto(live_server.url + board.get_absolute_url())
    page.on("dialog", lambda dialog: pytest.fail(f"a second question: {dialog.message}"))

    page.get_by_text("Rename or delete the board").click()
    page.get_by_role("button", name="Delete board").click()
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_contain_text("Delete this board?")
    dialog.get_by_role("button", name="Delete board").click()

    page.wait_for_url("**/boards/")
    assert not Board.objects.exists()
    assert page.console.problems == []


def test_the_tab_counts_my_predictions_that_ended_while_it_was_hidden(
    live_server, page, team, member
):
    mine = make_prediction("mine", status="processing", submitted_by=member, provider_id="a")
    theirs = make_prediction(
        "a teammate's", status="processing", submitted_by=make_user("theo", team), provider_id="b"
    )
    sign_in(page, live_server.url, member.username)
    icon = page.locator('link[rel="icon"]')
    expect(page).to_have_title("History · Darkroom")

    # Hidden before the rows' first refresh, which a hidden tab still makes (static/js/live.js).
    set_hidden(page, True)
    end(mine)
    end(theirs)

    expect(page).to_have_title("(1) History · Darkroom")
    expect(icon).to_have_attribute("href", re.compile(r"^data:image/png;base64,"))
    set_hidden(page, False)
    expect(page).to_have_title("History · Darkroom")
    expect(icon).to_have_attribute("href", re.compile(r"/static/favicon\.svg$"))
    assert page.console.problems == []


def test_the_changed_pages_are_photographed_at_desktop_and_phone_width_in_light_and_dark(
    live_server, browser, team, member
):
    owner = make_user("otto", team, Role.OWNER)
    Membership.objects.create(team=make_team("Weekend Crew"), user=owner, role=Role.OWNER)
    Invite.objects.create(team=team, role=Role.MEMBER, created_by=owner)
    credential = ProviderCredential(team=team, provider="replicate")
    credential.set_secret("r8_secret-token-abcd")
    credential.save()
    the_history_of_a_busy_team(member)
    ARTIFACTS.mkdir(exist_ok=True)
    taken, too_wide = [], []
    for width, device in ((1280, "desktop"), (390, "phone")):
        for scheme in ("light", "dark"):
            page = device_page(browser, live_server.url, owner.username, width, scheme)
            label = f"{device}-{scheme}"
            taken.append(photograph(page, "history-cards", label, too_wide))
            if device == "phone":
                page.locator(".menu > summary").click()
                taken.append(photograph(page, "menu-open", label, too_wide, full_page=False))
            page.goto(f"{live_server.url}/team/")
            taken.append(photograph(page, "team-invites", label, too_wide))
            mia = page.get_by_role("row", name=re.compile("mia"))
            mia.get_by_role("button", name="Remove").click()
            expect(page.locator("#confirm-dialog")).to_be_visible()
            taken.append(photograph(page, "confirm-dialog", label, too_wide, full_page=False))
            page.keyboard.press("Escape")
            page.goto(f"{live_server.url}/team/credentials/")
            taken.append(photograph(page, "provider-keys-with-a-key", label, too_wide))
            assert page.console.problems == [], (device, scheme, page.console.problems)
            page.context.close()
    assert all(shot.stat().st_size > 10_000 for shot in taken)
    assert too_wide == [], too_wide
