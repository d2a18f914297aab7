"""The provider simulator speaks Replicate's prediction API over a real socket, faults included."""

import base64
import hashlib
import hmac
import io
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import replicate
from PIL import Image, ImageDraw
from replicate.helpers import FileOutput

from predictions.management.commands.simulator import Command as SimulatorCommand
from predictions.models import Prediction
from predictions.models import timestamp as provider_time
from predictions.simulator import MODELS, Faults, Simulator
from predictions.simulator.images import render_image

from .conftest import wait_for

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


def test_an_image_shows_its_seed_but_never_its_prompt_which_a_share_may_hide(monkeypatch):
    drawn = []
    monkeypatch.setattr(
        ImageDraw.ImageDraw, "text", lambda draw, xy, words, **kw: drawn.append(words)
    )

    render_image("a secret prompt", 42, 0, "1:1", "webp", 80)

    assert drawn == ["seed 42"]


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

    assert 1 <= time.monotonic() - started < 5  # darkroom/slow takes far longer
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


def test_a_stall_burst_stalls_only_the_next_requests_to_the_fault_endpoints(simulator):
    simulator.faults.stall_burst = 1
    simulator.faults.stall_seconds = 0.3
    simulator.faults.endpoints = ["get"]
    with api_for(simulator) as api:
        started = time.monotonic()
        created = create(api).json()
        created_in = time.monotonic() - started
        polls = []
        for _ in range(2):
            started = time.monotonic()
            polls.append((api.get(f"/predictions/{created['id']}"), time.monotonic() - started))

    assert created_in < 0.3
    [(stalled, stalled_for), (next_poll, next_for)] = polls
    assert stalled.status_code == next_poll.status_code == 200
    assert stalled_for >= 0.3 > next_for
    assert simulator.faults.stall_burst == 0


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

    assert time.monotonic() - started < 5  # the stall would last 30 s


def test_a_stopped_simulator_closes_its_idle_connections_so_no_client_pool_reuses_them():
    sim = Simulator(speed=50).start()
    with httpx.Client(base_url=sim.base_url, headers=AUTH) as client:
        assert client.get("/models/black-forest-labs/flux-schnell").status_code == 200
        [pooled] = client._transport._pool.connections  # kept alive for the next request

        sim.stop()
        time.sleep(0.1)

        # Read as closed: a pool drops it rather than send the next request down it.
        assert pooled.has_expired()


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
            timeout=30,  # a fresh process on a loaded machine
        )
        assert response.json()["status"] == "succeeded"
    finally:
        command.send_signal(signal.SIGINT)
        assert command.wait(timeout=30) == 0


def test_a_response_leaves_in_one_write_so_one_read_finds_all_of_it(simulator):
    with api_for(simulator) as api:
        prediction_id = create(api).json()["id"]
    request = (
        f"GET /v1/predictions/{prediction_id} HTTP/1.1\r\nHost: sim\r\n"
        "Authorization: Bearer test-token\r\n\r\n"
    ).encode()

    # Headers and body written apart arrive apart on loopback, in most of 50 reads.
    whole = []
    with socket.create_connection(("127.0.0.1", simulator.port), timeout=5) as connection:
        for _ in range(50):
            connection.sendall(request)
            head, _, body = connection.recv(65536).partition(b"\r\n\r\n")
            length = int(re.search(rb"Content-Length: (\d+)", head)[1])
            whole.append(len(body) == length)
            while len(body) < length:
                body += connection.recv(65536)

    assert all(whole), f"{whole.count(False)} of 50 responses came in pieces"
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Type: application/json\r\n" in head
    assert json.loads(body)["id"] == prediction_id


def test_requests_with_unusual_headers_are_parsed_as_http_server_would():
    with Simulator(speed=50, token="secret") as sim:
        mixed_case = httpx.get(
            f"{sim.base_url}/predictions", headers={"aUTHORIZATION": "Bearer secret"}
        )
        with socket.create_connection(("127.0.0.1", sim.port), timeout=5) as connection:
            connection.sendall(b"GET /v1/predictions HTTP/1.0\r\n\r\n")
            old_client = connection.recv(65536)
        with socket.create_connection(("127.0.0.1", sim.port), timeout=5) as connection:
            connection.sendall(b"GET /v1/predictions HTTP/1.1\r\n" + b"X: y\r\n" * 101 + b"\r\n")
            too_many = connection.recv(65536)

    assert mixed_case.status_code == 200
    assert old_client.startswith(b"HTTP/1.1 401 ")
    assert too_many.startswith(b"HTTP/1.1 431 ")


def test_a_query_rate_limit_lets_that_many_requests_a_second_through_and_throttles_the_rest():
    with Simulator(speed=50, faults=Faults(query_rate_limit=20)) as sim, api_for(sim) as api:
        prediction_id = create(api).json()["id"]
        started = time.monotonic()
        burst = [api.get(f"/predictions/{prediction_id}") for _ in range(30)]
        assert time.monotonic() - started < 1, "the burst must fit in one second"
        created_meanwhile = create(api)
        time.sleep(1)
        later = api.get(f"/predictions/{prediction_id}")
        stats = sim.stats()

    assert [r.status_code for r in burst] == [200] * 20 + [429] * 10
    assert burst[-1].headers["Retry-After"] == "1"
    assert burst[-1].json() == {
        "detail": "Request was throttled. Expected available in 1 second.",
        "status": 429,
    }
    assert created_meanwhile.status_code == 201, "creates have a budget of their own"
    assert later.status_code == 200
    assert stats["responses_by_status"]["429"] == 10


def test_a_create_rate_limit_throttles_creates_only():
    with Simulator(speed=50, faults=Faults(create_rate_limit=2)) as sim, api_for(sim) as api:
        creates = [create(api) for _ in range(3)]
        polls = [api.get(f"/predictions/{creates[0].json()['id']}") for _ in range(5)]
        stats = sim.stats()

    assert [r.status_code for r in creates] == [201, 201, 429]
    assert {r.status_code for r in polls} == {200}
    assert stats["predictions_created"] == 2
    assert stats["responses_by_status"]["429"] == 1


def test_under_a_rate_limit_no_second_lets_more_requests_through_than_it_allows():
    limit = 25
    passed: list[tuple[float, float]] = []  # (sent, answered) of each request let through
    throttled = []
    with Simulator(speed=50, faults=Faults(query_rate_limit=limit)) as sim:

        def hammer() -> None:
            with api_for(sim) as api:
                deadline = time.monotonic() + 2.5
                while time.monotonic() < deadline:
                    sent = time.monotonic()
                    response = api.get("/predictions")
                    answered = time.monotonic()
                    if response.status_code == 200:
                        passed.append((sent, answered))
                    else:
                        throttled.append(response.headers["Retry-After"])

        with ThreadPoolExecutor(4) as pool:
            for future in [pool.submit(hammer) for _ in range(4)]:
                future.result()

    # The simulator let each request through between its sending and its answer. Requests
    # sent after one's answer and answered within a second of its sending were let through
    # within that second: a limiter that allowed more in some second shows here.
    for first_sent, first_answered in passed:
        within = [s for s, a in passed if s >= first_answered and a < first_sent + 1]
        assert 1 + len(within) <= limit
    assert len(passed) >= limit * 2, "the budget should be usable, not just enforced"
    assert len(passed) <= limit * 3
    assert throttled and set(throttled) == {"1"}


def test_rate_limits_and_webhook_duplicates_are_command_line_flags():
    parser = SimulatorCommand().create_parser("manage.py", "simulator")

    options = parser.parse_args(
        ["--query-rate-limit", "50", "--create-rate-limit", "10", "--webhook-duplicate-rate", "1"]
    )

    assert (options.query_rate_limit, options.create_rate_limit) == (50, 10)
    assert options.webhook_duplicate_rate == 1.0


def test_rate_limits_can_be_changed_over_http_and_must_be_whole_numbers(simulator):
    control = f"{simulator.url}/_simulator/faults"

    changed = httpx.post(control, json={"query_rate_limit": 5, "create_rate_limit": 1})
    refused = httpx.post(control, json={"query_rate_limit": 2.5})

    assert changed.status_code == 200
    assert (simulator.faults.query_rate_limit, simulator.faults.create_rate_limit) == (5, 1)
    assert refused.status_code == 400
    assert "query_rate_limit" in refused.json()["detail"]


# --- Webhooks ------------------------------------------------------------------------------


class Receiver:
    """A tiny HTTP server that records the webhooks it gets; it answers 500 to the first
    `failures` of them."""

    def __init__(self, failures: int = 0) -> None:
        self.deliveries: list[tuple[dict[str, str], bytes]] = []
        self.failures = failures
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {name.lower(): value for name, value in self.headers.items()}
                receiver.deliveries.append((headers, body))
                failed = len(receiver.deliveries) <= receiver.failures
                self.send_response(500 if failed else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/webhooks/1/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def payloads(self) -> list[dict]:
        return [json.loads(body) for _, body in self.deliveries]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.stop()


def signed_correctly(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """Standard Webhooks, written out here so the simulator's own signing is not trusted."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return f"v1,{expected}" in headers["webhook-signature"].split()


def create_with_webhook(api: httpx.Client, url: str, model: str = SCHNELL, **fields) -> dict:
    body = {"input": {"prompt": "a kingfisher"}, "webhook": url, **fields}
    response = api.post(f"/models/{model}/predictions", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def test_the_webhook_signing_secret_is_served_to_authenticated_clients(simulator):
    with api_for(simulator) as api:
        answer = api.get("/webhooks/default/secret")
    anonymous = httpx.get(f"{simulator.base_url}/webhooks/default/secret")

    assert answer.status_code == 200
    assert answer.json() == {"key": simulator.webhook_secret}
    assert re.fullmatch(r"whsec_[A-Za-z0-9+/]+={0,2}", simulator.webhook_secret)
    assert len(base64.b64decode(simulator.webhook_secret.removeprefix("whsec_"))) == 32
    assert anonymous.status_code == 401


def test_start_and_completed_webhooks_arrive_signed_with_the_secret(simulator, receiver):
    with api_for(simulator) as api:
        prediction = create_with_webhook(
            api, receiver.url, webhook_events_filter=["start", "completed"]
        )
        wait_for(lambda: len(receiver.deliveries) == 2, 5, "two webhooks")
        final = api.get(f"/predictions/{prediction['id']}").json()

    start, completed = receiver.payloads()
    assert (start["id"], start["status"]) == (prediction["id"], "processing")
    assert start["started_at"] and start["completed_at"] is None
    assert completed == final
    ids = [headers["webhook-id"] for headers, _ in receiver.deliveries]
    assert len(set(ids)) == 2
    for headers, body in receiver.deliveries:
        assert signed_correctly(simulator.webhook_secret, headers, body)
        assert abs(int(headers["webhook-timestamp"]) - time.time()) < 5
        assert headers["content-type"] == "application/json"
        assert not signed_correctly(simulator.webhook_secret, headers, body + b" ")
    assert simulator.stats()["webhooks"]["delivered_by_event"] == {"start": 1, "completed": 1}


def test_without_a_filter_webhooks_come_for_output_and_completed_as_replicate_documents(
    simulator, receiver
):
    with api_for(simulator) as api:
        create_with_webhook(api, receiver.url)
        wait_for(lambda: len(receiver.deliveries) == 2, 5, "two webhooks")

    assert [p["status"] for p in receiver.payloads()] == ["succeeded", "succeeded"]
    assert simulator.stats()["webhooks"]["delivered_by_event"] == {"output": 1, "completed": 1}


def test_logs_webhooks_come_while_it_runs_at_most_every_half_second(receiver):
    # At speed 20, darkroom/slow runs 1.5 to 6 s in 50 steps: far more steps than half seconds.
    with Simulator(speed=20, seed=5) as sim, api_for(sim) as api:
        prediction = create_with_webhook(
            api, receiver.url, "darkroom/slow", webhook_events_filter=["logs"]
        )
        final = poll_until_terminal(api, prediction)[-1]
        time.sleep(0.2)

    logs = [p["logs"] for p in receiver.payloads()]
    assert {p["status"] for p in receiver.payloads()} == {"processing"}
    assert 2 <= len(logs) <= final["metrics"]["predict_time"] / 0.5 + 1
    assert all(len(later) > len(earlier) for earlier, later in zip(logs, logs[1:], strict=False))


def test_a_cancel_sends_its_completed_webhook_at_once_and_no_start_if_it_never_started(
    receiver,
):
    # Canceled while still queued: no start event, and completed says canceled.
    with Simulator(speed=1, seed=2) as sim, api_for(sim) as api:
        prediction = create_with_webhook(
            api, receiver.url, "stability-ai/sdxl", webhook_events_filter=["start", "completed"]
        )
        api.post(f"/predictions/{prediction['id']}/cancel")
        wait_for(lambda: receiver.deliveries, 2, "the completed webhook")
        time.sleep(0.1)

    [completed] = receiver.payloads()
    assert (completed["id"], completed["status"]) == (prediction["id"], "canceled")
    assert completed["started_at"] is None


def test_a_failed_delivery_is_retried_with_the_same_id_and_body_and_a_new_signature(simulator):
    receiver = Receiver(failures=2)
    try:
        with api_for(simulator) as api:
            create_with_webhook(api, receiver.url, webhook_events_filter=["completed"])
            wait_for(lambda: len(receiver.deliveries) == 3, 5, "three attempts")
    finally:
        receiver.stop()

    [(first, body), *retries] = receiver.deliveries
    for headers, retried_body in retries:
        assert headers["webhook-id"] == first["webhook-id"]
        assert retried_body == body
        assert signed_correctly(simulator.webhook_secret, headers, retried_body)
    webhooks = simulator.stats()["webhooks"]
    assert (webhooks["failed_attempts"], webhooks["delivered"]) == (2, 1)


def test_a_delivery_that_keeps_failing_is_given_up_after_its_retries(simulator):
    receiver = Receiver(failures=100)
    try:
        with api_for(simulator) as api:
            create_with_webhook(api, receiver.url, webhook_events_filter=["completed"])
            wait_for(lambda: simulator.stats()["webhooks"]["given_up"] == 1, 10, "giving up")
    finally:
        receiver.stop()

    assert len(receiver.deliveries) == 5
    assert len({headers["webhook-id"] for headers, _ in receiver.deliveries}) == 1


def test_a_webhook_duplicate_rate_of_one_sends_every_webhook_twice_under_one_id(receiver):
    with Simulator(speed=50, faults=Faults(webhook_duplicate_rate=1.0)) as sim, api_for(sim) as api:
        create_with_webhook(api, receiver.url, webhook_events_filter=["start", "completed"])
        wait_for(lambda: len(receiver.deliveries) == 4, 5, "four deliveries")
        time.sleep(0.2)
        duplicated = sim.stats()["webhooks"]["duplicated"]

    ids = [headers["webhook-id"] for headers, _ in receiver.deliveries]
    assert len(ids) == 4 and len(set(ids)) == 2
    assert all(ids.count(webhook_id) == 2 for webhook_id in ids)
    assert duplicated == 2


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"webhook": "ftp://example.com/hook"}, "webhook"),
        ({"webhook": 7}, "webhook"),
        (
            {"webhook": "https://example.com/", "webhook_events_filter": ["finished"]},
            "webhook_events_filter",
        ),
        (
            {"webhook": "https://example.com/", "webhook_events_filter": "start"},
            "webhook_events_filter",
        ),
    ],
)
def test_a_malformed_webhook_or_filter_is_refused_with_422(simulator, fields, named):
    with api_for(simulator) as api:
        response = api.post(
            f"/models/{SCHNELL}/predictions", json={"input": {"prompt": "x"}, **fields}
        )

    assert response.status_code == 422
    assert response.json()["detail"].startswith(f"- {named}: ")
    assert simulator.stats()["predictions_created"] == 0


def test_stopping_the_simulator_stops_its_webhook_sender(receiver):
    sim = Simulator(speed=1).start()
    with api_for(sim) as api:
        create_with_webhook(api, receiver.url, "darkroom/slow")
    assert sim.engine.webhooks.running

    started = time.monotonic()
    sim.stop()

    assert not sim.engine.webhooks.running
    assert time.monotonic() - started < 5  # not waiting for the slow prediction's webhook
    assert receiver.deliveries == []


# --- Fidelity: what Replicate's clients rely on, and a simulator serving a deployment ---------


def moment(value: str) -> datetime:
    return datetime.fromisoformat(value)


def test_every_terminal_prediction_has_metrics_and_a_predict_time_if_it_ran():
    # At speed 200 darkroom/slow runs 0.15 to 0.6 s: long enough to cancel mid-run.
    with Simulator(speed=200, seed=3) as sim, api_for(sim) as api:
        succeeded = create(api, wait=True).json()
        failed = create(api, "darkroom/fails", wait=True).json()
        running = create(api, "darkroom/slow").json()
        while running["status"] == "starting":
            running = api.get(f"/predictions/{running['id']}").json()
        canceled_running = api.post(f"/predictions/{running['id']}/cancel").json()
    # At speed 1 sdxl waits about 2 s in the queue: canceled before it starts.
    with Simulator(speed=1, seed=3) as sim, api_for(sim) as api:
        queued = create(api, "stability-ai/sdxl").json()
        canceled_queued = api.post(f"/predictions/{queued['id']}/cancel").json()

    assert running["status"] == "processing" and running["metrics"] == {}
    assert set(succeeded["metrics"]) == {"image_count", "predict_time", "total_time"}
    assert set(failed["metrics"]) == {"predict_time", "total_time"}
    assert set(canceled_running["metrics"]) == {"predict_time", "total_time"}
    assert set(canceled_queued["metrics"]) == {"total_time"}
    for prediction in (succeeded, failed, canceled_running, canceled_queued):
        metrics = prediction["metrics"]
        assert 0 <= metrics.get("predict_time", 0) <= metrics["total_time"] < 5
        ran = moment(prediction["completed_at"]) - moment(prediction["created_at"])
        assert abs(ran.total_seconds() - metrics["total_time"]) < 1e-5
    started = moment(canceled_running["started_at"])
    ran = (moment(canceled_running["completed_at"]) - started).total_seconds()
    assert abs(canceled_running["metrics"]["predict_time"] - ran) < 1e-5


def test_times_have_replicates_precision_and_darkroom_reads_them_to_the_microsecond(simulator):
    with api_for(simulator) as api:
        answer = create(api, wait=True).json()

    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", answer["created_at"])
    for name in ("started_at", "completed_at"):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", answer[name]), name
        # Darkroom keeps the microseconds, cut as the provider's own clock would cut them.
        head, nanoseconds = answer[name].rstrip("Z").split(".")
        read = provider_time(answer[name])
        assert read == datetime.fromisoformat(f"{head}.{nanoseconds[:6]}+00:00")
    fields = Prediction(submitted_at=provider_time(answer["created_at"])).remote_fields(answer)
    assert fields["created_at"] < fields["started_at"] < fields["completed_at"]
    assert fields["completed_at"].microsecond == int(answer["completed_at"][20:26])


def test_a_model_and_its_versions_are_served_in_replicates_shapes(simulator):
    version = MODELS[SCHNELL].version
    with api_for(simulator) as api:
        create(api)
        model = api.get(f"/models/{SCHNELL}")
        versions = api.get(f"/models/{SCHNELL}/versions")
        one = api.get(f"/models/{SCHNELL}/versions/{version}")
        unknown_model = api.get("/models/nobody/nothing")
        unknown_version = api.get(f"/models/{SCHNELL}/versions/{'0' * 64}")
    anonymous = httpx.get(f"{simulator.base_url}/models/{SCHNELL}")

    assert model.status_code == 200
    assert set(model.json()) == {
        "url", "owner", "name", "description", "visibility", "github_url", "paper_url",
        "license_url", "run_count", "cover_image_url", "default_example", "latest_version",
    }  # fmt: skip
    assert (model.json()["owner"], model.json()["name"]) == ("black-forest-labs", "flux-schnell")
    assert model.json()["url"] == f"https://replicate.com/{SCHNELL}"
    assert model.json()["run_count"] == 1
    latest = model.json()["latest_version"]
    assert set(latest) == {"id", "created_at", "cog_version", "openapi_schema"}
    assert latest["id"] == version
    schemas = latest["openapi_schema"]["components"]["schemas"]
    assert schemas["Input"]["required"] == ["prompt"]
    assert schemas["Output"] == {
        "title": "Output",
        "type": "array",
        "items": {"type": "string", "format": "uri"},
    }
    assert versions.json() == {"next": None, "previous": None, "results": [latest]}
    assert one.json() == latest
    assert unknown_model.status_code == unknown_version.status_code == 404
    assert unknown_model.json() == {"detail": "Not found.", "status": 404}
    assert anonymous.status_code == 401


def test_the_official_client_gets_a_model_and_runs_it_by_owner_name_and_version(simulator):
    client = replicate.Client(api_token="x", base_url=simulator.url)
    version = MODELS[SCHNELL].version

    model = client.models.get(SCHNELL)
    [listed] = model.versions.list()
    output = client.run(f"{SCHNELL}:{version}", input={"prompt": "a lighthouse"})

    assert model.id == SCHNELL and model.latest_version.id == version
    assert listed.id == version and listed.cog_version
    [url] = output
    assert str(url).startswith(f"{simulator.url}/files/")


def test_predictions_are_visible_only_to_the_token_that_created_them(simulator):
    mine = {"Authorization": "Bearer mine"}
    theirs = {"Authorization": "Bearer theirs"}
    with httpx.Client(base_url=simulator.base_url, timeout=10) as api:
        created = api.post(
            f"/models/{SCHNELL}/predictions",
            json={"input": {"prompt": "a secret garden"}},
            headers=mine | {"Prefer": "wait"},
        ).json()
        path = f"/predictions/{created['id']}"
        seen_by_them = api.get(path, headers=theirs)
        canceled_by_them = api.post(f"{path}/cancel", headers=theirs)
        listed_for_them = api.get("/predictions", headers=theirs).json()
        seen_by_me = api.get(path, headers=mine)
        listed_for_me = api.get("/predictions", headers=mine).json()
        file = httpx.get(created["output"][0])

    assert seen_by_them.status_code == canceled_by_them.status_code == 404
    assert seen_by_them.json() == {"detail": "Not found.", "status": 404}
    assert listed_for_them["results"] == []
    assert seen_by_me.json() == created
    assert [p["id"] for p in listed_for_me["results"]] == [created["id"]]
    assert created["status"] == "succeeded", "their cancel changed nothing"
    assert file.status_code == 200, "output files are public URLs, as on Replicate"


def test_the_control_endpoints_answer_404_unless_the_simulator_opens_them():
    with Simulator(speed=50) as sim:
        faults = httpx.post(f"{sim.url}/_simulator/faults", json={"server_error_rate": 1})
        read = httpx.get(f"{sim.url}/_simulator/faults")
        stats = httpx.get(f"{sim.url}/_simulator/stats")
        with api_for(sim) as api:
            created = create(api)

    assert faults.status_code == read.status_code == stats.status_code == 404
    assert faults.json() == {"detail": "Not found.", "status": 404}
    assert sim.faults.server_error_rate == 0
    assert created.status_code == 201


def test_output_urls_name_the_configured_address_whatever_the_host_header(simulator):
    with api_for(simulator) as api:
        prediction = create(api, wait=True).json()
        forged = api.post(
            f"/models/{SCHNELL}/predictions",
            json={"input": {"prompt": "a forged host"}},
            headers={"Prefer": "wait", "Host": "evil.example:6666"},
        ).json()
        polled_forged = api.get(
            f"/predictions/{prediction['id']}", headers={"Host": "evil.example:6666"}
        ).json()

    assert forged["output"] == [f"{simulator.url}/files/{forged['id']}/out-0.webp"]
    assert polled_forged["output"] == prediction["output"]
    assert prediction["output"][0].startswith(f"{simulator.url}/files/")


def test_the_command_opens_control_only_when_asked_and_names_the_configured_public_url(
    settings,
):
    settings.PROVIDERS = {
        **settings.PROVIDERS,
        "simulator": {**settings.PROVIDERS["simulator"], "public_url": "https://sim.example"},
    }
    parser = SimulatorCommand().create_parser("manage.py", "simulator")

    defaults = parser.parse_args([])
    asked = parser.parse_args(["--control", "--public-url", "http://other.example"])

    assert (defaults.control, defaults.public_url) == (False, "https://sim.example")
    assert (asked.control, asked.public_url) == (True, "http://other.example")
