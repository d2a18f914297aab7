"""The studio: New images keeps the member's latest predictions beside the form, live; Generate
and Run again add to them without leaving the page; switching models keeps the inputs the new
model takes; the prompt is capped at what the catalog says; tweak fills in the seed used."""

import json
import re
import uuid
from html import unescape

import pytest
from django.test import Client

from accounts.models import Role
from predictions.catalog import PROMPT_LENGTH
from predictions.models import Prediction

from .conftest import make_output, make_prediction, make_team, make_user

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}
SCHNELL = "black-forest-labs/flux-schnell"
PRO = "black-forest-labs/flux-1.1-pro"
SDXL = "stability-ai/sdxl"


def form_data(**changes) -> dict:
    return {
        "provider": "simulator",
        "model": SCHNELL,
        "prompt": "a teapot on the moon",
        "request_key": str(uuid.uuid4()),
        **changes,
    }


def results_of(html: str) -> list[str]:
    """The prompts of the studio's results, in the order shown."""
    return re.findall(r'class="result-prompt">([^<]*)</a>', html)


def field_value(html: str, name: str) -> str | None:
    match = re.search(rf'<input[^>]*name="{name}"[^>]*value="([^"]*)"', html)
    return unescape(match[1]) if match else None


def selected(html: str, name: str) -> str | None:
    select = re.search(rf'<select name="{name}".*?</select>', html, re.DOTALL)
    match = select and re.search(r'<option value="([^"]*)" selected>', select[0])
    return match[1] if match else None


def test_the_members_latest_predictions_show_beside_the_form_newest_first(client, member, team):
    make_prediction("older", submitted_by=member, status="succeeded")
    make_prediction("newer", submitted_by=member, status="processing")
    make_prediction("a teammate's", submitted_by=make_user("theo", team), status="succeeded")
    make_prediction("another team's", team=make_team("Elsewhere"), submitted_by=member)

    html = client.get("/new/").content.decode()

    assert results_of(html) == ["newer", "older"]
    # Something runs: the results refresh themselves.
    assert re.search(r'id="studio-results"[^>]*hx-get="/new/results" hx-trigger="every 2s"', html)


def test_generate_in_the_studio_adds_the_prediction_on_top_and_a_fresh_key(client, member):
    make_prediction("before", submitted_by=member, status="succeeded")
    data = form_data(prompt="a heron at dawn")

    response = client.post("/predictions/new", data, headers=HTMX)

    html = response.content.decode()
    assert response.status_code == 200
    assert html.lstrip().startswith('<section id="studio-results"')
    assert results_of(html) == ["a heron at dawn", "before"]
    key = re.search(r'name="request_key" id="id_request_key" value="([^"]+)"[^>]*hx-swap-oob', html)
    assert key and key[1] != data["request_key"]
    # Pressed twice with the same key: still one prediction.
    client.post("/predictions/new", data, headers=HTMX)
    assert Prediction.objects.filter(input__prompt="a heron at dawn").count() == 1


def test_several_variations_are_said_sent_above_the_results(client):
    response = client.post("/predictions/new", form_data(variations="3"), headers=HTMX)

    assert '<p class="sent" role="status">Submitted 3 predictions.</p>' in response.content.decode()
    assert len(results_of(response.content.decode())) == 3


def test_a_refused_generate_comes_back_in_place_with_why(client):
    response = client.post("/predictions/new", form_data(prompt=" "), headers=HTMX)

    assert response.status_code == 400
    assert response["HX-Retarget"] == "#studio-form"
    assert response["HX-Reswap"] == "outerHTML"
    html = response.content.decode()
    assert html.lstrip().startswith('<form id="studio-form"')
    assert "Enter a prompt: say what the image should show." in html
    assert not Prediction.objects.exists()


def test_run_again_in_the_studio_adds_to_its_results(client, member):
    original = make_prediction("once more", submitted_by=member, status="succeeded")

    response = client.post(
        f"/predictions/{original.pk}/again", {"request_key": uuid.uuid4()}, headers=HTMX
    )

    assert results_of(response.content.decode()) == ["once more", "once more"]
    assert Prediction.objects.filter(input__prompt="once more").count() == 2


def test_each_run_again_button_has_a_key_of_its_own(client, member):
    for n in range(3):
        make_prediction(f"p{n}", submitted_by=member, status="succeeded")

    html = client.get("/new/").content.decode()

    results = html[html.index('id="studio-results"') :]
    keys = re.findall(r'name="request_key" value="([^"]+)"', results)
    assert len(keys) == 3 and len(set(keys)) == 3


def test_switching_models_keeps_every_input_the_new_model_also_takes(client):
    carried = {"aspect_ratio": "16:9", "seed": "42", "output_format": "png", "go_fast": "false"}

    html = client.get("/new/", {"model": PRO, **carried}, headers=HTMX).content.decode()

    assert selected(html, "aspect_ratio") == "16:9"
    assert field_value(html, "seed") == "42"
    assert selected(html, "output_format") == "png"
    # FLUX 1.1 Pro has no go_fast: it is not carried into an input it would refuse.
    assert "go_fast" not in html
    html = client.get("/new/", {"model": SDXL, **carried}, headers=HTMX).content.decode()
    assert field_value(html, "seed") == "42"
    assert "aspect_ratio" not in html


def test_switching_drops_the_old_models_untouched_defaults_and_values_out_of_range(client):
    dev = "black-forest-labs/flux-dev"
    # flux-dev's 28 steps, as it starts: schnell takes 1 to 4 and starts at its own 4.
    html = client.get(
        "/new/", {"model": SCHNELL, "previous": dev, "num_inference_steps": "28"}, headers=HTMX
    ).content.decode()
    assert field_value(html, "num_inference_steps") == "4"

    # Changed by hand, but beyond what schnell takes: dropped too.
    html = client.get(
        "/new/", {"model": SCHNELL, "previous": dev, "num_inference_steps": "12"}, headers=HTMX
    ).content.decode()
    assert field_value(html, "num_inference_steps") == "4"

    # Changed by hand, and schnell takes it: kept.
    html = client.get(
        "/new/", {"model": dev, "previous": SCHNELL, "num_inference_steps": "2"}, headers=HTMX
    ).content.decode()
    assert field_value(html, "num_inference_steps") == "2"


def test_a_run_again_key_holds_across_refreshes_until_the_next_prediction(client, member):
    original = make_prediction("again", submitted_by=member, status="succeeded")

    def key() -> str:
        html = client.get("/new/results", headers=HTMX).content.decode()
        return re.search(r'name="request_key" value="([^"]+)"', html)[1]

    first = key()
    assert key() == first
    client.post(f"/predictions/{original.pk}/again", {"request_key": first}, headers=HTMX)
    # A second click of the same button, after a refresh: still one new prediction.
    client.post(f"/predictions/{original.pk}/again", {"request_key": first}, headers=HTMX)
    assert Prediction.objects.filter(input__prompt="again").count() == 2
    assert key() != first


def test_the_prompt_is_capped_at_what_the_catalog_says(client):
    html = client.get("/new/").content.decode()
    assert f'maxlength="{PROMPT_LENGTH}"' in html
    assert "data-counter" in html

    response = client.post("/predictions/new", form_data(prompt="x" * (PROMPT_LENGTH + 1)))

    assert f"Keep the prompt to {PROMPT_LENGTH:,} characters" in unescape(response.content.decode())
    assert not Prediction.objects.exists()
    # A line break counts once, as the counter counts it, though browsers send two characters.
    prompt = "x" * (PROMPT_LENGTH - 2) + "\r\n" + "x"
    client.post("/predictions/new", form_data(prompt=prompt))
    assert Prediction.objects.count() == 1


def test_the_seed_used_shows_and_tweak_fills_it_in(client, member):
    drawn = make_prediction(
        "a random seed",
        submitted_by=member,
        status="succeeded",
        logs="Using seed: 987654\n100%|██████████| 4/4 [00:01<00:00, 3.2it/s]\n",
    )
    chosen = make_prediction(
        "a chosen seed",
        submitted_by=member,
        status="succeeded",
        input={"prompt": "a chosen seed", "seed": 42},
    )

    html = client.get("/new/").content.decode()
    assert "seed 987654" in html
    assert "seed 42" in html

    tweak = client.get(f"/new/?from={drawn.pk}").content.decode()
    assert field_value(tweak, "seed") == "987654"
    assert field_value(client.get(f"/new/?from={chosen.pk}").content.decode(), "seed") == "42"


def test_tweak_in_any_model_mode_carries_the_seed_its_logs_reported(client, member):
    drawn = make_prediction(
        "a random seed",
        model="someone/painter",
        input={"prompt": "a random seed", "steps": 20},
        submitted_by=member,
        status="succeeded",
        logs="Using seed: 987654\n",
    )

    tweak = unescape(client.get(f"/new/?from={drawn.pk}").content.decode())

    editor = re.search(r'<textarea name="extra_input"[^>]*>(.*?)</textarea>', tweak, re.DOTALL)
    assert json.loads(editor[1]) == {"steps": 20, "seed": 987654}
    client.post("/predictions/new", form_data(model="someone/painter", extra_input=editor[1]))
    assert Prediction.objects.latest("pk").input == {
        "prompt": "a teapot on the moon",
        "steps": 20,
        "seed": 987654,
    }


def test_a_running_prediction_shows_its_progress_and_finished_images_show_as_tiles(client, member):
    make_prediction(
        "running",
        submitted_by=member,
        status="processing",
        logs="Using seed: 1\n 45%|████▌     | 9/20 [00:01<00:01,  8.73it/s]",
    )
    done = make_prediction("done", submitted_by=member, status="succeeded")
    output = make_output(done)

    html = client.get("/new/").content.decode()

    assert '<progress class="result-progress" max="100" value="45"' in html
    assert f'id="tile-{output.pk}"' in html


def test_an_unchanged_results_refresh_is_answered_304(client, member, django_assert_num_queries):
    make_prediction("waiting", submitted_by=member, status="processing")
    etag = client.get("/new/results", headers=HTMX)["ETag"]

    # User and membership, then when the shown predictions last changed.
    with django_assert_num_queries(3):
        response = client.get("/new/results", headers={**HTMX, "If-None-Match": etag})

    assert response.status_code == 304


def test_a_viewer_has_no_studio(team):
    viewer = make_user("vera", team, Role.VIEWER)
    client = Client()
    client.force_login(viewer)

    assert client.get("/new/results").status_code == 403
