"""Accounts, teams, roles, invites, provider keys and the audit log."""

import io
import logging
import re
import uuid
from datetime import timedelta

import pytest
from cryptography.fernet import Fernet
from django.core import mail
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.utils import timezone

from accounts.models import AuditEvent, Invite, Membership, ProviderCredential, Role, Team
from predictions.client import ProviderClient
from predictions.models import Prediction
from predictions.simulator import Simulator

from .conftest import User, configure_provider, make_prediction, make_team, make_user

pytestmark = pytest.mark.django_db

SECRET = "sk-live-9f8e7d6c5b4a3210"


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def store_key(team: Team, provider: str = "cometapi", secret: str = SECRET) -> ProviderCredential:
    credential = ProviderCredential(team=team, provider=provider)
    credential.set_secret(secret)
    credential.save()
    return credential


# --- First run, signing in and passwords ----------------------------------------------------


def test_the_first_run_page_creates_the_first_owner_and_their_team():
    client = Client()
    assert client.get("/").status_code == 302

    response = client.post(
        "/setup/",
        {
            "username": "ada",
            "email": "ada@example.com",
            "password1": "a long passphrase 7",
            "password2": "a long passphrase 7",
            "team_name": "Lovelace Studio",
        },
    )

    assert response.status_code == 302
    membership = Membership.objects.get(user__username="ada")
    assert membership.role == Role.OWNER
    assert membership.team.name == "Lovelace Studio"
    assert client.get("/").status_code == 200
    assert Client().get("/setup/").status_code == 404


def test_a_visitor_is_sent_to_sign_in_and_back_afterwards(member):
    client = Client()

    response = client.get("/team/")
    assert response["Location"] == "/sign-in/?next=/team/"

    response = client.post(
        "/sign-in/?next=/team/",
        {"username": "mia", "password": "correct horse 42", "next": "/team/"},
    )
    assert response["Location"] == "/team/"


def test_sign_in_is_refused_after_too_many_failures_even_with_the_right_password(member, settings):
    settings.LOGIN_RATE_LIMIT = (3, 900)
    client = Client()
    for _ in range(3):
        response = client.post("/sign-in/", {"username": "mia", "password": "wrong"})
        assert "enter a correct username and password" in response.content.decode()

    response = client.post("/sign-in/", {"username": "mia", "password": "correct horse 42"})

    assert response.status_code == 200
    assert "Too many sign-in attempts" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_a_successful_sign_in_clears_the_usernames_failures(member, settings):
    settings.LOGIN_RATE_LIMIT = (3, 900)
    client = Client()
    client.post("/sign-in/", {"username": "mia", "password": "wrong"})
    client.post("/sign-in/", {"username": "mia", "password": "correct horse 42"})
    client.post("/sign-out/")

    for _ in range(2):
        client.post("/sign-in/", {"username": "mia", "password": "wrong"})
    response = client.post("/sign-in/", {"username": "mia", "password": "correct horse 42"})

    assert response.status_code == 302


def test_signing_out_says_so_on_the_sign_in_page(client):
    response = client.post("/sign-out/", follow=True)

    assert response.redirect_chain == [("/sign-in/", 302)]
    assert "You are signed out." in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_a_password_reset_email_leads_to_a_new_password(member):
    Client().post("/password-reset/", {"email": "mia@example.com"})

    [email] = mail.outbox
    link = re.search(r"https?://[^/]+(/password-reset/\S+)", email.body).group(1)
    client = Client()
    form_url = client.get(link, follow=True).redirect_chain[-1][0]
    client.post(
        form_url, {"new_password1": "brand new words 9", "new_password2": "brand new words 9"}
    )

    assert Client().login(username="mia", password="brand new words 9")


def test_a_member_changes_their_password(client, member):
    response = client.post(
        "/account/password/",
        {
            "old_password": "correct horse 42",
            "new_password1": "another phrase 11",
            "new_password2": "another phrase 11",
        },
    )

    assert response.status_code == 302
    member.refresh_from_db()
    assert member.check_password("another phrase 11")


# --- Teams, roles and invites ---------------------------------------------------------------


def test_an_invite_link_adds_a_new_person_once(team):
    owner = make_user("otto", team, Role.OWNER)
    page = signed_in(owner).post("/team/invites/new", {"role": "viewer"}, follow=True)
    # Shown once, on the page the owner comes back to: only the token's hash is stored.
    link = re.search(r'value="https?://[^/"]+(/invite/[^/"]+/)"', page.content.decode()).group(1)

    newcomer = Client()
    response = newcomer.post(
        link,
        {
            "username": "nina",
            "email": "nina@example.com",
            "password1": "nina's passphrase",
            "password2": "nina's passphrase",
        },
    )

    assert response.status_code == 302
    assert Membership.objects.get(user__username="nina").role == Role.VIEWER
    assert newcomer.get("/").status_code == 200
    again = signed_in(make_user("eve")).post(link)
    assert again.status_code == 410
    assert not Membership.objects.filter(user__username="eve").exists()


def test_an_expired_invite_does_not_work(team):
    invite = Invite.objects.create(team=team, expires_at=timezone.now() - timedelta(minutes=1))

    response = signed_in(make_user("late")).post(invite.get_absolute_url())

    assert response.status_code == 410
    assert "no longer works" in response.content.decode()
    assert not Membership.objects.filter(user__username="late").exists()


def test_a_signed_in_user_accepts_an_invite_and_acts_for_that_team(member):
    other = make_team("Night Shift")
    invite = Invite.objects.create(team=other, role=Role.MEMBER)
    client = signed_in(member)

    client.post(invite.get_absolute_url())

    assert client.get("/team/").context["team"] == other


def test_a_viewer_sees_predictions_but_cannot_submit_or_cancel(team):
    viewer = signed_in(make_user("vic", team, Role.VIEWER))
    prediction = make_prediction(status="processing", provider_id="abc")

    assert viewer.get(prediction.get_absolute_url()).status_code == 200
    submit = viewer.post(
        "/predictions/new",
        {"provider": "simulator", "model": "a/b", "prompt": "x", "request_key": uuid.uuid4()},
    )
    cancel = viewer.post(f"/predictions/{prediction.pk}/cancel")

    assert (submit.status_code, cancel.status_code) == (403, 403)
    assert Prediction.objects.count() == 1
    prediction.refresh_from_db()
    assert prediction.cancel_requested_at is None


def test_a_removed_member_loses_access_at_once(team, member):
    owner = signed_in(make_user("otto", team, Role.OWNER))
    prediction = make_prediction()
    client = signed_in(member)
    assert client.get(prediction.get_absolute_url()).status_code == 200

    owner.post(f"/team/members/{Membership.objects.get(user=member).pk}/remove")

    assert client.get(prediction.get_absolute_url()).status_code == 302
    assert client.get("/", follow=True).redirect_chain[-1][0] == "/no-team/"


def test_the_last_owner_can_be_neither_demoted_nor_removed(team):
    owner = make_user("otto", team, Role.OWNER)
    membership = Membership.objects.get(user=owner)
    client = signed_in(owner)

    client.post(f"/team/members/{membership.pk}/role", {"role": "member"})
    client.post(f"/team/members/{membership.pk}/remove")

    membership.refresh_from_db()
    assert membership.role == Role.OWNER


def test_switching_teams_shows_that_teams_predictions_only(member):
    night = make_team("Night Shift")
    Membership.objects.create(team=night, user=member, role=Role.MEMBER)
    make_prediction("studio work")
    make_prediction("night work", team=night)
    client = signed_in(member)

    client.post("/teams/switch", {"team": night.pk})
    page = client.get("/").content.decode()

    assert "night work" in page
    assert "studio work" not in page
    assert client.post("/teams/switch", {"team": make_team("Strangers").pk}).status_code == 404


def test_owners_see_membership_role_and_key_changes_in_the_audit_log(team, member):
    owner = signed_in(make_user("otto", team, Role.OWNER))
    owner.post(f"/team/members/{Membership.objects.get(user=member).pk}/role", {"role": "viewer"})
    owner.post("/team/credentials/", {"provider": "cometapi", "secret": SECRET})

    page = owner.get("/team/audit/").content.decode()

    assert "otto changed mia from member to viewer" in page
    assert f"otto set the CometAPI key ending {SECRET[-4:]}" in page
    assert AuditEvent.objects.filter(team=team).count() == 2
    assert signed_in(member).get("/team/audit/").status_code == 403


# --- Provider keys --------------------------------------------------------------------------


def test_a_stored_key_is_encrypted_and_never_shown_beyond_its_last_four(team, member):
    owner = signed_in(make_user("otto", team, Role.OWNER))
    owner.post("/team/credentials/", {"provider": "cometapi", "secret": SECRET})

    with connection.cursor() as cursor:
        cursor.execute("SELECT secret_encrypted, last4 FROM accounts_providercredential")
        [(stored, last4)] = cursor.fetchall()
    assert SECRET not in stored
    assert last4 == SECRET[-4:]
    admin = User.objects.create_superuser("root", "root@example.com", "x")
    credential = ProviderCredential.objects.get()
    pages = [
        owner.get("/team/credentials/"),
        owner.get("/team/"),
        owner.get("/"),
        signed_in(admin).get("/admin/accounts/providercredential/"),
        signed_in(admin).get(f"/admin/accounts/providercredential/{credential.pk}/change/"),
    ]
    for page in pages:
        assert page.status_code == 200
        assert SECRET not in page.content.decode()
        assert SECRET[:-4] not in page.content.decode()
    assert "••••3210" in pages[0].content.decode()


def test_predictions_use_the_teams_key_and_it_never_reaches_the_logs(team, settings, caplog):
    with Simulator(speed=40, token=SECRET) as sim:
        configure_provider(settings, "cometapi", base_url=sim.base_url, token="")
        caplog.set_level(logging.DEBUG)
        owner = signed_in(make_user("otto", team, Role.OWNER))
        owner.post("/team/credentials/", {"provider": "cometapi", "secret": SECRET})
        owner.post(
            "/predictions/new",
            {
                "provider": "cometapi",
                "model": "black-forest-labs/flux-schnell",
                "prompt": "keyed",
                "request_key": uuid.uuid4(),
            },
        )
        prediction = Prediction.objects.get()
        [(pk, claim)] = Prediction.claim_due(limit=10)
        Prediction.take(pk, claim).advance(ProviderClient())

    prediction.refresh_from_db()
    assert prediction.status == "starting"
    assert SECRET not in caplog.text
    assert SECRET not in repr(prediction.get_provider())


def test_a_team_without_a_key_is_told_what_to_do_and_nothing_is_saved(client, settings):
    configure_provider(settings, "replicate", token="")

    response = client.post(
        "/predictions/new",
        {"provider": "replicate", "model": "a/b", "prompt": "x", "request_key": uuid.uuid4()},
    )

    assert "a team owner can add one under Provider keys" in response.content.decode()
    assert not Prediction.objects.exists()


def test_keys_survive_rotation_to_a_new_encryption_key(team, settings):
    old_key = settings.ENCRYPTION_KEYS[0]
    store_key(team)
    settings.ENCRYPTION_KEYS = [Fernet.generate_key().decode(), old_key]

    call_command("rotate_credentials", stdout=io.StringIO())
    settings.ENCRYPTION_KEYS = settings.ENCRYPTION_KEYS[:1]

    assert ProviderCredential.objects.get().secret() == SECRET


def test_a_member_cannot_see_or_change_the_keys(team, member):
    store_key(team)
    client = signed_in(member)

    assert client.get("/team/credentials/").status_code == 403
    assert (
        client.post("/team/credentials/", {"provider": "cometapi", "secret": "x" * 20}).status_code
        == 403
    )
    assert ProviderCredential.objects.get().secret() == SECRET


# --- Rate limits ----------------------------------------------------------------------------


def test_submissions_are_limited_per_member(client, settings):
    settings.SUBMIT_RATE_LIMIT_MEMBER = (2, 60)

    def submit():
        return client.post(
            "/predictions/new",
            {"provider": "simulator", "model": "a/b", "prompt": "x", "request_key": uuid.uuid4()},
        )

    assert [submit().status_code for _ in range(3)] == [302, 302, 429]
    assert "Too many submissions" in submit().content.decode()
    assert Prediction.objects.count() == 2


def test_submissions_are_limited_per_team_across_members(team, settings):
    settings.SUBMIT_RATE_LIMIT_TEAM = (1, 60)
    first, second = signed_in(make_user("a1", team)), signed_in(make_user("a2", team))
    data = {"provider": "simulator", "model": "a/b", "prompt": "x"}

    assert first.post("/predictions/new", {**data, "request_key": uuid.uuid4()}).status_code == 302
    assert second.post("/predictions/new", {**data, "request_key": uuid.uuid4()}).status_code == 429


def test_a_fresh_install_sends_the_first_visitor_to_set_up():
    response = Client().get("/", follow=True)

    assert response.redirect_chain[-1][0] == "/setup/"
    assert "Create the first account" in response.content.decode()
