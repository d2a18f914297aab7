"""The New images form: a catalog model's inputs checked before anything is saved, any model with
a JSON input, variations in one click, replays that create nothing, tweak and run again."""

import html
import uuid

import pytest
from django.test import Client

from accounts.models import Role
from predictions.catalog import CATALOG
from predictions.forms import PredictionForm
from predictions.models import Prediction
from predictions.simulator.engine import input_problems

from .conftest import configure_provider, make_prediction, make_team, make_user

pytestmark = pytest.mark.django_db

SCHNELL = "black-forest-labs/flux-schnell"
KONTEXT = "black-forest-labs/flux-kontext-pro"


def form_data(model: str = SCHNELL, **changes) -> dict:
    return {
        "provider": "simulator",
        "model": model,
        "prompt": "a teapot on the moon",
        "request_key": str(uuid.uuid4()),
        **changes,
    }


def page_text(response) -> str:
    return html.unescape(response.content.decode())


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


# --- The form ---------------------------------------------------------------------------------


@pytest.mark.parametrize("model", list(CATALOG))
def test_each_catalog_model_renders_its_own_inputs_with_labels_and_help(client, model):
    response = client.get("/new/", {"model": model})

    body = page_text(response)
    assert response.status_code == 200
    assert f'<input type="hidden" name="model" value="{model}"' in body
    for spec in CATALOG[model].inputs:
        assert f'name="{spec.name}"' in body
        assert f'<label for="id_{spec.name}">{spec.label}' in body
        assert not spec.help or spec.help in body
    others = {spec.name for entry in CATALOG.values() for spec in entry.inputs}
    others -= {spec.name for spec in CATALOG[model].inputs}
    assert not [name for name in others if f'name="{name}"' in body]


def test_the_form_starts_with_flux_schnell_and_its_defaults(client):
    body = page_text(client.get("/new/"))

    assert f'name="model" value="{SCHNELL}"' in body
    assert '<option value="1:1" selected>' in body
    assert 'name="output_quality" value="80"' in body
    assert 'name="request_key"' in body


def test_any_model_mode_asks_for_owner_name_and_a_json_input(client):
    body = page_text(client.get("/new/", {"model": "any"}))

    assert '<input type="text" name="model"' in body
    assert "Input (JSON)" in body
    assert 'name="aspect_ratio"' not in body


def test_the_model_picker_swaps_only_the_inputs_with_htmx(client):
    response = client.get("/new/", {"model": "stability-ai/sdxl"}, headers={"HX-Request": "true"})

    body = response.content.decode()
    assert body.lstrip().startswith('<fieldset id="model-inputs"')
    assert 'name="negative_prompt"' in body
    assert "<html" not in body
    assert 'name="prompt"' not in body
    assert "HX-Request" in response["Vary"]


def test_a_viewer_cannot_open_the_form(team):
    viewer = signed_in(make_user("vic", team, Role.VIEWER))

    assert viewer.get("/new/").status_code == 403


def test_no_catalog_input_shadows_one_of_the_forms_own_fields():
    own = set(PredictionForm.base_fields)

    assert not [s.name for m in CATALOG.values() for s in m.inputs if s.name in own]


@pytest.mark.parametrize("model", list(CATALOG))
def test_every_catalog_default_passes_its_own_validation(team, model):
    form = PredictionForm(form_data(model), team=team)

    for spec in CATALOG[model].inputs:
        if spec.default is not None:
            form.fields[spec.name].clean(form.fields[spec.name].initial)


def test_the_simulator_takes_every_choice_the_catalog_offers():
    for model in CATALOG.values():
        defaults = {spec.name: spec.default for spec in model.inputs if spec.default is not None}
        defaults |= {"prompt": "x", "input_image": "https://x.test/a.png"}
        for spec in model.inputs:
            for choice in spec.choices:
                problems = input_problems({**defaults, spec.name: choice})
                assert problems == [], (model.name, spec.name, choice)


# --- Validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "changes", "message"),
    [
        (SCHNELL, {"num_outputs": "5"}, "Enter a whole number from 1 to 4."),
        (SCHNELL, {"num_outputs": "two"}, "Enter a whole number from 1 to 4."),
        (SCHNELL, {"aspect_ratio": "7:3"}, "“7:3” is not offered by this model: choose one of"),
        (SCHNELL, {"output_format": "gif"}, "choose one of webp, jpg, png."),
        (SCHNELL, {"output_quality": "101"}, "Enter a whole number from 0 to 100."),
        (SCHNELL, {"seed": "-1"}, "Enter a whole number from 0 to 4294967295."),
        (SCHNELL, {"num_inference_steps": "8"}, "Enter a whole number from 1 to 4."),
        (SCHNELL, {"go_fast": "maybe"}, "Choose yes or no."),
        ("black-forest-labs/flux-dev", {"guidance": "11"}, "Enter a number from 0 to 10."),
        ("black-forest-labs/flux-dev", {"image": "not a url"}, "starting with https://"),
        ("black-forest-labs/flux-1.1-pro", {"safety_tolerance": "7"}, "from 1 to 6."),
        (KONTEXT, {}, "Give the web address of the image to edit"),
        (KONTEXT, {"input_image": "ftp://example.com/a.png"}, "starting with https://"),
        (KONTEXT, {"input_image": "https://x.test/a.png", "safety_tolerance": "3"}, "0 to 2."),
        ("stability-ai/sdxl", {"width": "4096"}, "Enter a whole number from 256 to 2048."),
        ("stability-ai/sdxl", {"guidance_scale": "0.5"}, "Enter a number from 1 to 50."),
        (SCHNELL, {"variations": "9"}, "Enter a whole number of variations from 1 to 8."),
        (SCHNELL, {"extra_input": '{"num_outputs": 9}'}, "num_outputs: Enter a whole number"),
        (
            SCHNELL,
            {"num_outputs": "2", "extra_input": '{"num_outputs": 3}'},
            "num_outputs has its own field above: set it there, not here too.",
        ),
        ("someone/upscaler", {"extra_input": "{scale: 4}"}, "This is not valid JSON"),
        ("someone/upscaler", {"extra_input": '"scale"'}, "Give a JSON object"),
        ("", {}, "Give the model as owner/name"),
    ],
)
def test_bad_input_is_explained_next_to_its_field_and_nothing_is_saved(
    client, model, changes, message
):
    response = client.post("/predictions/new", form_data(model, **changes))

    assert response.status_code == 200
    assert message in page_text(response)
    assert 'class="field has-error"' in response.content.decode()
    assert not Prediction.objects.exists()


def test_a_catalog_submit_sends_typed_inputs_and_leaves_blank_ones_to_the_model(client):
    client.post(
        "/predictions/new",
        form_data(
            "black-forest-labs/flux-dev",
            aspect_ratio="16:9",
            num_outputs="2",
            seed="",
            guidance="3.5",
            go_fast="false",
            image="",
            extra_input='{"megapixels": "0.25"}',
        ),
    )

    assert Prediction.objects.get().input == {
        "prompt": "a teapot on the moon",
        "aspect_ratio": "16:9",
        "num_outputs": 2,
        "guidance": 3.5,
        "go_fast": False,
        "megapixels": "0.25",
    }


def test_kontext_sends_the_image_to_edit(client):
    client.post("/predictions/new", form_data(KONTEXT, input_image="https://x.test/cat.png"))

    assert Prediction.objects.get().input["input_image"] == "https://x.test/cat.png"


def test_any_model_sends_its_json_input_with_the_prompt(client):
    response = client.post(
        "/predictions/new", form_data("someone/upscaler", extra_input='{"scale": 4}')
    )

    prediction = Prediction.objects.get()
    assert response["Location"] == prediction.get_absolute_url()
    assert (prediction.model, prediction.input) == (
        "someone/upscaler",
        {"scale": 4, "prompt": "a teapot on the moon"},
    )


# --- Variations and replays -------------------------------------------------------------------


def test_variations_are_separate_predictions_shown_on_the_history_page(client):
    response = client.post("/predictions/new", form_data(variations="3", seed="41"))

    predictions = Prediction.objects.order_by("variation")
    assert response.status_code == 302
    assert response["Location"] == "/"
    assert [p.variation for p in predictions] == [0, 1, 2]
    assert [p.input["seed"] for p in predictions] == [41, 42, 43]
    assert len({p.request_key for p in predictions}) == 1
    assert all(p.status == "submitting" for p in predictions)


def test_variations_without_a_seed_leave_each_seed_to_the_provider(client):
    client.post("/predictions/new", form_data(variations="2"))

    assert [p.input for p in Prediction.objects.all()] == [{"prompt": "a teapot on the moon"}] * 2


def test_consecutive_seeds_wrap_within_32_bits(client):
    client.post("/predictions/new", form_data(variations="2", seed=str(2**32 - 1)))

    seeds = Prediction.objects.order_by("variation").values_list("input__seed", flat=True)
    assert list(seeds) == [2**32 - 1, 0]


def test_a_replayed_form_creates_nothing_new(client):
    data = form_data(variations="3")

    first = client.post("/predictions/new", data)
    second = client.post("/predictions/new", data)

    assert Prediction.objects.count() == 3
    assert first["Location"] == second["Location"] == "/"


def test_a_form_sent_again_with_other_inputs_asks_before_sending_them(client):
    data = form_data()
    client.post("/predictions/new", data)

    response = client.post("/predictions/new", {**data, "prompt": "a kettle on Mars"})

    assert response.status_code == 409
    assert "This form was already sent with other inputs" in page_text(response)
    assert Prediction.objects.count() == 1
    assert data["request_key"] not in response.content.decode()


def test_every_variation_counts_against_the_submit_limit(client, settings):
    settings.SUBMIT_RATE_LIMIT_MEMBER = (3, 60)

    refused = client.post("/predictions/new", form_data(variations="4"))
    allowed = client.post("/predictions/new", form_data(variations="1"))

    assert refused.status_code == 429
    assert "at most 3 predictions every 60 seconds per member" in page_text(refused)
    assert allowed.status_code == 429
    assert not Prediction.objects.exists()


# --- Tweak ------------------------------------------------------------------------------------


def test_tweak_prefills_the_form_with_the_predictions_input(client):
    prediction = make_prediction(
        "a lighthouse at dusk",
        model="black-forest-labs/flux-dev",
        input={
            "prompt": "a lighthouse at dusk",
            "aspect_ratio": "3:2",
            "seed": 7,
            "go_fast": False,
            "megapixels": "0.25",
        },
    )

    response = client.get("/new/", {"from": prediction.pk})

    body = page_text(response)
    assert response.status_code == 200
    assert ">\na lighthouse at dusk</textarea>" in body
    assert 'name="model" value="black-forest-labs/flux-dev"' in body
    assert '<option value="3:2" selected>' in body
    assert 'name="seed" value="7"' in body
    assert '<option value="false" selected>No</option>' in body
    assert '"megapixels": "0.25"' in body
    assert prediction.get_absolute_url() in body


def test_tweak_of_an_any_model_prediction_opens_the_json_editor(client):
    prediction = make_prediction(model="someone/upscaler", input={"prompt": "x", "scale": 4})

    body = page_text(client.get("/new/", {"from": prediction.pk}))

    assert 'type="text" name="model" value="someone/upscaler"' in body
    assert '"scale": 4' in body


def test_tweak_of_another_teams_prediction_is_404(client):
    prediction = make_prediction(team=make_team("Elsewhere"))

    assert client.get("/new/", {"from": prediction.pk}).status_code == 404


# --- Run again --------------------------------------------------------------------------------


def test_run_again_creates_a_new_prediction_with_the_same_input(client):
    original = make_prediction(
        model="stability-ai/sdxl",
        input={"prompt": "a fox", "seed": 3, "width": 768},
        status="succeeded",
    )

    response = client.post(f"/predictions/{original.pk}/again")

    again = Prediction.objects.exclude(pk=original.pk).get()
    assert response["Location"] == again.get_absolute_url()
    assert (again.provider, again.model, again.input) == (
        original.provider,
        original.model,
        original.input,
    )
    assert again.status == "submitting"
    assert again.request_key != original.request_key


def test_run_again_with_the_same_key_runs_once(client):
    original = make_prediction(status="succeeded")
    key = str(uuid.uuid4())

    first = client.post(f"/predictions/{original.pk}/again", {"request_key": key})
    second = client.post(f"/predictions/{original.pk}/again", {"request_key": key})

    assert Prediction.objects.count() == 2
    assert first["Location"] == second["Location"]


def test_run_again_is_refused_to_a_viewer(team):
    original = make_prediction(status="succeeded")
    viewer = signed_in(make_user("vic", team, Role.VIEWER))

    assert viewer.post(f"/predictions/{original.pk}/again").status_code == 403
    assert Prediction.objects.count() == 1


def test_run_again_of_another_teams_prediction_is_404(client):
    original = make_prediction(team=make_team("Elsewhere"), status="succeeded")

    assert client.post(f"/predictions/{original.pk}/again").status_code == 404
    assert Prediction.objects.count() == 1


def test_run_again_without_a_provider_key_says_so_and_saves_nothing(client, settings):
    configure_provider(settings, "replicate", token="")
    original = make_prediction(provider="replicate", status="failed")

    response = client.post(f"/predictions/{original.pk}/again", follow=True)

    assert "set REPLICATE_API_TOKEN" in page_text(response)
    assert Prediction.objects.count() == 1


def test_run_again_counts_against_the_submit_limit(client, settings):
    settings.SUBMIT_RATE_LIMIT_MEMBER = (1, 60)
    original = make_prediction(status="succeeded")

    client.post(f"/predictions/{original.pk}/again")
    response = client.post(f"/predictions/{original.pk}/again", follow=True)

    assert "Too many submissions" in page_text(response)
    assert Prediction.objects.count() == 2
