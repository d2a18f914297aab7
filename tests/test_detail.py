"""The prediction page: header, status and timeline, actions by role, and the same request as
curl and Python, which run against the simulator as they are shown."""

import html
import json
import os
import re
import subprocess
import sys
from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import ProviderCredential, Role

from .conftest import configure_provider, make_prediction, make_team, make_user

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}


def page(client, prediction) -> str:
    response = client.get(prediction.get_absolute_url())
    assert response.status_code == 200
    return response.content.decode()


def test_the_page_shows_prompt_model_provider_member_input_and_details(client, member):
    prediction = make_prediction(
        "a lighthouse at dusk",
        submitted_by=member,
        status="succeeded",
        provider_id="t2s7f615pdrm40ck09v88sm224",
        input={"prompt": "a lighthouse at dusk", "num_outputs": 2, "go_fast": True},
        metrics={"predict_time": 0.606986414, "image_count": 1, "total_time": 1.2},
        predict_time=0.606986414,
        image_count=1,
        output=["http://127.0.0.1:1/out-0.webp"],
    )

    body = page(client, prediction)

    assert "<h1>a lighthouse at dusk</h1>" in body
    assert "<code>black-forest-labs/flux-schnell</code>" in body
    assert "Demo (simulator)" in body
    assert "<dd>mia</dd>" in body
    assert "<code>t2s7f615pdrm40ck09v88sm224</code>" in body
    assert "<dt>Predict time</dt><dd>0.61 s</dd>" in body
    assert "<dt><code>total_time</code></dt><dd>1.2</dd>" in body
    assert "<dt><code>num_outputs</code></dt><dd>2</dd>" in body
    assert "<dt><code>go_fast</code></dt><dd>true</dd>" in body
    assert "out-0.webp" in body


def test_the_status_is_a_label_and_an_icon_not_colour_alone(client):
    body = page(client, make_prediction(status="failed", error="CUDA out of memory"))

    assert re.search(r'class="status status-failed"><span aria-hidden="true">✕</span> Failed', body)
    assert '<p class="error" role="alert">CUDA out of memory</p>' in body


def test_the_timeline_shows_queue_and_run_durations(client):
    created = timezone.now() - timedelta(minutes=5)
    prediction = make_prediction(
        status="succeeded",
        created_at=created,
        started_at=created + timedelta(seconds=1.5),
        completed_at=created + timedelta(seconds=126.5),
    )

    body = page(client, prediction)

    assert "queued 1.5 s" in body
    assert "ran 2 min 5 s" in body
    assert '<span class="step-name">Succeeded</span>' in body


def test_a_prediction_still_queued_says_so_on_its_timeline(client):
    prediction = make_prediction(status="starting", created_at=timezone.now())

    body = page(client, prediction)

    assert "waiting in the queue" in body
    assert "queued" not in body.replace("waiting in the queue", "")
    assert '<span class="step-name">Completed</span>' in body


def test_short_waits_are_given_in_milliseconds(client):
    created = timezone.now()
    prediction = make_prediction(
        status="succeeded",
        created_at=created,
        started_at=created + timedelta(milliseconds=6),
        completed_at=created + timedelta(milliseconds=612),
    )

    body = page(client, prediction)

    assert "queued 6 ms" in body
    assert "ran 606 ms" in body


def test_the_fragment_is_the_live_part_only_and_is_revalidated(client):
    prediction = make_prediction(status="processing", logs="Using seed: 7\n")

    response = client.get(prediction.get_absolute_url(), headers=HTMX)

    body = response.content.decode()
    assert body.strip().startswith('<section id="prediction-live"')
    assert "<html" not in body and 'id="log-viewer"' not in body
    assert "no-cache" in response["Cache-Control"]
    assert "private" in response["Cache-Control"]
    assert "HX-Request" in response["Vary"]
    assert response["ETag"]


def test_a_finished_fragment_renders_without_its_trigger(client):
    prediction = make_prediction(status="canceled", completed_at=timezone.now())

    body = client.get(prediction.get_absolute_url(), headers=HTMX).content.decode()

    assert 'id="prediction-live"' in body
    assert "hx-trigger" not in body
    assert "Cancel</button>" not in body


def test_a_member_sees_cancel_run_again_and_tweak(client):
    prediction = make_prediction(status="processing", provider_id="abc")

    body = page(client, prediction)

    assert f'action="/predictions/{prediction.pk}/cancel"' in body
    assert f'action="/predictions/{prediction.pk}/again"' in body
    assert 'name="request_key"' in body
    assert f'href="/new/?from={prediction.pk}"' in body


def test_a_viewer_sees_no_actions(client):
    client.force_login(make_user("vic", make_team(), Role.VIEWER))
    prediction = make_prediction(status="processing", provider_id="abc")

    body = page(client, prediction)
    fragment = client.get(prediction.get_absolute_url(), headers=HTMX).content.decode()

    for text in (body, fragment):
        assert "/cancel" not in text
        assert "/again" not in text
        assert "?from=" not in text
        assert "Processing" in text


def test_the_full_page_is_rendered_afresh_each_time(client):
    prediction = make_prediction(status="succeeded")

    first, second = (client.get(prediction.get_absolute_url()) for _ in range(2))

    assert "ETag" not in first
    keys = [
        re.search(r'name="request_key" value="([^"]+)"', r.content.decode())[1]
        for r in (first, second)
    ]
    assert keys[0] != keys[1]


def test_a_role_change_is_not_answered_with_a_stale_fragment(client, member):
    prediction = make_prediction(status="processing", provider_id="abc")
    etag = client.get(prediction.get_absolute_url(), headers=HTMX)["ETag"]
    member.memberships.update(role=Role.VIEWER)

    response = client.get(prediction.get_absolute_url(), headers={**HTMX, "If-None-Match": etag})

    assert response.status_code == 200
    assert "/cancel" not in response.content.decode()


def test_cancel_shows_only_while_running(client):
    finished = make_prediction(status="succeeded")

    assert "/cancel" not in page(client, finished)


def test_the_page_has_no_inline_script_or_style(client):
    body = page(client, make_prediction(status="processing", logs="hello\n"))

    assert "style=" not in body
    assert "<style" not in body
    for tag in re.findall(r"<script[^>]*>", body):
        assert 'src="/static/' in tag


# --- The same request by hand ---------------------------------------------------------------

TRICKY_INPUT = {
    "prompt": 'a sign saying "FLUX SCHNELL", it\'s $5 `now` \\ über\nsecond line',
    "num_outputs": 1,
    "go_fast": True,
    "seed": 42,
}


def use_simulator_as(settings, simulator, provider: str) -> None:
    configure_provider(settings, provider, base_url=simulator.base_url)


def test_the_snippets_name_the_base_url_model_and_input_but_never_the_key(client, team):
    credential = ProviderCredential(team=team, provider="cometapi")
    credential.set_secret("sk-studio-secret-key-9f8e")
    credential.save()
    prediction = make_prediction(provider="cometapi", input=TRICKY_INPUT)
    prediction.refresh_from_db()  # PostgreSQL's jsonb keeps its own key order

    body = page(client, prediction)

    url = "https://api.cometapi.com/replicate/v1/models/black-forest-labs/flux-schnell/predictions"
    assert url in body
    assert html.escape("Authorization: Bearer $COMETAPI_KEY") in body
    assert html.escape("os.environ['COMETAPI_KEY']") in body
    assert html.escape(json.dumps(TRICKY_INPUT["prompt"], ensure_ascii=False)) in body
    assert html.escape(prediction.as_curl()) in body
    assert html.escape(prediction.as_python()) in body
    assert "sk-studio-secret-key-9f8e" not in body
    assert "9f8e" not in body
    assert 'data-copy="snippet-curl" hidden' in body


def test_replicate_snippets_read_the_replicate_token():
    prediction = make_prediction(provider="replicate")

    assert "Bearer $REPLICATE_API_TOKEN" in prediction.as_curl()
    assert "https://api.replicate.com/v1/models/" in prediction.as_curl()
    assert "os.environ['REPLICATE_API_TOKEN']" in prediction.as_python()


def test_a_prediction_with_a_malformed_model_offers_no_snippet(client):
    prediction = make_prediction(model="not a model", status="failed")

    body = page(client, prediction)

    assert "Copy as curl" not in body
    assert prediction.as_curl() == prediction.as_python() == ""


def test_the_curl_command_creates_the_same_prediction_on_the_simulator(settings, simulator):
    use_simulator_as(settings, simulator, "cometapi")
    prediction = make_prediction(provider="cometapi", input=TRICKY_INPUT)

    result = subprocess.run(
        ["bash", "-c", prediction.as_curl()],
        env={**os.environ, "COMETAPI_KEY": "sk-from-the-environment"},
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.returncode == 0, result.stderr
    created = json.loads(result.stdout)
    assert created["status"] == "starting"
    assert created["input"] == TRICKY_INPUT


def test_the_python_script_runs_the_prediction_on_the_simulator(settings, simulator):
    use_simulator_as(settings, simulator, "cometapi")
    prediction = make_prediction(provider="cometapi", input=TRICKY_INPUT)

    result = subprocess.run(
        [sys.executable, "-c", prediction.as_python()],
        env={**os.environ, "COMETAPI_KEY": "sk-from-the-environment"},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    status, output = result.stdout.split(" ", 1)
    assert status == "succeeded"
    assert f"{simulator.url}/" in output


def test_the_simulator_snippet_needs_no_key(settings, simulator):
    use_simulator_as(settings, simulator, "simulator")
    prediction = make_prediction(provider="simulator")
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_KEY", "_TOKEN"))}

    result = subprocess.run(
        ["bash", "-c", prediction.as_curl()], env=env, capture_output=True, text=True, timeout=30
    )

    assert json.loads(result.stdout)["status"] == "starting"
