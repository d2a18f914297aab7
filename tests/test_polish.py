"""What people expect of the pages around the work: a menu, a demo notice that can be put away,
a question before destructive actions, copy buttons, a message after several variations, and
the marks the tab's badge counts, and `make run` on a port of the reader's choosing. The message
after sign-out is in test_accounts."""

import io
import re
import socket
import uuid
from datetime import UTC, datetime

import pytest
from django.core.management import CommandError, call_command
from django.http import HttpResponse
from django.test import Client

from accounts.models import Invite, Role
from predictions.management.commands.up import Command as UpCommand

from .conftest import configure_provider, make_prediction, make_user
from .test_accounts import signed_in
from .test_price_changes import change, team_rule

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


def listening(port: int = 0) -> socket.socket:
    """A socket listening on 127.0.0.1 at `port` (any free one for 0), as another program's."""
    held = socket.socket()
    held.bind(("127.0.0.1", port))
    held.listen()
    return held


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


@pytest.mark.parametrize(
    ("role", "links"),
    [
        (Role.OWNER, ["Members", "API", "Provider keys", "Audit log", "Provider health"]),
        (Role.MEMBER, ["Members", "API"]),
        (Role.VIEWER, ["Members", "API"]),
    ],
)
def test_the_teams_pages_link_each_other_under_one_team_link(client, team, role, links):
    client.force_login(make_user("rey", team, role))

    for url in ("/team/", "/team/api/"):
        html = client.get(url).content.decode()
        main = html[html.index('<nav aria-label="Main">') : html.index("</nav>")]
        team_nav = html[html.index('<nav aria-label="Team"') :]
        team_nav = team_nav[: team_nav.index("</nav>")]
        assert re.findall(r">([^<]+)</a>", team_nav) == links
        assert ">Team</a>" in main and ">API</a>" not in main
    assert '<a href="/team/api/" aria-current="page">API</a>' in html


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


def test_up_refuses_a_web_port_another_program_listens_on_and_says_how_to_choose_another():
    with listening() as other_program:
        port = other_program.getsockname()[1]

        with pytest.raises(CommandError) as refused:
            call_command("up", "--port", str(port), "--no-simulator")

    assert str(refused.value) == (
        f"Port {port} is already in use by another program. Choose another for the web server "
        f"with PORT, as in `make run PORT={port + 1}`."
    )


def test_up_moves_the_demo_simulator_to_the_next_free_port_when_the_web_server_takes_its_own(
    settings, monkeypatch
):
    monkeypatch.delenv("SIMULATOR_URL", raising=False)
    settings.DEFAULT_PROVIDER = "simulator"
    output = io.StringIO()
    up = UpCommand(stdout=output)
    with listening() as next_port_taken:
        web_port = next_port_taken.getsockname()[1] - 1
        configure_provider(settings, "simulator", base_url=f"http://127.0.0.1:{web_port}/v1")

        commands = up.commands(web_port, with_simulator=True)

    moved = int(commands["simulator"][-1])
    assert moved > web_port + 1
    assert commands["web"][-1] == f"127.0.0.1:{web_port}"
    assert up.environment["SIMULATOR_URL"] == f"http://127.0.0.1:{moved}/v1"
    assert output.getvalue() == (
        f"The demo simulator listens on port {moved}: the web server takes {web_port}.\n"
    )


def test_up_refuses_at_once_a_simulator_url_set_to_the_web_servers_port(settings, monkeypatch):
    with listening() as probe:
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    monkeypatch.setenv("SIMULATOR_URL", url)
    settings.DEFAULT_PROVIDER = "simulator"
    configure_provider(settings, "simulator", base_url=url)

    with pytest.raises(CommandError) as refused:
        call_command("up", "--port", str(port))

    assert str(refused.value) == (
        f"SIMULATOR_URL ({url}) and the web server's PORT ({port}) name the same port: change "
        "one of them."
    )


def test_a_changed_price_is_confirmed_with_a_sentence_naming_the_rule_price_and_day(team):
    owner = make_user("otto", team, Role.OWNER)
    rule = team_rule(team, "0.01", datetime(2026, 1, 1, tzinfo=UTC))

    client = signed_in(owner)
    change(client, rule, amount="0.02", since="2026-01-15")
    page = client.get("/costs/prices/").content.decode()

    assert (
        "Changed the price of Replicate acme/painter to $0.02 per output image from "
        "15 Jan 2026, 00:00 UTC." in page
    )


def test_a_visit_to_an_address_that_only_takes_a_form_gets_a_page_that_says_so(client):
    response = client.get("/teams/new")

    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert "This address is not a page" in response.content.decode()
    assert "nothing was changed" in response.content.decode()
    # A page like any other: for this session only, with a CSRF cookie for its forms.
    assert "Cookie" in response["Vary"]
    assert "csrftoken" in response.cookies


def test_the_api_and_htmx_keep_their_own_answers_to_a_wrong_method(client):
    assert client.get("/teams/new", headers={"HX-Request": "true"}).content == b""
    assert client.put("/teams/new").content == b""
    response = client.get("/api/v1/predictions/track")
    assert response.status_code == 405
    assert response.json()["status"] == 405
    response = client.delete("/api/v1/predictions")
    assert response.status_code == 405
    assert response.json()["status"] == 405
