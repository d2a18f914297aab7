"""Faults at the provider never lose a prediction and never send a paid create twice."""

import pytest

from predictions.models import Prediction

from .conftest import make_prediction, wait_for, wait_until_finished


def created_once_each(simulator, predictions) -> bool:
    creates = simulator.stats()["creates_by_prompt"]
    return all(creates.get(p.prompt, 0) <= 1 for p in predictions)


@pytest.mark.usefixtures("worker", "scheduler")
def test_a_burst_of_429s_delays_predictions_but_all_succeed(simulator):
    simulator.faults.rate_limit_burst = 8
    simulator.faults.retry_after = 0.3
    predictions = [make_prediction(f"rate limited {n}") for n in range(4)]

    wait_until_finished(*predictions, timeout=30)

    assert {p.status for p in predictions} == {"succeeded"}
    assert created_once_each(simulator, predictions)
    assert simulator.stats()["responses_by_status"].get("429", 0) >= 8


@pytest.mark.usefixtures("worker", "scheduler")
def test_server_errors_while_polling_are_retried_until_the_prediction_ends(simulator):
    simulator.faults.server_error_rate = 0.5
    simulator.faults.endpoints = ["get"]
    predictions = [make_prediction(f"flaky {n}") for n in range(4)]

    wait_until_finished(*predictions, timeout=30)

    assert {p.status for p in predictions} == {"succeeded"}
    assert created_once_each(simulator, predictions)


@pytest.mark.usefixtures("worker", "scheduler")
def test_malformed_and_stalled_polls_are_retried_until_the_prediction_ends(simulator):
    simulator.faults.malformed_rate = 0.3
    simulator.faults.stall_rate = 0.2
    simulator.faults.endpoints = ["get"]
    predictions = [make_prediction(f"garbled {n}") for n in range(4)]

    wait_until_finished(*predictions, timeout=40)

    assert {p.status for p in predictions} == {"succeeded"}
    assert created_once_each(simulator, predictions)


@pytest.mark.usefixtures("worker", "scheduler")
def test_faults_on_every_endpoint_lose_nothing_and_duplicate_no_create(simulator):
    faults = simulator.faults
    faults.rate_limit_rate = 0.15
    faults.retry_after = 0.2
    faults.server_error_rate = 0.15
    faults.malformed_rate = 0.1
    faults.stall_rate = 0.05
    predictions = [make_prediction(f"storm {n}") for n in range(10)]

    wait_until_finished(*predictions, timeout=60)

    assert Prediction.objects.count() == 10
    assert created_once_each(simulator, predictions)
    for prediction in predictions:
        created = simulator.stats()["creates_by_prompt"].get(prediction.prompt, 0)
        if prediction.status == "succeeded":
            assert created == 1
        else:
            # The only other ends: the create's answer was lost, or it was refused every time.
            assert prediction.status in {"submit_unknown", "failed"}, prediction.error
            assert prediction.error


def test_a_worker_killed_mid_poll_loses_no_prediction(simulator, worker_process, scheduler):
    simulator.faults.slow_rate = 1.0
    simulator.faults.slow_seconds = 0.5
    simulator.faults.endpoints = ["get"]
    predictions = [
        make_prediction(f"survivor {n}", model="black-forest-labs/flux-dev") for n in range(6)
    ]
    first = worker_process()
    wait_for(
        lambda: (
            not Prediction.objects.filter(provider_id="").exists()
            and Prediction.objects.filter(polls__gt=0).count() >= 3
        ),
        timeout=60,  # the worker process starts first, in seconds on a loaded machine
        message="every create sent and polls under way",
    )

    first.kill()
    worker_process()

    wait_until_finished(*predictions, timeout=60)
    assert {p.status for p in predictions} == {"succeeded"}
    assert created_once_each(simulator, predictions)
