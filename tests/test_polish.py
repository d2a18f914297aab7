"""What people expect of the pages around the work: a menu, a demo notice that can be put away,
a question before destructive actions, copy buttons, a message after several variations, and
the marks the tab's badge counts. The message after sign-out is in test_accounts."""

import re
import uuid

import pytest
from django.http import HttpResponse
from django.test import Client

from accounts.models import Invite, Role

from .conftest import make_prediction, make_user
from .test_accounts import signed_in

pytestmark = pytest.mark.django_db

DEMO_NOTICE = "Demo provider: new images come from Darkroom's built-in simulator."


def submit(client: Client, **fields) -> HttpResponse:
    """The New images form sent with a prompt, and whatever else `fields` says; followed."""
    data = {
        "provider": "simulator",
        "model": "black-forest-labs/flux-schnell",
        "prompt": "a teapot on the moon",
        "request_key": str(uuid.uuid4()),
        **fields,
    }
    return client.post("/predictions/new", data, follow=True)


def confirm_questions(html: str) -> list[str]:
    return re.findall(r'data-confirm="([^"]+)"', html)


def status_badge(html: str, prediction) -> str:
    """The opening tag of `prediction`'s status badge in its history row."""
    row = re.search(
        rf'id="prediction-{prediction.pk}".*?(<span class="status [^>]*>)', html, re.DOTALL
    )
    assert row, f"no status for prediction {prediction.pk}"
    return row[1]


def test_every_page_loads_the_confirm_copy_and_badge_scripts_with_its_nonce(client):
    html = client.get("/").content.decode()

    for script in ("confirm", "copy", "badge"):
        assert re.search(rf'<script src="/static/js/{script}\.js" nonce="[^"]+" defer>', html)
    assert '<dialog id="confirm-dialog"' in html


def test_the_main_navigation_folds_into_a_menu_that_needs_no_script(client):
    html = client.get("/").content.decode()

    menu = html[html.index('<details class="menu">') : html.index("</details>")]
    assert "<summary>" in menu and "Menu</summary>" in menu
    assert '<nav aria-label="Main">' in menu
    assert "Sign out" in menu


def test_the_demo_notice_stays_away_for_the_session_once_dismissed(client):
    assert DEMO_NOTICE in client.get("/gallery/").content.decode()

    response = client.post("/demo-banner/dismiss", {"next": "/gallery/?starred=on"})

    assert response.status_code == 302
    assert response["Location"] == "/gallery/?starred=on"
    assert DEMO_NOTICE not in client.get("/gallery/").content.decode()
    assert DEMO_NOTICE not in client.get("/").content.decode()


def test_the_demo_notice_dismissed_in_place_answers_with_nothing_to_swap(client):
    response = client.post("/demo-banner/dismiss", headers={"HX-Request": "true"})

    assert (response.status_code, response.content) == (200, b"")
    assert DEMO_NOTICE not in client.get("/").content.decode()


def test_dismissing_the_demo_notice_never_sends_the_reader_to_another_site(client):
    response = client.post("/demo-banner/dismiss", {"next": "https://evil.example/"})

    assert response["Location"] == "/"


def test_the_demo_notice_is_not_dismissed_by_a_get(client):
    assert client.get("/demo-banner/dismiss").status_code == 405
    assert DEMO_NOTICE in client.get("/").content.decode()


def test_removing_a_member_or_key_and_revoking_an_invite_each_ask_first(team, member):
    owner = make_user("otto", team, Role.OWNER)
    Invite.objects.create(team=team, role=Role.MEMBER, created_by=owner)
    client = signed_in(owner)
    client.post(
        "/team/credentials/", {"provider": "cometapi", "secret": "sk-live-9f8e7d6c5b4a3210"}
    )

    team_page = client.get("/team/").content.decode()
    keys_page = client.get("/team/credentials/").content.decode()

    assert confirm_questions(team_page) == [
        "Remove mia from Studio? They lose access at once.",
        "Leave Studio? You lose access to its predictions at once.",
        "Revoke this invite? Its link stops working at once.",
    ]
    assert confirm_questions(keys_page) == [
        "Remove the CometAPI key ending 3210? New predictions can no longer use it."
    ]


def test_an_invite_link_has_a_copy_button_for_its_field(team):
    owner = make_user("otto", team, Role.OWNER)

    page = signed_in(owner).post("/team/invites/new", {"role": "member"}, follow=True)

    html = page.content.decode()
    field = re.search(r'<input id="([^"]+)" type="text" readonly value="([^"]+)"', html)
    assert "/invite/" in field[2]
    assert f'<button type="button" class="secondary" data-copy="{field[1]}" hidden>' in html


def test_several_variations_land_on_the_history_saying_how_many_were_sent(client):
    response = submit(client, variations="3")

    assert response.redirect_chain == [("/", 302)]
    assert "Submitted 3 predictions." in response.content.decode()


def test_a_single_prediction_opens_its_page_without_a_message(client):
    response = submit(client)

    assert response.redirect_chain[0][0].startswith("/predictions/")
    assert '<ul class="messages">' not in response.content.decode()


def test_a_status_marks_the_readers_own_predictions_and_which_have_ended(client, member):
    running = make_prediction("mine, running", status="processing", submitted_by=member)
    ended = make_prediction("mine, done", status="failed", submitted_by=member)
    theirs = make_prediction("a teammate's", status="succeeded")

    html = client.get("/").content.decode()

    assert status_badge(html, running) == (
        f'<span class="status status-processing" data-mine="{running.pk}">'
    )
    assert status_badge(html, ended) == (
        f'<span class="status status-failed" data-mine="{ended.pk}" data-ended>'
    )
    assert status_badge(html, theirs) == '<span class="status status-succeeded">'
