"""Submit in the browser's way, let real workers do the rest, read the result from the database."""

import uuid

import pytest

from predictions.models import Prediction
from predictions.tasks import wake_dispatcher

from .conftest import make_prediction, wait_for, wait_until_finished

pytestmark = pytest.mark.usefixtures("worker", "scheduler")


def submit(
    client, prompt: str, model: str = "black-forest-labs/flux-schnell", **extra
) -> Prediction:
    response = client.post(
        "/predictions/new",
        {
            "provider": "simulator",
            "model": model,
            "prompt": prompt,
            "request_key": uuid.uuid4(),
            **extra,
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    return Prediction.objects.get(pk=int(response["Location"].strip("/").split("/")[-1]))


def test_a_submitted_prediction_succeeds_with_logs_metrics_and_outputs(client, simulator):
    prediction = submit(client, "a red fox in snow", extra_input='{"num_outputs": 2}')

    wait_until_finished(prediction)

    assert prediction.status == "succeeded"
    assert prediction.provider_id
    assert "100%|" in prediction.logs
    assert prediction.predict_time > 0
    assert prediction.image_count == 2
    assert len(prediction.output_urls) == 2
    assert all(url.startswith(simulator.url) for url in prediction.output_urls)
    assert prediction.created_at <= prediction.started_at <= prediction.completed_at
    assert prediction.polls >= 1
    assert prediction.next_poll_at is None


def test_a_canceled_prediction_ends_canceled(client, simulator):
    simulator.engine.speed = 2  # darkroom/slow then runs about 30 s
    prediction = submit(client, "a very slow painting", model="darkroom/slow")
    wait_for(lambda: Prediction.objects.get(pk=prediction.pk).status == "processing")

    client.post(f"/predictions/{prediction.pk}/cancel")

    wait_until_finished(prediction)
    assert prediction.status == "canceled"


def test_a_failing_model_ends_failed_with_its_error(client):
    prediction = submit(client, "anything", model="darkroom/fails")

    wait_until_finished(prediction)

    assert prediction.status == "failed"
    assert prediction.error


def test_many_predictions_all_finish_and_each_is_created_once(simulator):
    predictions = [make_prediction(f"tile {n}") for n in range(12)]

    wake_dispatcher()
    wait_until_finished(*predictions, timeout=30)

    assert {p.status for p in predictions} == {"succeeded"}
    assert all(simulator.stats()["creates_by_prompt"][p.prompt] == 1 for p in predictions)
