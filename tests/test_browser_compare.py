"""Compare in a real browser: tick images of two predictions in the gallery, press Compare, and
see them side by side with the differing input highlighted, at desktop and phone width, light
and dark, never wider than the screen and without a CSP complaint. Screenshots go to
test-artifacts/ (compare-<device>-<scheme>.png)."""

import re

from . import test_browser
from .conftest import make_output, make_prediction
from .test_browser import ARTIFACTS, PASSWORD, Console, expect, sign_in

# test_browser.py's fixtures, assigned rather than imported: a test's argument of the same name
# is then no redefinition of an import (ruff's F811).
browser, page = test_browser.browser, test_browser.page


def finished(prompt: str, member, images: int = 1, **input):
    prediction = make_prediction(
        status="succeeded", submitted_by=member, input={"prompt": prompt, **input}
    )
    for _ in range(images):
        make_output(prediction)
    return prediction


def tick(tab, prompt: str, nth: int = 0) -> None:
    tab.locator(".tile", has_text=prompt).nth(nth).locator(".tile-select").click()


def press_compare(tab, phone: bool) -> None:
    if phone:  # the toolbar's actions fold away on a phone
        tab.locator("#selection summary").click()
    tab.locator("#selection").get_by_role("button", name="Compare").click()


def test_compare_says_in_place_what_it_needs_before_opening(live_server, page, member):
    finished("a red fox in fresh snow", member, images=2)
    for n in range(5):
        finished(f"frame {n}", member)
    sign_in(page, live_server.url, member.username)
    page.goto(f"{live_server.url}/gallery/")
    toolbar = page.locator("#selection")
    compare = toolbar.get_by_role("button", name="Compare")
    expect(compare).to_be_disabled()

    tick(page, "a red fox in fresh snow", 0)
    tick(page, "a red fox in fresh snow", 1)
    compare.click()
    error = toolbar.get_by_role("alert")
    expect(error).to_have_text(
        "These images are all of one prediction: tick images of two to four different "
        "predictions to compare them."
    )
    assert page.url == f"{live_server.url}/gallery/"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "compare-refused-desktop-light.png")

    for n in range(5):
        tick(page, f"frame {n}")
    expect(error).to_be_hidden()  # the ticks changed: what it said no longer holds
    compare.click()
    expect(error).to_have_text(
        "These images are of 6 predictions: tick images of two to four to compare them."
    )
    assert page.url == f"{live_server.url}/gallery/"
    assert page.console.problems == []


def test_two_predictions_ticked_in_the_gallery_open_side_by_side_at_every_width(
    live_server, browser, member
):
    snow = finished("a red fox in fresh snow", member, images=2, aspect_ratio="1:1", seed=7)
    rain = finished("a red fox in the rain", member, aspect_ratio="1:1", seed=7)
    four = [snow, rain] + [
        finished(f"a red fox in the {weather}, long exposure", member, aspect_ratio=ratio)
        for weather, ratio in (("fog", "16:9"), ("wind", "9:16"))
    ]
    ARTIFACTS.mkdir(exist_ok=True)
    for width, device in ((1280, "desktop"), (390, "phone")):
        for scheme in ("light", "dark"):
            phone = device == "phone"
            context = browser.new_context(
                viewport={"width": width, "height": 900},
                color_scheme=scheme,
                is_mobile=phone,
                has_touch=phone,
            )
            context.set_default_timeout(20_000)
            page = context.new_page()
            console = Console(page)
            page.goto(f"{live_server.url}/sign-in/")
            page.get_by_label("Username").fill(member.username)
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(f"{live_server.url}/")
            page.goto(f"{live_server.url}/gallery/")

            # Both images of one, one of the other: two predictions, each once.
            tick(page, "a red fox in fresh snow", 0)
            tick(page, "a red fox in fresh snow", 1)
            tick(page, "a red fox in the rain")
            press_compare(page, phone)

            page.wait_for_url(re.compile(r"/compare/\?p=\d+&p=\d+$"))
            assert page.url.endswith(f"?p={rain.pk}&p={snow.pk}")  # the gallery's order
            expect(page.get_by_role("heading", name="Compare 2 predictions")).to_be_visible()
            heads = page.locator(".compare-head")
            expect(heads).to_have_count(2)
            prompt = page.locator("tr.differs", has=page.locator("code", has_text="prompt"))
            expect(prompt).to_be_visible()
            expect(prompt.locator("mark")).to_have_text(["the", "rain", "fresh", "snow"])
            expect(prompt.locator("mark").first).to_have_css(
                "background-color", "rgb(255, 216, 77)" if scheme == "light" else "rgb(107, 86, 0)"
            )
            expect(page.locator("tr.differs", has_text="aspect_ratio")).to_have_count(0)
            expect(page.locator(".compare-same summary")).to_contain_text("aspect_ratio")
            expect(page.locator(".compare-frame img")).to_have_count(3)
            expect(page.locator(".compare-images tr").nth(1)).to_contain_text("No image")
            images = page.locator(".compare-images tr").first.locator("img")
            expect(images).to_have_count(2)
            for image in images.all():
                expect(image).to_have_js_property("complete", True)
                assert image.evaluate("img => img.naturalWidth") > 0
            first, second = (image.bounding_box() for image in images.all())
            assert abs(first["width"] - second["width"]) < 1  # one size, to the rounding
            assert first["height"] == first["width"] and second["height"] == second["width"]
            # Side by side: the second column starts to the right of the first.
            assert second["x"] > first["x"] + first["width"] - 1
            assert abs(second["y"] - first["y"]) < 1
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), (
                device,
                scheme,
            )
            page.screenshot(path=ARTIFACTS / f"compare-{device}-{scheme}.png", full_page=True)

            # Four: on a phone they scroll inside their box, and the page stays as wide as it.
            page.goto(f"{live_server.url}/compare/?" + "&".join(f"p={p.pk}" for p in four))
            expect(page.locator(".compare-head")).to_have_count(4)
            expect(page.locator("tr.differs", has_text="aspect_ratio")).to_be_visible()
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
            scrolls = page.locator(".compare-wrap").evaluate("w => w.scrollWidth > w.clientWidth")
            assert scrolls == phone, (device, scheme)
            page.screenshot(path=ARTIFACTS / f"compare-four-{device}-{scheme}.png", full_page=True)
            assert console.problems == [], (device, scheme, console.problems)
            context.close()
    assert (ARTIFACTS / "compare-phone-dark.png").stat().st_size > 10_000


def test_rows_ticked_in_the_history_keep_their_ticks_while_it_refreshes_and_compare(
    live_server, page, member
):
    running = make_prediction("a heron, still running", status="processing", provider_id="h1")
    done = finished("a heron at dawn", member, seed=7)
    sign_in(page, live_server.url, member.username)
    page.goto(f"{live_server.url}/")
    for prediction in (running, done):
        page.locator(f"#pick-{prediction.pk}").check()

    # The chunk refreshes while the heron runs; the ticks stay.
    running.apply_remote({"id": "h1", "status": "succeeded", "output": []})
    expect(page.locator("tbody.rows tr").first).to_contain_text("Succeeded")
    expect(page.locator(f"#pick-{running.pk}")).to_be_checked()
    page.get_by_role("button", name="Compare ticked").click()

    page.wait_for_url(re.compile(r"/compare/\?p=\d+&p=\d+$"))
    expect(page.locator("main")).to_contain_text("a heron at dawn")
    expect(page.locator("main")).to_contain_text("a heron, still running")
    assert page.console.problems == []
