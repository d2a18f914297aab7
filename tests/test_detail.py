"""The prediction page: header, status and timeline, its outputs as tiles of the gallery's
lightbox with their archive states, actions by role, and the same request as curl and Python,
which run against the simulator as they are shown."""

import html
import json
import os
import re
import subprocess
import sys
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from accounts.models import ProviderCredential, Role
from outputs.models import ArchiveState, Output

from .conftest import (
    configure_provider,
    make_output,
    make_prediction,
    make_team,
    make_user,
    save_copy,
)

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
    output = make_output(prediction)

    body = page(client, prediction)

    assert "<h1>a lighthouse at dusk</h1>" in body
    assert "<code>black-forest-labs/flux-schnell</code>" in body
    assert "Demo (simulator)" in body
    assert "<dd>mia</dd>" in body
    assert "<code>t2s7f615pdrm40ck09v88sm224</code>" in body
    assert "<dt>Predict time</dt><dd>0.61 s</dd>" in body
    assert "<dt>Total time</dt><dd>1.20 s</dd>" in body
    assert "<dt><code>num_outputs</code></dt><dd>2</dd>" in body
    assert "<dt><code>go_fast</code></dt><dd>true</dd>" in body
    assert f'src="/outputs/{output.pk}/thumb?v={output.sha256[:16]}"' in body


def test_time_metrics_read_as_seconds_and_other_metrics_keep_their_names_rounded(client):
    prediction = make_prediction(
        status="succeeded",
        metrics={
            "predict_time": 34.23,
            "total_time": 34.542546272,
            "time_to_first_token": 0.4,
            "tokens_per_second": 12.3456,
            "guidance_ratio": 0.123456,
            "input_token_count": 77,
        },
        predict_time=34.23,
    )

    body = page(client, prediction)

    assert "<dt>Predict time</dt><dd>34.23 s</dd>" in body
    assert "<dt>Total time</dt><dd>34.54 s</dd>" in body
    assert "<dt>Time to first token</dt><dd>0.40 s</dd>" in body
    assert "<dt><code>tokens_per_second</code></dt><dd>12.35</dd>" in body
    assert "<dt><code>guidance_ratio</code></dt><dd>0.123</dd>" in body
    assert "<dt><code>input_token_count</code></dt><dd>77</dd>" in body


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


def last_step(body: str) -> str:
    timeline = body[body.index('<ol class="timeline"') : body.index("</ol>")]
    return timeline[timeline.rindex("<li") :]


@pytest.mark.parametrize(
    ("status", "mark", "name"),
    [
        ("succeeded", "✓", "Succeeded"),
        ("failed", "✕", "Failed"),
        ("canceled", "⊘", "Canceled"),
        ("aborted", "■", "Aborted"),
        ("timed_out", "◷", "Timed out"),
        ("submit_unknown", "?", "Submit outcome unknown"),
    ],
)
def test_the_last_step_names_the_outcome_with_an_icon_and_a_class_of_its_own(
    client, status, mark, name
):
    prediction = make_prediction(status=status, completed_at=timezone.now())

    step = last_step(page(client, prediction))

    assert f'class="is-done outcome outcome-{status}"' in step
    assert f'<span class="step-mark" aria-hidden="true">{mark}</span>' in step
    assert f'<span class="step-name">{name}</span>' in step


def test_a_running_prediction_has_no_outcome_yet(client):
    step = last_step(page(client, make_prediction(status="processing", started_at=timezone.now())))

    assert "outcome" not in step
    assert '<span class="step-name">Completed</span>' in step
    assert "running" in step


def test_an_end_the_provider_gave_no_time_for_is_still_marked_as_the_end(client):
    step = last_step(page(client, make_prediction(status="aborted", completed_at=None)))

    assert "outcome-aborted" in step
    assert "time not reported" in step
    assert "running" not in step and "not yet" not in step


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
    assert "/cancel" not in body


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


# --- Outputs --------------------------------------------------------------------------------


def outputs_of(prediction, *states: str) -> list[Output]:
    """Outputs of `prediction` in `states`, recorded as the poller records them, then archived
    (with a stored copy) or left as they are."""
    outputs = []
    for index, state in enumerate(states):
        output = Output.objects.create(
            team_id=prediction.team_id,
            prediction=prediction,
            index=index,
            source_url=f"https://replicate.delivery/{prediction.pk}/out-{index}.webp",
        )
        if state == ArchiveState.ARCHIVED:
            output = save_copy(output)
        elif state != ArchiveState.PENDING:
            Output.changed(Output.objects.filter(pk=output.pk), state=state, next_attempt_at=None)
            output.refresh_from_db()
        outputs.append(output)
    return outputs


def tile_of(body: str, output: Output) -> str:
    match = re.search(rf'<div class="tile [^"]*" id="tile-{output.pk}">.*?</li>', body, re.DOTALL)
    assert match, f"no tile for output {output.pk}"
    return match[0]


def test_the_outputs_are_tiles_of_the_gallerys_lightbox_with_download(client):
    prediction = make_prediction("two foxes", status="succeeded", data_removed=True)
    first, second = outputs_of(prediction, "archived", "archived")

    body = page(client, prediction)

    assert '<ul class="output-grid" data-gallery>' in body
    assert '<dialog id="lightbox"' in body
    nonce = re.search(r'<script src="/static/js/logs.js" nonce="([^"]+)"', body)[1]
    assert f'<script src="/static/js/gallery.js" nonce="{nonce}" defer>' in body
    for output in (first, second):
        tile = tile_of(body, output)
        version = output.sha256[:16]
        assert f'class="tile-link" href="/outputs/{output.pk}/file?v={version}"' in tile
        assert f'data-download="/outputs/{output.pk}/download?v={version}"' in tile
        assert f'src="/outputs/{output.pk}/thumb?v={version}"' in tile
        assert 'data-prompt="two foxes"' in tile
        assert f"Saved</span> · {output.width} × {output.height} · PNG" in tile
        # Already on the prediction's page: no link back to it.
        assert "data-open" not in tile
    assert "replicate.delivery" not in body


def test_an_output_still_saving_shows_the_providers_file_and_the_page_keeps_refreshing(client):
    prediction = make_prediction("saving", status="succeeded")
    (output,) = outputs_of(prediction, "pending")
    url = prediction.get_absolute_url()

    body = page(client, prediction)
    etag = client.get(url, headers=HTMX)["ETag"]
    output = save_copy(output)
    saved = client.get(url, headers={**HTMX, "If-None-Match": etag})

    assert f'src="{output.source_url}"' in tile_of(body, output)
    assert "Saving…" in tile_of(body, output)
    assert 'hx-trigger="every 2s"' in body
    assert saved.status_code == 200
    fragment = saved.content.decode()
    assert f'src="/outputs/{output.pk}/thumb?v={output.sha256[:16]}"' in fragment
    assert output.source_url not in fragment
    assert "hx-trigger" not in fragment


def test_a_failed_output_shows_its_reason_and_retry_time_and_keeps_the_page_refreshing(client):
    prediction = make_prediction("failing", status="succeeded")
    (output,) = outputs_of(prediction, "pending")
    retry = timezone.now() + timedelta(minutes=3)
    Output.changed(
        Output.objects.filter(pk=output.pk),
        state=ArchiveState.FAILED,
        reason="The download timed out.",
        next_attempt_at=retry,
    )

    body = page(client, prediction)

    at = timezone.localtime(retry).strftime("%H:%M")
    assert f"Not saved: The download timed out. Retrying at {at}." in tile_of(body, output)
    assert 'hx-trigger="every 2s"' in body


def test_an_output_given_up_or_expired_says_so_and_nothing_refreshes(client):
    prediction = make_prediction("lost", status="succeeded", data_removed=True)
    failed, expired = outputs_of(prediction, "failed", "expired")
    Output.changed(Output.objects.filter(pk=failed.pk), reason="Not an image.")

    body = page(client, prediction)

    assert "Not saved: Not an image. Gave up." in tile_of(body, failed)
    assert "Expired at the provider" in tile_of(body, expired)
    assert "<img" not in tile_of(body, failed) + tile_of(body, expired)
    assert "replicate.delivery" not in body
    assert "hx-trigger" not in body


def test_a_running_prediction_without_outputs_yet_has_no_outputs_section(client):
    body = page(client, make_prediction(status="processing"))

    assert "output-grid" not in body
    assert 'hx-trigger="every 1s"' in body


def test_the_selection_toolbar_offers_to_tick_images_only_once_there_are_outputs(client):
    canceled = page(client, make_prediction(status="canceled"))
    running = page(client, make_prediction(status="processing"))
    done = make_prediction(status="succeeded")
    make_output(done)
    with_outputs = page(client, done)
    stylesheet = (settings.BASE_DIR / "static/css/detail.css").read_text()

    assert 'id="selection"' not in canceled
    assert 'id="selection"' in with_outputs and 'class="tile-select"' in with_outputs
    # While it runs, the toolbar waits outside the live part for the tiles, hidden till then.
    assert 'id="selection"' in running and "tile-select" not in running
    assert ".prediction-results:not(:has(.tile-select)) > .selection { display: none; }" in (
        stylesheet
    )


def test_every_image_on_the_page_has_its_width_and_height(client):
    prediction = make_prediction("mixed", status="succeeded")
    outputs_of(prediction, "archived", "pending", "failed")

    body = page(client, prediction)

    images = re.findall(r"<img\b[^>]*>", body)
    # The saved and the saving tile, and the lightbox's: a given-up file is not hot-linked.
    assert len(images) == 3
    for img in images:
        assert re.search(r'\swidth="\d+"', img) and re.search(r'\sheight="\d+"', img), img


def test_a_change_to_an_output_changes_the_fragments_etag_in_one_query(
    client, django_assert_num_queries
):
    prediction = make_prediction("starred", status="succeeded")
    (output,) = outputs_of(prediction, "archived")
    url = prediction.get_absolute_url()
    etag = client.get(url, headers=HTMX)["ETag"]

    # User and membership (the session is cached), then the prediction's last change (its
    # outputs bump it).
    with django_assert_num_queries(3):
        assert client.get(url, headers={**HTMX, "If-None-Match": etag}).status_code == 304
    Output.changed(Output.objects.filter(pk=output.pk), starred=True)

    changed = client.get(url, headers={**HTMX, "If-None-Match": etag})
    assert changed.status_code == 200
    assert 'aria-pressed="true"' in changed.content.decode()


def test_a_video_output_opens_in_the_lightboxs_player(client):
    prediction = make_prediction("a clip", status="succeeded")
    (output,) = outputs_of(prediction, "pending")
    Output.changed(
        Output.objects.filter(pk=output.pk), source_url="https://replicate.delivery/clip.mp4"
    )

    tile = tile_of(page(client, prediction), output)

    assert 'data-kind="video"' in tile
    assert 'data-image="https://replicate.delivery/clip.mp4"' in tile
    assert "<img" not in tile


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


def test_a_finished_prediction_page_offers_delete_and_a_running_one_does_not(client):
    finished_page = page(client, make_prediction("done", status="succeeded"))
    running_page = page(client, make_prediction("busy", status="processing"))

    assert "/delete" in finished_page
    assert "/delete" not in running_page


def test_cancel_asks_for_a_confirmation_first(client):
    body = page(client, make_prediction(status="processing", provider_id="abc"))

    form = re.search(r'<form[^>]*action="[^"]*/cancel"[^>]*>', body)[0]
    confirm = "Cancel this prediction? The provider stops it, and it cannot be resumed."
    assert f'data-confirm="{confirm}"' in form


# --- The seed and the details ---------------------------------------------------------------


def test_the_seed_used_is_the_inputs():
    prediction = make_prediction(input={"prompt": "x", "seed": 0}, logs="Using seed: 99\n")

    assert prediction.seed_used == 0


def test_without_a_seed_in_the_input_the_seed_used_is_the_one_the_logs_print():
    prediction = make_prediction(logs="loading\nUsing seed: 60392\n 50%|█████| 2/4\n")

    assert prediction.seed_used == 60392


def test_a_blank_or_malformed_input_seed_falls_back_to_the_logs():
    for seed in (None, "", True, "12"):
        prediction = make_prediction(input={"prompt": "x", "seed": seed}, logs="Using seed: 5\n")

        assert prediction.seed_used == 5, seed


def test_the_seed_used_is_unknown_until_the_logs_say_it():
    assert make_prediction(status="starting", logs="").seed_used is None
    assert make_prediction(logs="a seed of sorts: 12\n").seed_used is None


def test_the_page_shows_the_seed_used_and_the_fragment_too_once_the_logs_print_it(client):
    prediction = make_prediction(status="processing", provider_id="abc", logs="")
    before = client.get(prediction.get_absolute_url(), headers=HTMX).content.decode()
    prediction.apply_remote({"id": "abc", "status": "processing", "logs": "Using seed: 4242\n"})

    fragment = client.get(prediction.get_absolute_url(), headers=HTMX).content.decode()

    assert "<dt>Seed</dt>" not in before
    assert "<dt>Seed</dt><dd>4242</dd>" in fragment
    assert "<dt>Seed</dt><dd>4242</dd>" in page(client, prediction)


def internals_of(body: str) -> str:
    start = body.index('<details id="prediction-internals"')
    return body[start : body.index("</details>", start)]


def test_the_plumbing_folds_into_a_closed_details_section_and_what_users_want_stays_out(client):
    prediction = make_prediction(
        status="processing",
        provider_id="t2s7f615pdrm40ck09v88sm224",
        version="5599ed30703defd1d160a25a63321b4dec97101d98b4674bcc56e41f62f35637",
        polls=7,
        last_error="The provider answered 503.",
        predict_time=1.5,
    )

    for body in (
        page(client, prediction),
        client.get(prediction.get_absolute_url(), headers=HTMX).content.decode(),
    ):
        internals = internals_of(body)
        assert '<details id="prediction-internals" class="internals" data-keep-open>' in body
        assert "<summary>Details</summary>" in internals
        for plumbing in (
            "<code>t2s7f615pdrm40ck09v88sm224</code>",
            f"<code>{prediction.version}</code>",
            f"<code>{prediction.request_key}</code>",
            "<dt>Polls</dt><dd>7</dd>",
            "<dt>Last error</dt><dd>The provider answered 503.</dd>",
        ):
            assert plumbing in internals
            assert body.count(plumbing) == 1
        assert "Predict time" not in internals and "<dt>Predict time</dt><dd>1.50 s</dd>" in body
        assert "Retrying after an error" in body
