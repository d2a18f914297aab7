"""The minimal UI: the form explains bad input, a replayed submit creates one prediction, and
the live fragment stops polling once nothing visible can change."""

import uuid

import pytest
from django.urls import reverse, set_script_prefix

from dashboard.paths import path_to
from predictions.models import Prediction

from .conftest import configure_provider, make_output, make_prediction

pytestmark = pytest.mark.django_db


def form_data(**changes) -> dict:
    return {
        "provider": "simulator",
        "model": "black-forest-labs/flux-schnell",
        "prompt": "a teapot on the moon",
        "extra_input": "",
        "request_key": str(uuid.uuid4()),
        **changes,
    }


def test_a_valid_submit_saves_the_prediction_before_anything_is_sent(client):
    response = client.post("/predictions/new", form_data(extra_input='{"num_outputs": 2}'))

    prediction = Prediction.objects.get()
    assert response.status_code == 302
    assert response["Location"] == prediction.get_absolute_url()
    assert prediction.status == "submitting"
    assert prediction.input == {"num_outputs": 2, "prompt": "a teapot on the moon"}


def test_a_double_clicked_submit_creates_one_prediction(client):
    data = form_data()

    first = client.post("/predictions/new", data)
    second = client.post("/predictions/new", data)

    assert Prediction.objects.count() == 1
    assert first["Location"] == second["Location"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"model": "flux-schnell"}, "Give the model as owner/name"),
        ({"model": "a/b/c"}, "Give the model as owner/name"),
        ({"prompt": ""}, "Enter a prompt"),
        ({"prompt": "   "}, "Enter a prompt"),
        ({"provider": "openai"}, "Unknown provider openai."),
        ({"extra_input": "{num_outputs: 2}"}, "This is not valid JSON"),
        ({"extra_input": "[1, 2]"}, "Give a JSON object"),
    ],
)
def test_bad_input_gets_a_clear_message_and_saves_nothing(client, changes, message):
    response = client.post("/predictions/new", form_data(**changes))

    assert response.status_code == 200
    assert message in response.content.decode()
    assert not Prediction.objects.exists()


def test_a_provider_without_a_key_says_which_variable_to_set(client, settings):
    configure_provider(settings, "replicate", token="")

    response = client.post("/predictions/new", form_data(provider="replicate"))

    assert "set REPLICATE_API_TOKEN" in response.content.decode()
    assert not Prediction.objects.exists()


def test_the_demo_banner_shows_while_the_simulator_is_the_provider(client):
    assert b"Demo provider" in client.get("/").content


def test_a_running_prediction_fragment_keeps_polling(client):
    prediction = make_prediction(status="processing", logs="Using seed: 7\n")

    response = client.get(prediction.get_absolute_url(), headers={"HX-Request": "true"})

    body = response.content.decode()
    assert 'hx-trigger="every 1s"' in body
    assert "Processing" in body
    # The log viewer fetches the log by itself, from a cursor (tests/test_logs.py).
    assert "Using seed: 7" not in body
    assert "<html" not in body


def test_a_finished_prediction_fragment_renders_without_its_trigger(client):
    prediction = make_prediction(status="succeeded", output=["http://127.0.0.1:1/out-0.webp"])
    output = make_output(prediction)

    response = client.get(prediction.get_absolute_url(), headers={"HX-Request": "true"})

    body = response.content.decode()
    assert "hx-trigger" not in body
    assert 'id="prediction-live"' in body
    assert f"/outputs/{output.pk}/thumb" in body


def test_an_unchanged_fragment_is_answered_304_without_rendering(client, django_assert_num_queries):
    prediction = make_prediction(status="processing")
    url = prediction.get_absolute_url()
    etag = client.get(url, headers={"HX-Request": "true"})["ETag"]

    # User and membership (the session is cached), then one look at the prediction's updated_at.
    with django_assert_num_queries(3):
        response = client.get(url, headers={"HX-Request": "true", "If-None-Match": etag})

    assert response.status_code == 304
    prediction.apply_remote({"id": "abc", "status": "processing", "logs": "more"})
    assert client.get(url, headers={"HX-Request": "true", "If-None-Match": etag}).status_code == 200


def test_the_full_page_and_the_fragment_render_the_same_live_markup(client):
    prediction = make_prediction(status="failed", error="CUDA out of memory")

    page = client.get(prediction.get_absolute_url()).content.decode()
    fragment = client.get(prediction.get_absolute_url(), headers={"HX-Request": "true"})

    assert fragment.content.decode().strip() in page


def test_cancel_on_a_running_prediction_is_recorded_and_shown(client):
    prediction = make_prediction(status="processing", provider_id="abc")

    response = client.post(f"/predictions/{prediction.pk}/cancel", follow=True)

    prediction.refresh_from_db()
    assert prediction.cancel_requested_at is not None
    assert "Cancel requested" in response.content.decode()


def test_a_missing_prediction_is_404(client):
    assert client.get("/predictions/999999/").status_code == 404


@pytest.mark.parametrize("prefix", ["/", "/darkroom/"])
def test_a_path_for_the_rows_of_a_list_is_the_one_reverse_gives(prefix):
    views = [
        ("predictions:detail", [7]),
        ("outputs:star", [12]),
        ("outputs:media", [12, "thumb"]),
        ("outputs:shared_media", ["a-Share_token", 12, "download"]),
        ("predictions:index", []),
    ]
    set_script_prefix(prefix)
    try:
        for name, args in views:
            # Other ids the second time: from the path cached by the first.
            for shift in (0, 1):
                ids = [arg + shift if type(arg) is int else arg for arg in args]
                assert path_to(name, *ids) == reverse(name, args=ids)
    finally:
        set_script_prefix("/")
