"""Darkroom's Replicate-compatible API: the official `replicate` package against a live Darkroom,
backed by the simulator and a real worker, and the rules every create goes through."""

import socket
import threading
import time
import uuid
from datetime import timedelta
from decimal import Decimal

import httpx
import pytest
import replicate
from django.db import connection
from django.http import Http404
from django.test import Client
from django.utils import timezone

from accounts.models import Role
from api.models import ApiToken
from api.shapes import version_of
from api.views import waiting_seat
from costs.models import Budget, PredictionCost, PriceRule
from outputs.models import ArchiveState, Output
from predictions.client import ProviderClient
from predictions.models import Prediction
from webhooks.models import WebhookSubscription

from .conftest import make_prediction, make_team, make_user, wait_for

SCHNELL = "black-forest-labs/flux-schnell"
SCHNELL_PREDICTIONS = f"/api/v1/models/{SCHNELL}/predictions"


def token_for(user, team) -> str:
    return ApiToken.create(team, user, "tests")[1]


@pytest.fixture
def darkroom(live_server, worker, scheduler, team, member) -> replicate.Client:
    """The official client, pointed at a live Darkroom with a member's token. replicate-python
    puts /v1 in front of its paths itself, so its base URL is Darkroom's /api."""
    client = replicate.Client(api_token=token_for(member, team), base_url=f"{live_server.url}/api")
    client.poll_interval = 0.05
    return client


def api(token: str, **headers) -> Client:
    return Client(headers={"Authorization": f"Bearer {token}", **headers})


def create(token: str, body: dict, path: str = SCHNELL_PREDICTIONS, **headers):
    return api(token, **headers).post(path, body, content_type="application/json")


def send_due() -> None:
    """Send every prediction that is due, as the dispatcher and a worker would."""
    for pk, claim in Prediction.claim_due(limit=100):
        Prediction.take(pk, claim).advance(ProviderClient())


# --- The official client, live ------------------------------------------------------------------


def test_the_official_client_runs_a_model_and_the_job_is_the_teams_with_its_member_and_cost(
    darkroom, simulator, team, member
):
    output = darkroom.run(SCHNELL, input={"prompt": "a lighthouse at dusk", "num_outputs": 2})

    assert len(output) == 2 and all(url.startswith("http") for url in output)
    prediction = Prediction.objects.get()
    assert (prediction.team, prediction.submitted_by) == (team, member)
    assert (prediction.provider, prediction.model, prediction.status) == (
        "simulator",
        SCHNELL,
        "succeeded",
    )
    assert prediction.input == {"prompt": "a lighthouse at dusk", "num_outputs": 2}
    assert simulator.stats()["creates_by_prompt"]["a lighthouse at dusk"] == 1
    wait_for(lambda: PredictionCost.objects.filter(pk=prediction.pk).exists(), message="a cost")
    cost = PredictionCost.objects.get(pk=prediction.pk)
    assert cost.member == member
    history = signed_in(member).get("/").content.decode()
    assert "a lighthouse at dusk" in history
    assert f'<span class="cut">{member.username}</span>' in history
    assert cost.display in history


def test_the_official_client_runs_a_catalog_version(darkroom, team):
    version = darkroom.models.get(SCHNELL).latest_version.id

    output = darkroom.run(f"{SCHNELL}:{version}", input={"prompt": "a harbour"})

    assert len(output) == 1
    prediction = Prediction.objects.get()
    assert (prediction.model, prediction.status, prediction.team) == (SCHNELL, "succeeded", team)
    assert version == version_of(SCHNELL)


def test_the_official_client_creates_waits_gets_lists_and_cancels(darkroom, simulator):
    prediction = darkroom.predictions.create(model=SCHNELL, input={"prompt": "a quiet pier"})
    assert prediction.status == "starting"
    assert prediction.urls["get"].endswith(f"/api/v1/predictions/{prediction.id}")

    prediction.wait()

    assert prediction.status == "succeeded"
    assert prediction.metrics["predict_time"] > 0 and prediction.metrics["total_time"] > 0
    assert prediction.progress.percentage == 1.0
    fetched = darkroom.predictions.get(prediction.id)
    assert (fetched.id, fetched.status, fetched.output) == (
        prediction.id,
        "succeeded",
        prediction.output,
    )
    assert [p.id for p in darkroom.predictions.list()] == [prediction.id]

    simulator.engine.speed = 2  # darkroom/slow then runs about 30 s
    slow = darkroom.predictions.create(model="darkroom/slow", input={"prompt": "never mind"})
    wait_for(lambda: darkroom.predictions.get(slow.id).status == "processing")
    slow.cancel()

    wait_for(lambda: darkroom.predictions.get(slow.id).status == "canceled", message="a cancel")
    assert Prediction.objects.get(pk=slow.id).status == "canceled"


def test_prefer_wait_answers_once_the_prediction_has_ended(darkroom, live_server, team, member):
    # (predictions.create(model=...) drops `wait` on its way to models.predictions.create.)
    prediction = darkroom.models.predictions.create(SCHNELL, input={"prompt": "a"}, wait=True)

    assert prediction.status == "succeeded"
    assert prediction.output

    started = time.monotonic()
    response = httpx.post(
        f"{live_server.url}{SCHNELL_PREDICTIONS.replace(SCHNELL, 'darkroom/slow')}",
        json={"input": {"prompt": "too slow to wait for"}},
        headers={"Authorization": f"Bearer {token_for(member, team)}", "Prefer": "wait=1"},
        timeout=30,
    )

    assert 1 <= time.monotonic() - started < 10  # darkroom/slow takes a minute
    assert response.status_code == 201
    assert response.headers["Preference-Applied"] == "wait=1"
    assert response.json()["status"] in ("starting", "processing")


def test_a_create_answers_at_once_while_every_waiting_seat_is_taken(
    settings, live_server, team, member
):
    settings.API_MAX_WAITING = 1
    token = token_for(member, team)

    def create_slow(prompt: str) -> tuple[float, httpx.Response]:
        started = time.monotonic()
        response = httpx.post(
            f"{live_server.url}{SCHNELL_PREDICTIONS.replace(SCHNELL, 'darkroom/slow')}",
            json={"input": {"prompt": prompt}},
            headers={"Authorization": f"Bearer {token}", "Prefer": "wait=3"},
            timeout=30,
        )
        return time.monotonic() - started, response

    with waiting_seat(True) as held:  # another client's create holds the process's one seat
        assert held
        took, response = create_slow("no seat to wait in")
    assert took < 3
    assert response.status_code == 201
    assert "Preference-Applied" not in response.headers
    assert response.json()["status"] == "starting"

    took, response = create_slow("the seat is free again")
    assert took >= 3
    assert response.headers["Preference-Applied"] == "wait=3"


def test_a_waiting_seat_is_given_back_whatever_ends_the_wait(settings):
    settings.API_MAX_WAITING = 1

    with pytest.raises(Http404), waiting_seat(True):
        raise Http404  # the prediction was deleted while its create waited

    with waiting_seat(True) as seated:
        assert seated
    with waiting_seat(False) as seated:
        assert not seated  # a create that did not ask to wait takes no seat


def database_sessions() -> set[int]:
    """The other sessions of the test database (PostgreSQL's server processes); on SQLite, whose
    connections are no server's, none."""
    if connection.vendor != "postgresql":
        return set()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return {pid for (pid,) in cursor.fetchall()}


def test_a_waiting_create_holds_no_database_connection_and_answers_when_it_ends(
    live_server, transactional_db, team, member
):
    # No worker: the prediction waits to be sent until the test ends it.
    token, answers = token_for(member, team), []
    sessions_before = database_sessions()
    waiting = threading.Thread(
        target=lambda: answers.append(
            httpx.post(
                f"{live_server.url}{SCHNELL_PREDICTIONS}",
                json={"input": {"prompt": "held"}},
                headers={"Authorization": f"Bearer {token}", "Prefer": "wait"},
                timeout=70,
            )
        )
    )
    waiting.start()
    wait_for(Prediction.objects.exists, message="the create")
    time.sleep(1)  # well into the wait

    # The waiting request's connection (opened for the create) is closed.
    assert database_sessions() <= sessions_before
    ended = time.monotonic()
    assert Prediction.objects.get().request_cancel()
    waiting.join(10)

    assert time.monotonic() - ended < 15  # the team's change marker told it, not the 60 s wait
    [response] = answers
    assert (response.status_code, response.json()["status"]) == (201, "canceled")
    assert response.headers["Preference-Applied"] == "wait=60"


def test_the_official_client_reads_the_catalogs_models_and_versions(darkroom):
    model = darkroom.models.get(SCHNELL)
    versions = model.versions.list()

    assert (model.owner, model.name, model.visibility) == (
        "black-forest-labs",
        "flux-schnell",
        "public",
    )
    assert [v.id for v in versions] == [model.latest_version.id]
    schema = model.latest_version.openapi_schema["components"]["schemas"]["Input"]
    assert schema["properties"]["num_outputs"] == {
        "type": "integer",
        "title": "Images per prediction",
        "x-order": 2,
        "description": "1 to 4, made together by one prediction.",
        "default": 1,
        "minimum": 1,
        "maximum": 4,
    }
    assert schema["required"] == ["prompt"]
    with pytest.raises(replicate.exceptions.ReplicateError) as missing:
        darkroom.models.get("acme/unknown")
    assert missing.value.status == 404


def test_outputs_point_at_darkrooms_archived_copies_by_signed_links(darkroom, live_server):
    prediction = darkroom.predictions.create(model=SCHNELL, input={"prompt": "a", "seed": 3})
    prediction.wait()
    wait_for(lambda: Output.objects.filter(state=ArchiveState.ARCHIVED).exists(), message="a copy")

    [url] = darkroom.predictions.get(prediction.id).output

    assert url.startswith(f"{live_server.url}/api/v1/files/")
    copy = httpx.get(url)  # no token: the link is the credential
    assert copy.status_code == 200
    assert copy.headers["Content-Type"].startswith("image/")
    assert copy.content[:4] == b"RIFF"  # webp, the model's default format
    assert httpx.get(url[:-3] + "abc").status_code == 404


# --- The rules every create follows ---------------------------------------------------------------


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_a_create_over_the_budget_is_a_402_before_any_provider_call(team, member, simulator):
    PriceRule.objects.create(
        team=team,
        provider="simulator",
        model=SCHNELL,
        unit="per_image",
        amount=Decimal(1),
        effective_from=timezone.now() - timedelta(days=1),
    )
    Budget.objects.create(team=team, amount=Decimal("0.5"))

    response = create(token_for(member, team), {"input": {"prompt": "too dear"}})
    send_due()

    assert response.status_code == 402
    assert response.json()["status"] == 402
    assert "monthly budget" in response.json()["detail"]
    assert not Prediction.objects.exists()
    assert simulator.stats()["predictions_created"] == 0


def test_an_idempotent_retry_creates_one_prediction(team, member, simulator):
    token = token_for(member, team)
    body = {"input": {"prompt": "exactly once", "seed": 7}}

    first = create(token, body, **{"Idempotency-Key": "job-41"})
    retry = create(token, body, **{"Idempotency-Key": "job-41"})
    other = create(token, {"input": {"prompt": "something else"}}, **{"Idempotency-Key": "job-41"})
    send_due()

    assert (first.status_code, retry.status_code) == (201, 201)
    assert retry.json()["id"] == first.json()["id"]
    assert retry["Idempotent-Replayed"] == "true"
    assert other.status_code == 409
    assert Prediction.objects.count() == 1
    assert simulator.stats()["creates_by_prompt"]["exactly once"] == 1


def test_the_same_idempotency_key_in_another_team_is_another_prediction(team, member):
    elsewhere = make_team("Elsewhere")
    outsider = make_user("olga", elsewhere, Role.OWNER)
    body = {"input": {"prompt": "twice"}}

    ours = create(token_for(member, team), body, **{"Idempotency-Key": "k"})
    theirs = create(token_for(outsider, elsewhere), body, **{"Idempotency-Key": "k"})

    assert ours.json()["id"] != theirs.json()["id"]
    assert Prediction.objects.count() == 2


def test_invalid_inputs_are_a_422_listing_every_invalid_field(team, member):
    response = create(
        token_for(member, team),
        {"input": {"num_outputs": 9, "aspect_ratio": "7:3", "go_fast": "yes"}},
    )

    assert response.status_code == 422
    body = response.json()
    assert body["title"] == "Input validation failed"
    assert [field["field"] for field in body["invalid_fields"]] == ["input.go_fast"]
    assert "- input.go_fast: Invalid type. Expected: boolean." in body["detail"]

    response = create(token_for(member, team), {"input": {"num_outputs": 9, "aspect_ratio": "7:3"}})

    fields = {field["field"]: field["description"] for field in response.json()["invalid_fields"]}
    assert fields == {
        "input.prompt": "Enter a prompt: say what the image should show.",
        "input.num_outputs": "Enter a whole number from 1 to 4.",
        "input.aspect_ratio": "“7:3” is not offered by this model: choose one of "
        "1:1, 16:9, 21:9, 3:2, 2:3, 4:5, 5:4, 3:4, 4:3, 9:16, 9:21.",
    }
    assert not Prediction.objects.exists()


def test_a_null_character_anywhere_in_the_input_is_a_422_not_a_database_error(team, member):
    response = create(
        token_for(member, team),
        {"input": {"prompt": "a", "layers": [{"name": "x\u0000"}]}},
        path="/api/v1/models/acme/painter/predictions",
    )

    assert response.status_code == 422
    assert response.json()["invalid_fields"][0]["field"] == "input.layers"
    assert not Prediction.objects.exists()


def test_a_body_that_is_not_a_json_object_is_a_400(team, member):
    token = token_for(member, team)

    broken = api(token).post(SCHNELL_PREDICTIONS, "{", content_type="application/json")
    listed = create(token, [1, 2])  # type: ignore[arg-type]

    assert (broken.status_code, broken.json()["title"]) == (400, "Invalid JSON")
    assert listed.status_code == 400


def test_over_the_submit_limit_a_create_is_a_429_with_retry_after(settings, team, member):
    settings.SUBMIT_RATE_LIMIT_MEMBER = (1, 60)
    token = token_for(member, team)

    assert create(token, {"input": {"prompt": "one"}}).status_code == 201
    refused = create(token, {"input": {"prompt": "two"}})

    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert "Too many submissions" in refused.json()["detail"]
    assert Prediction.objects.count() == 1


@pytest.mark.parametrize(
    "version",
    [SCHNELL, f"{SCHNELL}:{version_of(SCHNELL)}", version_of(SCHNELL)],
    ids=["owner/name", "owner/name:version", "version id"],
)
def test_a_create_by_version_takes_each_of_replicates_forms(team, member, version):
    response = create(
        token_for(member, team),
        {"version": version, "input": {"prompt": "a"}},
        path="/api/v1/predictions",
    )

    assert response.status_code == 201
    assert response.json()["model"] == SCHNELL
    assert response.json()["version"] == version_of(SCHNELL)


def test_an_unknown_version_is_a_422(team, member):
    response = create(
        token_for(member, team),
        {"version": "0" * 64, "input": {"prompt": "a"}},
        path="/api/v1/predictions",
    )

    assert response.status_code == 422
    assert response.json()["invalid_fields"][0]["field"] == "version"


def test_any_model_can_be_created_by_owner_and_name(team, member):
    response = create(
        token_for(member, team),
        {"input": {"prompt": "a", "anything": [1, 2]}},
        path="/api/v1/models/acme/painter/predictions",
    )

    assert response.status_code == 201
    assert Prediction.objects.get().input == {"prompt": "a", "anything": [1, 2]}


def test_the_list_pages_newest_first_with_next_and_previous_links(team, member):
    made = [make_prediction(f"tile {n}", team=team) for n in range(205)]
    token = token_for(member, team)

    first = api(token).get("/api/v1/predictions").json()
    second = api(token).get(first["next"]).json()
    third = api(token).get(second["next"]).json()
    back = api(token).get(third["previous"]).json()

    newest_first = [str(p.pk) for p in reversed(made)]
    assert [p["id"] for p in first["results"]] == newest_first[:100]
    assert [p["id"] for p in second["results"]] == newest_first[100:200]
    assert [p["id"] for p in third["results"]] == newest_first[200:]
    assert first["previous"] is None and third["next"] is None
    assert back["results"] == second["results"]
    assert api(token).get("/api/v1/predictions?cursor=nonsense").status_code == 400


def test_darkrooms_own_end_states_read_as_replicates_failed_with_the_reason(team, member):
    timed_out = make_prediction(team=team, status="timed_out", error="No final status.")
    unknown = make_prediction(team=team, status="submit_unknown")

    first = api(token_for(member, team)).get(f"/api/v1/predictions/{timed_out.pk}").json()
    second = api(token_for(member, team)).get(f"/api/v1/predictions/{unknown.pk}").json()

    assert (first["status"], first["error"]) == ("failed", "No final status.")
    assert second["status"] == "failed"
    assert "could not tell" in second["error"]


def test_a_webhook_is_subscribed_with_the_prediction(settings, team, member):
    settings.WEBHOOKS_ALLOW_PRIVATE = True
    body = {
        "input": {"prompt": "call me"},
        "webhook": "http://127.0.0.1:9/hook",
        "webhook_events_filter": ["completed"],
    }

    response = create(token_for(member, team), body)

    assert response.status_code == 201
    subscription = WebhookSubscription.objects.get()
    assert subscription.prediction_id == int(response.json()["id"])
    assert (subscription.url, subscription.events) == ("http://127.0.0.1:9/hook", ["completed"])
    assert subscription.base_url == "http://testserver/api/v1"


def test_a_webhooks_name_is_resolved_before_the_submit_takes_the_teams_locks(
    transactional_db, monkeypatch, team, member
):
    in_transaction = []
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if host == "hooks.example.com":
            in_transaction.append(connection.in_atomic_block)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", 443))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    body = {"input": {"prompt": "call me"}, "webhook": "https://hooks.example.com/darkroom"}

    response = create(token_for(member, team), body)

    assert response.status_code == 201
    assert in_transaction == [False]
    assert WebhookSubscription.objects.get().url == "https://hooks.example.com/darkroom"


def test_a_webhook_to_a_private_address_is_a_422_and_creates_nothing(team, member):
    body = {"input": {"prompt": "call me"}, "webhook": "http://127.0.0.1:9/hook"}

    response = create(token_for(member, team), body)

    assert response.status_code == 422
    assert response.json()["invalid_fields"][0]["field"] == "webhook"
    assert not Prediction.objects.exists()


def test_the_webhook_secret_is_for_those_who_create(team, member):
    viewer = make_user("vic", team, Role.VIEWER)

    secret = api(token_for(member, team)).get("/api/v1/webhooks/default/secret")
    refused = api(token_for(viewer, team)).get("/api/v1/webhooks/default/secret")

    assert secret.status_code == 200 and secret.json()["key"].startswith("whsec_")
    assert refused.status_code == 403


def test_a_prediction_made_elsewhere_is_tracked_for_the_member(team, member):
    token = token_for(member, team)

    response = create(
        token, {"provider": "simulator", "id": "abc123"}, path="/api/v1/predictions/track"
    )
    unknown = create(token, {"provider": "acme", "id": "x"}, path="/api/v1/predictions/track")

    assert response.status_code == 201
    tracked = Prediction.objects.get(pk=response.json()["id"])
    assert (tracked.provider_id, tracked.submitted_by, tracked.tracked) == ("abc123", member, True)
    assert unknown.status_code == 422
    assert unknown.json()["invalid_fields"][0]["field"] == "provider"


def test_unknown_api_paths_and_methods_answer_in_json(team, member):
    token = token_for(member, team)

    missing = api(token).get("/api/v1/nothing/here")
    wrong_method = api(token).delete("/api/v1/predictions")

    assert (missing.status_code, missing.json()["status"]) == (404, 404)
    assert (wrong_method.status_code, wrong_method["Allow"]) == (405, "GET, POST")


def test_an_unknown_prediction_is_a_404(team, member):
    token = token_for(member, team)

    assert api(token).get(f"/api/v1/predictions/{uuid.uuid4().int}").status_code == 404
    assert api(token).get("/api/v1/predictions/999999").status_code == 404
