"""What an operator watches: /healthz, /metrics, the provider health page and the log lines."""

import io
import json
import logging
import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from celery.contrib.testing.worker import start_worker
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from accounts.models import ProviderCredential, Role
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
