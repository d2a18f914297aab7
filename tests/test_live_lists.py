"""Lists live for the whole team: an open history or gallery asks once a second what arrived,
and learns it from the team's change marker. An unchanged answer is a 304 before any query
but the sign-in's; a teammate's new prediction joins the list at once for a reader at its top,
or is counted in an "N new" bar for a reader who scrolled down or set filters."""

import re
from datetime import UTC, datetime, timedelta
from html import unescape
from unittest import mock

import pytest
from django.test import Client

from accounts.models import Role
from outputs.models import Output
from predictions import live

from .conftest import make_output, make_prediction, make_team, make_user

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}
NOON = datetime(2025, 3, 14, 12, 0, tzinfo=UTC)


def arrivals_url(html: str) -> str:
    match = re.search(r'<div id="arrivals" class="arrivals" hx-get="([^"]+)"', html)
    assert match, "no arrivals question"
    return unescape(match[1])


def rows_of(html: str) -> list[str]:
    return re.findall(r'<a id="prediction-\d+" href="[^"]+">([^<]*)</a>', html)


@pytest.fixture
def teammate(team):
    return make_user("theo", team, Role.MEMBER)


@pytest.fixture
def committed(django_capture_on_commit_callbacks):
    """Runs what a block's commits set off (the change marker among them) as a commit would."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


def test_an_unchanged_list_is_answered_304_in_two_queries(
    client, teammate, committed, django_assert_num_queries
):
    with committed():
        make_prediction("a fox", submitted_by=teammate, status="succeeded")
    url = arrivals_url(client.get("/").content.decode())
    etag = client.get(url, headers=HTMX)["ETag"]

    # The user and the membership: the session and the marker come from the cache.
    with django_assert_num_queries(2):
        unchanged = client.get(url, headers={**HTMX, "If-None-Match": etag})

    assert unchanged.status_code == 304
    assert unchanged.content == b""


def test_a_teammates_new_prediction_joins_the_top_of_an_open_history(client, teammate, committed):
    with committed():
        make_prediction("first", submitted_by=teammate, status="succeeded", submitted_at=NOON)
    url = arrivals_url(client.get("/").content.decode())
    etag = client.get(url, headers=HTMX)["ETag"]

    with committed():
        make_prediction("second", submitted_by=teammate, submitted_at=NOON + timedelta(minutes=1))
    response = client.get(url, headers={**HTMX, "If-None-Match": etag})

    assert response.status_code == 200
    html = response.content.decode()
    # The newest chunk again, with the arrival, out of band; the question moves past it.
    oob = r'<template>\s*<tbody id="rows-0-0" class="rows" hx-swap-oob="outerHTML"'
    assert re.search(oob, html)
    assert rows_of(html) == ["second", "first"]
    assert arrivals_url(html) != url
    assert "new prediction" not in html


def test_a_reader_who_scrolled_down_sees_a_count_instead(client, teammate):
    make_prediction("first", submitted_by=teammate, status="succeeded", submitted_at=NOON)
    url = arrivals_url(client.get("/").content.decode())
    for n in range(2):
        make_prediction(f"new {n}", submitted_by=teammate, submitted_at=NOON + timedelta(hours=n))

    html = client.get(f"{url}&hold=1", headers=HTMX).content.decode()

    assert rows_of(html) == []
    assert "2 new predictions: show" in html
    # The question keeps counting from where the page is.
    assert arrivals_url(html) == url
    assert re.search(r'<a class="arrivals-bar" href="/">', html)


def test_with_filters_set_only_matching_arrivals_are_counted(client, teammate):
    make_prediction("a fox", status="failed", submitted_at=NOON)
    url = arrivals_url(client.get("/?status=failed").content.decode())
    make_prediction("an owl", status="succeeded", submitted_at=NOON + timedelta(minutes=1))
    make_prediction("a fox again", status="failed", submitted_at=NOON + timedelta(minutes=2))

    html = client.get(url, headers=HTMX).content.decode()

    assert "1 new prediction matching these filters: show" in html
    assert re.search(r'<a class="arrivals-bar" href="/\?status=failed">', html)
    assert rows_of(html) == []


def test_a_running_prediction_arrives_in_the_gallery_as_a_placeholder_then_its_images(client):
    make_output(make_prediction("done", status="succeeded", submitted_at=NOON))
    url = arrivals_url(client.get("/gallery/").content.decode())

    running = make_prediction("in progress", status="processing", submitted_at=NOON + timedelta(1))
    html = client.get(url, headers=HTMX).content.decode()

    assert f'id="running-{running.pk}"' in html
    assert re.search(r'<div id="tiles-0-0" class="tiles" hx-swap-oob="outerHTML"', html)
    refresh = re.search(r'class="tiles" hx-swap-oob="outerHTML" hx-get="([^"]+)"', html)
    refresh = unescape(refresh[1])

    running.apply_remote(
        {"id": "r1", "status": "succeeded", "output": ["https://replicate.delivery/new.webp"]}
    )
    tiles = client.get(refresh, headers=HTMX).content.decode()
    output = Output.objects.get(prediction=running)
    assert f'id="tile-{output.pk}"' in tiles
    assert f'id="running-{running.pk}"' not in tiles


def test_every_change_to_a_teams_prediction_moves_its_marker_and_no_other_team(team, committed):
    other = make_team("Elsewhere")
    before = live.team_marker(team.pk), live.team_marker(other.pk)

    with committed():
        prediction = make_prediction("ours", status="processing", team=team)
    created = live.team_marker(team.pk)
    with committed():
        prediction.apply_remote({"id": "p1", "status": "succeeded", "output": ["https://x/1.png"]})
    answered = live.team_marker(team.pk)
    with committed():
        Output.changed(Output.objects.filter(prediction=prediction), starred=True)
    starred = live.team_marker(team.pk)
    with committed():
        prediction.delete()
    deleted = live.team_marker(team.pk)

    assert len({before[0], created, answered, starred, deleted}) == 5
    assert live.team_marker(other.pk) == before[1]


def test_a_change_in_another_team_leaves_this_teams_list_unchanged(client, committed):
    url = arrivals_url(client.get("/").content.decode())
    etag = client.get(url, headers=HTMX)["ETag"]

    with committed():
        make_prediction("theirs", team=make_team("Elsewhere"))

    assert client.get(url, headers={**HTMX, "If-None-Match": etag}).status_code == 304


def test_another_team_never_learns_of_ours(team, committed):
    other = make_team("Elsewhere")
    olga = Client()
    olga.force_login(make_user("olga", other, Role.OWNER))
    url = arrivals_url(olga.get("/").content.decode())

    with committed():
        make_prediction("ours", team=team)
    html = olga.get(url, headers=HTMX).content.decode()

    assert "ours" not in html
    assert "new prediction" not in html


def test_a_lost_marker_costs_one_refresh_and_an_unreadable_cache_no_error(client, team):
    url = arrivals_url(client.get("/").content.decode())
    etag = client.get(url, headers=HTMX)["ETag"]

    live.cache.delete(live.marker_key(team.pk))
    assert client.get(url, headers={**HTMX, "If-None-Match": etag}).status_code == 200

    with mock.patch.object(live.cache, "get", side_effect=ConnectionError("cache down")):
        response = client.get(url, headers={**HTMX, "If-None-Match": etag})
    assert response.status_code == 200
    assert not response.has_header("ETag")


def test_a_dead_cache_fails_no_page_and_signs_nobody_out(client, settings, team):
    make_prediction("still listed", status="succeeded")
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1",
            "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
        }
    }

    page = client.get("/")
    arrivals = client.get(arrivals_url(page.content.decode()), headers=HTMX)

    assert page.status_code == 200
    assert rows_of(page.content.decode()) == ["still listed"]
    assert arrivals.status_code == 200
    assert client.post("/sign-out/").status_code == 302


def test_a_poll_that_only_brings_log_lines_leaves_the_lists_alone(team, committed):
    with committed():
        prediction = make_prediction("running", status="processing", team=team)
        prediction.apply_remote({"id": "p1", "status": "processing", "logs": "10%"})
    before = live.team_marker(team.pk)

    with committed():
        prediction.apply_remote({"id": "p1", "status": "processing", "logs": "10%\n20%"})
    assert live.team_marker(team.pk) == before

    with committed():
        prediction.apply_remote({"id": "p1", "status": "succeeded", "logs": "done"})
    assert live.team_marker(team.pk) != before
