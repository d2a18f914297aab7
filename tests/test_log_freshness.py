"""While a prediction runs, its log viewer says when Darkroom last heard from the provider and
when it asks next: a long job is polled sparsely, so its log may stand still for a while. The
times are clock times (static/js/logs.js reads them as "40 s ago"), so a refresh with nothing
new is still a 204, and a poll that brought no new text still updates them."""

import re
from datetime import datetime, timedelta
from html import unescape

import pytest
from django.utils import timezone

from .conftest import make_prediction

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}
LOG = "Using seed: 60392\nrunning quantized prediction\n"


def freshness(html: str) -> str:
    """The freshness line, as rendered (or swapped in out of band)."""
    return re.search(r'<p id="log-freshness".*?</p>', html, re.DOTALL)[0]


def times_in(line: str) -> dict[str, datetime]:
    """The line's <time> elements by their role (data-ago, data-next), as datetimes."""
    found = re.findall(r'<time datetime="([^"]+)"[^>]* data-(ago|next)>', line)
    return {role: datetime.fromisoformat(value) for value, role in found}


def polled_stamp(html: str) -> str:
    """What the viewer sends back as `polled`: when it last heard of a poll."""
    return unescape(re.search(r'<input type="hidden" name="polled" value="([^"]*)">', html)[1])


def clock(value: datetime) -> str:
    return timezone.localtime(value).strftime("%H:%M:%S")


def running(**fields):
    now = timezone.now()
    fields.setdefault("last_polled_at", now - timedelta(seconds=40))
    fields.setdefault("next_poll_at", now + timedelta(seconds=20))
    fields.setdefault("status", "processing")
    return make_prediction(provider_id="abc", logs=LOG, **fields)


def page(client, prediction) -> str:
    return client.get(prediction.get_absolute_url()).content.decode()


def update(client, prediction, polled: str):
    url = f"/predictions/{prediction.pk}/logs"
    return client.get(url, {"cursor": len(LOG), "polled": polled}, headers=HTMX)


def test_a_running_log_says_when_the_provider_was_checked_and_when_it_is_next(client):
    prediction = running()

    line = freshness(page(client, prediction))

    assert times_in(line) == {
        "ago": prediction.last_polled_at,
        "next": prediction.next_poll_at,
    }
    # Without scripts it reads as clock times; the browser makes them relative.
    text = re.sub(r"<[^>]+>", "", line)
    assert text == (
        f"Checked at {clock(prediction.last_polled_at)}"
        f" · next check at about {clock(prediction.next_poll_at)}"
    )
    assert " ago" not in line


def test_before_the_providers_first_answer_it_says_so(client):
    prediction = make_prediction(status="submitting")

    line = freshness(page(client, prediction))

    assert "Not checked with the provider yet" in line
    assert "data-ago" not in line


@pytest.mark.parametrize("status", ["succeeded", "failed", "canceled"])
def test_once_ended_the_page_shows_no_times(client, status):
    prediction = running(status=status)

    line = freshness(page(client, prediction))

    assert line == '<p id="log-freshness" class="help log-freshness" hidden></p>'


def test_the_update_that_stops_the_poller_takes_the_times_away(client):
    prediction = running()
    stamp = polled_stamp(page(client, prediction))
    prediction.apply_remote({"id": "abc", "status": "succeeded", "logs": LOG})

    body = update(client, prediction, stamp).content.decode()

    assert '<div id="log-poller" hx-swap-oob="true"></div>' in body
    assert freshness(body) == (
        '<p id="log-freshness" class="help log-freshness" hidden hx-swap-oob="true"></p>'
    )


def test_an_unchanged_refresh_is_still_a_204_before_the_log_is_read(
    client, django_assert_num_queries
):
    prediction = running()
    stamp = polled_stamp(page(client, prediction))

    # User and membership (the session is cached), then the status, log length and last poll.
    with django_assert_num_queries(3):
        response = update(client, prediction, stamp)

    assert response.status_code == 204
    assert response.content == b""


def test_a_poll_that_brought_no_new_text_still_updates_the_times(client):
    prediction = running()
    stamp = polled_stamp(page(client, prediction))
    prediction.apply_remote({"id": "abc", "status": "processing", "logs": LOG})
    prediction.refresh_from_db()

    response = update(client, prediction, stamp)

    body = response.content.decode()
    assert response.status_code == 200
    assert 'class="log-line"' not in body  # no text, only the times and the cursor
    line = freshness(body)
    assert 'hx-swap-oob="true"' in line
    assert times_in(line) == {"ago": prediction.last_polled_at, "next": prediction.next_poll_at}
    new_stamp = polled_stamp(body)
    assert new_stamp != stamp
    assert update(client, prediction, new_stamp).status_code == 204


def test_the_page_and_an_update_render_the_same_line(client):
    prediction = running()
    stamp = polled_stamp(page(client, prediction))
    prediction.apply_remote({"id": "abc", "status": "processing", "logs": LOG})

    updated = freshness(update(client, prediction, stamp).content.decode())
    shown = freshness(page(client, prediction))

    # The server's clock at rendering (data-now) aside, which the script reads "ago" against.
    def same(line: str) -> str:
        return re.sub(r' data-now="[^"]+"', "", line.replace(' hx-swap-oob="true"', ""))

    assert same(updated) == same(shown)


def test_a_malformed_polled_stamp_is_400(client):
    prediction = running()

    response = update(client, prediction, "yesterday")

    assert response.status_code == 400
