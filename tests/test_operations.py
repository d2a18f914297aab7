"""What an operator watches: /healthz, /metrics, the provider health page and the log lines."""

import io
import json
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from celery.contrib.testing.worker import start_worker
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django.utils.html import strip_tags
from prometheus_client.parser import text_string_to_metric_families

from accounts.models import ProviderCredential, Role
from costs.models import Budget, DailyCost, day_of
from dashboard.celery import app as celery_app
from operations import tallies
from operations.logs import JsonFormatter, OneLineSuspiciousRequests
from operations.models import Heartbeat, RequestMinute, RequestTotal, UnknownOutcome
from outputs.models import ArchiveState, Output
from predictions.client import Provider, ProviderClient, ProviderError
from predictions.models import Prediction
from predictions.tasks import dispatch_due

from .conftest import (
    configure_provider,
    make_prediction,
    make_team,
    make_user,
    wait_for,
    wait_until_finished,
)

MODEL = "black-forest-labs/flux-schnell"


@pytest.fixture(autouse=True)
def nothing_counted_yet() -> None:
    """Counts this process kept from earlier tests are not this test's."""
    tallies.tallies().clear()


@contextmanager
def running_worker(queues: list[str]) -> Iterator[None]:
    """A Celery worker in this process, woken once; its shutdown hook stops its poller, and a
    wake-up it takes while stopping starts none."""
    with start_worker(
        celery_app,
        pool="threads",
        concurrency=2,
        perform_ping_check=False,
        queues=queues,
        loglevel="WARNING",
    ):
        dispatch_due.delay()
        yield


def health() -> tuple[int, dict]:
    answer = Client().get("/healthz")
    return answer.status_code, answer.json()


def answers(status: int):
    return lambda: health()[0] == status


# --- /healthz ------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_healthz_turns_503_when_the_worker_heartbeat_stops_and_200_when_it_is_back(
    settings, simulator, celery_queues
):
    settings.HEALTH_MAX_HEARTBEAT_AGE = 3.0

    status, body = health()
    assert status == 503
    assert body["status"] == "failing"
    assert body["reasons"] == ["no worker has stamped a heartbeat yet"]

    with running_worker(celery_queues):
        wait_for(answers(200), 15, "a worker's heartbeat")
        status, body = health()
        assert body["checks"]["workers"]["workers"] == 1
    wait_for(answers(503), 15, "the heartbeat to go stale")
    [reason] = health()[1]["reasons"]
    assert re.fullmatch(r"no worker heartbeat for \d+ s \(limit 3 s\)", reason)

    with running_worker(celery_queues):
        wait_for(answers(200), 15, "the heartbeat to come back")


@pytest.mark.django_db(transaction=True)
def test_healthz_turns_503_when_a_poll_is_overdue_and_200_once_a_worker_takes_it(
    simulator, celery_queues
):
    Heartbeat.stamp("elsewhere:1")  # a worker says it is alive, but nothing polls
    overdue = make_prediction("forgotten", next_poll_at=timezone.now() - timedelta(minutes=10))

    status, body = health()
    assert status == 503
    [reason] = body["reasons"]
    assert re.fullmatch(r"the oldest due poll is 60\d s late \(limit 120 s\)", reason)
    assert body["checks"]["polls"]["ok"] is False

    with running_worker(celery_queues):
        wait_for(answers(200), 15, "the overdue prediction to be sent")
        # Before the worker stops: no request of its poller is left on its way.
        wait_until_finished(overdue)
    assert overdue.status == "succeeded"


@pytest.mark.django_db
def test_healthz_is_200_with_every_check_when_all_is_well():
    Heartbeat.stamp("worker-host:12")

    status, body = health()

    assert status == 200
    assert 0 <= body["checks"]["workers"].pop("last_heartbeat_seconds") < 5
    assert body == {
        "status": "ok",
        "reasons": [],
        "checks": {
            "database": {"ok": True},
            "workers": {"ok": True, "workers": 1},
            "polls": {"ok": True, "oldest_due_seconds": 0.0},
            "archive": {"ok": True, "backlog": 0, "oldest_due_seconds": 0.0},
            "broker": {"ok": True},
        },
    }


@pytest.mark.django_db
def test_healthz_says_when_the_broker_cannot_be_reached(settings, tmp_path):
    Heartbeat.stamp("worker-host:12")
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1

    status, body = health()

    assert status == 503
    assert body["reasons"] == ["the broker cannot be reached (ConnectionError)"]

    settings.CELERY_BROKER_URL = "filesystem://localhost//"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"data_folder_in": str(tmp_path / "missing")}
    assert health()[1]["reasons"] == ["the broker's folder cannot be written to"]


@pytest.mark.django_db
def test_healthz_says_when_archiving_falls_behind():
    Heartbeat.stamp("worker-host:12")
    prediction = make_prediction(status="succeeded", next_poll_at=None)
    for index in range(2):
        Output.objects.create(
            team_id=prediction.team_id,
            prediction=prediction,
            index=index,
            source_url=f"https://replicate.delivery/late-{index}.png",
            next_attempt_at=timezone.now() - timedelta(hours=1),
        )

    status, body = health()

    assert status == 503
    [reason] = body["reasons"]
    assert re.fullmatch(
        r"the oldest output waiting to be archived is 360\d s late \(2 waiting; limit 600 s\)",
        reason,
    )


@pytest.mark.django_db
def test_a_failing_healthz_is_one_warning_line_while_it_fails_not_an_error_a_probe(
    settings, caplog
):
    Heartbeat.stamp("worker-host:12")
    assert health()[0] == 200  # whatever this process's /healthz said before, it is fine now
    Heartbeat.objects.all().delete()
    caplog.clear()

    with caplog.at_level(logging.INFO):
        for _ in range(3):  # a load balancer's probes
            assert health()[0] == 503
        broker, settings.CELERY_BROKER_URL = settings.CELERY_BROKER_URL, "redis://127.0.0.1:1/0"
        assert health()[0] == 503  # a second check fails too
        assert health()[0] == 503
        settings.CELERY_BROKER_URL = broker
        Heartbeat.stamp("worker-host:12")
        assert health()[0] == 200
        assert health()[0] == 200

    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "operations.health",
            "WARNING",
            "/healthz is failing: no worker has stamped a heartbeat yet",
        ),
        (
            "operations.health",
            "WARNING",
            "/healthz is failing: no worker has stamped a heartbeat yet; "
            "the broker cannot be reached (ConnectionError)",
        ),
        ("operations.health", "INFO", "/healthz is ok again"),
    ]
    assert json.loads(JsonFormatter().format(caplog.records[0]))["status_code"] == 503


# --- What processes count ------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_beat_stamps_this_workers_heartbeat_and_stores_what_it_counted(simulator):
    ProviderClient().create(Provider.named("simulator"), MODEL, {"prompt": "a beat"})

    tallies.beat()

    assert Heartbeat.objects.filter(worker=f"{socket.gethostname()}:{os.getpid()}").exists()
    assert RequestTotal.objects.get(provider="simulator", request="create").count == 1
    [minute] = RequestMinute.objects.filter(provider="simulator")
    assert (minute.request, minute.outcome, minute.count) == ("create", "ok", 1)
    assert minute.minute.second == minute.minute.microsecond == 0
    assert timedelta(0) <= timezone.now() - minute.minute < timedelta(minutes=2)


@pytest.mark.django_db
def test_minutes_and_heartbeats_older_than_a_day_are_forgotten():
    now = timezone.now().replace(second=0, microsecond=0)
    for minute in (now - timedelta(days=2), now):
        RequestMinute.objects.create(
            account="a", minute=minute, provider="simulator", request="get", outcome="ok"
        )
    Heartbeat.objects.create(worker="gone:1", seen_at=now - timedelta(days=2))
    Heartbeat.stamp("here:2")

    tallies.Tallies().forget_old(timezone.now())

    assert list(RequestMinute.objects.values_list("minute", flat=True)) == [now]
    assert list(Heartbeat.objects.values_list("worker", flat=True)) == ["here:2"]


# --- /metrics ------------------------------------------------------------------------------------


def scrape(token: str | None = "scrape-me"):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return Client().get("/metrics", headers=headers)


@pytest.mark.django_db
def test_metrics_are_off_without_a_token_and_closed_without_the_right_one(settings):
    assert scrape().status_code == 404

    settings.METRICS_TOKEN = "scrape-me"
    for refused in (scrape(None), scrape("guess"), scrape("scrape-më")):
        assert refused.status_code == 401
        assert refused["WWW-Authenticate"] == 'Bearer realm="metrics"'
    answer = scrape()
    assert answer.status_code == 200
    assert answer["Content-Type"].startswith("text/plain; version=")


def samples(answer) -> dict[tuple, float]:
    """Every sample of a scrape, by its name and labels."""
    return {
        (sample.name, *sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(answer.content.decode())
        for sample in family.samples
    }


def value(found: dict, name: str, **labels) -> float:
    return found[(name, *sorted(labels.items()))]


@pytest.mark.django_db
def test_metrics_count_requests_predictions_budgets_and_backlogs(
    settings, simulator, django_capture_on_commit_callbacks
):
    settings.METRICS_TOKEN = "scrape-me"
    provider = Provider.named("simulator")
    client = ProviderClient()
    created = client.create(provider, MODEL, {"prompt": "counted"})
    client.get(provider, created["id"])
    client.get(provider, created["id"])
    with pytest.raises(ProviderError):
        client.get(provider, "nosuchprediction")  # 404
    simulator.faults.rate_limit_burst = 1
    simulator.faults.retry_after = 2.0
    with pytest.raises(ProviderError):
        client.get(provider, created["id"])  # 429: every worker pauses its polls

    make_prediction("running", status="processing", provider_id="p1")
    make_prediction("late", status="starting", provider_id="p2", provider="replicate")
    Prediction.objects.filter(provider_id="p2").update(
        next_poll_at=timezone.now() - timedelta(seconds=90)
    )
    with django_capture_on_commit_callbacks(execute=True):
        make_prediction("canceled before it was sent").request_cancel()
        make_prediction("lost").give_up_submit("The worker stopped.")
        late = make_prediction("answered late")
        worker_copy = Prediction.objects.get(pk=late.pk)  # still "submitting" in memory
        late.give_up_submit("The worker stopped.")
        worker_copy.apply_remote({"id": "late1", "status": "starting"})  # the late answer
    finished = make_prediction("archived later", status="succeeded", next_poll_at=None)
    Output.objects.create(
        team_id=finished.team_id, prediction=finished, index=0, source_url="https://x.test/1.png"
    )
    tallies.tallies().store()

    answer = scrape()

    found = samples(answer)
    requests = "darkroom_provider_requests_total"
    simulator_get = {"provider": "simulator", "request": "get"}
    assert value(found, requests, **simulator_get, outcome="ok") == 2
    assert value(found, requests, **simulator_get, outcome="refused") == 1
    assert value(found, requests, **simulator_get, outcome="throttled") == 1
    assert value(found, requests, provider="simulator", request="create", outcome="ok") == 1
    latency = "darkroom_provider_request_duration_seconds"
    assert value(found, f"{latency}_count", **simulator_get) == 4
    assert value(found, f"{latency}_bucket", **simulator_get, le="+Inf") == 4
    assert 0 < value(found, f"{latency}_sum", **simulator_get) < 4 * 1.5
    running = "darkroom_predictions_running"
    assert value(found, running, provider="simulator", status="processing") == 1
    assert value(found, running, provider="replicate", status="starting") == 1
    assert value(found, running, provider="simulator", status="starting") == 1  # resolved
    ended = "darkroom_predictions_ended_total"
    assert value(found, ended, provider="simulator", status="canceled") == 1
    assert value(found, ended, provider="simulator", status="submit_unknown") == 2
    assert value(found, "darkroom_unknown_outcomes", resolved="false") == 1
    assert value(found, "darkroom_unknown_outcomes", resolved="true") == 1
    query_budget = {"provider": "simulator", "kind": "query"}
    assert value(found, "darkroom_request_budget_rate", **query_budget) == 50
    assert 0 < value(found, "darkroom_request_budget_paused_seconds", **query_budget) <= 2
    assert value(found, "darkroom_request_budget_tokens", provider="replicate", kind="create") == 2
    assert 90 <= value(found, "darkroom_poll_delay_seconds") < 100
    assert value(found, "darkroom_archive_backlog") == 1
    assert value(found, "darkroom_workers") == 0


def spent(team, amount: str, member=None, possibly: str = "0", currency="USD", day=None) -> None:
    """A day's roll-up of the team's costs, as costs.models.DailyCost.move() leaves it."""
    DailyCost.objects.create(
        team=team,
        member=member,
        day=day or day_of(timezone.now()),
        provider="replicate",
        model=MODEL,
        status="succeeded",
        currency=currency,
        count=1,
        amount=Decimal(amount),
        possibly_charged_amount=Decimal(possibly),
    )


@pytest.mark.django_db
def test_metrics_show_each_budget_and_what_this_month_spent_against_it(settings):
    settings.METRICS_TOKEN = "scrape-me"
    studio, unbudgeted = make_team("Studio"), make_team("No budget")
    mia, sam = make_user("mia", studio), make_user("sam", studio)
    Budget.objects.create(team=studio, amount=Decimal("100"), currency="USD")
    Budget.objects.create(team=studio, member=mia, amount=Decimal("20"), currency="USD")
    last_month = day_of(timezone.now()).replace(day=1) - timedelta(days=1)
    spent(studio, "12.50", member=mia, possibly="1.25")
    spent(studio, "30", member=sam)
    spent(studio, "5")  # a deleted member's
    spent(studio, "7", member=mia, currency="EUR")  # not what the budgets count
    spent(studio, "40", member=mia, day=last_month)
    spent(unbudgeted, "99")

    found = samples(scrape())

    team = {"team_id": str(studio.pk), "team": "Studio", "currency": "USD"}
    assert value(found, "darkroom_budget_amount", **team, member_id="") == 100
    assert value(found, "darkroom_budget_spent", **team, member_id="") == 47.5
    assert value(found, "darkroom_budget_possibly_charged", **team, member_id="") == 1.25
    assert value(found, "darkroom_budget_amount", **team, member_id=str(mia.pk)) == 20
    assert value(found, "darkroom_budget_spent", **team, member_id=str(mia.pk)) == 12.5
    assert value(found, "darkroom_budget_possibly_charged", **team, member_id=str(mia.pk)) == 1.25
    budget_series = [key for key in found if key[0].startswith("darkroom_budget_")]
    assert len(budget_series) == 6  # a team without a budget has none
    assert value(found, "darkroom_metrics_unreadable", figures="budgets") == 0


@contextmanager
def queues_of_their_own(settings) -> Iterator[tuple[str, str]]:
    """A predictions queue and an archive queue of this test's own, deleted afterwards."""
    name = f"metrics-{uuid.uuid4().hex[:8]}"
    settings.CELERY_TASK_DEFAULT_QUEUE, settings.ARCHIVE_QUEUE = name, f"{name}-archive"
    try:
        yield name, f"{name}-archive"
    finally:
        with celery_app.connection_for_write() as conn:
            for queue in (name, f"{name}-archive"):
                conn.default_channel.queue_delete(queue)


@pytest.mark.django_db
def test_metrics_count_the_messages_waiting_in_the_celery_queues(settings):
    settings.METRICS_TOKEN = "scrape-me"
    with queues_of_their_own(settings) as (predictions_queue, archive_queue):
        for _ in range(3):
            celery_app.send_task("predictions.tasks.dispatch_due", queue=predictions_queue)
        celery_app.send_task("outputs.tasks.archive", args=[0, 0], queue=archive_queue)
        celery_app.send_task(  # a priority of its own: another list on Redis
            "outputs.tasks.archive", args=[0, 0], queue=archive_queue, priority=9
        )

        found = samples(scrape())

    assert value(found, "darkroom_queue_length", queue=predictions_queue) == 3
    assert value(found, "darkroom_queue_length", queue=archive_queue) == 2
    assert value(found, "darkroom_metrics_unreadable", figures="queues") == 0


@pytest.mark.django_db
def test_metrics_leave_out_the_queues_of_a_broker_that_does_not_answer_and_say_so_once(
    settings, caplog, tmp_path
):
    settings.METRICS_TOKEN = "scrape-me"
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1

    with caplog.at_level(logging.WARNING):
        answer = scrape()

    assert answer.status_code == 200
    found = samples(answer)
    assert value(found, "darkroom_metrics_unreadable", figures="queues") == 1
    assert value(found, "darkroom_metrics_unreadable", figures="predictions") == 0
    assert not [key for key in found if key[0] == "darkroom_queue_length"]
    assert "darkroom_poll_delay_seconds" in {key[0] for key in found}
    [line] = [r.getMessage() for r in caplog.records if r.name == "operations.metrics"]
    assert line.startswith("/metrics left out figures it could not read: queues (ConnectionError: ")

    settings.CELERY_BROKER_URL = "filesystem://localhost//"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"data_folder_in": str(tmp_path / "missing")}
    answer = scrape()
    assert answer.status_code == 200
    assert value(samples(answer), "darkroom_metrics_unreadable", figures="queues") == 1


# --- The provider health page --------------------------------------------------------------------


def owner_of(team, username: str) -> Client:
    browser = Client()
    browser.force_login(make_user(username, team, Role.OWNER))
    return browser


@pytest.mark.django_db
def test_the_provider_health_page_shows_the_requests_the_teams_own_key_sent(settings, simulator):
    configure_provider(settings, "replicate", base_url=simulator.base_url, token="r8_deployment")
    studio, elsewhere = make_team("Studio"), make_team("Elsewhere")
    credential = ProviderCredential(team=elsewhere, provider="replicate")
    credential.set_secret("r8_elsewhere")
    credential.save()
    client = ProviderClient()
    client.create(Provider.named("replicate"), MODEL, {"prompt": "the deployment's key"})
    for _ in range(2):
        with pytest.raises(ProviderError):
            client.get(Provider.named("replicate", "r8_elsewhere"), "nosuchprediction")
    tallies.tallies().store()
    url = reverse("operations:provider_health")

    studio_page = owner_of(studio, "otto").get(url)
    elsewhere_page = owner_of(elsewhere, "olga").get(url)

    assert studio_page.status_code == elsewhere_page.status_code == 200
    studio_replicate = {p.name: p for p in studio_page.context["panels"]}["replicate"]
    assert (studio_replicate.own_key, studio_replicate.hour.requests) == (False, 1)
    assert studio_replicate.hour.errors == 0
    theirs = {p.name: p for p in elsewhere_page.context["panels"]}["replicate"]
    assert (theirs.own_key, theirs.hour.requests, theirs.hour.errors) == (True, 2, 2)
    page = elsewhere_page.content.decode()
    assert "Requests sent with your team's own key." in page
    assert "demo simulator with your team's own demo token" in studio_page.content.decode()
    assert "100.0 %" in page  # both refused
    assert 'style="' not in page and "<script>" not in page


@pytest.mark.django_db
def test_the_provider_health_page_lists_what_of_the_team_needs_a_look(
    django_capture_on_commit_callbacks,
):
    studio, elsewhere = make_team("Studio"), make_team("Elsewhere")
    hour_ago = timezone.now() - timedelta(hours=1)
    stuck = make_prediction(
        team=studio,
        model="acme/stuck",
        status="starting",
        provider_id="s1",
        submitted_at=hour_ago,
        accepted_at=hour_ago,
    )
    make_prediction(team=studio, model="acme/just-started", status="starting", provider_id="s2")
    make_prediction(
        team=elsewhere,
        model="acme/theirs",
        status="starting",
        provider_id="s3",
        submitted_at=hour_ago,
        accepted_at=hour_ago,
    )
    finished = make_prediction(team=studio, model="acme/painter", status="succeeded")
    Output.objects.create(
        team=studio,
        prediction=finished,
        index=0,
        source_url="https://replicate.delivery/gone.png",
        state=ArchiveState.FAILED,
        reason="The provider answered 404: the file is gone.",
        next_attempt_at=None,
    )
    with django_capture_on_commit_callbacks(execute=True):
        make_prediction("lost", team=studio, model="acme/lost").give_up_submit("Stopped.")
        late = make_prediction("late", team=studio, model="acme/late")
        worker_copy = Prediction.objects.get(pk=late.pk)
        late.give_up_submit("Stopped.")
        worker_copy.apply_remote({"id": "late2", "status": "starting"})
    assert UnknownOutcome.objects.count() == 2

    page = owner_of(studio, "otto").get(reverse("operations:provider_health"))

    text = page.content.decode()
    assert reverse("predictions:detail", args=[stuck.pk]) in text
    assert "acme/just-started" not in text and "acme/theirs" not in text
    assert "The provider answered 404: the file is gone." in text
    assert "0 still being retried, 1 given up" in text
    assert "Resolved since: 1 (1 starting)." in text
    assert "Still unknown: 1." in text and "acme/lost" in text
    theirs = owner_of(elsewhere, "olga").get(reverse("operations:provider_health"))
    assert "acme/theirs" in theirs.content.decode()
    assert "acme/stuck" not in theirs.content.decode()
    assert "acme/lost" not in theirs.content.decode()


def requests_in(minute: datetime, account: str, provider: str, request: str, *outcomes) -> None:
    """A minute's requests as tallies store them: (outcome, count, seconds, slowest) each."""
    for outcome, count, seconds, slowest in outcomes:
        RequestMinute.objects.create(
            account=account,
            minute=minute,
            provider=provider,
            request=request,
            outcome=outcome,
            count=count,
            seconds=seconds,
            slowest=slowest,
        )


def section(page: str, heading: str) -> str:
    """The page's <section> that the heading with the id `heading` labels."""
    found = re.search(rf'<section[^>]*aria-labelledby="{heading}".*?</section>', page, re.S)
    assert found, f"no section labelled by #{heading}"
    return found[0]


def table_rows(html: str) -> list[list[str]]:
    """Each row of the tables in `html`, as the text of its cells."""
    return [
        [" ".join(strip_tags(cell).split()) for cell in re.findall(r"<t[hd].*?</t[hd]>", row)]
        for row in re.findall(r"<tr>.*?</tr>", html, re.S)
    ]


def latency_columns(html: str, provider: str) -> dict[str, str]:
    """The latency chart's columns that have a height: each minute's words, and the height."""
    [chart] = re.findall(
        rf'<svg[^>]*aria-labelledby="latency-{provider}-title".*?</svg>', html, re.S
    )
    columns = {}
    for column in re.findall(r"<g>.*?</g>", chart, re.S):
        [title] = re.findall(r"<title>(.*?)</title>", column)
        height = re.search(r'<rect class="minute-latency"[^>]*height="([\d.]+)"', column)
        if height:
            columns[title] = height[1]
    return columns


def at_least_seconds_left_in_this_minute(seconds: float) -> None:
    """The page reads "the last minute" when it renders: a test that wrote that minute's rows
    just before the clock turned would find them a minute older."""
    now = timezone.now()
    if now.second + now.microsecond / 1_000_000 > 60 - seconds:
        time.sleep(60.5 - now.second - now.microsecond / 1_000_000)


@pytest.mark.django_db
def test_the_provider_health_page_shows_each_providers_latency_errors_and_budgets_over_time(
    settings,
):
    settings.DEFAULT_PROVIDER = "simulator"
    configure_provider(settings, "replicate", token="r8_deployment")
    studio = make_team("Studio")
    at_least_seconds_left_in_this_minute(10)
    this_minute = timezone.now().replace(second=0, microsecond=0)
    earlier, last = this_minute - timedelta(minutes=5), this_minute - timedelta(minutes=1)
    deployment, theirs = tallies.account_of("r8_deployment"), tallies.account_of("r8_elsewhere")
    requests_in(earlier, deployment, "replicate", "get", ("ok", 4, 0.8, 0.35))
    requests_in(earlier, deployment, "replicate", "get", ("server_error", 1, 1.2, 1.2))
    requests_in(last, deployment, "replicate", "create", ("ok", 10, 15.0, 2.5))
    requests_in(last, deployment, "replicate", "create", ("throttled", 2, 0.1, 0.06))
    requests_in(last, theirs, "replicate", "get", ("ok", 30, 3.0, 0.2))  # another team's key
    demo = tallies.account_of(studio.simulator_token())
    demo_minute = this_minute - timedelta(minutes=10)
    requests_in(demo_minute, demo, "simulator", "get", ("ok", 3, 0.15, 0.08))

    page = owner_of(studio, "otto").get(reverse("operations:provider_health")).content.decode()

    def minute(moment: datetime) -> str:
        return f"{timezone.localtime(moment):%H:%M}"

    replicate = section(page, "provider-replicate-heading")
    assert "Requests sent with the deployment's key" in replicate
    figures = dict(re.findall(r"<dt>(.*?)</dt><dd>(.*?)</dd>", replicate))
    assert {name: strip_tags(text) for name, text in figures.items()} == {
        "Requests": "17",  # the team's own, not the other key's 30
        "Errors": "3 17.6 %",
        "Rate limited (429)": "2",
        "Average time": "1.0 s",
        "Slowest": "2.5 s",
    }
    earlier_words = (
        f"{minute(earlier)}: 5 requests, 1 error (20.0 %), 400 ms on average, the slowest 1.2 s"
    )
    last_words = (
        f"{minute(last)}: 12 requests, 2 errors (16.7 %), 1.3 s on average, the slowest 2.5 s"
    )
    assert "Average time of a request, a minute; the tallest column: 1.3 s" in replicate
    assert latency_columns(replicate, "replicate") == {earlier_words: "31.79", last_words: "100"}
    assert replicate.count(f"<title>{earlier_words}</title>") == 2  # requests and latency charts
    minutes_table, budgets_table = re.findall(r"<table.*?</table>", replicate, re.S)
    assert table_rows(minutes_table) == [
        ["Minute", "Requests", "Errors", "429", "Average", "Slowest"],
        [minute(last), "12", "2 16.7 %", "2", "1.3 s", "2.5 s"],
        [minute(earlier), "5", "1 20.0 %", "0", "400 ms", "1.2 s"],
    ]
    # The budget every team shares, with whatever key: in the last full minute, 12 creates of
    # the 600 allowed (10 a second) and 30 queries of the 3,000 allowed (50 a second).
    assert table_rows(budgets_table) == [
        ["Requests", "Allowed", "Used in the last minute", "Now"],
        ["Polls and cancels", "50 a second", "1 %", "Available"],
        ["Creates", "10 a second", "2 %", "Available"],
    ]

    demo_panel = section(page, "provider-simulator-heading")
    demo_words = (
        f"{minute(demo_minute)}: 3 requests, 0 errors (0.0 %), 50 ms on average, the slowest 80 ms"
    )
    assert latency_columns(demo_panel, "simulator") == {demo_words: "100"}
    assert [minute(demo_minute), "3", "0 0.0 %", "0", "50 ms", "80 ms"] in table_rows(demo_panel)
    assert earlier_words not in demo_panel and demo_words not in replicate


@pytest.mark.django_db
def test_the_provider_health_page_shows_the_teams_spend_against_its_monthly_budget():
    studio, unbudgeted = make_team("Studio"), make_team("No budget")
    Budget.objects.create(team=studio, amount=Decimal("10"), currency="USD")
    today = day_of(timezone.now())
    spent(studio, "2.50")
    spent(studio, "4", day=today.replace(day=1) - timedelta(days=1))  # last month's
    spent(unbudgeted, "3.20")
    month = f"{today:%B %Y}"
    url = reverse("operations:provider_health")

    budgeted = section(owner_of(studio, "otto").get(url).content.decode(), "spend-heading")
    without = section(owner_of(unbudgeted, "olga").get(url).content.decode(), "spend-heading")

    assert "<strong>25%</strong> of $10.00" in budgeted
    assert f"$2.50 spent in {month}." in budgeted
    assert reverse("costs:budgets") in budgeted
    assert f"No monthly budget: the team may spend without a limit. Spent in {month}: $3.20." in (
        " ".join(strip_tags(without).split())
    )


# --- Logs ----------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_ended_prediction_is_one_log_line_with_its_ids(
    caplog, django_capture_on_commit_callbacks
):
    prediction = make_prediction("a lost create")

    with caplog.at_level(logging.INFO), django_capture_on_commit_callbacks(execute=True):
        prediction.give_up_submit("The worker stopped\nbefore the provider answered.")

    [record] = [r for r in caplog.records if r.name == "operations.signals"]
    assert record.getMessage().startswith(
        f"prediction {prediction.pk}: submit_unknown at simulator: "
        "The worker stopped before the provider answered."
    )
    assert "\n" not in record.getMessage()
    assert record.levelname == "WARNING"
    line = json.loads(JsonFormatter().format(record))
    assert line["prediction_id"] == prediction.pk
    assert (line["provider"], line["status"], line["level"]) == (
        "simulator",
        "submit_unknown",
        "WARNING",
    )


def test_a_json_log_line_names_the_prediction_a_message_is_about():
    record = logging.LogRecord(
        "webhooks.views",
        logging.WARNING,
        __file__,
        1,
        "webhook for prediction %s refused: %s",
        (12, "bad signature"),
        None,
    )

    line = json.loads(JsonFormatter().format(record))

    assert line["prediction_id"] == 12
    assert line["message"] == "webhook for prediction 12 refused: bad signature"


def console_handler() -> logging.Handler:
    """The handler settings.LOGGING configures, found by its filter."""
    for handler in logging.getLogger().handlers:
        if any(isinstance(f, OneLineSuspiciousRequests) for f in handler.filters):
            return handler
    raise AssertionError("no handler has the OneLineSuspiciousRequests filter")


@pytest.mark.django_db
def test_a_request_django_refuses_is_one_warning_line_not_a_traceback():
    handler = console_handler()
    written = io.StringIO()
    previous = handler.setStream(written)
    try:
        response = Client().get("/", HTTP_HOST="scanner.example")
    finally:
        handler.setStream(previous)

    assert response.status_code == 400
    [line] = [line for line in written.getvalue().splitlines() if "django.security" in line]
    assert "WARNING django.security.DisallowedHost Invalid HTTP_HOST header" in line
    assert "Traceback" not in written.getvalue()
