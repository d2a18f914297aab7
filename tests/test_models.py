"""A prediction's transitions: conditional, monotonic, and scheduled by the database."""

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from predictions.models import Prediction, trim_nanoseconds

from .conftest import make_prediction

pytestmark = pytest.mark.django_db

SEED_EXAMPLE = {
    "id": "t2s7f615pdrm40ck09v88sm224",
    "model": "black-forest-labs/flux-schnell",
    "version": "dp-4d0bcc010b3049749a251855f12800be",
    "input": {"prompt": "black forest gateau cake"},
    "logs": "Using seed: 60392\n100%|██████████| 4/4 [00:00<00:00, 14.34it/s]\n",
    "output": ["https://replicate.delivery/yhqm/ET5pE6/out-0.webp"],
    "data_removed": False,
    "error": None,
    "status": "succeeded",
    "created_at": "2024-11-06T17:11:57.619Z",
    "started_at": "2024-11-06T17:11:57.625316416Z",
    "completed_at": "2024-11-06T17:11:58.232302833Z",
    "urls": {
        "cancel": "https://api.replicate.com/v1/predictions/t2s7f615pdrm40ck09v88sm224/cancel",
        "get": "https://api.replicate.com/v1/predictions/t2s7f615pdrm40ck09v88sm224",
    },
    "metrics": {"image_count": 1, "predict_time": 0.606986414},
}


def with_status(status: str, **changes) -> dict:
    return {**SEED_EXAMPLE, "status": status, **changes}


def test_the_seed_documents_example_maps_onto_every_field():
    prediction = make_prediction(status="processing", provider_id=SEED_EXAMPLE["id"])

    assert prediction.apply_remote(SEED_EXAMPLE)

    prediction.refresh_from_db()
    assert prediction.status == "succeeded"
    assert prediction.version == SEED_EXAMPLE["version"]
    assert prediction.logs == SEED_EXAMPLE["logs"]
    assert prediction.output_urls == SEED_EXAMPLE["output"]
    assert prediction.predict_time == pytest.approx(0.606986414)
    assert prediction.image_count == 1
    assert prediction.started_at.microsecond == 625316
    assert prediction.run_time == timedelta(microseconds=606986)
    assert prediction.urls["get"].startswith("https://api.replicate.com")
    assert prediction.next_poll_at is None


def test_a_late_result_never_moves_a_finished_prediction_back():
    prediction = make_prediction(status="processing", provider_id=SEED_EXAMPLE["id"])
    prediction.apply_remote(SEED_EXAMPLE)

    assert not prediction.apply_remote(with_status("processing", logs="stale"))

    prediction.refresh_from_db()
    assert prediction.status == "succeeded"
    assert prediction.logs == SEED_EXAMPLE["logs"]


def test_a_late_starting_result_never_moves_a_processing_prediction_back():
    prediction = make_prediction(status="processing", provider_id=SEED_EXAMPLE["id"])

    assert not prediction.apply_remote(with_status("starting"))
    assert prediction.apply_remote(with_status("processing"))


def test_aborted_is_final():
    prediction = make_prediction(status="processing", provider_id=SEED_EXAMPLE["id"])

    assert prediction.apply_remote(with_status("aborted", output=None))
    assert not prediction.apply_remote(SEED_EXAMPLE)

    prediction.refresh_from_db()
    assert prediction.status == "aborted"
    assert not prediction.is_running


def test_an_unknown_remote_status_is_not_stored_and_counts_as_a_poll_error():
    prediction = make_prediction(status="processing", provider_id=SEED_EXAMPLE["id"])

    assert not prediction.apply_remote(with_status("exploded"))

    prediction.refresh_from_db()
    assert prediction.status == "processing"
    assert prediction.consecutive_errors == 1
    assert "exploded" in prediction.last_error


def test_a_due_prediction_is_claimed_by_one_dispatcher_only():
    prediction = make_prediction()

    first = Prediction.claim_due(limit=10)
    second = Prediction.claim_due(limit=10)

    assert first == [(prediction.pk, 1)]
    assert second == []


def test_a_stale_claim_cannot_take_the_prediction():
    prediction = make_prediction()
    [(pk, claim)] = Prediction.claim_due(limit=10)
    Prediction.objects.filter(pk=pk).update(next_poll_at=timezone.now())
    [(_, newer)] = Prediction.claim_due(limit=10)

    assert Prediction.take(pk, claim) is None
    assert Prediction.take(pk, newer) == prediction


def test_an_expired_lease_is_claimed_again():
    make_prediction()
    Prediction.claim_due(limit=10)
    Prediction.objects.update(next_poll_at=timezone.now() - timedelta(seconds=1))

    assert len(Prediction.claim_due(limit=10)) == 1


def test_a_timed_out_prediction_says_why_and_is_due_for_its_cancel(settings):
    settings.POLL_DEADLINE = 60
    prediction = make_prediction(
        status="processing",
        provider_id="abc",
        last_error="Demo (simulator) did not answer in time (timed out).",
    )
    [(pk, claim)] = Prediction.claim_due(limit=10)

    assert Prediction.take(pk, claim).time_out()

    prediction.refresh_from_db()
    assert prediction.status == "timed_out"
    assert "after 1 minutes" in prediction.error
    assert "last seen: processing" in prediction.error
    assert "did not answer in time" in prediction.error
    assert "asked the provider to cancel it" in prediction.error
    assert prediction.next_poll_at <= timezone.now()


def test_nanosecond_timestamps_are_trimmed_to_microseconds():
    assert trim_nanoseconds("2024-11-06T17:11:58.232302833Z") == "2024-11-06T17:11:58.232302Z"
    assert trim_nanoseconds("2024-11-06T17:11:57.619Z") == "2024-11-06T17:11:57.619Z"
    assert trim_nanoseconds("2024-11-06T17:11:57Z") == "2024-11-06T17:11:57Z"


@pytest.mark.django_db(transaction=True)
def test_concurrent_dispatchers_never_claim_one_prediction_twice():
    for n in range(40):
        make_prediction(f"contended {n}")
    claimed: list[int] = []
    barrier = threading.Barrier(4)

    def dispatch() -> None:
        barrier.wait()
        try:
            for _ in range(5):
                claimed.extend(pk for pk, _ in Prediction.claim_due(limit=7))
        finally:
            connection.close()

    threads = [threading.Thread(target=dispatch) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(claimed) == sorted(Prediction.objects.values_list("pk", flat=True))


def test_a_create_answered_with_an_unknown_first_status_is_still_tracked():
    prediction = make_prediction()
    [(pk, claim)] = Prediction.claim_due(limit=10)
    taken = Prediction.take(pk, claim)
    Prediction.objects.filter(pk=pk).update(sending_since=timezone.now())

    assert taken.apply_remote({"id": "abc123", "status": "queued"})

    prediction.refresh_from_db()
    assert (prediction.status, prediction.provider_id) == ("starting", "abc123")
    assert prediction.sending_since is None


def test_a_create_answer_arriving_after_the_outcome_was_given_up_is_kept():
    prediction = make_prediction()
    [(pk, claim)] = Prediction.claim_due(limit=10)
    slow_sender = Prediction.take(pk, claim)
    prediction.give_up_submit("The worker stopped.")

    assert slow_sender.apply_remote({"id": "abc123", "status": "starting"})

    prediction.refresh_from_db()
    assert (prediction.status, prediction.provider_id, prediction.error) == (
        "starting",
        "abc123",
        "",
    )


def test_a_stale_workers_poll_result_cannot_overwrite_a_newer_claims():
    make_prediction(status="processing", provider_id="abc123")
    [(pk, first)] = Prediction.claim_due(limit=10)
    stale = Prediction.take(pk, first)
    Prediction.objects.filter(pk=pk).update(next_poll_at=timezone.now())
    [(_, second)] = Prediction.claim_due(limit=10)
    fresh = Prediction.take(pk, second)

    assert fresh.apply_remote({"id": "abc123", "status": "processing", "logs": "newer\n"})
    assert not stale.apply_remote({"id": "abc123", "status": "processing", "logs": "older\n"})

    assert Prediction.objects.get(pk=pk).logs == "newer\n"


def test_a_metric_json_cannot_hold_is_dropped_and_the_answer_still_applies():
    prediction = make_prediction(status="processing", provider_id="nan1")

    applied = prediction.apply_remote(
        {
            "id": "nan1",
            "status": "succeeded",
            "metrics": {"predict_time": float("nan"), "image_count": 1, "x": [float("inf")]},
        }
    )

    prediction.refresh_from_db()
    assert applied
    assert prediction.status == "succeeded"
    assert prediction.metrics == {"image_count": 1}
    assert prediction.predict_time is None
