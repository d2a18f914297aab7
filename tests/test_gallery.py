"""The gallery: one tile per output image of the team's succeeded predictions, newest first, with
the history's filters, infinite scroll by keyset, and chunks that refresh only while a prediction
in them is unfinished, so new images show up without anything polling once all is done."""

import re
from datetime import UTC, datetime, timedelta
from html import unescape

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.models import Role
from predictions.models import Prediction

from .conftest import make_prediction, make_team, make_user

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}
NOON = datetime(2025, 3, 14, 12, 0, tzinfo=UTC)


def finished(prompt: str, images: int = 1, **fields) -> Prediction:
    fields.setdefault("status", "succeeded")
    name = prompt.replace(" ", "-")
    output = [f"https://replicate.delivery/{name}-{n}.webp" for n in range(images)]
    return make_prediction(prompt, output=output, **fields)


def tiles_of(html: str) -> list[str]:
    """The image URL of each tile, in the order shown."""
    return re.findall(r'<a class="tile"[^>]*?data-image="([^"]+)"', html, re.DOTALL)


def refresh_url(html: str) -> str:
    match = re.search(r'<div id="tiles-[^"]*" class="tiles" hx-get="([^"]+)"', html)
    assert match, "no refreshing chunk"
    return unescape(match[1])


def more_url(html: str) -> str | None:
    match = re.search(r'<div class="more" hx-get="([^"]+)" hx-trigger="revealed"', html)
    return unescape(match[1]) if match else None


def test_only_succeeded_predictions_with_outputs_get_tiles_one_per_image(client):
    finished("two foxes", images=2, submitted_at=NOON)
    finished("a failure", status="failed", submitted_at=NOON)
    finished("still running", status="processing", submitted_at=NOON)
    finished("expired", data_removed=True, submitted_at=NOON)
    make_prediction("no output", status="succeeded", submitted_at=NOON)
    make_prediction("not a url", status="succeeded", output=["data:oops"], submitted_at=NOON)

    response = client.get("/gallery/")

    assert response.status_code == 200
    assert tiles_of(response.content.decode()) == [
        "https://replicate.delivery/two-foxes-0.webp",
        "https://replicate.delivery/two-foxes-1.webp",
    ]


def test_tiles_are_newest_first_and_only_the_teams(client):
    finished("older", submitted_at=NOON)
    finished("newer", submitted_at=NOON + timedelta(minutes=1))
    finished("theirs", team=make_team("Elsewhere"), submitted_at=NOON + timedelta(minutes=2))

    tiles = tiles_of(client.get("/gallery/").content.decode())

    assert tiles == [
        "https://replicate.delivery/newer-0.webp",
        "https://replicate.delivery/older-0.webp",
    ]


def test_a_tile_links_to_its_prediction_and_carries_what_the_lightbox_shows(client, member):
    prediction = finished(
        "a fox",
        submitted_by=member,
        model="acme/painter",
        input={"prompt": "a fox", "seed": 7},
        predict_time=1.23456,
        image_count=1,
    )

    html = client.get("/gallery/").content.decode()

    tile = re.search(r'<a class="tile".*?</a>', html, re.DOTALL)[0]
    assert f'href="/predictions/{prediction.pk}/"' in tile
    assert 'data-prompt="a fox"' in tile
    assert 'data-model="acme/painter"' in tile
    assert 'data-member="mia"' in tile
    assert 'data-predict-time="1.23"' in tile
    assert 'data-image-count="1"' in tile
    assert "&quot;seed&quot;: 7" in tile
    # On hover or focus: the prompt, model and member, as text in the tile itself.
    assert '<span class="caption-meta">acme/painter · mia</span>' in tile
    assert '<dialog id="lightbox"' in html


def test_a_prompt_with_markup_stays_text_everywhere_in_a_tile(client):
    finished('"><script>alert(1)</script>', images=1)

    html = client.get("/gallery/").content.decode()

    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert 'data-prompt="&quot;&gt;&lt;script&gt;' in html


def test_the_gallery_script_is_loaded_with_the_pages_nonce(client):
    response = client.get("/gallery/")

    nonce = re.search(r"'nonce-([^']+)'", response["Content-Security-Policy"])[1]
    assert f'src="/static/js/gallery.js" nonce="{nonce}" defer' in response.content.decode()


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("model=acme/painter", ["painted-fox-0"]),
        ("member=bo", ["bo-s-owl-0"]),
        ("q=FOX", ["painted-fox-0", "plain-fox-0"]),
        ("since=2025-03-14", ["painted-fox-0", "bo-s-owl-0"]),
        ("until=2025-03-13", ["plain-fox-0"]),
        ("status=failed", ["painted-fox-0", "bo-s-owl-0", "plain-fox-0"]),
    ],
)
def test_the_historys_filters_narrow_the_gallery_too(client, team, query, expected):
    bo = make_user("bo", team)
    finished("plain fox", submitted_at=NOON - timedelta(days=1))
    finished("bo s owl", submitted_at=NOON, submitted_by=bo)
    finished("painted fox", submitted_at=NOON + timedelta(hours=1), model="acme/painter")

    response = client.get(f"/gallery/?{query}")

    assert response.status_code == 200
    expected_urls = [f"https://replicate.delivery/{name}.webp" for name in expected]
    assert tiles_of(response.content.decode()) == expected_urls


def test_the_gallery_offers_no_status_filter(client):
    assert 'name="status"' not in client.get("/gallery/").content.decode()


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("member=olga", "No member of this team is called olga."),
        ("since=14.3.2025", "Enter a valid date."),
        ("before=not-a-cursor", "This link points at a position in the list that does not exist."),
    ],
)
def test_a_bad_filter_value_gets_a_clear_message(client, query, message):
    make_user("olga", make_team("Elsewhere"), Role.OWNER)
    finished("hidden")

    response = client.get(f"/gallery/?{query}")

    assert response.status_code == 400
    assert message in unescape(response.content.decode())
    assert tiles_of(response.content.decode()) == []


def test_scrolling_loads_every_image_once_without_offset(client):
    for n in range(60):
        finished(f"p{n}", images=1 + n % 2, submitted_at=NOON + timedelta(seconds=n // 4))
    expected = [
        url for p in Prediction.objects.order_by("-submitted_at", "-id") for url in p.output_urls
    ]

    html = client.get("/gallery/").content.decode()
    seen, pages = tiles_of(html), 1
    with CaptureQueriesContext(connection) as queries:
        while url := more_url(html):
            response = client.get(url, headers=HTMX)
            html = response.content.decode()
            assert "<html" not in html
            seen += tiles_of(html)
            pages += 1

    assert pages == 3
    assert seen == expected
    assert not any("OFFSET" in q["sql"].upper() for q in queries.captured_queries)


def test_without_javascript_the_older_link_pages_through_too(client):
    for n in range(30):
        finished(f"p{n}", submitted_at=NOON + timedelta(minutes=n))

    html = client.get("/gallery/").content.decode()
    older = unescape(re.search(r'<a href="([^"]+)">Older images</a>', html)[1])
    page = client.get(older).content.decode()

    assert tiles_of(page) == [f"https://replicate.delivery/p{n}-0.webp" for n in range(5, -1, -1)]
    assert '<a href="/gallery/">Back to the newest</a>' in page


def test_it_polls_while_the_team_has_an_unfinished_prediction_and_shows_its_images(client):
    finished("done", submitted_at=NOON)
    running = make_prediction("running", status="processing", submitted_at=NOON)
    page = client.get("/gallery/").content.decode()
    assert 'hx-trigger="every 3s"' in page
    url = refresh_url(page)

    running.apply_remote(
        {"id": "r1", "status": "succeeded", "output": ["https://replicate.delivery/new.webp"]}
    )
    fragment = client.get(url, headers=HTMX).content.decode()

    assert fragment.strip().startswith('<div id="tiles-')
    assert tiles_of(fragment) == [
        "https://replicate.delivery/new.webp",
        "https://replicate.delivery/done-0.webp",
    ]
    assert "hx-trigger" not in fragment


def test_it_does_not_poll_when_nothing_can_change(client):
    finished("done")
    make_prediction("failed", status="failed")
    make_prediction("elsewhere", team=make_team("Elsewhere"), status="processing")

    assert 'hx-trigger="every' not in client.get("/gallery/").content.decode()


def test_an_empty_gallery_waits_for_the_first_images_while_something_runs(client):
    make_prediction("first", status="starting")

    html = client.get("/gallery/").content.decode()

    assert "They will show here as predictions finish." in html
    assert 'hx-trigger="every 3s"' in html


def test_an_unfinished_prediction_outside_the_filter_does_not_keep_it_polling(client):
    finished("a fox")
    make_prediction("an owl", status="processing")

    assert 'hx-trigger="every' not in client.get("/gallery/?q=fox").content.decode()


def test_an_unchanged_refresh_is_answered_304(client, django_assert_num_queries):
    finished("done")
    running = make_prediction("running", status="processing")
    url = refresh_url(client.get("/gallery/").content.decode())
    etag = client.get(url, headers=HTMX)["ETag"]

    with django_assert_num_queries(4):
        unchanged = client.get(url, headers={**HTMX, "If-None-Match": etag})

    assert unchanged.status_code == 304
    assert "no-cache" in unchanged["Cache-Control"]
    running.apply_remote({"id": "r1", "status": "succeeded", "output": ["https://x.test/a.png"]})
    assert client.get(url, headers={**HTMX, "If-None-Match": etag}).status_code == 200
