"""Providers' webhooks: verified with the account's secret, applied at once like a poll's answer,
and applied once however often they come."""

import base64
import hashlib
import hmac
import json
import time
import uuid
from datetime import timedelta

import httpx
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import Client
from django.utils import timezone

from costs.models import PredictionCost
from dashboard.settings import env_url
from predictions.client import Provider, ProviderClient, ProviderError
from predictions.models import Prediction, Status
from predictions.simulator import Simulator
from webhooks import webhook_url
from webhooks.models import WebhookDelivery
from webhooks.tasks import forget_old_deliveries

from .conftest import configure_provider, make_prediction, wait_for

SCHNELL = "black-forest-labs/flux-schnell"
LATER = timedelta(minutes=10)


@pytest.fixture
def provider() -> Client:
    """The provider's side of the conversation: no session, and CSRF checks on as for anyone."""
    return Client(enforce_csrf_checks=True)


def signature(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """Standard Webhooks, written out here so that Darkroom's own checking is not trusted."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def deliver(
    provider: Client,
    prediction: Prediction,
    payload: dict,
    secret: str,
    webhook_id: str | None = None,
    timestamp: int | None = None,
):
    """Post `payload` to the prediction's webhook URL, signed with `secret` as Replicate signs."""
    body = json.dumps(payload).encode()
    webhook_id = webhook_id or f"msg_{uuid.uuid4().hex}"
    timestamp = int(time.time()) if timestamp is None else timestamp
    return provider.post(
        f"/webhooks/predictions/{prediction.pk}/",
        data=body,
        content_type="application/json",
        headers={
            "webhook-id": webhook_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature(secret, webhook_id, timestamp, body),
        },
    )


def finished_at(simulator) -> dict:
    """A prediction the simulator ran to its end, as its completed webhook carries it."""
    return httpx.post(
        f"{simulator.base_url}/models/{SCHNELL}/predictions",
        json={"input": {"prompt": "a lighthouse at dusk"}},
        headers={"Authorization": "Bearer demo", "Prefer": "wait"},
    ).json()


def running(finished: dict) -> dict:
    """The same prediction while it ran, as its start webhook carries it."""
    return {**finished, "status": "processing", "output": None, "completed_at": None}


def following(payload: dict, **fields) -> Prediction:
    """A prediction Darkroom created at the provider as `payload` and polls rarely."""
    fields = {
        "provider_id": payload["id"],
        "status": Status.STARTING,
        "accepted_at": timezone.now(),
        "next_poll_at": timezone.now() + LATER,
        **fields,
    }
    return make_prediction(**fields)


def secret_fetches(simulator) -> int:
    return simulator.stats()["requests_by_endpoint"].get("webhook_secret", 0)


# --- Asking for webhooks -----------------------------------------------------------------------


def test_a_prediction_asks_for_webhooks_at_its_own_url_when_the_deployment_is_public(db, settings):
    settings.DARKROOM_PUBLIC_URL = "https://darkroom.example.com"
    prediction = make_prediction()

    url = webhook_url(prediction)

    assert url == f"https://darkroom.example.com/webhooks/predictions/{prediction.pk}/"


def test_no_webhooks_are_asked_for_without_a_public_url_or_from_a_provider_that_sends_none(
    db, settings
):
    prediction = make_prediction()
    settings.DARKROOM_PUBLIC_URL = ""
    without_public_url = webhook_url(prediction)

    settings.DARKROOM_PUBLIC_URL = "https://darkroom.example.com"
    on_cometapi = webhook_url(make_prediction(provider="cometapi"))

    assert without_public_url is None
    assert on_cometapi is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("https://darkroom.example.com/", "https://darkroom.example.com"),
        ("http://10.0.0.5:8000", "http://10.0.0.5:8000"),
        ("https://example.com/darkroom", "https://example.com/darkroom"),
        ("", ""),
    ],
)
def test_the_public_url_setting_is_an_http_url_without_a_trailing_slash(
    monkeypatch, value, expected
):
    monkeypatch.setenv("DARKROOM_PUBLIC_URL", value)

    assert env_url("DARKROOM_PUBLIC_URL") == expected


@pytest.mark.parametrize(
    "value",
    [
        "darkroom.example.com",
        "ftp://darkroom.example.com",
        "https://",
        "https://x:port",
        "https://x/?a=1",
    ],
)
def test_a_public_url_that_is_not_an_http_url_stops_start_up_in_words(monkeypatch, value):
    monkeypatch.setenv("DARKROOM_PUBLIC_URL", value)

    with pytest.raises(ImproperlyConfigured, match="DARKROOM_PUBLIC_URL must be an http or https"):
        env_url("DARKROOM_PUBLIC_URL")


def test_the_client_fetches_the_accounts_webhook_secret(simulator):
    provider = Provider.named("simulator")

    assert ProviderClient().webhook_secret(provider) == simulator.webhook_secret


def test_a_refused_secret_request_is_a_provider_error_that_is_not_worth_repeating():
    with Simulator(speed=50, token="the right one") as sim:
        wrong_token = Provider("simulator", "Demo", sim.base_url, "the wrong one")
        with pytest.raises(ProviderError, match=r"refused the request \(401\)") as refused:
            ProviderClient().webhook_secret(wrong_token)

    assert refused.value.retryable is False


# --- Receiving them ----------------------------------------------------------------------------


def test_a_signed_webhook_is_applied_at_once_like_a_polls_answer(db, simulator, provider):
    finished = finished_at(simulator)
    prediction = following(finished)

    response = deliver(provider, prediction, finished, simulator.webhook_secret)

    assert response.status_code == 204
    prediction.refresh_from_db()
    assert prediction.status == Status.SUCCEEDED
    assert prediction.output == finished["output"]
    assert prediction.next_poll_at is None
    # What the apps built on predictions do with an ended prediction happened too.
    assert prediction.outputs.count() == 1
    assert PredictionCost.objects.filter(prediction=prediction).exists()


def test_a_start_webhook_moves_a_prediction_to_processing(db, simulator, provider):
    finished = finished_at(simulator)
    prediction = following(finished)

    response = deliver(provider, prediction, running(finished), simulator.webhook_secret)

    assert response.status_code == 204
    prediction.refresh_from_db()
    assert prediction.status == Status.PROCESSING
    assert prediction.started_at is not None


def test_a_webhook_signed_with_another_secret_is_refused_and_changes_nothing(
    db, simulator, provider
):
    finished = finished_at(simulator)
    prediction = following(finished)
    forged = "whsec_" + base64.b64encode(b"not the provider's key, 32 bytes").decode()

    response = deliver(provider, prediction, finished, forged)

    assert response.status_code == 401
    assert response.content == b"The webhook's signature does not match."
    prediction.refresh_from_db()
    assert prediction.status == Status.STARTING
    assert not WebhookDelivery.objects.exists()


def test_a_webhook_whose_body_was_changed_after_signing_is_refused(db, simulator, provider):
    finished = finished_at(simulator)
    prediction = following(finished)
    body = json.dumps(finished).encode()
    timestamp = int(time.time())

    response = provider.post(
        f"/webhooks/predictions/{prediction.pk}/",
        data=body.replace(b"succeeded", b"failed"),
        content_type="application/json",
        headers={
            "webhook-id": "msg_1",
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature(simulator.webhook_secret, "msg_1", timestamp, body),
        },
    )

    assert response.status_code == 401
    prediction.refresh_from_db()
    assert prediction.status == Status.STARTING


def test_a_webhook_without_its_signature_headers_is_refused(db, simulator, provider):
    finished = finished_at(simulator)
    prediction = following(finished)

    response = provider.post(
        f"/webhooks/predictions/{prediction.pk}/", data=finished, content_type="application/json"
    )

    assert response.status_code == 400
    assert secret_fetches(simulator) == 0


@pytest.mark.parametrize("offset", [-301, 301, -3600])
def test_a_webhook_stamped_more_than_five_minutes_from_now_is_refused_as_a_replay(
    db, simulator, provider, offset
):
    finished = finished_at(simulator)
    prediction = following(finished)

    response = deliver(
        provider,
        prediction,
        finished,
        simulator.webhook_secret,
        timestamp=int(time.time()) + offset,
    )

    assert response.status_code == 401
    assert b"five minutes" in response.content
    prediction.refresh_from_db()
    assert prediction.status == Status.STARTING


def test_a_webhook_stamped_within_five_minutes_is_accepted(db, simulator, provider):
    finished = finished_at(simulator)
    prediction = following(finished)

    response = deliver(
        provider, prediction, finished, simulator.webhook_secret, timestamp=int(time.time()) - 290
    )

    assert response.status_code == 204


def test_a_webhook_id_seen_before_is_not_applied_again_even_with_another_body(
    db, simulator, provider
):
    finished = finished_at(simulator)
    prediction = following(finished)
    secret = simulator.webhook_secret

    first = deliver(provider, prediction, running(finished), secret, webhook_id="msg_same")
    polls = Prediction.objects.get(pk=prediction.pk).polls
    again = deliver(provider, prediction, finished, secret, webhook_id="msg_same")

    assert (first.status_code, again.status_code) == (204, 204)
    prediction.refresh_from_db()
    assert prediction.status == Status.PROCESSING
    assert prediction.polls == polls
    assert WebhookDelivery.objects.filter(webhook_id="msg_same").count() == 1


def test_a_webhook_about_another_prediction_is_refused(db, simulator, provider):
    mine, theirs = finished_at(simulator), finished_at(simulator)
    prediction = following(mine)

    response = deliver(provider, prediction, theirs, simulator.webhook_secret)

    assert response.status_code == 400
    prediction.refresh_from_db()
    assert (prediction.status, prediction.provider_id) == (Status.STARTING, mine["id"])
    assert not WebhookDelivery.objects.exists()


def test_a_start_webhook_before_the_creates_answer_is_recorded_tells_the_provider_id(
    db, simulator, provider
):
    finished = finished_at(simulator)
    prediction = make_prediction(sending_since=timezone.now())

    response = deliver(provider, prediction, running(finished), simulator.webhook_secret)

    assert response.status_code == 204
    prediction.refresh_from_db()
    assert (prediction.status, prediction.provider_id) == (Status.PROCESSING, finished["id"])
    assert prediction.accepted_at is not None


def test_a_webhook_for_a_prediction_still_submitting_is_refused_if_its_id_is_taken(
    db, simulator, provider
):
    finished = finished_at(simulator)
    following(finished)
    submitting = make_prediction(sending_since=timezone.now())

    response = deliver(provider, submitting, running(finished), simulator.webhook_secret)

    assert response.status_code == 400
    submitting.refresh_from_db()
    assert (submitting.status, submitting.provider_id) == (Status.SUBMITTING, "")


def test_a_late_webhook_never_moves_a_finished_prediction_back(db, simulator, provider):
    finished = finished_at(simulator)
    prediction = following(finished)

    deliver(provider, prediction, finished, simulator.webhook_secret)
    late = deliver(provider, prediction, running(finished), simulator.webhook_secret)

    assert late.status_code == 204
    prediction.refresh_from_db()
    assert prediction.status == Status.SUCCEEDED


def test_a_webhook_for_an_unknown_prediction_is_404_and_says_nothing_more(db, simulator, provider):
    finished = finished_at(simulator)
    prediction = following(finished)
    missing = Prediction(pk=prediction.pk + 1000)
    on_cometapi = following(finished_at(simulator), provider="cometapi")

    responses = [
        deliver(provider, unknown, finished, simulator.webhook_secret)
        for unknown in (missing, on_cometapi)
    ]

    for response in responses:
        assert response.status_code == 404
        assert response.content == b"Not found."
    assert secret_fetches(simulator) == 0


def test_only_post_is_answered(db, simulator, provider):
    prediction = following(finished_at(simulator))

    response = provider.get(f"/webhooks/predictions/{prediction.pk}/")

    assert response.status_code == 405


def test_a_webhook_is_answered_503_while_the_providers_secret_cannot_be_fetched(
    db, simulator, provider, settings
):
    finished = finished_at(simulator)
    prediction = following(finished)
    configure_provider(settings, "simulator", base_url="http://127.0.0.1:9/v1")

    response = deliver(provider, prediction, finished, simulator.webhook_secret)

    assert response.status_code == 503
    prediction.refresh_from_db()
    assert prediction.status == Status.STARTING


def test_the_secret_is_fetched_once_and_then_served_from_the_cache(db, simulator, provider):
    for _ in range(3):
        finished = finished_at(simulator)
        response = deliver(provider, following(finished), finished, simulator.webhook_secret)
        assert response.status_code == 204

    assert secret_fetches(simulator) == 1


def test_a_rotated_secret_is_fetched_again_but_forgeries_do_not_fetch_it_each_time(
    db, simulator, provider
):
    first, second = finished_at(simulator), finished_at(simulator)
    old = simulator.webhook_secret
    deliver(provider, following(first), running(first), old)
    rotated = simulator.rotate_webhook_secret()

    later = following(second)
    accepted = deliver(provider, later, running(second), rotated)
    forgeries = [deliver(provider, later, second, old) for _ in range(3)]

    assert accepted.status_code == 204
    assert {forged.status_code for forged in forgeries} == {401}
    assert secret_fetches(simulator) == 2


def test_deliveries_older_than_a_day_are_forgotten(db, simulator):
    prediction = following(finished_at(simulator))
    old, recent = (
        WebhookDelivery.objects.create(
            provider="simulator",
            webhook_id=name,
            prediction=prediction,
            received_at=timezone.now() - age,
        )
        for name, age in (("msg_old", timedelta(hours=25)), ("msg_new", timedelta(hours=23)))
    )

    forgotten = forget_old_deliveries()

    assert forgotten == 1
    assert list(WebhookDelivery.objects.values_list("webhook_id", flat=True)) == ["msg_new"]


# --- End to end --------------------------------------------------------------------------------


def test_the_simulators_signed_webhooks_finish_a_prediction_that_is_never_polled(
    live_server, settings, simulator, worker, scheduler
):
    settings.DARKROOM_PUBLIC_URL = live_server.url
    # No poll could come before the end of the test: only a webhook can finish it.
    settings.POLL_FIRST_INTERVAL = settings.POLL_MAX_INTERVAL = 600.0
    settings.POLL_DENSE_INTERVAL = settings.POLL_WEBHOOK_INTERVAL = 600.0
    prediction = make_prediction("a lighthouse, by webhook")

    wait_for(
        lambda: Prediction.objects.get(pk=prediction.pk).status == Status.SUCCEEDED,
        message="the completed webhook",
    )

    prediction.refresh_from_db()
    wait_for(lambda: simulator.stats()["webhooks"]["delivered"] == 2, message="the answer")
    stats = simulator.stats()
    assert stats["requests_by_endpoint"].get("get", 0) == 0
    assert stats["webhooks"]["delivered_by_event"] == {"start": 1, "completed": 1}
    assert prediction.output and prediction.outputs.count() == 1
    assert WebhookDelivery.objects.filter(prediction=prediction).count() == 2


def test_a_create_sent_with_a_webhook_url_is_followed_by_its_webhooks_alone(
    live_server, settings, simulator
):
    """Without any worker: the start webhook brings the provider id before anything else does,
    and the completed webhook ends the prediction."""
    settings.DARKROOM_PUBLIC_URL = live_server.url
    prediction = make_prediction("a lighthouse, by webhook", sending_since=timezone.now())

    ProviderClient().create(
        Provider.named("simulator"), SCHNELL, prediction.input, webhook=webhook_url(prediction)
    )

    wait_for(
        lambda: Prediction.objects.get(pk=prediction.pk).status == Status.SUCCEEDED,
        message="the completed webhook",
    )
    prediction.refresh_from_db()
    assert prediction.provider_id
    # The simulator counts a delivery once its answer is back, which is after it was applied.
    wait_for(lambda: simulator.stats()["webhooks"]["delivered"] == 2, message="the answer")
    assert simulator.stats()["webhooks"]["delivered_by_event"] == {"start": 1, "completed": 1}
