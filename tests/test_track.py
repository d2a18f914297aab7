"""A prediction made elsewhere (a script, the provider's site) is tracked by its provider id:
polled, archived and costed like one of the team's own, and no create is ever sent for it."""

import httpx
import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.test import Client

from accounts.models import Role
from costs.models import Kind, PredictionCost
from outputs.models import ArchiveState, Output
from predictions.models import RUNNING, Prediction, Status

from .conftest import configure_provider, make_team, make_user, wait_for, wait_until_finished

UNKNOWN_ID = "nosuchprediction0000000000"


def studio_token() -> str:
    """The Studio team's own token at the demo simulator, which Darkroom uses for its
    predictions there."""
    return make_team().simulator_token()


def created_at_the_simulator(simulator, token: str | None = None, **input) -> dict:
    """A prediction made straight at the simulator, as a script would, with `token` (the
    Studio team's own simulator token by default, so Darkroom may see it)."""
    token = token or studio_token()
    response = httpx.post(
        f"{simulator.base_url}/models/black-forest-labs/flux-schnell/predictions",
        json={"input": {"prompt": "a heron at dawn", **input}},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 201, response.text
    return response.json()


def track(client, remote_id: str, provider: str = "simulator"):
    return client.post("/predictions/track", {"provider": provider, "remote_id": remote_id})


def tracked(response) -> Prediction:
    assert response.status_code == 302, response.content.decode()[:2000]
    return Prediction.objects.get(pk=int(response["Location"].strip("/").split("/")[-1]))


def creates_sent(simulator) -> int:
    return simulator.stats()["requests_by_endpoint"].get("create", 0)


@pytest.mark.usefixtures("worker", "scheduler")
def test_a_prediction_made_at_the_simulator_is_tracked_to_its_end_with_outputs_and_cost(
    client, simulator, member
):
    remote = created_at_the_simulator(simulator, num_outputs=2, seed=7)

    prediction = tracked(track(client, remote["id"]))
    wait_until_finished(prediction)
    wait_for(
        lambda: (
            Output.objects.filter(prediction=prediction, state=ArchiveState.ARCHIVED).count() == 2
        ),
        message="both outputs archived",
    )

    assert prediction.status == Status.SUCCEEDED
    assert prediction.tracked
    assert (prediction.provider, prediction.provider_id) == ("simulator", remote["id"])
    assert prediction.submitted_by == member
    assert prediction.model == "black-forest-labs/flux-schnell"
    assert prediction.version == remote["version"]
    assert prediction.input == {"prompt": "a heron at dawn", "num_outputs": 2, "seed": 7}
    assert prediction.image_count == 2 and prediction.predict_time > 0
    # Its age and deadline count from the provider's acceptance, not from the tracking.
    assert prediction.accepted_at == prediction.created_at < prediction.submitted_at
    cost = PredictionCost.objects.get(pk=prediction.pk)
    assert (cost.kind, cost.member_id, cost.model) == (Kind.CHARGED, member.pk, prediction.model)
    assert cost.amount > 0
    assert creates_sent(simulator) == 1, "only the script's own create"
    page = client.get(prediction.get_absolute_url()).content.decode()
    assert "a heron at dawn" in page and "black-forest-labs/flux-schnell" in page


@pytest.mark.usefixtures("worker", "scheduler")
def test_a_running_tracked_prediction_shows_what_it_is_from_its_first_poll_and_can_be_canceled(
    client, simulator
):
    simulator.engine.speed = 2  # darkroom/slow then runs about 30 s
    response = httpx.post(
        f"{simulator.base_url}/models/darkroom/slow/predictions",
        json={"input": {"prompt": "a glacier, slowly"}},
        headers={"Authorization": f"Bearer {studio_token()}"},
    )
    prediction = tracked(track(client, response.json()["id"]))

    def known_while_running() -> bool:
        prediction.refresh_from_db()
        return prediction.model == "darkroom/slow" and prediction.status in RUNNING

    wait_for(known_while_running, message="the first poll to say what it is")
    assert prediction.input == {"prompt": "a glacier, slowly"}
    assert prediction.accepted_at is not None

    client.post(f"/predictions/{prediction.pk}/cancel")
    wait_until_finished(prediction)

    assert prediction.status == Status.CANCELED
    answer = httpx.get(
        f"{simulator.base_url}/predictions/{prediction.provider_id}",
        headers={"Authorization": f"Bearer {studio_token()}"},
    )
    assert answer.json()["status"] == "canceled"
    assert creates_sent(simulator) == 1


@pytest.mark.usefixtures("worker", "scheduler")
@pytest.mark.parametrize("made_by", ["nobody", "another token"])
def test_an_id_the_provider_does_not_know_ends_failed_saying_so_and_costs_nothing(
    client, simulator, made_by
):
    # The simulator, like Replicate, shows a prediction only to the token that made it.
    remote_id = (
        UNKNOWN_ID
        if made_by == "nobody"
        else created_at_the_simulator(simulator, token="someone-else")["id"]
    )

    prediction = tracked(track(client, remote_id))
    wait_until_finished(prediction)

    assert prediction.status == Status.FAILED
    assert "The provider does not know this prediction" in prediction.error
    assert remote_id in prediction.error
    assert prediction.provider_id == "", "the id may be tracked again once it is right"
    assert PredictionCost.objects.get(pk=prediction.pk).amount == 0
    page = client.get(prediction.get_absolute_url()).content.decode()
    assert "does not know this prediction" in page


def test_tracking_the_same_id_twice_gives_the_one_prediction(client, db):
    first = tracked(track(client, "ufawqhfynnddngldkgtslldrkq"))
    again = tracked(track(client, " ufawqhfynnddngldkgtslldrkq "))

    assert again.pk == first.pk
    assert Prediction.objects.count() == 1


def test_a_tracked_prediction_waits_for_its_first_poll_and_no_create_is_due(member, team):
    prediction = Prediction.track(team, member, "simulator", "ufawqhfynnddngldkgtslldrkq")

    assert prediction.status == Status.STARTING, "polled, never sent"
    assert prediction.tracked and prediction.tracked_unanswered
    assert (prediction.model, prediction.input, prediction.submit_attempts) == ("", {}, 0)
    assert prediction.next_poll_at is not None and prediction.submitted_by == member


def test_an_id_the_team_already_has_from_its_own_submit_is_that_prediction(member, team):
    own = Prediction.objects.create(
        team=team,
        provider="simulator",
        provider_id="ufawqhfynnddngldkgtslldrkq",
        model="black-forest-labs/flux-schnell",
        input={"prompt": "mine"},
        status=Status.SUCCEEDED,
    )

    assert Prediction.track(team, member, "simulator", own.provider_id) == own


def test_a_viewer_cannot_track(team, db):
    viewer = make_user("vic", team, Role.VIEWER)
    client = Client()
    client.force_login(viewer)

    assert client.get("/predictions/track").status_code == 403
    assert track(client, "ufawqhfynnddngldkgtslldrkq").status_code == 403
    with pytest.raises(PermissionDenied):
        Prediction.track(team, viewer, "simulator", "ufawqhfynnddngldkgtslldrkq")
    assert not Prediction.objects.exists()


def test_another_teams_tracked_prediction_is_not_found_and_its_id_not_given_away(client, db):
    elsewhere = make_team("Elsewhere")
    olga = make_user("olga", elsewhere, Role.OWNER)
    theirs = Prediction.track(elsewhere, olga, "simulator", "ufawqhfynnddngldkgtslldrkq")

    page = client.get(theirs.get_absolute_url())
    response = track(client, theirs.provider_id)

    assert page.status_code == 404
    assert response.status_code == 400
    assert "cannot be tracked by your team" in response.content.decode()
    assert "Elsewhere" not in response.content.decode()
    assert Prediction.objects.count() == 1


@pytest.mark.parametrize(
    ("provider", "remote_id", "says"),
    [
        ("simulator", "", "This field is required."),
        ("simulator", "   ", "This field is required."),
        ("simulator", "not an id!", "at most 128 letters, digits, dashes and underscores"),
        ("simulator", "../../v1/predictions", "at most 128 letters, digits, dashes and"),
        ("simulator", "x" * 129, "at most 128 characters"),
        ("midjourney", "ufawqhfynnddngldkgtslldrkq", "Select a valid choice."),
    ],
)
def test_bad_input_is_a_form_error_and_nothing_is_saved(client, db, provider, remote_id, says):
    response = track(client, remote_id, provider)

    assert response.status_code == 400
    assert says in response.content.decode()
    assert 'name="remote_id"' in response.content.decode(), "the form shows again"
    assert not Prediction.objects.exists()


def test_a_provider_without_a_key_is_refused_naming_what_to_set(client, settings, db):
    configure_provider(settings, "replicate", token="")

    response = track(client, "ufawqhfynnddngldkgtslldrkq", "replicate")

    assert response.status_code == 400
    assert "REPLICATE_API_TOKEN" in response.content.decode()
    assert not Prediction.objects.exists()


def test_the_simulator_is_refused_where_it_is_not_the_deployments_provider(settings, member, team):
    settings.DEFAULT_PROVIDER = "replicate"

    with pytest.raises(ValidationError) as refused:
        Prediction.track(team, member, "simulator", "ufawqhfynnddngldkgtslldrkq")

    assert list(refused.value.message_dict) == ["provider"]
    assert "cometapi, replicate" in refused.value.message_dict["provider"][0]


def test_the_form_is_offered_to_members_from_the_history(client, db):
    history = client.get("/").content.decode()
    form = client.get("/predictions/track")

    assert 'href="/predictions/track"' in history
    assert form.status_code == 200
    assert '<select name="provider"' in form.content.decode()
