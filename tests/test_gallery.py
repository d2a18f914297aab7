"""The gallery: one tile per output of the team's succeeded predictions, newest first, with the
history's filters and a starred filter, infinite scroll by keyset, and chunks that refresh only
while a prediction in them is unfinished or an output is still being saved. Tiles show
Darkroom's archived copies, and the provider's file only until a copy exists."""

import re
from datetime import UTC, datetime, timedelta
from html import unescape

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import Role
from outputs.models import ArchiveState, Output
from predictions.models import Prediction

from .conftest import make_output, make_prediction, make_team, make_user, save_copy

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}
NOON = datetime(2025, 3, 14, 12, 0, tzinfo=UTC)


def finished(prompt: str, images: int = 1, state: str = "archived", **fields) -> Prediction:
    """A succeeded prediction with `images` outputs at the provider, each recorded as an output
    in `state`: archived (a real stored copy), or pending, failed or expired."""
    fields.setdefault("status", "succeeded")
    name = prompt.replace(" ", "-")
    urls = [f"https://replicate.delivery/{name}-{n}.webp" for n in range(images)]
    prediction = make_prediction(prompt, output=urls, **fields)
    for index, url in enumerate(urls):
        if state == ArchiveState.ARCHIVED:
            make_output(prediction, index=index)
        else:
            due = None if state == ArchiveState.EXPIRED else timezone.now()
            Output.objects.create(
                team_id=prediction.team_id,
                prediction=prediction,
                index=index,
                source_url=url,
                state=state,
                next_attempt_at=due,
            )
    return prediction


@pytest.fixture
def committed(django_capture_on_commit_callbacks):
    """Runs what a block's commits set off (the team's change marker among them), as a commit
    would: a chunk's version is read again only once the marker moved."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


def tiles_of(html: str) -> list[str]:
    """Each tile as `<prompt with dashes>-<index>`, in the order shown."""
    pks = [int(pk) for pk in re.findall(r'<div class="tile [^"]*" id="tile-(\d+)"', html)]
    outputs = Output.objects.select_related("prediction").in_bulk(pks)
    return [f"{outputs[pk].prediction.prompt.replace(' ', '-')}-{outputs[pk].index}" for pk in pks]


def tile(html: str, output: Output) -> str:
    match = re.search(rf'<div class="tile [^"]*" id="tile-{output.pk}">.*?</div>', html, re.DOTALL)
    assert match, f"no tile for output {output.pk}"
    return match[0]


def refresh_url(html: str) -> str:
    match = re.search(r'<div id="tiles-[^"]*" class="tiles" hx-get="([^"]+)"', html)
    assert match, "no refreshing chunk"
    return unescape(match[1])


def more_url(html: str) -> str | None:
    match = re.search(r'<div class="more" hx-get="([^"]+)" hx-trigger="revealed"', html)
    return unescape(match[1]) if match else None


def test_succeeded_and_running_predictions_with_an_output_to_show_get_tiles_one_per_output(
    client,
):
    finished("two foxes", images=2, submitted_at=NOON)
    finished("saving", state="pending", submitted_at=NOON)
    finished("a failure", status="failed", submitted_at=NOON)
    finished("still running", status="processing", submitted_at=NOON)
    finished("removed before saved", state="pending", data_removed=True, submitted_at=NOON)
    finished("expired", state="expired", submitted_at=NOON)
    make_prediction("no output", status="succeeded", submitted_at=NOON)
    make_prediction("not a url", status="succeeded", output=["data:oops"], submitted_at=NOON)

    response = client.get("/gallery/")

    assert response.status_code == 200
    assert sorted(tiles_of(response.content.decode())) == [
        "saving-0",
        "still-running-0",
        "two-foxes-0",
        "two-foxes-1",
    ]


def test_archived_copies_keep_showing_after_the_provider_removed_its_files(client):
    prediction = finished("kept", images=2, data_removed=True)
    output = prediction.outputs.get(index=0)

    html = client.get("/gallery/").content.decode()

    assert tiles_of(html) == ["kept-0", "kept-1"]
    assert f'src="/outputs/{output.pk}/thumb?v={output.sha256[:16]}"' in tile(html, output)
    assert "replicate.delivery" not in html


def test_tiles_are_newest_first_and_only_the_teams(client):
    finished("older", submitted_at=NOON)
    finished("newer", submitted_at=NOON + timedelta(minutes=1))
    finished("theirs", team=make_team("Elsewhere"), submitted_at=NOON + timedelta(minutes=2))

    assert tiles_of(client.get("/gallery/").content.decode()) == ["newer-0", "older-0"]


def test_a_tile_links_to_its_prediction_and_carries_what_the_lightbox_shows(client, member):
    prediction = finished(
        "a fox",
        submitted_by=member,
        model="acme/painter",
        input={"prompt": "a fox", "seed": 7},
        predict_time=1.23456,
        image_count=1,
    )
    output = prediction.outputs.get()

    html = client.get("/gallery/").content.decode()

    shown = tile(html, output)
    assert f'href="/predictions/{prediction.pk}/"' in shown
    assert 'data-kind="image"' in shown
    assert f'data-image="/outputs/{output.pk}/file?v={output.sha256[:16]}"' in shown
    assert f'data-download="/outputs/{output.pk}/download?v={output.sha256[:16]}"' in shown
    assert f'data-width="{output.width}" data-height="{output.height}"' in shown
    assert f'data-open="/predictions/{prediction.pk}/"' in shown
    assert 'data-prompt="a fox"' in shown
    assert 'data-model="acme/painter"' in shown
    assert 'data-member="mia"' in shown
    assert 'data-predict-time="1.23"' in shown
    assert 'data-image-count="1"' in shown
    assert "&quot;seed&quot;: 7" in shown
    # On hover or focus: the prompt, model and member, as text in the tile itself.
    assert '<span class="caption-meta">acme/painter · mia</span>' in shown
    # A member may select it for a board or a share.
    assert f'name="outputs" value="{output.pk}" form="selection"' in shown
    assert '<dialog id="lightbox"' in html
    assert 'id="gallery" class="gallery" data-gallery' in html


def test_a_viewer_gets_no_selection_checkboxes(client):
    client.force_login(make_user("vic", make_team(), Role.VIEWER))
    finished("a fox")

    html = client.get("/gallery/").content.decode()

    assert tiles_of(html) == ["a-fox-0"]
    assert 'class="tile-select"' not in html


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
    assert tiles_of(response.content.decode()) == expected


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


def test_scrolling_loads_every_output_once_without_offset(client):
    for n in range(60):
        finished(f"p{n}", images=1 + n % 2, submitted_at=NOON + timedelta(seconds=n // 4))
    expected = [
        f"{p.prompt}-{output.index}"
        for p in Prediction.objects.order_by("-submitted_at", "-id")
        for output in p.outputs.order_by("index")
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


def test_a_page_costs_the_same_queries_whatever_its_number_of_tiles(client):
    def queries_for_the_page() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert client.get("/gallery/").status_code == 200
        return len(queries.captured_queries)

    finished("first", images=2)
    few = queries_for_the_page()
    for n in range(20):
        finished(f"more {n}", images=3)

    assert queries_for_the_page() == few


def test_without_javascript_the_older_link_pages_through_too(client):
    for n in range(30):
        finished(f"p{n}", submitted_at=NOON + timedelta(minutes=n))

    html = client.get("/gallery/").content.decode()
    older = unescape(re.search(r'<a href="([^"]+)">Older images</a>', html)[1])
    page = client.get(older).content.decode()

    assert tiles_of(page) == [f"p{n}-0" for n in range(5, -1, -1)]
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
    assert tiles_of(fragment) == ["running-0", "done-0"]
    # The new output is still being saved: its tile shows the provider's file meanwhile.
    assert 'src="https://replicate.delivery/new.webp"' in fragment
    assert "Saving…" in fragment
    assert 'hx-trigger="every 3s"' in fragment


def test_a_saved_copy_replaces_the_providers_file_and_then_polling_stops(client, committed):
    prediction = finished("saving", state="pending")
    output = prediction.outputs.get()
    page = client.get("/gallery/").content.decode()
    url = refresh_url(page)
    etag = client.get(url, headers=HTMX)["ETag"]
    assert f'src="{output.source_url}"' in tile(page, output)

    with committed():
        output = save_copy(output)
    response = client.get(url, headers={**HTMX, "If-None-Match": etag})

    assert response.status_code == 200
    fragment = response.content.decode()
    shown = tile(fragment, output)
    assert f'src="/outputs/{output.pk}/thumb?v={output.sha256[:16]}"' in shown
    assert output.source_url not in fragment
    assert "Saving" not in shown
    assert "hx-trigger" not in fragment


def test_it_does_not_poll_when_nothing_can_change(client):
    finished("done")
    make_prediction("failed", status="failed")
    make_prediction("elsewhere", team=make_team("Elsewhere"), status="processing")

    assert 'hx-trigger="every 3s"' not in client.get("/gallery/").content.decode()


def test_a_running_prediction_holds_its_place_with_its_status_until_its_images_come(client):
    first = make_prediction("first", status="starting")

    html = client.get("/gallery/").content.decode()

    assert f'<div class="tile tile-running" id="running-{first.pk}">' in html
    assert "Starting" in html
    assert "No images yet" not in html
    assert 'hx-trigger="every 3s"' in html


def test_an_unfinished_prediction_outside_the_filter_does_not_keep_it_polling(client):
    finished("a fox")
    make_prediction("an owl", status="processing")

    assert 'hx-trigger="every 3s"' not in client.get("/gallery/?q=fox").content.decode()


def test_an_unchanged_refresh_is_answered_304(client, committed, django_assert_num_queries):
    finished("done")
    running = make_prediction("running", status="processing")
    url = refresh_url(client.get("/gallery/").content.decode())
    etag = client.get(url, headers=HTMX)["ETag"]

    # User and membership (the session is cached); the range's count and latest change come
    # from the cache while nothing in the team changes.
    with django_assert_num_queries(2):
        unchanged = client.get(url, headers={**HTMX, "If-None-Match": etag})

    assert unchanged.status_code == 304
    assert "no-cache" in unchanged["Cache-Control"]
    with committed():
        running.apply_remote(
            {"id": "r1", "status": "succeeded", "output": ["https://x.test/a.png"]}
        )
    assert client.get(url, headers={**HTMX, "If-None-Match": etag}).status_code == 200


@pytest.mark.parametrize(
    "change",
    [
        {"state": ArchiveState.FAILED, "reason": "The download timed out."},
        {"state": ArchiveState.EXPIRED, "next_attempt_at": None},
        {"next_attempt_at": NOON},
        {"starred": True},
    ],
)
def test_any_change_to_what_a_tile_shows_changes_the_etag(client, committed, change):
    prediction = finished("saving", state="pending")
    url = refresh_url(client.get("/gallery/").content.decode())
    etag = client.get(url, headers=HTMX)["ETag"]

    with committed():
        Output.changed(prediction.outputs.all(), **change)

    assert client.get(url, headers={**HTMX, "If-None-Match": etag}).status_code == 200


# --- What a tile shows ---------------------------------------------------------------------


def test_an_archived_tile_shows_its_thumbnail_at_its_size_never_the_providers_file(client):
    prediction = finished("a fox")
    output = prediction.outputs.get()

    html = client.get("/gallery/").content.decode()

    width, height = output.thumb_size()
    img = re.search(r"<img [^>]*>", tile(html, output))[0]
    assert f'src="/outputs/{output.pk}/thumb?v={output.sha256[:16]}"' in img
    assert f'width="{width}" height="{height}"' in img
    assert 'loading="lazy"' in img and 'decoding="async"' in img
    assert output.source_url not in html
    assert 'class="tile-state"' not in html


def test_a_tile_still_saving_shows_the_providers_file_and_says_so(client):
    output = finished("a fox", state="pending").outputs.get()

    shown = tile(client.get("/gallery/").content.decode(), output)

    assert f'src="{output.source_url}"' in shown
    assert f'data-image="{output.source_url}"' in shown
    assert 'data-download=""' in shown
    assert '<p class="tile-state" title="Saving…">' in shown


def test_a_failed_tile_says_why_and_when_it_is_tried_again(client):
    output = finished("a fox", state="failed").outputs.get()
    retry = timezone.localtime(output.next_attempt_at).strftime("%H:%M")
    output.reason = "The download timed out."
    output.save()

    html = client.get("/gallery/").content.decode()

    assert f"Not saved: The download timed out. Retrying at {retry}." in tile(html, output)
    Output.changed(Output.objects.filter(pk=output.pk), next_attempt_at=None)
    html = client.get("/gallery/").content.decode()
    assert "Not saved: The download timed out. Gave up." in tile(html, output)
    assert 'hx-trigger="every 3s"' not in html


def test_an_expired_output_of_a_shown_prediction_says_so_without_an_image(client):
    prediction = finished("a fox", images=2)
    expired = prediction.outputs.get(index=1)
    expired.delete()
    expired = Output.objects.create(
        team_id=prediction.team_id,
        prediction=prediction,
        index=1,
        source_url="https://replicate.delivery/gone.webp",
        state=ArchiveState.EXPIRED,
        reason="The provider no longer has this file.",
        next_attempt_at=None,
    )

    shown = tile(client.get("/gallery/").content.decode(), expired)

    assert "Expired at the provider" in shown
    assert "<img" not in shown
    assert "gone.webp" not in shown


def test_a_video_output_is_a_tile_that_the_lightbox_plays(client):
    prediction = finished("a clip", state="pending")
    output = prediction.outputs.get()
    Output.changed(
        Output.objects.filter(pk=output.pk), source_url="https://replicate.delivery/clip.mp4"
    )

    shown = tile(client.get("/gallery/").content.decode(), output)

    assert 'data-kind="video"' in shown
    assert 'data-image="https://replicate.delivery/clip.mp4"' in shown
    assert "<img" not in shown


def test_every_image_on_the_page_has_its_width_and_height(client):
    finished("saved", images=2)
    finished("saving", state="pending")
    finished("failed", state="failed")
    finished("removed", data_removed=True)

    html = client.get("/gallery/").content.decode()

    images = re.findall(r"<img\b[^>]*>", html)
    assert len(images) >= 5  # four tiles and the lightbox's
    for img in images:
        assert re.search(r'\swidth="\d+"', img) and re.search(r'\sheight="\d+"', img), img


# --- The starred filter --------------------------------------------------------------------


def test_starred_only_shows_the_starred_outputs_of_matching_predictions(client):
    fox = finished("a fox", images=3, submitted_at=NOON)
    owl = finished("an owl", images=2, submitted_at=NOON + timedelta(minutes=1))
    finished("a plain fox", submitted_at=NOON + timedelta(minutes=2))
    fox.outputs.filter(index__in=[0, 2]).update(starred=True)
    owl.outputs.filter(index=1).update(starred=True)

    starred = client.get("/gallery/?starred=on").content.decode()
    starred_foxes = client.get("/gallery/?starred=on&q=fox").content.decode()

    assert tiles_of(starred) == ["an-owl-1", "a-fox-0", "a-fox-2"]
    assert tiles_of(starred_foxes) == ["a-fox-0", "a-fox-2"]
    assert 'name="starred" id="id_starred" checked' in starred
    assert "Starred only" in starred


def test_the_starred_filter_travels_with_the_older_link(client):
    for n in range(30):
        prediction = finished(f"p{n}", submitted_at=NOON + timedelta(minutes=n))
        Output.changed(prediction.outputs.all(), starred=True)
    finished("not starred", submitted_at=NOON - timedelta(days=1))

    html = client.get("/gallery/?starred=on").content.decode()
    older = unescape(re.search(r'<a href="([^"]+)">Older images</a>', html)[1])

    assert "starred=on" in older
    assert tiles_of(client.get(older).content.decode()) == [f"p{n}-0" for n in range(5, -1, -1)]


def test_without_starred_outputs_the_starred_gallery_says_so(client):
    finished("a fox")

    html = client.get("/gallery/?starred=on").content.decode()

    assert tiles_of(html) == []
    assert "No images match these filters." in html


# --- The archived files --------------------------------------------------------------------


def test_a_download_is_an_attachment_named_from_the_prompt(client):
    output = finished("A Fox, in the snow!").outputs.get()

    response = client.get(output.url("download"))

    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="a-fox-in-the-snow-1.png"'
    assert response["Content-Type"] == "image/png"
    assert b"".join(response.streaming_content).startswith(b"\x89PNG")


def test_the_file_is_served_inline_and_the_thumbnails_as_webp(client):
    output = finished("a fox").outputs.get()

    file = client.get(output.url("file"))
    thumb = client.get(output.url("thumb"))
    icon = client.get(output.url("icon"))

    assert file["Content-Disposition"].startswith("inline")
    assert file["Content-Type"] == "image/png"
    for response in (thumb, icon):
        assert response.status_code == 200
        assert response["Content-Type"] == "image/webp"
        assert b"".join(response.streaming_content)[8:12] == b"WEBP"
    assert "private" in file["Cache-Control"]


def test_another_teams_output_and_one_not_yet_saved_answer_404(client):
    theirs = finished("theirs", team=make_team("Elsewhere")).outputs.get()
    saving = finished("saving", state="pending").outputs.get()
    olga = Client()
    olga.force_login(make_user("olga", make_team("Elsewhere"), Role.OWNER))

    assert client.get(theirs.url("download")).status_code == 404
    assert client.get(theirs.url("thumb")).status_code == 404
    assert client.get(saving.url("file")).status_code == 404
    assert olga.get(theirs.url("download")).status_code == 200


def test_an_output_past_the_providers_hour_is_not_hot_linked(client):
    prediction = make_prediction(
        "old",
        status="succeeded",
        output=["https://replicate.delivery/old/out-0.webp"],
        completed_at=timezone.now() - timedelta(hours=2),
    )
    Output.record(prediction)

    html = client.get("/gallery/").content.decode() + client.get("/").content.decode()

    assert "replicate.delivery" not in html
