"""Issue 12's account and outage findings: sign-in abuse, invites, submitting while Redis or the
database is down, and the demo simulator's per-team tokens. Each finding's tests failed before
its fix; a few more guard its edges (another person, a dead cache, a link that is wrong)."""

import hashlib
import html
import logging
import re
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import timedelta
from ipaddress import ip_network
from types import SimpleNamespace

import httpx
import pytest
from django.core import mail
from django.db import OperationalError, connection
from django.db.migrations.executor import MigrationExecutor
from django.db.models.signals import post_save
from django.test import Client
from gunicorn.config import Config

from accounts import ratelimit
from accounts.models import Invite, Membership, Role
from dashboard.clients import client_address
from dashboard.gunicorn import Logger
from dashboard.settings import REDIS_URL
from predictions.client import ProviderClient, ProviderError
from predictions.models import Prediction

from .conftest import User, make_team, make_user

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse 42"


def sign_in(client: Client, username: str, password: str = PASSWORD, url="/sign-in/", **meta):
    return client.post(url, {"username": username, "password": password}, **meta)


def page_text(response) -> str:
    return html.unescape(response.content.decode())


def signed_in(response) -> bool:
    return response.status_code == 302


# --- Sign-in: failures only, progressive delays, the admin, resets, proxies ------------------


def test_successful_sign_ins_from_one_address_never_count_against_it(team, settings):
    # Twenty people behind one proxy signing in must not shut the twenty-first out.
    settings.LOGIN_RATE_LIMIT_IP = (3, 900)
    people = [make_user(f"person{n}", team) for n in range(6)]

    answers = [sign_in(Client(), person.username) for person in people]

    assert all(signed_in(answer) for answer in answers)


def test_wrong_passwords_make_the_next_attempt_wait_and_the_right_one_works_after_it(
    member, settings
):
    settings.LOGIN_RATE_LIMIT = (3, 900)
    client = Client()
    for _ in range(2):
        assert "Wait" not in page_text(sign_in(client, "mia", "wrong"))
    third = page_text(sign_in(client, "mia", "wrong"))
    assert "enter a correct username and password" in third
    assert "Wait 1 second before trying again." in third
    time.sleep(1.1)
    assert "Wait 2 seconds before trying again." in page_text(sign_in(client, "mia", "wrong"))

    too_soon = sign_in(client, "mia")
    assert not signed_in(too_soon)
    assert re.search(
        r"Too many sign-in attempts failed: wait [12] seconds?, then try again.",
        page_text(too_soon),
    )

    time.sleep(2.1)
    assert signed_in(sign_in(client, "mia"))


def test_each_further_failure_doubles_the_wait_up_to_the_longest_and_says_so(member, settings):
    settings.LOGIN_RATE_LIMIT = (1, 900)
    settings.LOGIN_MAX_DELAY = 3
    client = Client()

    waits = []
    for _ in range(4):
        text = page_text(sign_in(client, "mia", "wrong"))
        waits.append(re.search(r"Wait (\d+) seconds?", text).group(1))
        time.sleep(int(waits[-1]) + 0.1)

    assert waits == ["1", "2", "3", "3"]
    assert signed_in(sign_in(client, "mia"))


def test_refused_attempts_do_not_make_the_wait_longer(member, settings):
    settings.LOGIN_RATE_LIMIT = (1, 900)
    client = Client()
    sign_in(client, "mia", "wrong")
    time.sleep(1.1)
    assert "Wait 2 seconds" in page_text(sign_in(client, "mia", "wrong"))
    failed_at = time.monotonic()
    while time.monotonic() < failed_at + 1:  # someone hammering during the wait
        refused = page_text(sign_in(client, "mia", "wrong"))
        assert re.search(r"Too many sign-in attempts failed: wait [12] seconds?,", refused)

    time.sleep(max(0, failed_at + 2.1 - time.monotonic()))

    assert signed_in(sign_in(client, "mia"))


def test_a_wrong_password_for_one_person_never_delays_another(team, settings):
    settings.LOGIN_RATE_LIMIT = (1, 900)
    make_user("mia", team)
    make_user("max", team)
    sign_in(Client(), "mia", "wrong")

    assert signed_in(sign_in(Client(), "max"))


@pytest.mark.skipif(not REDIS_URL, reason="the file cache does not promise atomic counters")
def test_parallel_guesses_past_the_free_failures_get_one_try_per_wait():
    limit = (2, 900)
    for _ in range(2):
        attempt = ratelimit.SignInThrottle("login-user", "mia", limit).begin()
        attempt.failed()
    time.sleep(1.1)
    allowed = []

    def guess() -> None:
        allowed.append(ratelimit.SignInThrottle("login-user", "mia", limit).begin().allowed)

    threads = [threading.Thread(target=guess) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert allowed.count(True) == 1


def test_the_admin_sign_in_goes_through_the_same_delays(team, settings):
    settings.LOGIN_RATE_LIMIT = (1, 900)
    User.objects.create_superuser("root", "root@example.com", PASSWORD)
    client = Client()
    sign_in(client, "root", "wrong", url="/admin/login/")
    time.sleep(1.1)
    second = sign_in(client, "root", "wrong", url="/admin/login/")
    assert "Wait 2 seconds before trying again." in page_text(second)

    refused = sign_in(client, "root", url="/admin/login/")

    assert not signed_in(refused)
    assert re.search(r"Too many sign-in attempts failed: wait [12] seconds?", page_text(refused))
    time.sleep(2.1)
    assert signed_in(sign_in(client, "root", url="/admin/login/?next=/admin/"))


def test_failures_on_the_admin_and_the_sign_in_page_add_up(member, settings):
    settings.LOGIN_RATE_LIMIT = (2, 900)
    client = Client()
    sign_in(client, "mia", "wrong", url="/admin/login/")

    second = sign_in(client, "mia", "wrong")

    assert "Wait 1 second before trying again." in page_text(second)


def reset(client: Client, email: str, address: str = "127.0.0.1"):
    return client.post("/password-reset/", {"email": email}, REMOTE_ADDR=address)


def test_password_reset_mail_is_limited_per_address_whatever_the_email(member, settings):
    settings.PASSWORD_RESET_RATE_LIMIT = (2, 3600)
    client = Client()
    for email in ("mia@example.com", "nobody@example.com"):
        assert reset(client, email)["Location"] == "/password-reset/sent/"

    for email in ("mia@example.com", "nobody@example.com"):
        refused = reset(client, email)
        assert refused.status_code == 429
        assert "Too many password reset requests from your address" in page_text(refused)

    assert len(mail.outbox) == 1
    assert reset(client, "mia@example.com", address="198.51.100.7").status_code == 302


def test_password_reset_mail_is_limited_per_email_without_saying_whether_it_exists(
    member, settings
):
    settings.PASSWORD_RESET_RATE_LIMIT_EMAIL = (2, 3600)
    answers = {}
    for email in ("mia@example.com", "nobody@example.com"):
        answers[email] = [
            (answer.status_code, answer["Location"])
            for answer in (reset(Client(), email.upper(), f"203.0.113.{n}") for n in range(4))
        ]

    assert answers["mia@example.com"] == answers["nobody@example.com"]
    assert set(answers["mia@example.com"]) == {(302, "/password-reset/sent/")}
    assert len(mail.outbox) == 2


def test_the_client_address_is_the_forwarded_one_only_behind_a_trusted_proxy(settings):
    settings.TRUSTED_PROXIES = [ip_network("10.0.0.0/8"), ip_network("2001:db8::/32")]
    forwarded = "198.51.100.1, 203.0.113.7, 10.0.0.9"

    def address(peer: str, header: str | None = forwarded) -> str:
        meta = {"REMOTE_ADDR": peer}
        if header is not None:
            meta["HTTP_X_FORWARDED_FOR"] = header
        return client_address(meta)

    # The rightmost address no trusted proxy stands for; what the client wrote before it is not.
    assert address("10.0.0.5") == "203.0.113.7"
    assert address("2001:db8::1") == "203.0.113.7"
    # A peer that is not a trusted proxy: its header is whatever it chose to write.
    assert address("192.0.2.44") == "192.0.2.44"
    assert address("10.0.0.5", header=None) == "10.0.0.5"
    assert address("10.0.0.5", header="10.0.0.2, 10.0.0.3") == "10.0.0.2"
    assert address("10.0.0.5", header="not-an-address") == "10.0.0.5"
    settings.TRUSTED_PROXIES = []
    assert address("10.0.0.5") == "10.0.0.5"


def test_behind_a_trusted_proxy_each_client_address_has_its_own_failures(team, settings):
    settings.TRUSTED_PROXIES = [ip_network("127.0.0.1/32")]
    settings.LOGIN_RATE_LIMIT_IP = (2, 900)
    for name in ("mia", "max", "bob"):
        make_user(name, team)
    guesser = {"HTTP_X_FORWARDED_FOR": "203.0.113.7"}
    sign_in(Client(), "mia", "wrong", **guesser)

    second = sign_in(Client(), "max", "wrong", **guesser)

    assert "Wait 1 second before trying again." in page_text(second)
    assert signed_in(sign_in(Client(), "bob", HTTP_X_FORWARDED_FOR="198.51.100.2"))


def test_a_forwarded_address_from_an_untrusted_peer_is_ignored(team, settings):
    settings.LOGIN_RATE_LIMIT_IP = (2, 900)
    make_user("max", team)
    sign_in(Client(), "mia", "wrong", HTTP_X_FORWARDED_FOR="203.0.113.1")

    second = sign_in(Client(), "max", "wrong", HTTP_X_FORWARDED_FOR="203.0.113.2")

    assert "Wait 1 second before trying again." in page_text(second)


def test_the_access_log_names_the_client_behind_a_trusted_proxy(settings):
    settings.TRUSTED_PROXIES = [ip_network("10.0.0.0/8")]
    environ = {
        "REQUEST_METHOD": "GET",
        "RAW_URI": "/",
        "PATH_INFO": "/",
        "QUERY_STRING": "",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "10.0.0.5",
        "HTTP_X_FORWARDED_FOR": "203.0.113.7",
    }
    request = SimpleNamespace(headers=[], method="GET", path="/", query="", version=(1, 1))
    response = SimpleNamespace(status="200 OK", sent=10, response_length=10, headers=[])

    atoms = Logger(Config()).atoms(response, request, environ, timedelta(seconds=0.01))

    assert atoms["h"] == "203.0.113.7"


# --- Invites: hashed, claimed before the account is made -----------------------------------


def create_invite(owner_client: Client) -> str:
    """The link the team page shows once after "Create invite link"."""
    page = page_text(owner_client.post("/team/invites/new", {"role": "member"}, follow=True))
    return re.search(r'value="https?://[^/"]+(/invite/[^/"]+/)"', page).group(1)


def test_an_invite_token_is_stored_only_as_its_sha256_and_its_link_shown_once(team):
    owner = Client()
    owner.force_login(make_user("otto", team, Role.OWNER))

    link = create_invite(owner)

    token = link.split("/")[2]
    invite = Invite.objects.get(team=team)
    assert invite.token_hash == hashlib.sha256(token.encode()).hexdigest()
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM accounts_invite")
        assert token not in repr(cursor.fetchall())
    again = page_text(owner.get("/team/"))
    assert token not in again
    assert "Open invites" in again
    assert Client().get(link).status_code == 200


@pytest.mark.django_db(transaction=True)
def test_links_sent_before_invites_were_hashed_keep_working():
    executor = MigrationExecutor(connection)
    executor.migrate([("accounts", "0001_initial")])
    old = executor.loader.project_state([("accounts", "0001_initial")]).apps
    team = old.get_model("accounts", "Team").objects.create(name="Before")
    old.get_model("accounts", "Invite").objects.create(team=team, token="sent-last-week")

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    invite = Invite.find("sent-last-week")
    assert invite.team.name == "Before"
    assert invite.token_hash == hashlib.sha256(b"sent-last-week").hexdigest()
    assert Client().get("/invite/sent-last-week/").status_code == 200


def test_an_invite_link_that_is_wrong_or_holds_a_nul_is_not_found(team):
    assert Client().get("/invite/no-such-token/").status_code == 404
    assert Client().get("/invite/%00/").status_code in (400, 404)


def account(username: str) -> dict:
    return {
        "username": username,
        "email": f"{username}@example.com",
        "password1": "a long passphrase 7",
        "password2": "a long passphrase 7",
    }


def test_an_invite_used_while_its_account_is_being_made_makes_no_orphan_account(team):
    """The race, made certain: someone else uses the invite the moment the new account is
    saved. Before, the account was saved first and then found the invite gone."""
    invite = Invite.objects.create(team=team)
    rival = make_user("rival")

    def use_the_invite_meanwhile(sender, instance, created, **kwargs) -> None:
        if created and instance.username == "newcomer":
            Invite.objects.get(pk=invite.pk).accept(lambda: rival)

    post_save.connect(use_the_invite_meanwhile, sender=User)
    try:
        response = Client().post(invite.get_absolute_url(), account("newcomer"))
    finally:
        post_save.disconnect(use_the_invite_meanwhile, sender=User)

    assert response.status_code == 302
    assert Membership.objects.filter(team=team, user__username="newcomer").exists()
    assert not Membership.objects.filter(team=team, user=rival).exists()


@pytest.mark.django_db(transaction=True)
def test_one_invite_opened_by_many_at_once_makes_one_account():
    invite = Invite.objects.create(team=make_team())
    link = invite.get_absolute_url()
    start = threading.Barrier(8)
    answers = []

    def join(n: int) -> None:
        client = Client()
        try:
            client.get(link)
            start.wait()
            answers.append(client.post(link, account(f"newcomer{n}")).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=join, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(answers) == [302] + [410] * 7
    assert User.objects.filter(username__startswith="newcomer").count() == 1
    assert Membership.objects.filter(team=invite.team).count() == 1


# --- Submitting while Redis or the database is down ----------------------------------------


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def dead_redis(settings) -> None:
    """The cache is a Redis that is not there (a port nothing listens on)."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{closed_port()}/0",
            "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
        }
    }


def new_images(prompt: str = "a lighthouse in the fog", **fields) -> dict:
    return {
        "provider": "simulator",
        "model": "black-forest-labs/flux-schnell",
        "prompt": prompt,
        "request_key": str(uuid.uuid4()),
        **fields,
    }


@pytest.mark.usefixtures("dead_redis")
def test_submitting_while_redis_is_down_is_allowed_with_a_warning(client, caplog):
    with caplog.at_level(logging.WARNING, logger="accounts.ratelimit"):
        response = client.post("/predictions/new", new_images())

    assert response.status_code == 302
    assert Prediction.objects.get().prompt == "a lighthouse in the fog"
    assert "rate limits are not applied" in caplog.text


@pytest.mark.usefixtures("dead_redis")
def test_signing_in_while_redis_is_down_works_and_a_wrong_password_says_so(member):
    assert "enter a correct username and password" in page_text(sign_in(Client(), "mia", "no"))
    assert signed_in(sign_in(Client(), "mia"))


@pytest.mark.usefixtures("dead_redis")
def test_asking_for_a_password_reset_while_redis_is_down_still_sends_it(member):
    assert reset(Client(), "mia@example.com")["Location"] == "/password-reset/sent/"
    assert len(mail.outbox) == 1


@contextmanager
def database_down():
    """Every query fails as with PostgreSQL stopped: opening a connection raises."""

    def refuse() -> None:
        raise OperationalError("connection to server failed: Connection refused")

    original = connection.ensure_connection
    connection.ensure_connection = refuse
    try:
        yield
    finally:
        connection.ensure_connection = original


def test_submitting_while_the_database_is_down_keeps_what_was_typed_and_sends_nothing(
    client, simulator
):
    typed = new_images("a heron <at> dawn\nsecond line", extra_input='{"seed": 7}', variations="2")

    with database_down():
        response = client.post("/predictions/new", typed)

    assert response.status_code == 503
    text = page_text(response)
    assert "The database is unavailable; nothing was sent. Try again." in text
    form = re.search(r'<form method="post" action="/predictions/new"[^>]*>.*?</form>', text, re.S)
    assert form, text
    for value in ("a heron <at> dawn\nsecond line", '{"seed": 7}', typed["request_key"]):
        assert value in form.group(0)
    assert "csrfmiddlewaretoken" in form.group(0)
    assert not Prediction.objects.exists()
    assert simulator.stats()["requests_by_endpoint"].get("create", 0) == 0

    again = dict(re.findall(r'name="([^"]+)"[^>]*value="([^"]*)"', form.group(0)))
    assert again["request_key"] == typed["request_key"]


def test_a_form_kept_during_an_outage_never_holds_a_password(member):
    with database_down():
        response = sign_in(Client(), "mia", "my secret words")

    assert response.status_code == 503
    assert "The database is unavailable; nothing was saved. Try again." in page_text(response)
    assert 'value="mia"' in response.content.decode()
    assert "my secret words" not in response.content.decode()


def test_a_page_asked_for_while_the_database_is_down_answers_503(client):
    with database_down():
        response = client.get("/")

    assert response.status_code == 503
    assert response["Retry-After"]
    assert "The database is unavailable" in page_text(response)
    assert "script-src 'self'" in response["Content-Security-Policy"]


# --- The demo simulator: a token of each team's own -----------------------------------------


def test_each_team_talks_to_the_simulator_with_a_token_of_its_own(simulator):
    teams = make_team("A"), make_team("B")
    first, second = (team.provider("simulator") for team in teams)
    client = ProviderClient()
    created = client.create(second, "black-forest-labs/flux-schnell", {"prompt": "B's secret"})

    with pytest.raises(ProviderError) as refused:
        client.get(first, created["id"])
    assert refused.value.status == 404
    listed = httpx.get(
        f"{simulator.base_url}/predictions",
        headers={"Authorization": f"Bearer {first.token}"},
    ).json()
    assert created["id"] not in [prediction["id"] for prediction in listed["results"]]
    assert client.get(second, created["id"])["id"] == created["id"]
    assert "demo" not in (first.token, second.token)
    assert teams[0].provider("simulator").token == first.token, "stable for a team"
