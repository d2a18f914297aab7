"""The history: the team's predictions newest first, filtered by bookmarkable query parameters,
paged by keyset, with chunks that refresh themselves only while something in them can change.
Each row shows its first output as a 48-pixel icon from Darkroom's copy."""

import re
from datetime import UTC, datetime, timedelta
from html import escape, unescape

import pytest
from django import forms
from django.db import connection
from django.template.defaultfilters import floatformat, truncatechars
from django.test import Client
from django.test.utils import CaptureQueriesContext

from accounts.models import Role
from outputs.models import ArchiveState, Output
from predictions.filters import Cursor, ListSelect
from predictions.models import Prediction, Status
from predictions.templatetags.durations import seconds
from predictions.templatetags.lists import excerpt

from .conftest import make_output, make_prediction, make_team, make_user, save_copy

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}
NOON = datetime(2025, 3, 14, 12, 0, tzinfo=UTC)


@pytest.fixture
def committed(django_capture_on_commit_callbacks):
    """Runs what a block's commits set off (the team's change marker among them), as a commit
    would: a chunk's version is read again only once the marker moved."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


def rows_of(html: str) -> list[str]:
    """The prompts of the rows, in the order shown."""
    return re.findall(r'<a id="prediction-\d+" href="[^"]+">([^<]*)</a>', html)


def link(html: str, text: str) -> str:
    """The href of the link labelled `text`."""
    match = re.search(rf'<a href="([^"]+)"[^>]*>{re.escape(text)}</a>', html)
    assert match, f"no link {text!r}"
    return unescape(match[1])


def chunk_refreshes(html: str) -> list[str]:
    """The chunks that refresh themselves (the arrivals question is not one of them)."""
    return re.findall(r'<tbody id="rows-[^"]*" class="rows" hx-get="([^"]+)"', html)


def refresh_url(html: str) -> str:
    match = re.search(r'<tbody id="rows-[^"]*" class="rows" hx-get="([^"]+)"', html)
    assert match, "no refreshing chunk"
    return unescape(match[1])


def pending_output(prediction: Prediction, **fields) -> Output:
    """An output of `prediction` recorded but not saved yet, at the provider's URL."""
    fields.setdefault("source_url", f"https://replicate.delivery/{prediction.pk}-0.webp")
    return Output.objects.create(
        team_id=prediction.team_id, prediction=prediction, index=0, **fields
    )


def icon_of(html: str, prediction: Prediction) -> str:
    """The thumbnail cell of `prediction`'s row."""
    link = f'<td class="prompt"><a id="prediction-{prediction.pk}"'
    row = re.search(rf'<tr>\s*<td class="thumb">(.*?)</td>\s*{link}', html, re.DOTALL)
    assert row, f"no row for prediction {prediction.pk}"
    return row[1]


def test_it_lists_the_teams_predictions_newest_first_with_their_details(client, member):
    make_prediction("an old barn", submitted_at=NOON - timedelta(hours=1))
    fox = make_prediction(
        "a red fox",
        submitted_at=NOON,
        submitted_by=member,
        model="acme/painter",
        status="succeeded",
        output=["https://replicate.delivery/fox-0.webp"],
        created_at=NOON,
        started_at=NOON + timedelta(seconds=1.5),
        completed_at=NOON + timedelta(seconds=4),
    )

    output = make_output(fox)

    response = client.get("/")

    html = response.content.decode()
    assert response.status_code == 200
    assert rows_of(html) == ["a red fox", "an old barn"]
    fox = html[html.index(f"/outputs/{output.pk}/") - 200 : html.index("an old barn")]
    assert f'src="/outputs/{output.pk}/icon?v={output.sha256[:16]}"' in fox
    assert "acme/painter" in fox
    assert '<td class="member"><span class="cut">mia</span></td>' in fox
    assert "Succeeded" in fox
    assert "1.5 s" in fox and "2.5 s" in fox
    assert 'datetime="2025-03-14T12:00:00+00:00"' in fox


def test_it_links_to_the_new_images_page_instead_of_holding_the_form(client):
    html = client.get("/").content.decode()

    assert 'href="/new/"' in html
    assert 'name="request_key"' not in html
    assert "No predictions yet." in html


def test_another_teams_predictions_never_appear(client):
    make_prediction("ours", status="succeeded")
    make_prediction("theirs", team=make_team("Elsewhere"), status="processing")

    page = client.get("/").content.decode()

    assert rows_of(page) == ["ours"]
    assert chunk_refreshes(page) == []


def test_an_htmx_request_for_the_next_page_gets_its_rows_and_older_link_only(client, settings):
    for n in range(60):
        make_prediction(f"p{n}", submitted_at=NOON + timedelta(minutes=n))
    older = link(client.get("/").content.decode(), "Older predictions")

    response = client.get(older, headers=HTMX)

    html = response.content.decode()
    assert "<html" not in html and "<thead>" not in html
    assert html.strip().startswith('<tbody id="rows-')
    assert rows_of(html) == [f"p{n}" for n in range(9, -1, -1)]
    assert 'class="more"' not in html


def test_a_refresh_renders_the_same_rows_markup_as_the_page(client):
    make_prediction("still going", status="processing")
    page = client.get("/").content.decode()

    fragment = client.get(refresh_url(page), headers=HTMX).content.decode()

    assert fragment.strip().startswith("<tbody")
    assert fragment.strip() in page


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("status=failed", ["broken fox"]),
        ("model=acme/painter", ["painted fox"]),
        ("member=bo", ["broken fox"]),
        ("q=FOX", ["broken fox", "painted fox"]),
        ("q=painted+fox", ["painted fox"]),
        ("since=2025-03-14", ["broken fox", "painted fox"]),
        ("until=2025-03-13", ["an owl"]),
        ("since=2025-03-13&until=2025-03-13", ["an owl"]),
        ("status=succeeded&model=acme/painter&q=fox", ["painted fox"]),
        ("status=&model=&member=&q=&since=&until=", ["broken fox", "painted fox", "an owl"]),
    ],
)
def test_each_filter_narrows_the_list(client, team, member, query, expected):
    bo = make_user("bo", team)
    make_prediction("an owl", submitted_at=NOON - timedelta(days=1), status="succeeded")
    make_prediction(
        "painted fox",
        submitted_at=NOON,
        model="acme/painter",
        status="succeeded",
        submitted_by=member,
    )
    make_prediction(
        "broken fox", submitted_at=NOON + timedelta(hours=1), status="failed", submitted_by=bo
    )

    response = client.get(f"/?{query}")

    assert response.status_code == 200
    assert rows_of(response.content.decode()) == expected


def test_the_filters_show_in_the_form_and_travel_with_the_older_link(client):
    for n in range(51):
        make_prediction(f"fox {n}", submitted_at=NOON + timedelta(minutes=n), status="failed")

    html = client.get("/?status=failed&q=fox").content.decode()

    assert 'value="fox"' in html
    assert '<option value="failed" selected>' in html
    older = link(html, "Older predictions")
    assert "status=failed" in older and "q=fox" in older and "before=" in older
    assert rows_of(client.get(older).content.decode()) == ["fox 0"]


@pytest.mark.parametrize(
    ("value", "attrs"),
    [
        ("", {"id": "id_status"}),
        ("failed", {"id": "id_status"}),
        ('a "quoted" & <tagged>', {"id": "id_status", "aria-invalid": "true"}),
        (None, {"id": "id_status", "required": True, "disabled": False}),
    ],
)
def test_a_filter_select_is_written_as_djangos_select_writes_it(value, attrs):
    widget = ListSelect(
        choices=[("", "Any status"), *Status.choices, ('a "quoted" & <tagged>', "Odd <one>")]
    )

    ours = widget.render("status", value, attrs)

    djangos = forms.Select.render(widget, "status", value, attrs)
    assert ours == re.sub(r">\s+<", "><", djangos)
    assert ours.count(" selected") == 1
    assert f'<option value="{escape(value or "")}" selected>' in ours


def test_the_member_select_lists_the_team_in_one_plain_query(client, team):
    for name in ("bo", "al", "cy"):
        make_user(name, team)
    make_user("olga", make_team("Elsewhere"))

    with CaptureQueriesContext(connection) as queries:
        html = client.get("/").content.decode()
    sql = [q["sql"] for q in queries.captured_queries]

    select = re.search(r'<select name="member".*?</select>', html, re.DOTALL)[0]
    assert re.findall(r'<option value="([^"]*)"', select) == ["", "al", "bo", "cy", "mia"]
    # No server-side cursor (DECLARE, FETCH, CLOSE on PostgreSQL) for a few names.
    assert not [statement for statement in sql if statement.startswith("DECLARE")]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("status=exploded", "There is no status called exploded."),
        ("member=nobody", "No member of this team is called nobody."),
        ("member=olga", "No member of this team is called olga."),
        ("model=not-a-model", "Give the model as owner/name"),
        ("since=yesterday", "Enter a valid date."),
        ("since=2025-03-14&until=2025-03-01", "The end date is before the start date."),
        ("before=12-x", "This link points at a position in the list that does not exist."),
        ("through=99999999999999999-1", "This link points at a position in the list"),
        ("before=", None),
    ],
)
def test_a_bad_filter_value_gets_a_clear_message_not_an_error(client, query, message):
    make_user("olga", make_team("Elsewhere"), Role.OWNER)
    make_prediction("kept out")

    response = client.get(f"/?{query}")

    html = unescape(response.content.decode())
    if message is None:
        assert response.status_code == 200
    else:
        assert response.status_code == 400
        assert message in html
        assert rows_of(html) == []


def test_a_bad_filter_on_an_htmx_request_is_a_400_too(client):
    assert client.get("/?before=nonsense", headers=HTMX).status_code == 400


def test_pages_follow_each_other_without_duplicates_or_gaps_and_without_offset(client):
    # Ties on submitted_at: the id breaks them, so a page boundary inside a tie loses nothing.
    for n in range(130):
        make_prediction(f"p{n}", submitted_at=NOON + timedelta(seconds=n // 7))
    expected = [p.prompt for p in Prediction.objects.order_by("-submitted_at", "-id")]

    seen, url, pages = [], "/", 0
    with CaptureQueriesContext(connection) as queries:
        while url:
            html = client.get(url).content.decode()
            seen += rows_of(html)
            pages += 1
            url = link(html, "Older predictions") if "Older predictions" in html else None

    assert pages == 3
    assert seen == expected
    selects = [q["sql"] for q in queries.captured_queries if "predictions_prediction" in q["sql"]]
    assert selects and not any("OFFSET" in sql.upper() for sql in selects)


def test_appending_pages_with_htmx_gives_the_same_rows_as_the_plain_links(client):
    for n in range(120):
        make_prediction(f"p{n}", submitted_at=NOON + timedelta(seconds=n // 3))
    html = client.get("/").content.decode()
    seen = rows_of(html)
    while "Older predictions" in html:
        html = client.get(link(html, "Older predictions"), headers=HTMX).content.decode()
        seen += rows_of(html)

    assert seen == [f"p{n}" for n in range(119, -1, -1)]


def test_a_deep_page_offers_the_way_back_to_the_newest(client):
    for n in range(55):
        make_prediction(f"p{n}", submitted_at=NOON + timedelta(minutes=n), status="failed")

    html = client.get(link(client.get("/?status=failed").content.decode(), "Older predictions"))
    html = html.content.decode()

    assert link(html, "Back to the newest") == "/?status=failed"


def test_a_chunk_with_an_unfinished_prediction_polls_and_a_finished_one_does_not(client):
    running = make_prediction("running", status="processing")
    page = client.get("/").content.decode()
    assert 'hx-trigger="every 2s"' in page
    url = refresh_url(page)

    running.apply_remote({"id": "r1", "status": "failed", "error": "out of memory"})
    fragment = client.get(url, headers=HTMX).content.decode()

    assert 'class="rows"' in fragment
    assert "Failed" in fragment
    assert "hx-get" not in fragment and "hx-trigger" not in fragment


def test_a_chunk_polls_until_its_outputs_are_saved_and_then_shows_the_icon(client, committed):
    running = make_prediction("running", status="processing")
    url = refresh_url(client.get("/").content.decode())
    with committed():
        running.apply_remote(
            {"id": "r1", "status": "succeeded", "output": ["https://replicate.delivery/a.png"]}
        )

    saving = client.get(url, headers=HTMX)
    with committed():
        output = save_copy(running.outputs.get())
    saved = client.get(url, headers={**HTMX, "If-None-Match": saving["ETag"]})

    assert "Succeeded" in saving.content.decode()
    assert 'src="https://replicate.delivery/a.png"' in saving.content.decode()
    assert 'hx-trigger="every 2s"' in saving.content.decode()
    assert saved.status_code == 200
    html = saved.content.decode()
    assert f'src="/outputs/{output.pk}/icon?v={output.sha256[:16]}"' in html
    assert "replicate.delivery" not in html
    assert "hx-trigger" not in html


def test_a_finished_history_does_not_poll(client):
    make_prediction("done", status="succeeded")
    make_prediction("gone wrong", status="failed")

    assert chunk_refreshes(client.get("/").content.decode()) == []


def test_a_status_filtered_chunk_polls_while_a_prediction_in_its_range_may_finish_into_it(
    client,
):
    make_prediction("gone wrong", status="failed", submitted_at=NOON)
    # Newer than the chunk: the arrivals' business, not the chunk's.
    make_prediction("running", status="processing", submitted_at=NOON + timedelta(minutes=1))
    assert chunk_refreshes(client.get("/?status=failed").content.decode()) == []

    make_prediction("older run", status="processing", submitted_at=NOON - timedelta(minutes=1))
    html = client.get("/?status=failed").content.decode()

    assert rows_of(html) == ["gone wrong"]
    assert len(chunk_refreshes(html)) == 1


def test_the_top_chunk_refresh_keeps_its_range_and_leaves_new_predictions_to_the_arrivals(
    client,
):
    make_prediction("first", status="processing", submitted_at=NOON)
    url = refresh_url(client.get("/").content.decode())

    make_prediction("second", submitted_at=NOON + timedelta(minutes=1))

    assert rows_of(client.get(url, headers=HTMX).content.decode()) == ["first"]


def test_an_older_chunk_refresh_keeps_exactly_its_own_range(client):
    for n in range(100):
        make_prediction(f"p{n}", submitted_at=NOON + timedelta(minutes=n))
    older = Prediction.objects.get(input__prompt="p20")
    older.status = "processing"
    older.save()
    second = client.get(link(client.get("/").content.decode(), "Older predictions"))
    url = refresh_url(second.content.decode())

    make_prediction("newest", submitted_at=NOON + timedelta(hours=5))
    refreshed = client.get(url, headers=HTMX).content.decode()

    assert rows_of(refreshed) == [f"p{n}" for n in range(49, -1, -1)]


def test_a_status_filtered_chunk_drops_a_prediction_that_finished(client):
    for n in range(3):
        make_prediction(f"p{n}", status="processing", submitted_at=NOON + timedelta(minutes=n))
    url = refresh_url(client.get("/?status=processing").content.decode())

    Prediction.objects.get(input__prompt="p1").apply_remote({"id": "x", "status": "failed"})

    assert rows_of(client.get(url, headers=HTMX).content.decode()) == ["p2", "p0"]


def test_an_unchanged_refresh_is_answered_304_before_rendering(client, django_assert_num_queries):
    make_prediction("waiting", status="processing")
    url = refresh_url(client.get("/").content.decode())
    first = client.get(url, headers=HTMX)
    etag = first["ETag"]
    assert "no-cache" in first["Cache-Control"]
    assert "HX-Request" in first["Vary"]

    # User and membership (the session is cached): nothing changed in the team since the
    # range's version was read, so it comes from the cache too.
    with django_assert_num_queries(2):
        unchanged = client.get(url, headers={**HTMX, "If-None-Match": etag})

    assert unchanged.status_code == 304
    assert unchanged.content == b""


def test_after_a_change_elsewhere_in_the_team_the_ranges_own_version_decides(
    client, committed, django_assert_num_queries
):
    waiting = make_prediction("waiting", status="processing", submitted_at=NOON)
    url = refresh_url(client.get("/").content.decode())
    etag = client.get(url, headers=HTMX)["ETag"]

    with committed():
        make_prediction("newer", submitted_at=NOON + timedelta(minutes=1))
    # The range's count and latest change, read again: unchanged.
    with django_assert_num_queries(3):
        assert client.get(url, headers={**HTMX, "If-None-Match": etag}).status_code == 304
    with django_assert_num_queries(2):
        assert client.get(url, headers={**HTMX, "If-None-Match": etag}).status_code == 304

    with committed():
        waiting.apply_remote({"id": "w1", "status": "failed", "error": "out of memory"})
    changed = client.get(url, headers={**HTMX, "If-None-Match": etag})
    assert changed.status_code == 200
    assert "Failed" in changed.content.decode()


def test_a_change_that_no_list_shows_leaves_the_etag(client, committed):
    waiting = make_prediction("waiting", status="processing")
    url = refresh_url(client.get("/").content.decode())
    etag = client.get(url, headers=HTMX)["ETag"]

    # A poll that only brings log lines: rows show no log, and the team's marker stays.
    with committed():
        waiting.apply_remote({"id": "w1", "status": "processing", "logs": "10%"})

    assert client.get(url, headers={**HTMX, "If-None-Match": etag}).status_code == 304


def test_a_new_prediction_in_the_range_changes_the_etag(client, committed):
    make_prediction("waiting", status="processing", submitted_at=NOON)
    url = refresh_url(client.get("/").content.decode())
    etag = client.get(url, headers=HTMX)["ETag"]

    with committed():
        make_prediction("arrived late", submitted_at=NOON - timedelta(seconds=1))

    assert client.get(url, headers={**HTMX, "If-None-Match": etag}).status_code == 200


def test_a_chunk_is_rendered_again_for_another_role_or_member(client, team, member):
    make_prediction("waiting", status="processing", submitted_by=member)
    url = refresh_url(client.get("/").content.decode())
    etag = client.get(url, headers=HTMX)["ETag"]
    viewer, teammate = Client(), Client()
    viewer.force_login(make_user("vera", team, Role.VIEWER))
    teammate.force_login(make_user("theo", team, Role.MEMBER))

    # An ETag says nothing about what a viewer is offered, or whose the statuses are.
    assert viewer.get(url, headers={**HTMX, "If-None-Match": etag}).status_code == 200
    theirs = teammate.get(url, headers={**HTMX, "If-None-Match": etag})
    assert theirs.status_code == 200
    assert "data-mine" not in theirs.content.decode()
    assert "data-mine" in client.get(url, headers=HTMX).content.decode()


def test_full_pages_are_never_answered_from_an_etag(client):
    # A page carries its own CSP nonce and CSRF token: it is rendered afresh every time.
    make_prediction("waiting", status="processing")
    response = client.get("/")

    assert not response.has_header("ETag")
    assert "no-cache" in response["Cache-Control"]


def test_the_etag_differs_between_teams_whose_ranges_look_alike(client, team):
    other = make_team("Elsewhere")
    olga = Client()
    olga.force_login(make_user("olga", other, Role.OWNER))
    for owner in (team, other):
        prediction = make_prediction("same", team=owner, submitted_at=NOON, status="processing")
        Prediction.objects.filter(pk=prediction.pk).update(updated_at=NOON)
    url = f"/?through={Cursor(NOON, 0)}"

    ours, theirs = client.get(url, headers=HTMX), olga.get(url, headers=HTMX)

    assert ours["ETag"] != theirs["ETag"]
    assert rows_of(ours.content.decode()) == rows_of(theirs.content.decode()) == ["same"]


def test_a_cursor_survives_a_round_trip_to_the_microsecond():
    cursor = Cursor(datetime(2025, 3, 14, 12, 0, 0, 123456, tzinfo=UTC), 42)

    assert str(cursor) == "1741953600123456-42"
    assert Cursor.parse(str(cursor)) == cursor


# --- Icons ---------------------------------------------------------------------------------


def test_an_archived_icon_is_the_96_pixel_thumbnail_shown_at_48(client):
    prediction = make_prediction("saved", status="succeeded", data_removed=True)
    output = make_output(prediction)

    cell = icon_of(client.get("/").content.decode(), prediction)

    assert f'<img src="/outputs/{output.pk}/icon?v={output.sha256[:16]}"' in cell
    assert 'width="48" height="48"' in cell
    assert 'loading="lazy" decoding="async"' in cell
    assert output.source_url not in cell


def test_an_output_still_saving_shows_the_providers_file_until_the_provider_removes_it(client):
    prediction = make_prediction("saving", status="succeeded")
    output = pending_output(prediction)

    shown = icon_of(client.get("/").content.decode(), prediction)
    Prediction.objects.filter(pk=prediction.pk).update(data_removed=True)
    removed = icon_of(client.get("/").content.decode(), prediction)

    assert f'<img src="{output.source_url}" alt=""' in shown
    assert 'width="48" height="48"' in shown
    assert "<img" not in removed
    assert "Saving…" in removed


def test_a_failed_or_expired_output_shows_why_instead_of_an_icon(client):
    failed = make_prediction("failed", status="succeeded", data_removed=True)
    pending_output(failed, state=ArchiveState.FAILED, reason="Too big.", next_attempt_at=None)
    expired = make_prediction("expired", status="succeeded")
    pending_output(expired, state=ArchiveState.EXPIRED, next_attempt_at=None)

    html = client.get("/").content.decode()

    assert "<img" not in icon_of(html, failed)
    assert 'title="Not saved: Too big. Gave up."' in icon_of(html, failed)
    assert "<img" not in icon_of(html, expired)
    assert "Expired at the provider" in icon_of(html, expired)
    assert chunk_refreshes(html) == []


def test_every_image_in_the_history_has_its_width_and_height(client):
    make_output(make_prediction("saved", status="succeeded"))
    pending_output(make_prediction("saving", status="succeeded"))

    html = client.get("/").content.decode()

    images = re.findall(r"<img\b[^>]*>", html)
    assert len(images) == 2
    for img in images:
        assert 'width="48" height="48"' in img, img


def test_the_number_of_queries_does_not_grow_with_the_rows(client):
    def queries_for_the_page() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert client.get("/").status_code == 200
        return len(queries.captured_queries)

    def add_rows(n: int) -> None:
        prediction = make_prediction(f"saved {n}", status="succeeded")
        make_output(prediction)
        make_output(prediction)
        pending_output(make_prediction(f"saving {n}", status="succeeded"))
        make_prediction(f"running {n}", status="processing")

    add_rows(0)
    few = queries_for_the_page()
    for n in range(1, 11):
        add_rows(n)

    assert queries_for_the_page() == few


# The rows' cheap filters (predictions/templatetags/lists.py, durations.py) say what Django's
# floatformat, truncatechars and date said, where their shortcuts could have differed.


@pytest.mark.parametrize(
    "microseconds",
    [0, 49_999, 50_000, 250_000, 1_250_000, 59_950_000, 123_456_789_012, -40_000, -250_000],
)
def test_queue_and_run_times_round_half_up_as_floatformat_does(microseconds):
    value = timedelta(microseconds=microseconds)

    assert seconds(value) == f"{floatformat(value.total_seconds(), 1)} s"


@pytest.mark.parametrize(
    "text",
    ["a short prompt", "x" * 60, "y" * 61, "café au lait", "cafe\u0301 " * 20, "\u00e9" * 61],
)
def test_prompts_are_cut_as_truncatechars_cuts_them(text):
    assert excerpt(text, 60) == truncatechars(text, 60)
