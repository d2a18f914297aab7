"""Darkroom's own webhooks to API clients: signed as Replicate signs them, sent for the events
asked for, retried until the receiver takes them, once each, and never to a private address
unless the deployment allows it. The receiver is a real HTTP server on a local port."""

import base64
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.utils import timezone
from standardwebhooks import Webhook

from accounts.models import Team
from predictions.models import Prediction
from predictions.tasks import wake_dispatcher
from webhooks import tasks
from webhooks.models import (
    EVENTS,
    MAX_ATTEMPTS,
    RETRY_DELAYS,
    DeliveryState,
    OutgoingWebhook,
    SigningSecret,
    WebhookSubscription,
)
from webhooks.outgoing import signing_secret, subscribe

from .conftest import make_prediction, make_team, wait_for, wait_until_finished

BASE_URL = "http://testserver/api/v1"
# A public address, written out: subscribing resolves nothing and sends nothing.
PUBLIC_URL = "https://93.184.215.14/hooks/darkroom"


class Receiver:
    """A client's webhook endpoint on a free local port: it records every request and answers
    with the statuses it is given, in turn, then 200; each answer may wait `delay` seconds."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.answers: deque[tuple[int, dict[str, str]]] = deque()
        self.delay = 0.0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    receiver.requests.append((dict(self.headers.items()), body))
                    status, headers = receiver.answers.popleft() if receiver.answers else (200, {})
                time.sleep(receiver.delay)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.send_header("Connection", "close")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hooks/darkroom"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    def answer(self, *statuses: int, **headers: str) -> None:
        self.answers.extend((status, headers) for status in statuses)

    def webhook_ids(self) -> list[str]:
        with self.lock:
            return [headers["webhook-id"] for headers, _ in self.requests]


@pytest.fixture
def receiver(settings) -> Iterator[Receiver]:
    """A receiver on this machine, which the deployment then allows webhooks to reach."""
    settings.WEBHOOKS_ALLOW_PRIVATE = True
    server = Receiver()
    server.thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


@pytest.fixture
def webhook_scheduler(celery_queues) -> Iterator[None]:
    """Sends `send_due` every 0.2 s through the broker, as celery beat does every second."""
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(0.2):
            tasks.send_due.delay()

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join()


@pytest.fixture
def resolver(monkeypatch) -> dict[str, str]:
    """DNS for test names: each name in the dict resolves to the address it maps to, as the
    system resolver would answer (patched where Python asks it, not in Darkroom)."""
    names: dict[str, str] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host in names:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (names[host], port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return names


def refusal(url: str, events=None) -> dict[str, list[str]]:
    prediction = make_prediction()
    with pytest.raises(ValidationError) as refused:
        subscribe(prediction, url, events, BASE_URL)
    assert not WebhookSubscription.objects.exists()
    return refused.value.message_dict


def queued(url: str, body: str = '{"id": "1"}', event: str = "completed") -> OutgoingWebhook:
    """A webhook due now, to `url`, of a prediction of the Studio team."""
    subscription = WebhookSubscription.objects.create(
        prediction=make_prediction(), url=url, events=list(EVENTS), base_url=BASE_URL
    )
    return OutgoingWebhook.objects.create(subscription=subscription, event=event, body=body)


def send_now() -> int:
    """What the scheduler's sweep and the workers do, in this process: lease every webhook due
    and send it. Returns how many were sent."""
    claimed = OutgoingWebhook.claim_due()
    for pk, claim in claimed:
        tasks.send(pk, claim)
    return len(claimed)


def verified(receiver: Receiver, team: Team) -> list[dict]:
    """Every body the receiver got, each verified as the `standardwebhooks` package verifies."""
    checker = Webhook(signing_secret(team))
    return [checker.verify(body, headers) for headers, body in receiver.requests]


def all_sent(prediction: Prediction) -> bool:
    subscription = WebhookSubscription.objects.get(prediction=prediction)
    return (
        subscription.sent_completed
        and not OutgoingWebhook.objects.filter(
            subscription=subscription, state=DeliveryState.PENDING
        ).exists()
    )


# --- Subscribing -------------------------------------------------------------------------------


def test_a_public_webhook_url_is_accepted_with_every_event_by_default(db):
    prediction = make_prediction()

    subscribe(prediction, PUBLIC_URL, None, BASE_URL)

    subscription = prediction.webhook_subscription
    assert (subscription.url, subscription.base_url) == (PUBLIC_URL, BASE_URL)
    assert subscription.events == ["start", "output", "logs", "completed"]


def test_the_events_filter_is_kept_in_the_order_events_happen(db):
    prediction = make_prediction()

    subscribe(prediction, PUBLIC_URL, ["completed", "start", "completed"], BASE_URL)

    assert prediction.webhook_subscription.events == ["start", "completed"]


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("http://127.0.0.1:8000/hook", "a loopback address"),
        ("http://localhost/hook", "a loopback address"),
        ("http://[::1]/hook", "a loopback address"),
        ("http://[::ffff:127.0.0.1]/hook", "a loopback address"),
        ("https://10.0.0.5/hook", "a private address"),
        ("https://192.168.1.20/hook", "a private address"),
        ("https://172.16.0.1/hook", "a private address"),
        ("http://169.254.169.254/latest/meta-data/", "a cloud metadata address"),
        ("http://169.254.10.10/hook", "a link-local address"),
        ("http://0.0.0.0/hook", "an unspecified address"),
        ("https://100.64.0.1/hook", "a shared (carrier-grade NAT) address"),
    ],
)
def test_a_webhook_url_on_a_non_public_address_is_refused_in_words(db, url, kind):
    errors = refusal(url)

    assert list(errors) == ["webhook"]
    assert kind in errors["webhook"][0]
    assert "webhooks are only sent to public addresses" in errors["webhook"][0]


def test_a_webhook_url_whose_name_resolves_to_a_private_address_is_refused(db, resolver):
    resolver["hooks.example.test"] = "10.1.2.3"

    errors = refusal("https://hooks.example.test/darkroom")

    assert "hooks.example.test resolves to 10.1.2.3, a private address" in errors["webhook"][0]


def test_a_webhook_url_whose_name_does_not_resolve_now_is_accepted_and_checked_when_sent(db):
    prediction = make_prediction()

    subscribe(prediction, "https://hooks.example.invalid/darkroom", None, BASE_URL)

    assert prediction.webhook_subscription.url == "https://hooks.example.invalid/darkroom"


def test_a_private_webhook_url_is_accepted_where_the_deployment_allows_it(db, settings):
    settings.WEBHOOKS_ALLOW_PRIVATE = True
    prediction = make_prediction()

    subscribe(prediction, "http://127.0.0.1:9000/hook", None, BASE_URL)

    assert prediction.webhook_subscription.url == "http://127.0.0.1:9000/hook"


@pytest.mark.parametrize(
    "url", ["ftp://hooks.example.com/x", "hooks.example.com/x", "https://", "http://x:port/", 42]
)
def test_a_webhook_that_is_not_an_http_url_is_refused(db, url):
    errors = refusal(url)

    assert list(errors) == ["webhook"]


def test_a_very_long_webhook_url_is_refused(db):
    errors = refusal(PUBLIC_URL + "?" + "x" * 2000)

    assert "at most 2000 characters" in errors["webhook"][0]


@pytest.mark.parametrize("events", [["start", "finished"], "completed", [None], {"start": 1}])
def test_an_events_filter_that_is_not_a_list_of_known_events_is_refused(db, events):
    errors = refusal(PUBLIC_URL, events)

    assert list(errors) == ["webhook_events_filter"]
    assert errors["webhook_events_filter"] == [
        'must be a list drawn from "start", "output", "logs", "completed".'
    ]


def test_each_team_has_its_own_signing_secret_made_once_and_encrypted_at_rest(db):
    studio, elsewhere = make_team(), make_team("Elsewhere")

    secret = signing_secret(studio)

    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    assert signing_secret(studio) == secret
    assert signing_secret(elsewhere) != secret
    stored = SigningSecret.objects.get(team=studio).secret_encrypted
    assert secret.removeprefix("whsec_") not in stored


# --- Sending -----------------------------------------------------------------------------------


def test_a_webhook_is_posted_with_a_signature_that_standard_webhooks_verifies(db, receiver):
    webhook = queued(receiver.url, '{"id": "7", "status": "succeeded"}')

    assert send_now() == 1

    [(headers, body)] = receiver.requests
    assert Webhook(signing_secret(make_team())).verify(body, headers) == {
        "id": "7",
        "status": "succeeded",
    }
    assert headers["webhook-id"] == webhook.webhook_id
    assert headers["Content-Type"] == "application/json"
    webhook.refresh_from_db()
    assert (webhook.state, webhook.attempts, webhook.last_status) == ("delivered", 1, 200)
    assert webhook.next_attempt_at is None


def test_a_signature_made_with_another_teams_secret_does_not_verify(db, receiver):
    queued(receiver.url)
    send_now()

    [(headers, body)] = receiver.requests
    with pytest.raises(Exception, match="No matching signature"):
        Webhook(signing_secret(make_team("Elsewhere"))).verify(body, headers)


def test_a_failed_attempt_is_retried_after_the_backoff_with_the_same_id_and_body(db, receiver):
    receiver.answer(500, 503)
    webhook = queued(receiver.url)

    send_now()
    webhook.refresh_from_db()
    first_retry_in = (webhook.next_attempt_at - timezone.now()).total_seconds()
    nothing_yet = send_now()
    OutgoingWebhook.objects.update(next_attempt_at=timezone.now())
    send_now()
    webhook.refresh_from_db()
    second_retry_in = (webhook.next_attempt_at - timezone.now()).total_seconds()
    OutgoingWebhook.objects.update(next_attempt_at=timezone.now())
    send_now()

    assert 0.5 < first_retry_in <= RETRY_DELAYS[0] * 1.1
    assert nothing_yet == 0
    assert RETRY_DELAYS[1] * 0.8 < second_retry_in <= RETRY_DELAYS[1] * 1.1
    assert len(set(receiver.webhook_ids())) == 1
    assert len({body for _, body in receiver.requests}) == 1
    assert len(verified(receiver, make_team())) == 3
    webhook.refresh_from_db()
    assert (webhook.state, webhook.attempts, webhook.last_status) == ("delivered", 3, 200)


def test_a_webhook_the_receiver_never_takes_fails_after_its_last_attempt(db, receiver):
    receiver.answer(*[500] * 20)
    webhook = queued(receiver.url)

    for _ in range(MAX_ATTEMPTS + 2):
        send_now()
        OutgoingWebhook.objects.exclude(next_attempt_at=None).update(next_attempt_at=timezone.now())

    assert len(receiver.requests) == MAX_ATTEMPTS
    webhook.refresh_from_db()
    assert (webhook.state, webhook.attempts, webhook.last_status) == ("failed", MAX_ATTEMPTS, 500)
    assert webhook.next_attempt_at is None
    assert webhook.last_error == (
        f"127.0.0.1 answered 500. Darkroom gave up after {MAX_ATTEMPTS} attempts."
    )


def test_a_redirect_is_not_followed_and_the_webhook_is_tried_again_later(db, receiver):
    receiver.answer(302, Location=f"http://127.0.0.1:{receiver.port}/elsewhere")
    webhook = queued(receiver.url)

    send_now()

    assert len(receiver.requests) == 1
    webhook.refresh_from_db()
    assert (webhook.state, webhook.last_status) == ("pending", 302)
    assert webhook.last_error == "127.0.0.1 answered 302."


def test_a_receiver_that_does_not_answer_in_time_is_tried_again_later(db, receiver, monkeypatch):
    monkeypatch.setattr("webhooks.sender.TOTAL_TIMEOUT", 0.3)
    receiver.delay = 5.0
    webhook = queued(receiver.url)

    started = time.monotonic()
    send_now()

    # Given up long before the answer came, with room for a loaded machine's slowness.
    assert time.monotonic() - started < receiver.delay / 2
    webhook.refresh_from_db()
    assert webhook.state == "pending"
    assert webhook.last_status is None
    assert webhook.last_error == "127.0.0.1 did not answer within 0.3 s."


def test_a_name_that_resolves_to_loopback_when_sent_is_refused_without_a_request(
    db, receiver, settings, resolver
):
    """DNS rebinding: the name was public when the prediction was created."""
    settings.WEBHOOKS_ALLOW_PRIVATE = False
    resolver["hooks.example.test"] = "93.184.215.14"
    prediction = make_prediction()
    url = f"http://hooks.example.test:{receiver.port}/hooks/darkroom"
    subscribe(prediction, url, None, BASE_URL)
    webhook = OutgoingWebhook.objects.create(
        subscription=prediction.webhook_subscription, event="completed", body="{}"
    )
    resolver["hooks.example.test"] = "127.0.0.1"

    send_now()

    assert receiver.requests == []
    webhook.refresh_from_db()
    assert (webhook.state, webhook.attempts, webhook.next_attempt_at) == ("failed", 1, None)
    assert webhook.last_error.startswith(
        "hooks.example.test resolves to 127.0.0.1, a loopback address: webhooks are only sent"
    )


def test_a_private_address_written_out_is_refused_when_sent_once_no_longer_allowed(
    db, receiver, settings
):
    webhook = queued(receiver.url)
    settings.WEBHOOKS_ALLOW_PRIVATE = False

    send_now()

    assert receiver.requests == []
    webhook.refresh_from_db()
    assert webhook.state == "failed"
    assert "127.0.0.1 is a loopback address" in webhook.last_error


def test_a_webhook_that_cannot_be_signed_is_retried_later_and_says_why(db, receiver):
    webhook = queued(receiver.url)
    SigningSecret.objects.create(team=make_team(), secret_encrypted="not a Fernet token")

    send_now()

    assert receiver.requests == []
    webhook.refresh_from_db()
    assert (webhook.state, webhook.attempts) == ("pending", 1)
    assert webhook.next_attempt_at > timezone.now()
    assert webhook.last_error == (
        "Darkroom could not send it: The webhook signing secret of team "
        f"{make_team().pk} cannot be decrypted with the configured DARKROOM_ENCRYPTION_KEYS."
    )


@pytest.mark.django_db(transaction=True)
def test_two_workers_sending_at_once_send_each_webhook_once(receiver):
    """Two workers sweep at the same moment; then each gets every message of both sweeps, at
    the same moment as the other, as a broker that delivers each message twice would."""
    receiver.delay = 0.05
    webhooks = [queued(receiver.url, f'{{"n": {n}}}') for n in range(12)]
    barrier = threading.Barrier(2)
    messages: list[tuple[int, int]] = []
    errors: list[Exception] = []

    def worker() -> None:
        try:
            barrier.wait()
            while claimed := OutgoingWebhook.claim_due(limit=5):
                messages.extend(claimed)
            barrier.wait()
            for pk, claim in sorted(messages):
                tasks.send(pk, claim)
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert sorted(pk for pk, _ in messages) == sorted(webhook.pk for webhook in webhooks)
    assert sorted(receiver.webhook_ids()) == sorted(webhook.webhook_id for webhook in webhooks)
    assert set(OutgoingWebhook.objects.values_list("state", "attempts")) == {("delivered", 1)}


def test_webhooks_sent_more_than_a_day_ago_are_forgotten_and_pending_ones_kept(db, receiver):
    sent, pending, recent = queued(receiver.url), queued(receiver.url), queued(receiver.url)
    OutgoingWebhook.objects.filter(pk=sent.pk).update(next_attempt_at=None, state="delivered")
    OutgoingWebhook.objects.exclude(pk=recent.pk).update(
        created_at=timezone.now() - timedelta(days=2)
    )

    assert tasks.forget_old_outgoing_webhooks() == 1

    assert set(OutgoingWebhook.objects.values_list("pk", flat=True)) == {pending.pk, recent.pk}


# --- Events, as a prediction changes ----------------------------------------------------------


def subscribed(events=None, url: str = PUBLIC_URL) -> Prediction:
    prediction = make_prediction(provider_id="", status="starting")
    subscribe(prediction, url, events, BASE_URL)
    return prediction


def queued_events(prediction: Prediction) -> list[str]:
    return list(
        OutgoingWebhook.objects.filter(subscription__prediction=prediction)
        .order_by("pk")
        .values_list("event", flat=True)
    )


def test_an_ended_prediction_queues_its_output_and_completed_with_the_change(db):
    prediction = subscribed()

    prediction.apply_remote(
        {
            "id": "r1",
            "status": "succeeded",
            "started_at": "2026-12-01T10:00:00Z",
            "output": ["https://replicate.delivery/x/out-0.png"],
            "logs": "100%|##########| 4/4\n",
        }
    )

    assert queued_events(prediction) == ["start", "output", "completed"]
    body = json.loads(OutgoingWebhook.objects.get(event="completed").body)
    assert body["id"] == str(prediction.pk)
    assert body["status"] == "succeeded"
    assert body["output"] == ["https://replicate.delivery/x/out-0.png"]
    assert body["urls"]["get"] == f"{BASE_URL}/predictions/{prediction.pk}"


def test_a_prediction_that_ended_without_starting_queues_only_completed(db):
    prediction = subscribed()

    prediction.apply_remote({"id": "r1", "status": "failed", "error": "bad input"})

    assert queued_events(prediction) == ["completed"]
    assert json.loads(OutgoingWebhook.objects.get().body)["error"] == "bad input"


def test_no_webhook_is_queued_for_events_the_client_filtered_out(db):
    prediction = subscribed(["completed"])

    prediction.apply_remote({"id": "r1", "status": "processing", "logs": "10%\n"})
    WebhookSubscription.check_open()
    prediction.apply_remote(
        {"id": "r1", "status": "succeeded", "logs": "100%\n", "output": ["https://x.test/a.png"]}
    )

    assert queued_events(prediction) == ["completed"]


def test_logs_are_queued_at_most_every_half_second_and_the_end_is_never_held_back(db):
    prediction = subscribed()

    prediction.apply_remote({"id": "r1", "status": "processing", "logs": "10%\n"})
    prediction.apply_remote({"id": "r1", "status": "processing", "logs": "10%\n20%\n"})
    WebhookSubscription.check_open()
    early = queued_events(prediction)
    time.sleep(0.55)
    WebhookSubscription.check_open()
    WebhookSubscription.check_open()
    later = queued_events(prediction)
    prediction.apply_remote({"id": "r1", "status": "processing", "logs": "10%\n20%\n30%\n"})
    prediction.apply_remote(
        {"id": "r1", "status": "succeeded", "logs": "done\n", "output": ["https://x.test/a.png"]}
    )

    assert early == ["start", "logs"]
    assert later == ["start", "logs", "logs"]
    assert queued_events(prediction) == ["start", "logs", "logs", "output", "completed"]
    logs = [json.loads(w.body)["logs"] for w in OutgoingWebhook.objects.filter(event="logs")]
    assert logs == ["10%\n", "10%\n20%\n"]


def test_a_poll_that_only_brings_progress_is_found_by_the_sweep(db):
    prediction = subscribed()
    # As the poller stores a quiet poll: in a batch, telling no one.
    Prediction.objects.filter(pk=prediction.pk).update(
        status="processing", logs="5%\n", started_at=timezone.now()
    )
    before = queued_events(prediction)

    WebhookSubscription.check_open()
    WebhookSubscription.check_open()

    assert before == []
    assert queued_events(prediction) == ["start", "logs"]


# --- Through real workers ----------------------------------------------------------------------


@pytest.mark.usefixtures("worker", "scheduler", "webhook_scheduler")
def test_a_prediction_run_by_workers_calls_its_webhook_for_each_event(simulator, receiver):
    # Four seconds of processing (two at least), so that logs come in between even when a
    # loaded machine polls less often than it means to.
    simulator.engine.speed = 1
    team = make_team()
    prediction = make_prediction(team=team, model="black-forest-labs/flux-dev")
    subscribe(prediction, receiver.url, None, BASE_URL)

    wake_dispatcher()
    wait_until_finished(prediction)
    wait_for(lambda: all_sent(prediction), message="every webhook to be delivered")

    sent = OutgoingWebhook.objects.filter(subscription__prediction=prediction).order_by("pk")
    events = [webhook.event for webhook in sent]
    assert events[0] == "start"
    assert events[-2:] == ["output", "completed"]
    assert events.count("logs") >= 2
    assert sorted(receiver.webhook_ids()) == sorted(webhook.webhook_id for webhook in sent)
    bodies = {
        headers["webhook-id"]: body
        for (headers, _), body in zip(receiver.requests, verified(receiver, team), strict=True)
    }
    completed = bodies[sent.get(event="completed").webhook_id]
    assert completed["status"] == "succeeded"
    assert completed["id"] == str(prediction.pk)
    assert len(completed["output"]) == 1
    assert bodies[sent.get(event="start").webhook_id]["status"] == "processing"
    logs_times = [webhook.created_at for webhook in sent if webhook.event == "logs"]
    assert all(
        later - earlier >= timedelta(milliseconds=500)
        for earlier, later in zip(logs_times, logs_times[1:], strict=False)
    )


@pytest.mark.usefixtures("worker", "scheduler", "webhook_scheduler")
def test_a_receiver_that_fails_first_gets_the_webhook_on_a_retry(receiver):
    receiver.answer(500)
    team = make_team()
    prediction = make_prediction(team=team)
    subscribe(prediction, receiver.url, ["completed"], BASE_URL)

    wake_dispatcher()
    wait_until_finished(prediction)
    wait_for(lambda: all_sent(prediction), message="the webhook to be delivered")

    webhook = OutgoingWebhook.objects.get()
    assert webhook.event == "completed"
    assert (webhook.state, webhook.attempts, webhook.last_status) == ("delivered", 2, 200)
    assert receiver.webhook_ids() == [webhook.webhook_id] * 2
    assert [body["status"] for body in verified(receiver, team)] == ["succeeded"] * 2
