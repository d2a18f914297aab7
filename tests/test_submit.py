"""A paid create is sent at most once: retried only when it provably never reached the provider.

These tests drive one prediction step by step, as a worker would, against the simulator.
"""

import socket
import threading

import pytest
from django.utils import timezone

from predictions.client import ProviderClient
from predictions.models import Prediction
from predictions.simulator import Simulator

from .conftest import configure_provider, make_prediction, wait_for

pytestmark = pytest.mark.django_db


def step(prediction: Prediction) -> Prediction:
    """Claim the prediction as the dispatcher would and let a worker take its next step."""
    Prediction.objects.filter(pk=prediction.pk).update(next_poll_at=timezone.now())
    claimed = dict(Prediction.claim_due(limit=100))
    taken = Prediction.take(prediction.pk, claimed[prediction.pk])
    taken.advance(ProviderClient())
    prediction.refresh_from_db()
    return prediction


def creates(simulator, prediction) -> int:
    return simulator.stats()["creates_by_prompt"].get(prediction.prompt, 0)


def test_a_create_is_sent_once_and_the_prediction_starts(simulator):
    prediction = step(make_prediction())

    assert prediction.status == "starting"
    assert prediction.provider_id
    assert prediction.submit_attempts == 1
    assert prediction.next_poll_at > timezone.now()
    assert creates(simulator, prediction) == 1


def test_a_rate_limited_create_is_retried_after_the_providers_delay(simulator):
    simulator.faults.rate_limit_burst = 1
    simulator.faults.retry_after = 7
    prediction = step(make_prediction())

    assert prediction.status == "submitting"
    assert "429" in prediction.last_error
    assert (prediction.next_poll_at - timezone.now()).total_seconds() > 6

    prediction = step(prediction)
    assert prediction.status == "starting"
    assert creates(simulator, prediction) == 1


def test_a_create_that_could_not_connect_is_retried(settings, simulator):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    configure_provider(settings, "simulator", base_url=f"http://127.0.0.1:{port}/v1")
    prediction = step(make_prediction())

    assert prediction.status == "submitting"
    assert prediction.sending_since is None
    assert "Could not connect" in prediction.last_error


def test_a_create_still_rate_limited_at_the_last_attempt_fails(settings, simulator):
    settings.SUBMIT_MAX_ATTEMPTS = 2
    simulator.faults.rate_limit_burst = 10
    prediction = step(step(make_prediction()))

    assert prediction.status == "failed"
    assert "429" in prediction.error
    assert creates(simulator, prediction) == 0


def test_a_server_error_after_the_create_marks_the_outcome_unknown_and_never_resends(simulator):
    simulator.faults.server_error_rate = 1.0
    simulator.faults.endpoints = ["create"]
    prediction = step(make_prediction())

    assert prediction.status == "submit_unknown"
    assert "server error" in prediction.error
    assert "did not send it again" in prediction.error
    assert creates(simulator, prediction) == 1
    # The provider lists predictions: a later look finds the create it did make, and adopts it.
    prediction = step(prediction)
    assert prediction.status in ("starting", "processing", "succeeded")
    assert creates(simulator, prediction) == 1


def test_a_create_that_times_out_marks_the_outcome_unknown(simulator):
    simulator.faults.stall_rate = 1.0
    simulator.faults.endpoints = ["create"]
    prediction = step(make_prediction())

    assert prediction.status == "submit_unknown"
    assert "did not answer in time" in prediction.error


def test_a_malformed_create_response_marks_the_outcome_unknown(simulator):
    simulator.faults.malformed_rate = 1.0
    simulator.faults.endpoints = ["create"]
    prediction = step(make_prediction())

    assert prediction.status == "submit_unknown"
    assert creates(simulator, prediction) == 1


def test_a_worker_that_died_while_sending_leaves_the_outcome_unknown(simulator):
    prediction = make_prediction(sending_since=timezone.now(), submit_attempts=1)

    prediction = step(prediction)

    assert prediction.status == "submit_unknown"
    assert "stopped before the provider answered" in prediction.error
    assert creates(simulator, prediction) == 0


def test_invalid_input_fails_with_the_providers_words(simulator):
    prediction = step(make_prediction(input={"prompt": "x", "num_outputs": 9}))

    assert prediction.status == "failed"
    assert "422" in prediction.error
    assert "num_outputs" in prediction.error


def test_an_unknown_model_fails_with_the_providers_words(simulator):
    prediction = step(make_prediction(model="nobody/nothing"))

    assert prediction.status == "failed"
    assert "404" in prediction.error


def test_a_prediction_canceled_before_sending_is_never_sent(simulator):
    prediction = make_prediction()

    assert prediction.request_cancel()

    prediction.refresh_from_db()
    assert prediction.status == "canceled"
    assert Prediction.claim_due(limit=10) == []
    assert creates(simulator, prediction) == 0


@pytest.mark.django_db(transaction=True)
def test_a_cancel_requested_while_sending_is_sent_once_created(simulator):
    simulator.faults.slow_rate = 1.0
    simulator.faults.slow_seconds = 0.5
    simulator.faults.endpoints = ["create"]
    prediction = make_prediction(model="darkroom/slow")
    sending = threading.Thread(target=step, args=(prediction,))
    sending.start()
    wait_for(lambda: Prediction.objects.get(pk=prediction.pk).sending_since is not None)

    assert prediction.request_cancel()
    sending.join()
    assert Prediction.objects.get(pk=prediction.pk).status == "starting"

    prediction = step(prediction)
    assert prediction.status == "canceled"
    assert creates(simulator, prediction) == 1


def test_a_refused_cancel_is_dropped_and_the_prediction_followed_to_its_end(settings):
    with Simulator(token="another-key") as strict:  # refuses our key: 401, a permanent answer
        configure_provider(settings, "simulator", base_url=strict.base_url)
        prediction = make_prediction(status="processing", provider_id="abc123")
        prediction.request_cancel()

        prediction = step(prediction)

    assert prediction.status == "processing"
    assert prediction.cancel_requested_at is None
    assert "refused to cancel" in prediction.last_error
    assert "401" in prediction.last_error
