"""API tokens: personal, for one team, shown once and stored hashed; and who each one lets in.

Every refusal is Replicate's error format: `detail`, `title` and `status`.
"""

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import AuditEvent, Membership, Role
from api.models import ApiToken, hash_token

from .conftest import make_prediction, make_team, make_user

pytestmark = pytest.mark.django_db


def api(token: str | None = None, **headers) -> Client:
    """A client with no session: only its Authorization header says who it is."""
    if token is not None:
        headers.setdefault("Authorization", f"Bearer {token}")
    return Client(headers=headers)


def new_token(user, team, **fields) -> str:
    return ApiToken.create(team, user, fields.pop("name", "script"), **fields)[1]


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def assert_refused(response, status: int, words: str) -> None:
    assert response.status_code == status, response.content.decode()[:500]
    body = response.json()
    assert body["status"] == status
    assert body["title"]
    assert words in body["detail"], body["detail"]


def test_a_token_is_shown_once_and_only_its_hash_is_stored(team, member):
    browser = signed_in(member)

    created = browser.post("/team/api/tokens/new", {"name": "render farm", "expires_in": "30"})
    page = browser.get(created["Location"])
    again = browser.get(created["Location"])

    secret = re.search(r'value="(drk_[A-Za-z0-9_-]{43})"', page.content.decode())[1]
    token = ApiToken.objects.get()
    assert (token.name, token.member, token.team) == ("render farm", member, team)
    assert token.token_hash == hash_token(secret) != secret
    assert secret not in str(list(ApiToken.objects.values()))
    assert token.hint == secret[:8] and secret[:8] in again.content.decode()
    assert timedelta(days=29) < token.expires_at - timezone.now() <= timedelta(days=30)
    assert page["Cache-Control"] == "no-store"
    assert secret not in again.content.decode()
    assert "cannot show it again" in again.content.decode()
    assert api(secret).get("/api/v1/predictions").status_code == 200


def test_a_token_needs_a_name(member):
    response = signed_in(member).post("/team/api/tokens/new", {"name": "  ", "expires_in": ""})

    assert response.status_code == 400
    assert "Name the token" in response.content.decode()
    assert not ApiToken.objects.exists()


def test_a_token_reads_its_own_teams_predictions_as_its_member(team, member):
    mine = make_prediction(team=team, submitted_by=member)
    theirs = make_prediction(team=make_team("Elsewhere"))
    token = new_token(member, team)

    listed = api(token).get("/api/v1/predictions").json()

    assert [p["id"] for p in listed["results"]] == [str(mine.pk)]
    assert api(token).get(f"/api/v1/predictions/{mine.pk}").status_code == 200
    assert_refused(api(token).get(f"/api/v1/predictions/{theirs.pk}"), 404, "Not found")
    assert_refused(api(token).post(f"/api/v1/predictions/{theirs.pk}/cancel"), 404, "Not found")


def test_a_request_without_a_token_is_refused(team, member):
    make_prediction(team=team)

    response = api().get("/api/v1/predictions")

    assert_refused(response, 401, "Authentication required")
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_a_signed_in_browser_is_no_api_client(client):
    assert_refused(client.get("/api/v1/predictions"), 401, "Authentication required")


@pytest.mark.parametrize(
    "authorization",
    ["Basic bWlhOnBhc3N3b3Jk", "Bearer r8_abcdefghijklmnop", "Bearer", "drk_only"],
)
def test_a_malformed_authorization_is_refused(member, authorization):
    response = api(Authorization=authorization).get("/api/v1/predictions")

    assert_refused(response, 401, "Malformed Authorization header")


def test_a_wrong_token_is_refused(team, member):
    token = new_token(member, team)
    wrong = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")

    assert_refused(api(wrong).get("/api/v1/predictions"), 401, "Invalid token")


def test_an_expired_token_is_refused(team, member):
    token = new_token(member, team, expires_at=timezone.now() - timedelta(seconds=1))

    assert_refused(api(token).get("/api/v1/predictions"), 401, "was expired")


def test_a_revoked_token_is_refused_at_once(team, member):
    token = new_token(member, team)
    assert api(token).get("/api/v1/predictions").status_code == 200

    signed_in(member).post(f"/team/api/tokens/{ApiToken.objects.get().pk}/revoke")

    assert_refused(api(token).get("/api/v1/predictions"), 401, "was revoked")
    assert AuditEvent.objects.filter(action="api_token_revoked").count() == 1


def test_a_token_of_someone_who_left_the_team_is_refused(team, member):
    token = new_token(member, team)

    Membership.objects.filter(user=member).delete()

    assert_refused(api(token).get("/api/v1/predictions"), 401, "no longer in its team")


def test_a_token_works_in_the_token_scheme_too(team, member):
    token = new_token(member, team)

    assert api(Authorization=f"Token {token}").get("/api/v1/predictions").status_code == 200


def test_a_viewers_token_reads_but_cannot_create_or_cancel(team):
    viewer = make_user("vic", team, Role.VIEWER)
    prediction = make_prediction(team=team, status="processing", provider_id="abc")
    token = new_token(viewer, team)

    assert api(token).get(f"/api/v1/predictions/{prediction.pk}").status_code == 200
    create = api(token).post(
        "/api/v1/models/black-forest-labs/flux-schnell/predictions",
        {"input": {"prompt": "a lighthouse"}},
        content_type="application/json",
    )
    cancel = api(token).post(f"/api/v1/predictions/{prediction.pk}/cancel")

    assert_refused(create, 403, "needs the member role")
    assert_refused(cancel, 403, "needs the member role")
    prediction.refresh_from_db()
    assert prediction.cancel_requested_at is None
    assert list(team.predictions.all()) == [prediction]


def test_a_member_who_becomes_a_viewer_takes_their_tokens_rights_along(team, member):
    token = new_token(member, team)

    Membership.objects.filter(user=member).update(role=Role.VIEWER)
    create = api(token).post(
        "/api/v1/models/black-forest-labs/flux-schnell/predictions",
        {"input": {"prompt": "a lighthouse"}},
        content_type="application/json",
    )

    assert_refused(create, 403, "needs the member role")


def test_owners_revoke_any_token_of_their_team_and_members_only_their_own(team, member):
    owner = make_user("otto", team, Role.OWNER)
    colleague = make_user("carl", team, Role.MEMBER)
    new_token(member, team, name="mine")
    new_token(colleague, team, name="carls")
    mine, carls = ApiToken.objects.get(name="mine"), ApiToken.objects.get(name="carls")

    by_member = signed_in(member).post(f"/team/api/tokens/{carls.pk}/revoke")
    member_page = signed_in(member).get("/team/api/").content.decode()
    owner_page = signed_in(owner).get("/team/api/").content.decode()
    by_owner = signed_in(owner).post(f"/team/api/tokens/{mine.pk}/revoke")

    assert by_member.status_code == 404
    assert "carls" not in member_page and "mine" in member_page
    assert "carls" in owner_page and "mine" in owner_page
    assert by_owner.status_code == 302
    mine.refresh_from_db(), carls.refresh_from_db()
    assert (mine.status, mine.revoked_by) == ("revoked", owner)
    assert carls.status == "active"
    event = AuditEvent.objects.get(action="api_token_revoked")
    assert event.description == "otto revoked mia's API token “mine”"


def test_the_last_use_is_recorded_at_most_once_a_minute(team, member):
    token = new_token(member, team)
    stored = ApiToken.objects.get()
    assert stored.last_used_at is None

    api(token).get("/api/v1/predictions")
    stored.refresh_from_db()
    first = stored.last_used_at
    api(token).get("/api/v1/predictions")
    stored.refresh_from_db()

    assert first is not None and stored.last_used_at == first
    ApiToken.objects.update(last_used_at=first - timedelta(minutes=2))
    api(token).get("/api/v1/predictions")
    stored.refresh_from_db()
    assert stored.last_used_at > first


def test_the_api_page_shows_the_base_url_and_examples_for_three_clients(member):
    page = signed_in(member).get("/team/api/").content.decode()

    assert "http://testserver/api/v1" in page
    assert 'base_url="http://testserver/api"' in page  # replicate-python adds /v1 itself
    assert 'baseUrl: "http://testserver/api/v1"' in page
    assert "curl -sS -X POST http://testserver/api/v1/models/" in page
    assert "replicate.Client(" in page and "new Replicate({" in page


def test_the_team_page_links_to_the_api_page(client):
    assert 'href="/team/api/"' in client.get("/team/").content.decode()


def test_the_expiry_menu_runs_from_the_shortest_lifetime_to_never_with_90_days_chosen(member):
    html = signed_in(member).get("/team/api/").content.decode()

    menu = html[html.index('name="expires_in"') : html.index("</select>")]
    options = re.findall(r'<option value="(\d*)"( selected)?>([^<]+)</option>', menu)
    assert options == [
        ("7", "", "7 days"),
        ("30", "", "30 days"),
        ("90", " selected", "90 days"),
        ("365", "", "A year"),
        ("", "", "Never"),
    ]
