"""A paid create whose outcome Darkroom could not tell: never written off when the provider did
answer, and looked for at the provider when it can list what the account made.

Each test drives one prediction a step at a time, as a worker would, against the simulator; the
database fails for real (its connections cut, or it is locked), never by patching Darkroom.
"""

from datetime import timedelta

import pytest
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import Role
from api.models import ApiToken
from predictions.client import Provider, ProviderClient
from predictions.models import LOOK_RETRIES, RESOLVE_DELAYS, Prediction

from .conftest import configure_provider, make_prediction, make_team, make_user
from .drills.outages import DatabaseOutage, is_postgresql


def step(prediction: Prediction, client: ProviderClient | None = None) -> Prediction:
    """Make the prediction due, claim it as the poller would and take its next step."""
    Prediction.objects.filter(pk=prediction.pk).update(next_poll_at=timezone.now())
    [claimed] = [p for p in Prediction.claim_batch(limit=100) if p.pk == prediction.pk]
    claimed.advance(client or ProviderClient())
    prediction.refresh_from_db()
    return prediction


def creates(simulator, prediction: Prediction) -> int:
    return simulator.stats()["creates_by_prompt"].get(prediction.prompt, 0)


def listed_ids(simulator, prompt: str) -> list[str]:
    return [p["id"] for p in simulator.engine.newest_first("") if p["input"]["prompt"] == prompt]


@pytest.fixture
def outage(monkeypatch) -> DatabaseOutage:
    """A database outage to begin at will; on SQLite a write gives up on a lock after 0.2 s
    rather than 20, so a few seconds of outage make every try fail."""
    if not is_postgresql():
        monkeypatch.setitem(connection.settings_dict["OPTIONS"], "timeout", 0.2)
        connection.close()
    outage = DatabaseOutage()
    yield outage
    outage.end()
    connection.close()


class LosesTheDatabase(ProviderClient):
    """A client whose create is answered by the provider, after which the database goes away
    for `seconds`: between the answer and its write, as when PostgreSQL restarts."""

    def __init__(self, outage: DatabaseOutage, seconds: float) -> None:
        super().__init__()
        self.outage, self.seconds = outage, seconds

    def create(self, *args, **kwargs):
        answer = super().create(*args, **kwargs)
        self.outage.begin(self.seconds)
        return answer


# --- The create's answer is never lost to the database ------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_create_answer_whose_database_went_away_is_stored_on_a_new_connection(simulator, outage):
    prediction = make_prediction("answered, then the database blinked")

    prediction = step(prediction, LosesTheDatabase(outage, seconds=0.6))

    assert prediction.status in ("starting", "processing", "succeeded")
    assert prediction.provider_id == listed_ids(simulator, prediction.prompt)[0]
    assert prediction.sending_since is None
    assert creates(simulator, prediction) == 1


@pytest.mark.django_db(transaction=True)
def test_an_answer_the_database_refused_for_longer_is_kept_for_the_next_worker(simulator, outage):
    prediction = make_prediction("answered, then the database stayed away")

    with pytest.raises(OperationalError):
        step(prediction, LosesTheDatabase(outage, seconds=6.0))
    outage.end()
    connection.close()

    prediction = step(prediction)
    assert prediction.status in ("starting", "processing", "succeeded")
    assert prediction.provider_id == listed_ids(simulator, prediction.prompt)[0]
    assert prediction.error == ""
    assert creates(simulator, prediction) == 1


class RecordsTheLastQuery(ProviderClient):
    """A client that notes the last query made before its create left."""

    def __init__(self, queries: CaptureQueriesContext) -> None:
        super().__init__()
        self.queries, self.last_query = queries, ""

    def create(self, *args, **kwargs):
        self.last_query = self.queries.captured_queries[-1]["sql"]
        return super().create(*args, **kwargs)


@pytest.mark.django_db
def test_a_create_marked_in_flight_leaves_without_another_query_first(simulator):
    """Between marking the create in flight and sending it, a lost database connection would
    leave a create that was never sent looking like one whose answer was lost."""
    prediction = make_prediction("sent straight after it is marked")
    with CaptureQueriesContext(connection) as queries:
        client = RecordsTheLastQuery(queries)
        prediction = step(prediction, client)

    assert "sending_since" in client.last_query
    assert client.last_query.lstrip().upper().startswith("UPDATE")
    assert prediction.status in ("starting", "processing", "succeeded")


@pytest.mark.django_db
def test_a_worker_that_stopped_mid_send_says_so_without_claiming_when(simulator):
    prediction = make_prediction(sending_since=timezone.now(), submit_attempts=1)

    prediction = step(prediction)

    assert prediction.status == "submit_unknown"
    assert "before the provider answered or before its answer was recorded" in prediction.error
    assert "will look for it among the provider's predictions" in prediction.error
    assert prediction.sending_since is not None  # when the create left, where it is looked for
    assert prediction.next_poll_at > timezone.now()
    assert creates(simulator, prediction) == 0


# --- Unknown outcomes are looked for at the provider --------------------------------------------


@pytest.mark.django_db
def test_an_unknown_outcome_the_provider_created_is_adopted_with_its_id_status_and_outputs(
    simulator,
):
    simulator.faults.server_error_rate = 1.0  # the create is made, then its answer is a 5xx
    simulator.faults.endpoints = ["create"]
    prediction = step(make_prediction("created behind a 503"))
    assert prediction.status == "submit_unknown"
    looked = (prediction.next_poll_at - prediction.completed_at).total_seconds()
    assert looked == pytest.approx(RESOLVE_DELAYS[0], abs=0.5)

    simulator.faults.server_error_rate = 0.0
    prediction = step(prediction)
    while prediction.status in ("starting", "processing"):
        prediction = step(prediction)

    assert prediction.status == "succeeded"
    assert prediction.provider_id == listed_ids(simulator, prediction.prompt)[0]
    assert prediction.error == ""
    assert prediction.output_urls
    assert prediction.outputs.count() == len(prediction.output_urls)
    assert prediction.accepted_at is not None
    assert creates(simulator, prediction) == 1


@pytest.mark.django_db
def test_an_unknown_outcome_never_created_keeps_its_state_with_what_was_looked_at(simulator):
    simulator.faults.server_error_rate = 1.0
    simulator.faults.create_error_after_commit = False  # the 5xx came before anything was made
    simulator.faults.endpoints = ["create"]
    token = make_team().simulator_token()  # the team's own: the provider lists it to the team
    model = "black-forest-labs/flux-schnell"
    simulator.engine.create(model, {"prompt": "made by hand"}, simulator.url, token=token)
    prediction = step(make_prediction("never made"))
    reason = prediction.error.splitlines()[0]

    prediction = step(prediction)

    assert prediction.status == "submit_unknown"
    assert prediction.error.splitlines()[0] == reason
    assert "looked for it among the provider's predictions (1 time" in prediction.error
    assert "none of the 1 predictions it lists from then has this model" in prediction.error
    assert "most likely never reached it" in prediction.error
    assert "will look again" in prediction.error
    assert prediction.polls == 1
    due_in = (prediction.next_poll_at - timezone.now()).total_seconds()
    assert due_in == pytest.approx(RESOLVE_DELAYS[1], abs=2)

    for _ in RESOLVE_DELAYS[1:]:
        prediction = step(prediction)

    assert prediction.status == "submit_unknown"
    assert f"({len(RESOLVE_DELAYS)} times" in prediction.error
    assert prediction.error.endswith("Check the provider's dashboard before submitting it again.")
    assert prediction.error.count("looked for it") == 1  # each look replaces the last one's note
    assert prediction.next_poll_at is None
    assert creates(simulator, prediction) == 0


@pytest.mark.django_db
def test_two_predictions_at_the_provider_that_could_be_it_are_not_guessed_between(simulator):
    simulator.faults.server_error_rate = 1.0
    simulator.faults.endpoints = ["create"]
    same = {"prompt": "twins", "seed": 7}
    first = step(make_prediction(input=same))
    second = step(make_prediction(input=same))

    first = step(first)

    assert first.status == "submit_unknown"
    assert "2 of the 2 predictions it lists from then have this model and input" in first.error
    assert second.status == "submit_unknown"


@pytest.mark.django_db
def test_a_prediction_already_followed_is_not_taken_for_the_lost_one(simulator):
    same = {"prompt": "variations", "seed": 3}
    followed = step(make_prediction(input=same))
    simulator.faults.server_error_rate = 1.0
    simulator.faults.endpoints = ["create"]
    lost = step(make_prediction(input=same))
    simulator.faults.server_error_rate = 0.0

    lost = step(lost)

    assert lost.status in ("starting", "processing", "succeeded")
    assert {followed.provider_id, lost.provider_id} == set(listed_ids(simulator, "variations"))


@pytest.mark.django_db
def test_a_provider_that_cannot_list_leaves_the_unknown_outcome_to_its_dashboard(
    settings, simulator
):
    configure_provider(settings, "simulator", lists=False)
    simulator.faults.server_error_rate = 1.0
    simulator.faults.endpoints = ["create"]

    prediction = step(make_prediction("behind a 502, at a provider that cannot list"))

    assert prediction.status == "submit_unknown"
    assert prediction.error.endswith("Check the provider's dashboard before submitting it again.")
    assert prediction.next_poll_at is None


@pytest.mark.django_db
def test_a_look_that_fails_for_now_is_tried_again_soon_then_noted(simulator):
    simulator.faults.server_error_rate = 1.0
    simulator.faults.endpoints = ["create"]
    prediction = step(make_prediction("created, then the provider went away"))
    simulator.stop()

    prediction = step(prediction)

    assert prediction.status == "submit_unknown"
    assert "Could not connect" in prediction.last_error
    assert prediction.error.endswith("will look for it among the provider's predictions.")
    assert prediction.polls == 0  # not a look: nothing was seen
    assert (prediction.next_poll_at - timezone.now()).total_seconds() < 2

    for _ in range(LOOK_RETRIES):
        prediction = step(prediction)

    assert "(1 time, last at" in prediction.error
    assert "the provider could not be asked: Could not connect" in prediction.error
    assert prediction.last_error == ""
    assert prediction.next_poll_at > timezone.now()


# --- The listing itself -------------------------------------------------------------------------


def test_the_providers_list_is_read_by_its_cursor_and_no_further_back_than_asked(
    live_server, transactional_db
):
    """Darkroom's own API lists predictions as Replicate does, a hundred a page with a `next`
    cursor: it stands in for a provider with many predictions."""
    team = make_prediction("first").team
    member = make_user("pat", team, Role.MEMBER)
    start = timezone.now() - timedelta(hours=1)
    Prediction.objects.update(submitted_at=start)
    for n in range(1, 230):
        make_prediction(f"tile {n}", submitted_at=start + timedelta(seconds=n))
    token = ApiToken.create(team, member, "list")[1]
    darkroom = Provider("simulator", "Darkroom", f"{live_server.url}/api/v1", token)

    everything = ProviderClient().list(darkroom, since=start)
    recent = ProviderClient().list(darkroom, since=start + timedelta(seconds=200))

    assert [p["input"]["prompt"] for p in everything][:2] == ["tile 229", "tile 228"]
    assert len(everything) == 230  # three pages
    assert len(recent) == 30
