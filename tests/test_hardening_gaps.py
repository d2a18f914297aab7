"""Three gaps left after issue 12's hardening: a Generate sent through htmx while the database is
down, the snippets' token for the demo simulator, and a prediction's outputs past the first
page. Each test failed before its fix (the browser's side of the first is in
tests/test_browser_outage.py)."""

import html
import json
import os
import re
import subprocess

import pytest
from django.test import Client

from api.models import ApiToken
from outputs.models import Output
from predictions.models import Prediction

from .conftest import make_prediction, make_team, make_user
from .test_hardening_accounts import database_down, new_images

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}
SCHNELL = "black-forest-labs/flux-schnell"


def page_text(response) -> str:
    return html.unescape(response.content.decode())


# --- Generate through htmx while the database is down ----------------------------------------


def test_a_generate_sent_through_htmx_while_the_database_is_down_says_so_in_its_form(
    client, simulator
):
    typed = new_images("a heron at dawn", extra_input='{"seed": 7}')

    with database_down():
        response = client.post(
            "/predictions/new", typed, headers={**HTMX, "HX-Trigger": "studio-form"}
        )

    assert response.status_code == 503
    assert response["Retry-After"]
    # Put first in the form that sent it (static/js/studio.js swaps it), which keeps what was
    # typed: the answer holds the message alone, no second copy of the form's fields.
    assert response["HX-Retarget"] == "this"
    assert response["HX-Reswap"] == "afterbegin"
    text = page_text(response).strip()
    assert text == (
        '<p class="error outage-notice" role="alert">'
        "The database is unavailable; nothing was sent. Try again.</p>"
    )
    assert not Prediction.objects.exists()
    assert simulator.stats()["requests_by_endpoint"].get("create", 0) == 0


def test_a_form_sent_without_htmx_during_an_outage_still_gets_the_whole_page_back(client):
    typed = new_images("a heron at dawn")

    with database_down():
        response = client.post("/predictions/new", typed)

    assert response.status_code == 503
    assert "HX-Retarget" not in response
    text = page_text(response)
    assert "<html" in text and 'class="error outage-notice" role="alert"' in text
    assert "a heron at dawn" in text


def test_a_page_refresh_by_htmx_during_an_outage_is_not_retargeted(client):
    with database_down():
        response = client.get("/new/results", headers=HTMX)

    assert response.status_code == 503
    assert "HX-Retarget" not in response


# --- The snippets' token -----------------------------------------------------------------------


def detail_page(client, prediction) -> str:
    response = client.get(prediction.get_absolute_url())
    assert response.status_code == 200
    return page_text(response)


def test_the_demo_simulators_snippets_go_through_darkroom_with_a_token_from_the_api_page(client):
    prediction = make_prediction(provider="simulator", input={"prompt": "a heron"})

    body = detail_page(client, prediction)

    curl = prediction.as_curl("http://testserver/api/v1")
    python = prediction.as_python("http://testserver/api/v1")
    assert curl in body and python in body
    assert f"curl -sS -X POST http://testserver/api/v1/models/{SCHNELL}/predictions" in curl
    assert '-H "Authorization: Bearer $DARKROOM_API_TOKEN"' in curl
    assert 'base_url="http://testserver/api/v1"' in python
    assert "os.environ['DARKROOM_API_TOKEN']" in python
    assert "demo" not in curl + python
    snippets = body[body.index('id="api-heading"') :]
    assert "<code>DARKROOM_API_TOKEN</code> environment variable" in snippets
    assert '<a href="/team/api/">the team\'s API page</a>' in snippets


def test_a_providers_snippets_still_read_its_own_key():
    prediction = make_prediction(provider="replicate")

    assert prediction.through_darkroom is False
    assert "Bearer $REPLICATE_API_TOKEN" in prediction.as_curl("http://testserver/api/v1")
    assert "https://api.replicate.com/v1/models/" in prediction.as_curl()


def test_the_demo_simulators_curl_snippet_creates_the_prediction_through_darkroom(
    live_server, team, member
):
    prediction = make_prediction(provider="simulator", input={"prompt": "by hand", "seed": 3})
    token = ApiToken.create(team, member, "snippet")[1]
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_KEY", "_TOKEN"))}

    result = subprocess.run(
        ["bash", "-c", prediction.as_curl(f"{live_server.url}/api/v1")],
        env={**env, "DARKROOM_API_TOKEN": token},
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.returncode == 0, result.stderr
    created = json.loads(result.stdout)
    assert created["status"] == "starting", created
    made = Prediction.objects.get(pk=created["id"])
    assert (made.team, made.submitted_by, made.provider) == (team, member, "simulator")
    assert (made.model, made.input) == (SCHNELL, {"prompt": "by hand", "seed": 3})


# --- A prediction's outputs, a page at a time --------------------------------------------------


def with_outputs(count: int, **fields) -> tuple[Prediction, list[int]]:
    """A prediction (succeeded unless `fields` say otherwise) with `count` outputs; their ids
    in their order."""
    urls = [f"https://replicate.delivery/many/{n}.png" for n in range(count)]
    prediction = make_prediction(**{"status": "succeeded", "output": urls, **fields})
    Output.objects.bulk_create(
        Output(team=prediction.team, prediction=prediction, index=n, source_url=url)
        for n, url in enumerate(urls)
    )
    return prediction, list(prediction.outputs.values_list("pk", flat=True))


def tiles(body: str) -> list[int]:
    return [int(pk) for pk in re.findall(r'id="tile-(\d+)"', body)]


def pager(body: str) -> str:
    return re.search(r'<nav class="output-pages".*?</nav>', body, re.S).group(0)


def test_the_outputs_past_the_first_hundred_are_a_next_link_away(client):
    prediction, pks = with_outputs(250)
    url = prediction.get_absolute_url()

    first = detail_page(client, prediction)
    second = page_text(client.get(url, {"page": "2"}))
    last = page_text(client.get(url, {"page": "3"}))

    assert tiles(first) == pks[:100]
    assert "Showing 1–100 of 250 outputs, and 150 more outputs after these." in pager(first)
    assert '<a rel="next" href="?page=2#outputs-heading">Next 100 →</a>' in pager(first)
    assert 'rel="prev"' not in pager(first)
    assert tiles(second) == pks[100:200]
    assert "Showing 101–200 of 250 outputs, and 50 more outputs after these." in pager(second)
    assert '<a rel="prev" href="?page=1#outputs-heading">← Previous 100</a>' in pager(second)
    assert '<a rel="next" href="?page=3#outputs-heading">Next 50 →</a>' in pager(second)
    assert tiles(last) == pks[200:]
    assert "Showing 201–250 of 250 outputs." in pager(last)
    assert 'rel="next"' not in pager(last)


def test_ten_thousand_outputs_are_counted_with_separators_and_shown_a_hundred_at_once(client):
    prediction, pks = with_outputs(10_000)

    body = page_text(client.get(prediction.get_absolute_url(), {"page": "100"}))

    assert tiles(body) == pks[9_900:]
    assert "Showing 9,901–10,000 of 10,000 outputs." in pager(body)


def test_a_prediction_with_a_page_of_outputs_or_fewer_has_no_pager(client):
    prediction, pks = with_outputs(100)

    body = detail_page(client, prediction)

    assert tiles(body) == pks
    assert "output-pages" not in body


@pytest.mark.parametrize(
    ("asked", "shown"),
    [
        ("abc", 1),
        ("", 1),
        ("0", 1),
        ("-3", 1),
        ("1.5", 1),
        ("1e400", 1),
        ("9" * 5000, 1),
        ("\u0663", 3),  # an Arabic-Indic three is a whole number to Python
        ("4", 3),
        ("99999999999999999999999", 3),
    ],
)
def test_a_page_number_that_is_not_one_shows_the_first_page_or_past_the_end_the_last(
    client, asked, shown
):
    prediction, pks = with_outputs(250)

    response = client.get(prediction.get_absolute_url(), {"page": asked})

    assert response.status_code == 200
    assert tiles(page_text(response)) == pks[(shown - 1) * 100 : shown * 100]


def test_a_refresh_of_a_later_page_stays_on_it(client):
    prediction, pks = with_outputs(150, status="processing", provider_id="many")
    url = prediction.get_absolute_url()

    body = page_text(client.get(url, {"page": "2"}))
    refresh = client.get(url, {"page": "2"}, headers=HTMX)

    assert f'hx-get="{url}?page=2"' in body
    assert refresh.status_code == 200
    assert tiles(page_text(refresh)) == pks[100:]
    assert f'hx-get="{url}?page=2"' in page_text(refresh)


def test_another_teams_outputs_are_no_page_away(team):
    prediction, _ = with_outputs(150)
    outsider = Client()
    outsider.force_login(make_user("oscar", make_team("Elsewhere")))

    for page in ("1", "2", "x"):
        response = outsider.get(prediction.get_absolute_url(), {"page": page})
        assert response.status_code == 404
        assert "replicate.delivery/many" not in response.content.decode()


def test_an_api_request_carrying_a_session_cookie_during_an_outage_is_answered_in_json(client):
    # The outage is met while loading the session's user, before the URL is resolved.
    with database_down():
        response = client.get("/api/v1/predictions", headers={"Authorization": "Bearer r8_x"})

    assert response.status_code == 503
    assert response.json() == {
        "title": "Service Unavailable",
        "detail": "The database is unavailable. Try again in a moment.",
        "status": 503,
    }


def test_the_api_pages_of_the_team_settings_answer_a_page_during_an_outage(client):
    with database_down():
        response = client.post("/team/api/tokens/new", {"name": "deploys"})

    assert response.status_code == 503
    assert response["Content-Type"].startswith("text/html")
    assert "deploys" in page_text(response)  # kept, to send again
