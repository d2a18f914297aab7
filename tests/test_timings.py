"""Learned queue and run times: an ended prediction leaves a sample, the learner folds samples
into its model's histograms, the poller reads them from a snapshot, and the team sees them."""

import html
import math
import re
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test import Client

from accounts.models import Role
from predictions.models import Prediction
from predictions.tasks import wake_dispatcher
from predictions.templatetags.durations import duration
from timings import distribution, histograms, plans
from timings.learned import (
    BUILT_IN_RUN,
    DEADLINE_FACTOR,
    PRIOR_STRENGTH,
    TimingCache,
    cache,
)
from timings.models import HALF_LIFE, ModelTiming, TimingSample

from .conftest import make_prediction, make_team, make_user, wait_for, wait_until_finished

SCHNELL = "black-forest-labs/flux-schnell"
DEV = "black-forest-labs/flux-dev"
START = datetime(2026, 1, 5, 12, tzinfo=UTC)
# A histogram bin's width, as a factor: how close a learned quantile can be.
BIN = histograms.EDGES[1] / histograms.EDGES[0]


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def ended(
    status: str = "succeeded",
    *,
    queued: float | None = 2.0,
    ran: float = 5.0,
    model: str = SCHNELL,
    provider: str = "replicate",
    team=None,
) -> Prediction:
    """A prediction that started after `queued` seconds (never, for None) and then ended as
    `status` after `ran` seconds, as a worker records the provider's answers."""
    prediction = make_prediction(model=model, provider=provider, team=team or make_team())
    provider_id = uuid.uuid4().hex
    prediction.apply_remote({"id": provider_id, "status": "starting", "created_at": iso(START)})
    started = START + timedelta(seconds=queued or 0)
    prediction.apply_remote(
        {
            "id": provider_id,
            "status": status,
            "created_at": iso(START),
            "started_at": iso(started) if queued is not None else None,
            "completed_at": iso(started + timedelta(seconds=ran)),
        }
    )
    return prediction


def samples(count: int, run: float, queue: float = 1.0, model: str = SCHNELL, **fields) -> None:
    """`count` waiting samples of `model` at Replicate, runs spread a few percent around `run`."""
    fields.setdefault("provider", "replicate")
    TimingSample.objects.bulk_create(
        TimingSample(
            model=model,
            queue_seconds=queue,
            run_seconds=run * (0.95 + 0.1 * n / count),
            **fields,
        )
        for n in range(count)
    )


def learned(model: str = SCHNELL, provider: str = "replicate") -> ModelTiming:
    return ModelTiming.objects.get(provider=provider, model=model)


def close_to(value: float, expected: float) -> bool:
    """Within one histogram bin of `expected`."""
    return expected / BIN <= value <= expected * BIN


# --- Recording -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_prediction_that_succeeded_records_its_queue_and_run_times():
    ended("succeeded", queued=2.5, ran=7.25)

    (sample,) = TimingSample.objects.all()
    assert (sample.provider, sample.model) == ("replicate", SCHNELL)
    assert sample.queue_seconds == 2.5
    assert sample.run_seconds == 7.25


@pytest.mark.django_db
def test_a_prediction_that_failed_after_running_records_a_sample_too():
    ended("failed", queued=0.5, ran=1.5)

    assert TimingSample.objects.get().run_seconds == 1.5


@pytest.mark.django_db
@pytest.mark.parametrize(
    "status, queued, ran",
    [
        ("canceled", 1.0, 3.0),
        ("aborted", 1.0, 3.0),
        ("failed", None, 3.0),
        ("succeeded", -1.0, 3.0),
        ("succeeded", 1.0, -3.0),
        ("succeeded", 1.0, 3 * 24 * 3600.0),
    ],
)
def test_a_prediction_that_says_nothing_of_its_models_times_records_no_sample(status, queued, ran):
    ended(status, queued=queued, ran=ran)

    assert not TimingSample.objects.exists()


@pytest.mark.django_db
def test_a_running_answer_or_a_time_out_records_no_sample():
    prediction = make_prediction(provider="replicate")
    prediction.apply_remote(
        {
            "id": "abc",
            "status": "processing",
            "created_at": iso(START),
            "started_at": iso(START + timedelta(seconds=1)),
        }
    )
    prediction.time_out()

    assert prediction.status == "timed_out"
    assert not TimingSample.objects.exists()


@pytest.mark.django_db
@pytest.mark.filterwarnings("ignore:DateTimeField .* received a naive datetime")
def test_times_without_a_zone_record_no_sample_and_still_end_the_prediction():
    prediction = make_prediction(provider="replicate")
    prediction.apply_remote(
        {
            "id": "abc",
            "status": "succeeded",
            "created_at": "2026-01-05T12:00:00",
            "started_at": "2026-01-05T12:00:01",
            "completed_at": "2026-01-05T12:00:05Z",
        }
    )

    assert Prediction.objects.get(pk=prediction.pk).status == "succeeded"
    assert not TimingSample.objects.exists()


# --- Learning --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_learning_folds_samples_into_the_models_histograms_and_deletes_them():
    samples(200, run=5.0, queue=0.8)

    assert ModelTiming.learn() == 200

    row = learned()
    assert row.samples == 200
    assert not TimingSample.objects.exists()
    timing = distribution("replicate", SCHNELL)
    assert timing.source == "learned"
    assert timing.samples == 200
    assert close_to(timing.run.quantile(0.5), 5.0)
    assert close_to(timing.queue.quantile(0.5), 0.8)
    assert close_to(timing.total.quantile(0.5), 5.8)
    assert timing.run.cdf(2.0) < 0.05 < 0.95 < timing.run.cdf(12.0)
    assert timing.run.survival(12.0) == pytest.approx(1 - timing.run.cdf(12.0))


@pytest.mark.django_db
def test_learning_with_nothing_new_changes_nothing():
    samples(10, run=5.0)
    ModelTiming.learn()
    before = learned()

    assert ModelTiming.learn() == 0

    assert learned().run == before.run


@pytest.mark.django_db
def test_a_backlog_is_folded_a_batch_at_a_time(monkeypatch):
    monkeypatch.setattr("timings.models.LEARN_BATCH", 30)
    samples(100, run=5.0)

    assert ModelTiming.learn() == 100

    assert learned().samples == 100


@pytest.mark.django_db
def test_each_model_learns_from_its_own_samples():
    samples(50, run=3.0, model=SCHNELL)
    samples(50, run=40.0, model=DEV)

    ModelTiming.learn()

    assert close_to(distribution("replicate", SCHNELL).run.quantile(0.5), 3.0)
    assert close_to(distribution("replicate", DEV).run.quantile(0.5), 40.0)


@pytest.mark.django_db
def test_a_model_that_got_faster_is_relearned():
    samples(2 * HALF_LIFE, run=20.0)
    ModelTiming.learn()
    assert close_to(distribution("replicate", SCHNELL).run.quantile(0.5), 20.0)

    samples(2 * HALF_LIFE, run=4.0)
    ModelTiming.learn()
    cache.clear()

    timing = distribution("replicate", SCHNELL)
    assert close_to(timing.run.quantile(0.5), 4.0)
    # The old runs are not forgotten at once, only outweighed.
    assert 0.05 < timing.run.survival(10.0) < 0.5


@pytest.mark.django_db(transaction=True)
def test_concurrent_learners_count_every_sample_once():
    samples(600, run=5.0)
    start = threading.Barrier(2)
    folded = []

    def learner() -> None:
        start.wait()
        try:
            while count := ModelTiming.learn_batch(40):
                folded.append(count)
        finally:
            connection.close()

    threads = [threading.Thread(target=learner) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    row = learned()
    assert sum(folded) == row.samples == 600
    assert not TimingSample.objects.exists()
    # However the batches fell, 600 samples folded leave the weight of 600 decayed samples.
    keep = 0.5 ** (1 / HALF_LIFE)
    assert sum(row.run) == pytest.approx((1 - keep**600) / (1 - keep), rel=1e-4)


# --- Priors ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_model_never_seen_gets_the_built_in_prior():
    timing = distribution("replicate", "acme/new-model")

    assert timing.source == "built-in"
    assert timing.samples == 0
    assert close_to(timing.queue.quantile(0.5), 1.0)
    assert close_to(timing.run.quantile(0.5), 8.0)
    # Queue and run add up: the total's median is past both.
    assert 8.0 < timing.total.quantile(0.5) < 9.0 * BIN


@pytest.mark.django_db
def test_a_new_model_of_a_known_provider_gets_the_provider_wide_prior():
    samples(300, run=30.0, model=SCHNELL)
    samples(300, run=60.0, model=DEV)
    ModelTiming.learn()

    timing = distribution("replicate", "acme/new-model")

    assert timing.source == "provider"
    assert timing.samples == 0
    assert 30.0 / BIN < timing.run.quantile(0.5) < 60.0 * BIN
    # Another provider's models say nothing of this one's.
    assert distribution("cometapi", "acme/new-model").source == "built-in"


@pytest.mark.django_db
def test_a_model_with_few_samples_blends_the_prior_with_its_data():
    samples(2, run=300.0)
    ModelTiming.learn()

    few = distribution("replicate", SCHNELL)

    # Its own two samples count 2 / (2 + 10): the rest is the prior (here the built-in one, as
    # the provider has no other model), which expects runs of seconds, not minutes.
    assert few.run.survival(200.0) == pytest.approx(2 / (2 + PRIOR_STRENGTH), abs=0.001)
    assert close_to(few.run.quantile(0.5), histograms.Distribution(BUILT_IN_RUN).quantile(0.6))

    samples(200, run=300.0)
    ModelTiming.learn()
    cache.clear()
    assert close_to(distribution("replicate", SCHNELL).run.quantile(0.5), 300.0)


@pytest.mark.django_db
def test_the_deadline_grows_only_for_a_model_known_to_be_slow():
    samples(300, run=1200.0, model=DEV)
    samples(300, run=5.0, model=SCHNELL, provider="simulator")
    ModelTiming.learn()

    assert distribution("simulator", SCHNELL).deadline(1800.0) == 1800.0
    assert distribution("cometapi", "acme/new-model").deadline(1800.0) == 1800.0
    slow = distribution("replicate", DEV)
    assert slow.deadline(1800.0) == DEADLINE_FACTOR * slow.total.quantile(0.99)
    assert slow.deadline(1800.0) > 3000.0


# --- Reading: the snapshot -------------------------------------------------------------------


@pytest.mark.django_db
def test_the_snapshot_is_read_again_only_after_thirty_seconds(django_assert_num_queries):
    now = [1000.0]
    snapshot = TimingCache(max_age=30.0, clock=lambda: now[0])
    with django_assert_num_queries(1):
        assert snapshot.distribution("replicate", SCHNELL).source == "built-in"
    samples(50, run=5.0)
    ModelTiming.learn()

    now[0] += 29.0
    with django_assert_num_queries(0):
        assert snapshot.distribution("replicate", SCHNELL).source == "built-in"
        assert snapshot.distribution("replicate", DEV).source == "built-in"

    now[0] += 1.0
    with django_assert_num_queries(1):
        timing = snapshot.distribution("replicate", SCHNELL)
    assert timing.source == "learned"
    assert close_to(timing.run.quantile(0.5), 5.0)


@pytest.mark.django_db
def test_a_fresh_snapshot_hands_out_the_same_timing_without_a_query(django_assert_num_queries):
    samples(50, run=5.0)
    ModelTiming.learn()
    first = distribution("replicate", SCHNELL)

    with django_assert_num_queries(0):
        started = time.perf_counter()
        for _ in range(1000):
            again = distribution("replicate", SCHNELL)
        per_call = (time.perf_counter() - started) / 1000

    assert again is first
    # Microseconds, not a query's milliseconds (generously, for a slow test machine).
    assert per_call < 50e-6


# --- The timings page ------------------------------------------------------------------------


def text_of(response) -> str:
    words = re.sub(r"<[^>]+>", " ", response.content.decode())
    return re.sub(r"\s+", " ", html.unescape(words))


def row_of(response, model: str) -> str:
    """The text of the page's table row for `model`."""
    rows = re.findall(r"<tr>(.*?)</tr>", response.content.decode(), re.S)
    (row,) = [row for row in rows if model in row]
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", row))).strip()


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.django_db
def test_the_timings_page_shows_the_teams_models_only_with_their_figures(team, member):
    other = make_team("Elsewhere")
    ended(team=team, model=SCHNELL, ran=5.0)
    ended(team=other, model="acme/secret-model", ran=5.0)
    samples(199, run=5.0, queue=0.5)
    ModelTiming.learn()
    cache.clear()  # as 30 s later: the page shows what the poller reads

    response = signed_in(member).get("/team/timings/")

    assert response.status_code == 200
    text = text_of(response)
    assert SCHNELL in text
    assert "acme/secret-model" not in text
    timing = distribution("replicate", SCHNELL)
    row = row_of(response, SCHNELL)
    assert row.startswith(f"{SCHNELL} Replicate 200 ")
    for figure in (
        timing.queue.quantile(0.5),
        timing.queue.quantile(0.9),
        timing.run.quantile(0.5),
        timing.run.quantile(0.9),
        timing.run.quantile(0.99),
    ):
        assert duration(timedelta(seconds=figure)) in row
    # As the poller plans it, no later than the 30 minutes' deadline.
    assert row.endswith(plans.describe(timing, plans.typical_polls(timing, 1800.0)))
    assert "Polled every ~" in row
    assert "30 min 0 s" in row


@pytest.mark.django_db
def test_a_model_known_to_be_slow_shows_its_longer_deadline(team, member):
    ended(team=team, model=DEV)
    samples(300, run=1200.0, model=DEV)
    ModelTiming.learn()
    cache.clear()

    row = row_of(signed_in(member).get("/team/timings/"), DEV)

    deadline = distribution("replicate", DEV).deadline(1800.0)
    assert deadline > 3000.0
    assert duration(timedelta(seconds=deadline)) in row


@pytest.mark.django_db
def test_polls_are_densest_where_the_model_usually_ends(settings):
    settings.POLL_DENSE_INTERVAL, settings.POLL_MAX_INTERVAL = 0.5, 30.0
    samples(300, run=20.0, queue=1.0)
    ModelTiming.learn()
    timing = distribution("replicate", SCHNELL)

    polls = plans.typical_polls(timing, 1800.0)

    ending = [delay for age, delay in polls if 19.0 <= age <= 22.0]
    assert ending and max(ending) < 1.0
    assert len([age for age, _ in polls if age < 15.0]) < 10
    assert polls[-1][1] == 30.0
    words = plans.describe(timing, polls)
    assert re.fullmatch(
        r"Polled every ~\d+ ms from 1\d\.\d s to 2\d\.\d s after the provider accepts it, "
        r"where 9 in 10 of its predictions end \(\d+ polls? before that\); then every \d+ ms, "
        r"slowing to every 30\.0 s\.",
        words,
    ), words


@pytest.mark.django_db
def test_a_model_the_team_used_at_two_providers_has_a_row_for_each(team, member):
    ended(team=team, model=SCHNELL, provider="replicate")
    ended(team=team, model=SCHNELL, provider="simulator")
    # Learned from another team only: not a provider this team used.
    samples(20, run=5.0, provider="cometapi")
    ModelTiming.learn()

    assert ModelTiming.used_in(Prediction.objects.filter(team=team)) == [
        ("replicate", SCHNELL),
        ("simulator", SCHNELL),
    ]


@pytest.mark.django_db
def test_a_model_without_samples_yet_shows_its_prior(team, member):
    make_prediction(team=team, provider="replicate", model="acme/painter")

    text = text_of(signed_in(member).get("/team/timings/"))

    assert "acme/painter" in text
    assert "None yet: a first guess" in text


@pytest.mark.django_db
@pytest.mark.parametrize("role", [Role.VIEWER, Role.MEMBER, Role.OWNER])
def test_every_role_sees_the_timings_page_and_the_link_to_it(team, role):
    user = make_user(f"user-{role}", team, role)
    browser = signed_in(user)

    assert browser.get("/team/timings/").status_code == 200
    assert 'href="/team/timings/"' in browser.get("/team/").content.decode()


@pytest.mark.django_db
def test_a_signed_out_visitor_is_sent_to_sign_in():
    response = Client().get("/team/timings/")

    assert response.status_code == 302
    assert response["Location"].startswith("/sign-in/")


@pytest.mark.django_db
def test_the_timings_page_has_no_inline_style_or_script(team, member):
    ended(team=team)
    ModelTiming.learn()

    response = signed_in(member).get("/team/timings/")

    page = response.content.decode()
    nonce = re.search(r"'nonce-([^']+)'", response.headers["Content-Security-Policy"])[1]
    assert "style=" not in page
    assert "<style" not in page
    assert all(f'nonce="{nonce}"' in tag for tag in re.findall(r"<script\b[^>]*>", page))


# --- End to end ------------------------------------------------------------------------------


@pytest.mark.usefixtures("worker", "scheduler")
def test_predictions_run_by_the_workers_are_learned_by_the_scheduled_task():
    predictions = [make_prediction(f"tile {n}") for n in range(3)]

    wake_dispatcher()
    wait_until_finished(*predictions)

    wait_for(
        lambda: ModelTiming.objects.filter(provider="simulator", model=SCHNELL, samples=3).exists(),
        message="the three predictions to be learned",
    )
    assert not TimingSample.objects.exists()
    run = distribution("simulator", SCHNELL).run
    assert math.isfinite(run.quantile(0.5))
