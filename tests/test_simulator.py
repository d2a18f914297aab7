"""The provider simulator speaks Replicate's prediction API over a real socket, faults included."""

import io
import json
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import httpx
import pytest
import replicate
from PIL import Image
from replicate.helpers import FileOutput

from predictions.simulator import MODELS, Faults, Simulator

BASE_DIR = Path(__file__).resolve().parent.parent
AUTH = {"Authorization": "Bearer test-token"}
TERMINAL = {"succeeded", "failed", "canceled"}
SCHNELL = "black-forest-labs/flux-schnell"
# The fields of a query response in CometAPI's documentation, which mirror Replicate's.
DOCUMENTED_FIELDS = {
    "id", "model", "version", "input", "logs", "output", "data_removed", "error", "status",
    "created_at", "started_at", "completed_at", "urls", "metrics",
}  # fmt: skip


def api_for(sim: Simulator) -> httpx.Client:
    return httpx.Client(base_url=sim.base_url, headers=AUTH, timeout=10)


def create(api: httpx.Client, model: str = SCHNELL, wait: bool = False, **input) -> httpx.Response:
    headers = {"Prefer": "wait"} if wait else {}
    body = {"input": {"prompt": "a red fox in the snow", **input}}
    return api.post(f"/models/{model}/predictions", json=body, headers=headers)


def poll_until_terminal(api: httpx.Client, prediction: dict) -> list[dict]:
    """Every state seen, from the one given to the terminal one, polling every 10 ms."""
    seen = [prediction]
    deadline = time.monotonic() + 10
    while seen[-1]["status"] not in TERMINAL:
        assert time.monotonic() < deadline, f"still {seen[-1]['status']} after 10 s"
        time.sleep(0.01)
        seen.append(api.get(f"/predictions/{prediction['id']}").json())
    return seen


def without_repeats(items: list) -> list:
    return [item for n, item in enumerate(items) if n == 0 or item != items[n - 1]]


def test_a_prediction_goes_from_starting_through_processing_to_succeeded_with_growing_logs():
    with Simulator(speed=20, seed=7) as sim, api_for(sim) as api:
        created = create(api, "stability-ai/sdxl", seed=42, num_outputs=2)
        assert created.status_code == 201
        seen = poll_until_terminal(api, created.json())

    first, last = seen[0], seen[-1]
    assert without_repeats([p["status"] for p in seen]) == ["starting", "processing", "succeeded"]
    assert (first["logs"], first["output"], first["metrics"]) == ("", None, {})
    assert first["started_at"] is None and first["completed_at"] is None

    logs = [p["logs"] for p in seen]
    assert all(later.startswith(earlier) for earlier, later in zip(logs, logs[1:], strict=False))
    assert len(set(logs)) > 3, "the logs should grow while processing, not all at once"
    assert last["logs"].startswith("Using seed: 42\n  0%|          | 0/25 [00:00<?, ?it/s]\n")
    assert "| 25/25 [" in last["logs"]
    assert last["logs"].endswith("Total safe images: 2 out of 2\n")

    assert last["metrics"]["image_count"] == 2
    assert 0 < last["metrics"]["predict_time"] < 1
    assert len(last["output"]) == 2
    assert last["error"] is None
    moments = [datetime.fromisoformat(last[f"{event}_at"]) for event in ("created", "started")]
    moments.append(datetime.fromisoformat(last["completed_at"]))
    assert moments == sorted(moments)
    assert all(last[f"{event}_at"].endswith("Z") for event in ("created", "started", "completed"))


@pytest.mark.parametrize(
    ("output_format", "aspect_ratio", "content_type", "size"),
    [
        ("webp", "1:1", "image/webp", (768, 768)),
        ("png", "16:9", "image/png", (768, 432)),
        ("jpg", "3:4", "image/jpeg", (576, 768)),
    ],
)
def test_outputs_download_as_real_images_of_the_requested_format_and_aspect_ratio(
    simulator, output_format, aspect_ratio, content_type, size
):
    with api_for(simulator) as api:
        prediction = create(
            api, wait=True, output_format=output_format, aspect_ratio=aspect_ratio
        ).json()
        assert prediction["status"] == "succeeded"
        [url] = prediction["output"]
        assert url == f"{simulator.url}/files/{prediction['id']}/out-0.{output_format}"
        download = httpx.get(url)

    assert download.status_code == 200
    assert download.headers["Content-Type"] == content_type
    image = Image.open(io.BytesIO(download.content))
    assert image.format == {"webp": "WEBP", "png": "PNG", "jpg": "JPEG"}[output_format]
    assert image.size == size


def test_output_urls_use_the_public_url_when_one_is_given():
    with Simulator(speed=50, public_url="https://sim.example.com/") as sim, api_for(sim) as api:
        prediction = create(api, wait=True).json()

    assert prediction["output"] == [f"https://sim.example.com/files/{prediction['id']}/out-0.webp"]


def test_a_prediction_has_exactly_the_documented_fields_and_replicate_style_ids(simulator):
    with api_for(simulator) as api:
        first = create(api).json()
        second = create(api).json()

    assert set(first) == DOCUMENTED_FIELDS
    assert re.fullmatch(r"[0-9a-z]{26}", first["id"])
    assert first["id"] != second["id"]
    assert first["model"] == SCHNELL
    assert re.fullmatch(r"[0-9a-f]{64}", first["version"])
    assert first["version"] == second["version"] == MODELS[SCHNELL].version
    assert first["input"] == {"prompt": "a red fox in the snow"}
    assert first["urls"]["get"] == f"https://api.replicate.com/v1/predictions/{first['id']}"
    assert first["urls"]["cancel"] == first["urls"]["get"] + "/cancel"
    assert first["urls"]["stream"].startswith("https://stream.replicate.com/")


@pytest.mark.parametrize(
    ("input", "named"),
    [
        ({"num_outputs": 0}, "input.num_outputs"),
        ({"num_outputs": 5}, "input.num_outputs"),
        ({"aspect_ratio": "7:5"}, "input.aspect_ratio"),
        ({"output_format": "gif"}, "input.output_format"),
        ({"output_quality": 101}, "input.output_quality"),
        ({"seed": "lucky"}, "input.seed"),
    ],
)
def test_invalid_input_is_refused_with_422_naming_the_field(simulator, input, named):
    with api_for(simulator) as api:
        response = create(api, **input)

    assert response.status_code == 422
    assert response.json()["status"] == 422
    assert response.json()["detail"].startswith(f"- {named}: ")
    assert simulator.stats()["predictions_created"] == 0


@pytest.mark.parametrize("body", [{"input": {}}, {"input": {"prompt": "  "}}, {}])
def test_a_missing_or_empty_prompt_is_refused_with_replicates_words(simulator, body):
    with api_for(simulator) as api:
        response = api.post(f"/models/{SCHNELL}/predictions", json=body)

    assert response.status_code == 422
    assert response.json()["detail"] == "- input: prompt is required"


def test_a_model_that_does_not_exist_is_404_naming_it(simulator):
    with api_for(simulator) as api:
        response = create(api, "nobody/nothing")

    assert response.status_code == 404
    assert "nobody/nothing" in response.json()["detail"]


def test_a_request_body_that_is_not_json_is_400(simulator):
    with api_for(simulator) as api:
        response = api.post(f"/models/{SCHNELL}/predictions", content=b'{"input": {')

    assert response.status_code == 400
    assert response.json()["status"] == 400


def test_a_request_without_a_token_is_401(simulator):
    response = httpx.get(f"{simulator.base_url}/predictions/whatever")

    assert response.status_code == 401
    assert response.json() == {"detail": "You did not pass an authentication token", "status": 401}


def test_a_wrong_token_is_401_when_the_simulator_expects_a_particular_one():
    with Simulator(speed=50, token="secret") as sim:
        wrong = httpx.get(f"{sim.base_url}/predictions", headers=AUTH)
        right = httpx.get(f"{sim.base_url}/predictions", headers={"Authorization": "Bearer secret"})

    assert wrong.status_code == 401
    assert right.status_code == 200


def test_an_unknown_prediction_id_is_404(simulator):
    with api_for(simulator) as api:
        response = api.get("/predictions/nosuchprediction0000000000")

    assert response.status_code == 404
    assert response.json() == {"detail": "Not found.", "status": 404}


@pytest.mark.parametrize(
    "version", [SCHNELL, f"{SCHNELL}:{MODELS[SCHNELL].version}", MODELS[SCHNELL].version]
)
def test_a_prediction_can_be_created_by_version_as_well_as_by_model(simulator, version):
    with api_for(simulator) as api:
        response = api.post("/predictions", json={"version": version, "input": {"prompt": "x"}})

    assert response.status_code == 201
    assert response.json()["model"] == SCHNELL


def test_the_list_shows_predictions_newest_first(simulator):
    with api_for(simulator) as api:
        ids = [create(api).json()["id"] for _ in range(3)]
        listing = api.get("/predictions").json()

    assert listing["next"] is None
    assert [p["id"] for p in listing["results"]] == ids[::-1]


def test_a_prediction_canceled_mid_run_is_canceled_and_stays_canceled():
    # At speed 200 darkroom/slow runs 0.15 to 0.6 s: long enough to catch, short enough to outwait.
    with Simulator(speed=200, seed=3) as sim, api_for(sim) as api:
        prediction = create(api, "darkroom/slow").json()
        while prediction["status"] == "starting":
            prediction = api.get(f"/predictions/{prediction['id']}").json()
        assert prediction["status"] == "processing"

        canceled = api.post(f"/predictions/{prediction['id']}/cancel")
        time.sleep(0.7)
        later = api.get(f"/predictions/{prediction['id']}").json()
        canceled_again = api.post(f"/predictions/{prediction['id']}/cancel").json()

    assert canceled.status_code == 200
    assert canceled.json()["status"] == "canceled"
    assert canceled.json()["completed_at"] is not None
    assert later == canceled_again == canceled.json()
    assert later["output"] is None
    assert "Total safe images" not in later["logs"]


def test_canceling_a_finished_prediction_changes_nothing(simulator):
    with api_for(simulator) as api:
        finished = create(api, wait=True).json()
        response = api.post(f"/predictions/{finished['id']}/cancel")

    assert response.status_code == 200
    assert response.json() == finished


def test_the_failing_test_model_ends_failed_with_a_real_looking_error(simulator):
    with api_for(simulator) as api:
        prediction = create(api, "darkroom/fails", wait=True).json()

    assert prediction["status"] == "failed"
    assert prediction["error"].startswith("CUDA out of memory. Tried to allocate")
    assert prediction["output"] is None
    assert prediction["completed_at"] is not None


def test_a_failure_rate_of_one_fails_every_prediction():
    with Simulator(speed=50, faults=Faults(failure_rate=1.0)) as sim, api_for(sim) as api:
        predictions = [create(api, wait=True).json() for _ in range(3)]

    assert [p["status"] for p in predictions] == ["failed"] * 3
    assert all(p["error"] for p in predictions)


def test_prefer_wait_holds_the_create_until_the_prediction_is_terminal(simulator):
    with api_for(simulator) as api:
        response = create(api, wait=True)

    assert response.status_code == 201
    assert response.json()["status"] == "succeeded"
    assert response.json()["output"]


def test_prefer_wait_gives_up_after_the_seconds_asked_for(simulator):
    with api_for(simulator) as api:
        started = time.monotonic()
        response = api.post(
            "/models/darkroom/slow/predictions",
            json={"input": {"prompt": "patience"}},
            headers={"Prefer": "wait=1"},
        )

    assert 1 <= time.monotonic() - started < 1.5
    assert response.json()["status"] == "processing"


def test_outputs_and_logs_are_removed_after_the_retention_period():
    with Simulator(speed=50, retention=0.3) as sim, api_for(sim) as api:
        prediction = create(api, wait=True).json()
        fresh_download = httpx.get(prediction["output"][0])
        time.sleep(0.4)
        removed = api.get(f"/predictions/{prediction['id']}").json()
        late_download = httpx.get(prediction["output"][0])

    assert prediction["data_removed"] is False
    assert fresh_download.status_code == 200
    assert removed["data_removed"] is True
    assert removed["status"] == "succeeded"
    assert (removed["output"], removed["logs"]) == (None, "")
    assert late_download.status_code == 404


def test_a_rate_limit_burst_answers_the_next_requests_429_with_retry_after(simulator):
    simulator.faults.rate_limit_burst = 2
    with api_for(simulator) as api:
        throttled = [create(api), api.get("/predictions")]
        allowed = create(api)

    for response in throttled:
        assert response.status_code == 429
        assert response.headers["Retry-After"] == "1"
        assert response.json() == {
            "detail": "Request was throttled. Expected available in 1 second.",
            "status": 429,
        }
    assert allowed.status_code == 201
    assert simulator.stats()["predictions_created"] == 1


def test_a_rate_limit_rate_of_one_throttles_every_request_it_aims_at(simulator):
    simulator.faults.rate_limit_rate = 1.0
    simulator.faults.endpoints = ["get"]
    with api_for(simulator) as api:
        created = create(api)
        polled = api.get(f"/predictions/{created.json()['id']}")

    assert created.status_code == 201
    assert polled.status_code == 429


def test_a_server_error_on_create_comes_after_the_prediction_was_created(simulator):
    simulator.faults.server_error_rate = 1.0
    simulator.faults.endpoints = ["create"]
    with api_for(simulator) as api:
        response = create(api, prompt="lost answer")
        listing = api.get("/predictions").json()

    assert response.status_code in {500, 502, 503}
    assert simulator.stats()["creates_by_prompt"] == {"lost answer": 1}
    assert [p["input"]["prompt"] for p in listing["results"]] == ["lost answer"]


def test_a_server_error_before_commit_creates_nothing(simulator):
    simulator.faults.server_error_rate = 1.0
    simulator.faults.create_error_after_commit = False
    with api_for(simulator) as api:
        response = create(api)

    assert response.status_code in {500, 502, 503}
    assert simulator.stats()["predictions_created"] == 0


def test_random_faults_hit_only_the_endpoints_they_aim_at(simulator):
    simulator.faults.server_error_rate = 1.0
    simulator.faults.endpoints = ["get"]
    with api_for(simulator) as api:
        created = create(api)
        polled = api.get(f"/predictions/{created.json()['id']}")
        canceled = api.post(f"/predictions/{created.json()['id']}/cancel")

    assert created.status_code == 201
    assert polled.status_code in {500, 502, 503}
    assert canceled.status_code == 200


def test_a_stall_makes_a_client_with_a_short_timeout_time_out(simulator):
    simulator.faults.stall_rate = 1.0
    simulator.faults.endpoints = ["get"]
    with api_for(simulator) as api:
        created = create(api)
        with pytest.raises(httpx.ReadTimeout):
            api.get(f"/predictions/{created.json()['id']}", timeout=0.3)


@pytest.mark.parametrize(("after_commit", "status", "created"), [(True, 201, 1), (False, 504, 0)])
def test_a_stalled_create_answers_late_and_was_created_only_if_it_got_through(
    simulator, after_commit, status, created
):
    simulator.faults.stall_rate = 1.0
    simulator.faults.stall_seconds = 0.2
    simulator.faults.create_error_after_commit = after_commit
    with api_for(simulator) as api:
        started = time.monotonic()
        response = create(api)

    assert time.monotonic() - started >= 0.2
    assert response.status_code == status
    assert simulator.stats()["predictions_created"] == created


def test_stopping_the_simulator_ends_a_stalled_request_at_once():
    sim = Simulator(speed=50, faults=Faults(stall_rate=1.0)).start()
    with ThreadPoolExecutor(1) as pool:
        poll = f"{sim.base_url}/predictions/whatever"
        stalled = pool.submit(httpx.get, poll, headers=AUTH, timeout=30)
        while sim.stats()["requests_by_endpoint"].get("get") != 1:
            time.sleep(0.01)
        started = time.monotonic()
        sim.stop()
        with pytest.raises(httpx.RemoteProtocolError):
            stalled.result(timeout=5)

    assert time.monotonic() - started < 1


def test_a_malformed_create_response_is_not_json_but_the_prediction_exists(simulator):
    simulator.faults.malformed_rate = 1.0
    simulator.faults.endpoints = ["create"]
    with api_for(simulator) as api:
        response = create(api)

    assert response.status_code == 201
    with pytest.raises(json.JSONDecodeError):
        response.json()
    assert simulator.stats()["predictions_created"] == 1


def test_a_slow_response_arrives_late_but_whole(simulator):
    simulator.faults.slow_rate = 1.0
    simulator.faults.slow_seconds = 0.3
    simulator.faults.endpoints = ["get"]
    with api_for(simulator) as api:
        created = create(api).json()
        started = time.monotonic()
        polled = api.get(f"/predictions/{created['id']}")

    assert time.monotonic() - started >= 0.3
    assert polled.json()["id"] == created["id"]


def test_faults_can_be_read_and_changed_over_http_without_a_token(simulator):
    control = f"{simulator.url}/_simulator/faults"

    changed = httpx.post(control, json={"rate_limit_burst": 1, "retry_after": 2})
    refused = httpx.post(control, json={"server_error_rate": 2})
    unknown = httpx.post(control, json={"gremlins": 1})
    with api_for(simulator) as api:
        throttled = api.get("/predictions")

    assert changed.status_code == 200
    assert changed.json()["retry_after"] == 2
    assert refused.status_code == 400
    assert "server_error_rate" in refused.json()["detail"]
    assert unknown.status_code == 400
    assert httpx.get(control).json() == changed.json() | {"rate_limit_burst": 0}
    assert throttled.headers["Retry-After"] == "2"
    assert throttled.json()["detail"] == "Request was throttled. Expected available in 2 seconds."


def test_stats_count_requests_by_endpoint_and_status_and_creates_by_prompt(simulator):
    with api_for(simulator) as api:
        prediction = create(api, wait=True, prompt="counted").json()
        api.get(f"/predictions/{prediction['id']}")
        api.get("/predictions/missing")
        httpx.get(prediction["output"][0])

    stats = httpx.get(f"{simulator.url}/_simulator/stats").json()
    assert stats == simulator.stats()
    assert stats["requests_by_endpoint"] == {"create": 1, "get": 2, "file": 1}
    assert stats["responses_by_status"] == {"201": 1, "200": 2, "404": 1}
    assert stats["predictions_created"] == 1
    assert stats["creates_by_prompt"] == {"counted": 1}


def test_the_official_client_runs_a_model_and_its_output_reads_as_an_image(simulator):
    client = replicate.Client(api_token="x", base_url=simulator.url)

    output = client.run(SCHNELL, input={"prompt": "a lighthouse", "output_format": "png"})

    # replicate wraps only https: URLs in FileOutput; the simulator serves plain http.
    [url] = output
    image = Image.open(io.BytesIO(FileOutput(url, client).read()))
    assert image.format == "PNG"


def test_the_official_client_creates_waits_reloads_and_cancels(simulator):
    client = replicate.Client(api_token="x", base_url=simulator.url)
    client.poll_interval = 0.02

    prediction = client.predictions.create(model=SCHNELL, input={"prompt": "a harbour"})
    assert prediction.status == "starting"
    prediction.wait()
    assert prediction.status == "succeeded"
    prediction.reload()
    assert prediction.metrics["image_count"] == 1
    assert prediction.progress.percentage == 1.0

    slow = client.predictions.create(model="darkroom/slow", input={"prompt": "never mind"})
    slow.cancel()
    slow.reload()
    assert slow.status == "canceled"


def test_the_management_command_serves_until_interrupted():
    command = subprocess.Popen(
        [sys.executable, "manage.py", "simulator", "--port", "0", "--speed", "50"],
        cwd=BASE_DIR,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        announced = command.stdout.readline()
        base_url = re.search(r"http://\S+/v1", announced)[0]
        response = httpx.post(
            f"{base_url}/models/{SCHNELL}/predictions",
            json={"input": {"prompt": "from the command line"}},
            headers=AUTH | {"Prefer": "wait"},
        )
        assert response.json()["status"] == "succeeded"
    finally:
        command.send_signal(signal.SIGINT)
        assert command.wait(timeout=10) == 0
