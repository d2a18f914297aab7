"""Input that used to give a 500, or to store what breaks a page later: refused with a clear
message before anything is saved, on the New images form and the API alike. Provider answers a
database cannot store are stored sanitised, and a prediction with thousands of outputs shows a
page's worth of them."""

import html
import json
import time
import uuid

import httpx
import pytest
from django.test import Client

from accounts.models import Role
from api.models import ApiToken
from outputs.models import Output
from predictions.client import ProviderClient, json_object
from predictions.models import Prediction
from predictions.submissions import Refused, save_predictions

from .conftest import make_prediction, make_team
from .test_webhooks import signature

pytestmark = pytest.mark.django_db

SCHNELL = "black-forest-labs/flux-schnell"
DEV = "black-forest-labs/flux-dev"


def nested(depth: int) -> str:
    """A JSON object whose "layers" input nests arrays until the whole is `depth` levels deep."""
    return '{"layers": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}"


def submit(client: Client, model: str = SCHNELL, **changes):
    data = {
        "provider": "simulator",
        "model": model,
        "prompt": "a teapot on the moon",
        "request_key": str(uuid.uuid4()),
        **changes,
    }
    return client.post("/predictions/new", data)


def page_text(response) -> str:
    return html.unescape(response.content.decode())


# --- The New images form ------------------------------------------------------------------------


UNSTORABLE = [
    ('{"style": "a\\u0000b"}', "style: Null characters are not allowed."),
    ('{"style": "\\ud800"}', "style: Text must be valid Unicode"),
    ('{"guidance": 1e400}', "guidance: Give a finite number"),
    ('{"steps": 1' + "0" * 30 + "}", "steps: Give a whole number within"),
    (nested(2000), "nested too deeply"),
    (nested(600), "layers: Nested more than 16 levels deep"),
    ('{"\\ud800": null}', "\\ud800: Text must be valid Unicode"),
    ('{"a\\u0000b": 1}', "a\\x00b: Null characters are not allowed."),
]


@pytest.mark.parametrize("model", [SCHNELL, "acme/painter"])
@pytest.mark.parametrize(("text", "message"), UNSTORABLE)
def test_other_inputs_a_database_or_a_page_cannot_hold_are_a_form_error(
    client, model, text, message
):
    response = submit(client, model, extra_input=text)

    assert response.status_code == 200
    assert message in page_text(response)
    assert not Prediction.objects.exists()


def test_a_comparison_of_a_number_too_long_for_any_prediction_is_refused_in_words(client):
    response = client.get("/compare/", {"p": ["1" * 5000, "2"]})

    assert response.status_code in (200, 400)
    assert "is not a prediction number" in page_text(response)


def test_a_provider_status_that_is_not_text_is_an_unknown_status_not_a_crash(team):
    prediction = make_prediction(team=team, status="processing", provider_id="abc123")

    assert prediction.apply_remote({"id": "abc123", "status": ["succeeded"]}) is False

    prediction.refresh_from_db()
    assert prediction.status == "processing"
    assert "unknown status ['succeeded']" in prediction.last_error


@pytest.mark.parametrize("depth", [600, 900])
def test_a_deep_input_stored_before_the_limit_still_shows_its_page(client, team, member, depth):
    prediction = make_prediction(team=team, submitted_by=member, status="succeeded")
    # Written past the form's checks, as rows saved before INPUT_MAX_DEPTH were.
    Prediction.objects.filter(pk=prediction.pk).update(input=json.loads(nested(depth)))

    response = client.get(f"/predictions/{prediction.pk}/")

    assert response.status_code == 200
    assert "layers" in page_text(response)


def test_an_input_as_deep_as_the_limit_is_sent(client):
    response = submit(client, "acme/painter", extra_input=nested(16))

    assert response.status_code == 302
    layers = Prediction.objects.get().input["layers"]
    depth = 1
    while layers:
        layers, depth = layers[0], depth + 1
    assert depth == 15  # the input object holds the outermost of 15 nested arrays


def test_an_input_larger_than_the_limit_is_refused_before_it_is_read(client, settings):
    settings.INPUT_MAX_BYTES = 1000
    response = submit(client, "acme/painter", extra_input=json.dumps({"notes": "x" * 2000}))

    assert "at most 1,000 bytes" in page_text(response)
    assert not Prediction.objects.exists()


def test_a_whole_input_larger_than_the_limit_is_refused(client, settings):
    settings.INPUT_MAX_BYTES = 1000
    extra = json.dumps({"notes": "x" * 600})
    response = submit(client, "acme/painter", prompt="y" * 600, extra_input=extra)

    assert "The input holds" in page_text(response)
    assert "at most 1,000 bytes" in page_text(response)
    assert not Prediction.objects.exists()


def test_text_longer_than_the_limit_is_refused(client, settings):
    settings.INPUT_MAX_STRING = 100
    response = submit(client, "acme/painter", extra_input=json.dumps({"notes": "x" * 101}))

    assert "notes: Text is limited to 100 characters (this one has 101)." in page_text(response)
    assert not Prediction.objects.exists()


def test_a_form_sent_again_after_switching_teams_is_explained_and_sends_nothing(
    client, member, team
):
    other = make_team("Other studio")
    other.memberships.create(user=member, role=Role.MEMBER)
    client.post("/teams/switch", {"team": team.pk})
    key = str(uuid.uuid4())
    assert submit(client, request_key=key).status_code == 302
    first = Prediction.objects.get()
    client.post("/teams/switch", {"team": other.pk})

    response = submit(client, request_key=key)

    assert response.status_code == 200
    body = page_text(response)
    assert "This form was sent from another team" in body
    assert list(Prediction.objects.all()) == [first]
    # The form comes back with a key of its own: Generate now sends it to this team.
    fresh = body.split('name="request_key" value="')[1].split('"')[0]
    assert fresh != key
    assert submit(client, request_key=fresh).status_code == 302
    assert Prediction.objects.filter(team=other).count() == 1


def test_a_key_another_team_used_is_refused_not_an_integrity_error(member, team):
    other = make_team("Other studio")
    key = uuid.uuid4()
    make_prediction(team=other, request_key=key)
    fields = {"provider": "simulator", "model": SCHNELL, "input": {"prompt": "x"}}

    with pytest.raises(Refused) as refused:
        save_predictions(team, member, key, [fields])

    assert refused.value.status == 409
    assert "another team" in refused.value.why
    assert not Prediction.objects.filter(team=team).exists()


def test_run_again_with_a_key_another_team_used_says_so(client, team):
    other = make_team("Other studio")
    key = uuid.uuid4()
    make_prediction(team=other, request_key=key)
    original = make_prediction(team=team, status="succeeded")

    response = client.post(f"/predictions/{original.pk}/again", {"request_key": str(key)})

    assert response.status_code == 302
    assert "another team" in page_text(client.get(response.url))
    assert Prediction.objects.filter(team=team).count() == 1


# --- URLs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["/invite/%00/", "/predictions/1%00/", "/s/%00/", "/gallery/?q=a%00b", "/?model=%00"]
)
def test_a_null_character_in_a_url_is_a_400(client, url):
    response = client.get(url)

    assert response.status_code == 400


def test_a_null_character_in_an_api_url_is_a_json_400():
    response = Client().get("/api/v1/predictions/%00")

    assert response.status_code == 400
    assert response.json()["status"] == 400


# --- The API ----------------------------------------------------------------------------------


def api_create(team, member, body: dict | str, path: str = f"/api/v1/models/{SCHNELL}/predictions"):
    token = ApiToken.create(team, member, "tests")[1]
    content = body if isinstance(body, str) else json.dumps(body)
    return Client(headers={"Authorization": f"Bearer {token}"}).post(
        path, content, content_type="application/json"
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"input": {"prompt": "\\ud800"}}', "input.prompt"),
        ('{"input": {"prompt": "a", "style": "\\udfff"}}', "input.style"),
        ('{"input": {"prompt": "a", "guidance": 1e400}}', "input.guidance"),
        ('{"input": {"prompt": "a", "num_outputs": 1' + "0" * 30 + "}}", "input.num_outputs"),
        ('{"input": {"prompt": "a", "layers": ' + nested(600)[11:] + "}", "input.layers"),
    ],
)
def test_the_api_refuses_what_the_form_refuses_with_a_422(team, member, body, field):
    response = api_create(team, member, body)

    assert response.status_code == 422, response.content
    assert response.json()["invalid_fields"][0]["field"] == field
    assert not Prediction.objects.exists()


def test_the_api_refuses_a_number_beyond_a_float_for_a_number_input(team, member):
    body = '{"input": {"prompt": "a", "guidance": 1' + "0" * 400 + "}}"
    response = api_create(team, member, body, f"/api/v1/models/{DEV}/predictions")

    assert response.status_code == 422, response.content
    assert response.json()["invalid_fields"][0]["field"] == "input.guidance"


def test_the_api_applies_the_size_limit(team, member, settings):
    settings.INPUT_MAX_BYTES = 500
    response = api_create(team, member, {"input": {"prompt": "a", "notes": "x" * 600}})

    assert response.status_code == 422
    assert "at most 500 bytes" in response.json()["detail"]


# --- Provider answers a database cannot store --------------------------------------------------


def send_due() -> None:
    """Do every step that is due, as the dispatcher and a worker would."""
    for pk, claim in Prediction.claim_due(limit=100):
        Prediction.take(pk, claim).advance(ProviderClient())


def run_to_the_end(prediction: Prediction, attempts: int = 200) -> Prediction:
    """Advance `prediction` step by step (each due at once) until it ends."""
    for _ in range(attempts):
        Prediction.objects.filter(pk=prediction.pk, next_poll_at__isnull=False).update(
            next_poll_at="2000-01-01T00:00:00Z"
        )
        send_due()
        prediction.refresh_from_db()
        if not prediction.is_running and prediction.next_poll_at is None:
            return prediction
    raise AssertionError(f"still {prediction.status} after {attempts} steps")


BAD_ANSWER = {
    "logs": "step 1\u0000 of \ud800 2\n",
    "error": "bad\u0000",
    "version": "v\u0000",
    "metrics": {"predict_time": "abc", "image_count": [1], "total_time": 1.5, "x\u0000": 2},
    "urls": {"get": "https://example.com/\u0000"},
}


def test_a_provider_answer_with_unstorable_text_is_stored_sanitised_and_advances(
    simulator, transactional_db
):
    simulator.faults.bad_payload = json.dumps(BAD_ANSWER)
    prediction = make_prediction()

    prediction = run_to_the_end(prediction)

    assert prediction.status == "succeeded"
    assert prediction.logs == "step 1\ufffd of \ufffd 2\n"
    assert prediction.error == "bad\ufffd"
    assert prediction.version == "v\ufffd"
    assert prediction.metrics == {"total_time": 1.5, "x\ufffd": 2}
    assert (prediction.predict_time, prediction.image_count) == (None, None)
    assert prediction.urls == {"get": "https://example.com/\ufffd"}


def test_batched_polls_store_unstorable_answers_sanitised():
    make_prediction(status="starting", provider_id="p1")
    make_prediction(status="starting", provider_id="p2")
    first, second = Prediction.claim_batch(limit=10)
    answer = {"status": "processing", **BAD_ANSWER, "output": ["https://x/\ud800.png"]}

    Prediction.store_polls(
        [(p, p.remote_fields({"id": p.provider_id, **answer})) for p in (first, second)]
    )

    for prediction in (first, second):
        prediction.refresh_from_db()
        assert prediction.status == "processing"
        assert prediction.logs == "step 1\ufffd of \ufffd 2\n"
        assert prediction.output == ["https://x/\ufffd.png"]
        assert prediction.metrics == {"total_time": 1.5, "x\ufffd": 2}


def test_a_deeply_nested_output_is_stored_cut_off():
    make_prediction(status="starting", provider_id="p1")
    [claimed] = Prediction.claim_batch(limit=10)
    deep: list = []
    for _ in range(500):
        deep = [deep]

    claimed.apply_remote({"id": "p1", "status": "succeeded", "output": deep})

    claimed.refresh_from_db()
    assert claimed.status == "succeeded"
    depth, value = 0, claimed.output
    while isinstance(value, list) and value:
        value, depth = value[0], depth + 1
    assert depth < 64


def test_a_failed_poll_whose_message_holds_a_nul_is_recorded(simulator):
    from predictions.client import ProviderError

    prediction = make_prediction(status="processing", provider_id="p1")
    [claimed] = Prediction.claim_batch(limit=10)
    Prediction.store_poll_errors([(claimed, ProviderError("bad\u0000 \ud800", retryable=True))])
    claimed.poll_failed(ProviderError("worse\u0000", retryable=True))

    prediction.refresh_from_db()
    assert prediction.last_error == "worse\ufffd"
    assert prediction.consecutive_errors == 2


# --- Thousands of outputs ---------------------------------------------------------------------


def test_a_prediction_with_thousands_of_outputs_shows_a_pages_worth(client, team, member):
    urls = [f"https://replicate.delivery/many/{n}.png" for n in range(2000)]
    prediction = make_prediction(team=team, status="succeeded", output=urls, submitted_by=member)
    Output.objects.bulk_create(
        Output(team=team, prediction=prediction, index=n, source_url=url)
        for n, url in enumerate(urls)
    )

    gallery = page_text(client.get("/gallery/"))
    page = page_text(client.get(f"/predictions/{prediction.pk}/"))
    studio = page_text(client.get("/new/"))
    other = make_prediction(team=team, status="succeeded")
    compare = page_text(client.get("/compare/", {"p": [prediction.pk, other.pk]}))

    assert gallery.count('id="tile-') == 12
    assert "and 1,988 more" in gallery
    assert page.count('id="tile-') == 100
    assert "and 1,900 more outputs" in page
    assert studio.count('id="tile-') == 12
    assert "and 1,988 more" in studio
    assert compare.count('<th scope="row">Image ') == 12


def test_the_simulators_bad_payload_fault_takes_a_json_object(simulator):
    control = f"{simulator.url}/_simulator/faults"

    refused = httpx.post(control, json={"bad_payload": "[1]"})
    taken = httpx.post(control, json={"bad_payload": json.dumps({"logs": "a\u0000"})})

    assert refused.status_code == 400
    assert taken.status_code == 200
    assert json.loads(simulator.faults.bad_payload) == {"logs": "a\u0000"}


# --- Found by the fuzzing drill ------------------------------

DEEP_ANSWER = b'{"id": "abc123", "output": ' + b"[" * 3000 + b"]" * 3000 + b"}"


def test_a_provider_answer_nested_past_the_json_parser_is_a_malformed_answer():
    assert json_object(httpx.Response(200, content=DEEP_ANSWER)) == {}


def test_a_signed_webhook_nested_past_the_json_parser_is_refused(simulator, team):
    prediction = make_prediction(team=team, status="processing", provider_id="abc123")
    timestamp = int(time.time())
    headers = {
        "webhook-id": "msg_deep",
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(
            simulator.webhook_secret, "msg_deep", timestamp, DEEP_ANSWER
        ),
    }

    response = Client(raise_request_exception=False).post(
        f"/webhooks/predictions/{prediction.pk}/",
        DEEP_ANSWER,
        content_type="application/json",
        headers=headers,
    )

    assert response.status_code == 400
