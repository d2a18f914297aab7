"""Honest deadlines: counted from the provider's acceptance, a last poll before a timeout, and a
cancel sent to the provider (recorded, retried a few times) for whatever is timed out."""

from datetime import timedelta

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from dashboard.settings import env_seconds_by_model
from predictions.models import TIMEOUT_CANCEL_ATTEMPTS, Prediction

from .conftest import make_prediction, wait_for, wait_until_finished
from .test_submit import step


def remote_status(simulator, prediction: Prediction) -> str:
    return simulator.engine.get(prediction.provider_id, "")["status"]


def cancels(simulator) -> int:
    return simulator.stats()["requests_by_endpoint"].get("cancel", 0)


def backdate_acceptance(prediction: Prediction, seconds: float) -> None:
    Prediction.objects.filter(pk=prediction.pk).update(
        accepted_at=timezone.now() - timedelta(seconds=seconds)
    )


def stored(prediction: Prediction) -> Prediction:
    return Prediction.objects.get(pk=prediction.pk)


def refuse_cancels(simulator) -> None:
    """Answer every cancel 429: refused before the provider acts, so the job runs on."""
    simulator.faults.rate_limit_rate = 1.0
    simulator.faults.retry_after = 0.1
    simulator.faults.endpoints = ["cancel"]


def timed_out_slow_prediction(settings, simulator) -> Prediction:
    """A prediction of darkroom/slow (about 30 s) timed out by workers a second after it was
    accepted."""
    settings.POLL_DEADLINE = 1
    simulator.engine.speed = 2
    prediction = make_prediction(model="darkroom/slow")
    wait_until_finished(prediction)
    assert prediction.status == "timed_out"
    return prediction


# --- When the deadline starts --------------------------------------------------------------


@pytest.mark.django_db
def test_the_deadline_counts_from_the_providers_created_at_not_the_submit(settings, simulator):
    settings.POLL_DEADLINE = 60
    prediction = make_prediction(submitted_at=timezone.now() - timedelta(minutes=40))

    prediction = step(prediction)

    assert prediction.status == "starting"
    assert prediction.accepted_at == prediction.created_at
    assert prediction.created_at > timezone.now() - timedelta(seconds=5)
    assert not prediction.past_deadline()


@pytest.mark.django_db
def test_a_create_answer_without_created_at_counts_from_when_it_came():
    prediction = make_prediction(submitted_at=timezone.now() - timedelta(minutes=40))
    [(pk, claim)] = Prediction.claim_due(limit=10)
    before = timezone.now()

    assert Prediction.take(pk, claim).apply_remote({"id": "abc123", "status": "starting"})

    prediction.refresh_from_db()
    assert before <= prediction.accepted_at <= timezone.now()
    assert prediction.created_at is None


@pytest.mark.django_db
def test_a_providers_created_at_before_the_submit_counts_from_the_submit():
    submitted = timezone.now() - timedelta(minutes=1)
    prediction = make_prediction(submitted_at=submitted)
    [(pk, claim)] = Prediction.claim_due(limit=10)

    Prediction.take(pk, claim).apply_remote(
        {"id": "abc123", "status": "starting", "created_at": "2001-01-01T00:00:00Z"}
    )

    prediction.refresh_from_db()
    assert prediction.accepted_at == submitted


@pytest.mark.usefixtures("worker", "scheduler")
def test_a_late_accepted_create_is_polled_and_ends_as_the_provider_says(settings, simulator):
    settings.POLL_DEADLINE = 60
    prediction = make_prediction(submitted_at=timezone.now() - timedelta(minutes=40))

    wait_until_finished(prediction)

    assert prediction.status == "succeeded"
    assert prediction.polls >= 1
    assert prediction.output_urls
    assert cancels(simulator) == 0


# --- The last poll ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_prediction_past_its_deadline_that_has_ended_ends_as_the_provider_says(
    settings, simulator
):
    settings.POLL_DEADLINE = 60
    prediction = step(make_prediction())
    wait_for(lambda: remote_status(simulator, prediction) == "succeeded")
    backdate_acceptance(prediction, 120)

    prediction = step(prediction)

    assert prediction.status == "succeeded"
    assert prediction.polls == 1
    assert prediction.output_urls
    assert cancels(simulator) == 0


@pytest.mark.django_db
def test_a_prediction_past_its_deadline_is_polled_once_more_then_timed_out(settings, simulator):
    settings.POLL_DEADLINE = 60
    simulator.engine.speed = 1  # darkroom/slow then runs about a minute
    prediction = step(make_prediction(model="darkroom/slow"))
    backdate_acceptance(prediction, 120)

    prediction = step(prediction)

    assert prediction.status == "timed_out"
    assert prediction.polls == 1
    assert "after 1 minutes (last seen: " in prediction.error
    assert "asked the provider to cancel it" in prediction.error
    # The cancel is the next step, due at once: the timeout never waits for it.
    assert prediction.next_poll_at <= timezone.now()
    assert cancels(simulator) == 0

    prediction = step(prediction)

    assert remote_status(simulator, prediction) == "canceled"
    assert prediction.status == "timed_out"
    assert prediction.timeout_cancel_attempts == 1
    assert prediction.timeout_cancel_answer == "The provider answered: canceled."
    assert prediction.next_poll_at is None


@pytest.mark.django_db
def test_a_last_poll_that_fails_still_times_out_and_quotes_the_error(settings, simulator):
    settings.POLL_DEADLINE = 60
    simulator.engine.speed = 1
    prediction = step(make_prediction(model="darkroom/slow"))
    backdate_acceptance(prediction, 120)
    simulator.faults.server_error_rate = 1.0
    simulator.faults.endpoints = ["get"]

    prediction = step(prediction)

    assert prediction.status == "timed_out"
    assert "last error: Demo (simulator) had a server error" in prediction.error


# --- The cancel ------------------------------------------------------------------------------


@pytest.mark.usefixtures("worker", "scheduler")
def test_a_timed_out_prediction_is_canceled_at_the_provider_and_the_cancel_is_recorded(
    settings, simulator, client
):
    prediction = timed_out_slow_prediction(settings, simulator)

    wait_for(lambda: stored(prediction).timeout_cancel_answer)

    prediction.refresh_from_db()
    assert prediction.last_polled_at >= prediction.accepted_at + timedelta(seconds=1)
    assert remote_status(simulator, prediction) == "canceled"
    assert cancels(simulator) == 1
    assert prediction.timeout_cancel_attempts == 1
    assert prediction.timeout_cancel_sent_at >= prediction.completed_at
    assert prediction.timeout_cancel_answer == "The provider answered: canceled."
    page = client.get(prediction.get_absolute_url()).content.decode()
    assert "Cancel at the deadline" in page
    assert f"POST /predictions/{prediction.provider_id}/cancel" in page
    assert "The provider answered: canceled." in page


@pytest.mark.usefixtures("worker", "scheduler")
def test_a_failed_cancel_is_tried_again_until_the_provider_answers(settings, simulator):
    refuse_cancels(simulator)
    prediction = timed_out_slow_prediction(settings, simulator)

    wait_for(lambda: stored(prediction).timeout_cancel_answer)
    assert remote_status(simulator, prediction) == "processing"
    simulator.faults.rate_limit_rate = 0.0
    wait_for(lambda: remote_status(simulator, prediction) == "canceled")
    wait_for(lambda: stored(prediction).next_poll_at is None)

    prediction.refresh_from_db()
    assert prediction.status == "timed_out"
    assert prediction.timeout_cancel_attempts >= 2
    assert prediction.timeout_cancel_answer == "The provider answered: canceled."


@pytest.mark.usefixtures("worker", "scheduler")
def test_a_cancel_that_keeps_failing_is_given_up_and_the_prediction_stays_timed_out(
    settings, simulator
):
    settings.POLL_MAX_INTERVAL = 0.3  # retries at most 0.6 s apart
    refuse_cancels(simulator)
    prediction = timed_out_slow_prediction(settings, simulator)

    wait_for(lambda: stored(prediction).next_poll_at is None)

    prediction.refresh_from_db()
    assert prediction.status == "timed_out"
    assert prediction.timeout_cancel_attempts == TIMEOUT_CANCEL_ATTEMPTS
    assert cancels(simulator) == TIMEOUT_CANCEL_ATTEMPTS
    assert "rate limiting requests (429)" in prediction.timeout_cancel_answer
    assert f"gave up after {TIMEOUT_CANCEL_ATTEMPTS} attempts" in prediction.timeout_cancel_answer
    assert remote_status(simulator, prediction) == "processing"


# --- Deadlines per model ---------------------------------------------------------------------


@pytest.mark.usefixtures("worker", "scheduler")
def test_a_slow_models_own_deadline_applies_and_others_keep_the_default(settings, simulator):
    settings.POLL_DEADLINE = 0.5
    settings.POLL_DEADLINES = {"darkroom/slow": 3}
    # flux-dev runs at least 2.5 s, darkroom/slow at least 30 s: on a loaded machine a last
    # poll late by a second or two still finds each running, so each is timed out.
    simulator.engine.speed = 1
    quick = make_prediction("quick", model="black-forest-labs/flux-dev")
    slow = make_prediction("slow", model="darkroom/slow")

    wait_until_finished(quick, slow)

    assert (quick.status, slow.status) == ("timed_out", "timed_out")
    assert "after 0.01 minutes" in quick.error
    assert "after 0.05 minutes" in slow.error
    assert slow.completed_at - slow.accepted_at >= timedelta(seconds=3)


def test_per_model_deadlines_are_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("POLL_DEADLINES", " acme/video=7200, acme/upscale = 3600.5 ")

    assert env_seconds_by_model("POLL_DEADLINES") == {"acme/video": 7200, "acme/upscale": 3600.5}


@pytest.mark.parametrize("value", ["acme/video", "video=60", "acme/video=soon", "acme/video=0"])
def test_a_malformed_per_model_deadline_stops_start_up(monkeypatch, value):
    monkeypatch.setenv("POLL_DEADLINES", value)

    with pytest.raises(ImproperlyConfigured, match="POLL_DEADLINES"):
        env_seconds_by_model("POLL_DEADLINES")
