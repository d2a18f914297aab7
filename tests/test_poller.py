"""The poller: when it polls (predictions.schedule), how it claims and writes in batches, and how
it recovers from a killed worker."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from predictions.client import ProviderClient
from predictions.models import Prediction
from predictions.poller import Job, Poller, relax_commits, running_poller
from predictions.schedule import QUEUE_MASS, plan
from predictions.tasks import dispatch_due, start_in_child, stop_in_worker
from timings import histograms
from timings.histograms import Distribution
from timings.learned import Timing, distribution

from .conftest import (
    configure_provider,
    make_prediction,
    make_team,
    wait_for,
    wait_until_finished,
)


def learned(median_queue: float, median_run: float, sigma: float = 0.2) -> Timing:
    """A model whose times are well known: lognormal around the medians."""
    queue = Distribution(histograms.lognormal(median_queue, sigma), samples=500)
    run = Distribution(histograms.lognormal(median_run, sigma), samples=500)
    total = Distribution(histograms.sum_of(queue.probabilities, run.probabilities), samples=500)
    return Timing("simulator", "acme/known", queue, run, total, "learned")


def poll_times(timing: Timing, ends_at: float, starts_at: float) -> list[float]:
    """When a prediction that starts and ends at these moments (from acceptance) is polled,
    planning each poll from what the one before saw (no progress bar)."""
    moments, now = [], 0.0
    while now < ends_at:
        running = now >= starts_at
        step = plan(timing, age=now, run_age=now - starts_at if running else None, remaining=None)
        now += step.delay
        moments.append(now)
    return moments


# --- The schedule ----------------------------------------------------------------------------


@pytest.fixture
def deployed_schedule(settings) -> None:
    """The schedule as deployed (tests/settings.py polls faster, for short jobs)."""
    settings.POLL_DENSE_INTERVAL = 0.5
    settings.POLL_MAX_INTERVAL = 30.0


def test_polls_cluster_around_the_expected_end(settings, deployed_schedule):
    settings.POLL_DENSE_INTERVAL = 0.5
    timing = learned(median_queue=1.0, median_run=10.0)

    moments = poll_times(timing, ends_at=11.0, starts_at=1.0)

    early = [m for m in moments if m < 6.0]
    near_end = [m for m in moments if 8.0 <= m <= 11.5]
    assert len(early) <= 3
    assert len(near_end) >= 4
    gaps = [b - a for a, b in zip(moments, moments[1:], strict=False)]
    assert max(gaps[-3:]) <= 0.5 + 1e-9
    assert moments[-1] - 11.0 <= 0.5 + 1e-9  # seen within the dense interval


def test_a_job_in_the_long_tail_is_still_polled_ever_more_sparsely(settings, deployed_schedule):
    settings.POLL_MAX_INTERVAL = 30
    timing = learned(median_queue=1.0, median_run=10.0)

    late = plan(timing, age=60, run_age=59, remaining=None)
    later = plan(timing, age=300, run_age=299, remaining=None)

    assert 0.5 < late.delay < later.delay <= 30
    assert later.likelihood < 0.5


@pytest.mark.django_db
def test_a_model_never_seen_gets_the_prior(deployed_schedule):
    timing = distribution("simulator", "acme/never-seen-before")

    first = plan(timing, age=0.0, run_age=None, remaining=None)

    assert timing.source in ("built-in", "provider")
    assert 0 < first.delay <= timing.queue.quantile(QUEUE_MASS) + 1e-6


def test_a_progress_bar_puts_the_next_poll_right_after_its_predicted_end(deployed_schedule):
    timing = learned(median_queue=1.0, median_run=10.0)

    soon = plan(timing, age=3.0, run_age=2.0, remaining=2.4)
    far = plan(timing, age=3.0, run_age=2.0, remaining=100.0)

    assert 2.4 < soon.delay <= 2.5
    assert soon.likelihood >= 0.9
    assert far.delay < 100  # a long wait is checked on the way


def test_no_poll_is_planned_past_the_deadline(deployed_schedule):
    timing = learned(median_queue=1.0, median_run=100.0)

    step = plan(timing, age=10.0, run_age=9.0, remaining=80.0, deadline_in=5.0)

    assert step.delay <= 5.1


def test_a_prediction_with_webhooks_is_only_polled_as_a_safety_net(settings, deployed_schedule):
    settings.POLL_WEBHOOK_INTERVAL = 20
    timing = learned(median_queue=1.0, median_run=10.0)

    step = plan(timing, age=9.0, run_age=8.0, remaining=None, webhook=True)

    assert step.delay == 20


def test_when_the_budget_is_short_the_poll_likeliest_to_find_an_end_goes_first(monkeypatch):
    timing = learned(median_queue=1.0, median_run=10.0)
    monkeypatch.setattr(Prediction, "timing", property(lambda self: timing))
    now = timezone.now()

    def running_for(seconds: float, last_seen: float) -> Prediction:
        started = now - timedelta(seconds=seconds)
        return Prediction(
            status="processing",
            accepted_at=started - timedelta(seconds=1),
            started_at=started,
            last_polled_at=now - timedelta(seconds=last_seen),
        )

    near_its_end = running_for(9.5, last_seen=1.0)
    young = running_for(1.0, last_seen=0.5)
    waited_long = running_for(30.0, last_seen=25.0)

    assert near_its_end.chance_ended(now) > young.chance_ended(now)
    assert waited_long.chance_ended(now) > 0.9  # a poll kept waiting is not starved


@pytest.mark.django_db
def test_creates_waiting_for_their_budget_never_keep_polls_waiting(settings, monkeypatch):
    # A team's burst of submits: more creates than the create budget grants, ahead of polls.
    settings.POLL_THREADS = 2
    for n in range(6):
        make_prediction(f"burst {n}", status="submitting")
    for n in range(3):
        make_prediction(f"running {n}", status="processing", provider_id=f"r{n}")
    claimed = Prediction.claim_batch(limit=20)
    jobs = [Job(p, timezone.now(), time.monotonic()) for p in claimed]
    jobs.sort(key=lambda job: job.kind != "create")

    class Budget:
        def __init__(self, provider: str, kind: str) -> None:
            self.kind = kind

        def take(self, wanted: int) -> tuple[int, float]:
            return (0, 0.5) if self.kind == "create" else (wanted, 0.0)

    monkeypatch.setattr("predictions.poller.RequestBudget.of", Budget)
    poller = Poller(client=ProviderClient())
    poller.ready.extend(jobs)
    poller.budget_short_until = poller.next_sort = time.monotonic() + 60  # short, sorted

    sent = []
    for _ in range(3):
        poller.fire_due()
        while not poller.queue.empty():
            sent.append(poller.queue.get_nowait())
            poller.outstanding -= 1  # answered at once

    assert [job.kind for job in sent] == ["query"] * 3
    assert [job.kind for job in poller.ready] == ["create"] * 6


# --- Claims and writes in batches ------------------------------------------------------------


@pytest.mark.django_db
def test_a_batch_is_claimed_in_one_statement_with_what_is_due_just_ahead():
    now = timezone.now()
    due = [make_prediction(f"due {n}", next_poll_at=now) for n in range(5)]
    soon = make_prediction("soon", next_poll_at=now + timedelta(seconds=0.5))
    make_prediction("later", next_poll_at=now + timedelta(seconds=30))

    with CaptureQueriesContext(connection) as queries:
        claimed = Prediction.claim_batch(limit=100, lookahead=1.0)

    assert {p.pk for p in claimed} == {p.pk for p in [*due, soon]}
    statements = [q for q in queries if not q["sql"].upper().startswith(("SAVEPOINT", "RELEASE"))]
    assert len(statements) == (1 if connection.vendor == "postgresql" else 2)
    by_pk = {p.pk: p for p in claimed}
    assert by_pk[soon.pk].due_at > now  # fired when due, not when claimed
    assert all(p.claim == 1 for p in claimed)
    assert Prediction.claim_batch(limit=100, lookahead=1.0) == []  # leased


def running_fields(prediction: Prediction, status: str, logs: str) -> dict:
    return prediction.remote_fields({"id": prediction.provider_id, "status": status, "logs": logs})


@pytest.mark.django_db
def test_many_polls_are_stored_in_one_statement_and_a_stale_claim_stores_nothing():
    for n in range(3):
        make_prediction(f"running {n}", status="starting", provider_id=f"p{n}")
    first, second, stale = Prediction.claim_batch(limit=10)
    Prediction.objects.filter(pk=stale.pk).update(claims=stale.claim + 1)
    results = [(p, running_fields(p, "processing", f"log of {p.pk}")) for p in (first, second)]
    results.append((stale, running_fields(stale, "processing", "late")))

    with CaptureQueriesContext(connection) as queries:
        Prediction.store_polls(results)

    writes = [q for q in queries if q["sql"].lstrip().upper().startswith("WITH")]
    assert len(writes) == 1
    for prediction in (first, second):
        prediction.refresh_from_db()
        assert (prediction.status, prediction.polls) == ("processing", 1)
        assert prediction.logs == f"log of {prediction.pk}"
        assert prediction.next_poll_at > timezone.now()
    stale.refresh_from_db()
    assert (stale.status, stale.logs, stale.polls) == ("starting", "", 0)


@pytest.mark.django_db
def test_a_batched_poll_never_moves_a_status_backwards():
    prediction = make_prediction(status="starting", provider_id="p1")
    [claimed] = Prediction.claim_batch(limit=10)
    Prediction.objects.filter(pk=prediction.pk).update(status="processing")

    Prediction.store_polls([(claimed, running_fields(claimed, "starting", "old news"))])

    prediction.refresh_from_db()
    assert prediction.status == "processing"
    assert prediction.logs == ""


@pytest.mark.django_db
def test_a_renewal_keeps_held_leases_but_never_overwrites_a_written_row():
    for n in range(2):
        make_prediction(f"held {n}", status="processing", provider_id=f"h{n}")
    held, written = Prediction.claim_batch(limit=10)
    planned = timezone.now() + timedelta(seconds=3)
    Prediction.objects.filter(pk=written.pk).update(next_poll_at=planned)
    until = timezone.now() + timedelta(seconds=60)

    renewed = Prediction.renew_leases(
        [(held, held.next_poll_at), (written, written.next_poll_at)], until
    )

    assert renewed == {held.pk}
    held.refresh_from_db()
    written.refresh_from_db()
    assert held.next_poll_at == until
    assert written.next_poll_at == planned


@pytest.mark.django_db
def test_the_poller_renews_only_the_leases_that_would_run_out_before_its_next_round(settings):
    settings.POLL_LEASE = 9.0
    for n in range(2):
        make_prediction(f"held {n}", status="processing", provider_id=f"h{n}")
    poller = Poller(client=ProviderClient())
    for prediction in Prediction.claim_batch(limit=10):
        poller.held[prediction.pk] = Job(prediction, timezone.now(), time.monotonic())
    fresh, ageing = poller.held.values()
    ageing.lease_until = timezone.now() + timedelta(seconds=2)
    Prediction.objects.filter(pk=ageing.prediction.pk).update(next_poll_at=ageing.lease_until)
    fresh_lease = fresh.lease_until

    poller.renew_leases()

    assert fresh.lease_until == fresh_lease
    assert ageing.lease_until > timezone.now() + timedelta(seconds=8)
    ageing.prediction.refresh_from_db()
    assert ageing.prediction.next_poll_at == ageing.lease_until


@pytest.mark.django_db
def test_a_create_written_back_leaves_the_first_poll_claimed_meanwhile_held(settings):
    # The create stored its answer itself and the prediction was claimed again for its first
    # poll before the create's job came back: that poll's lease is the one to keep renewing
    # (dropped, a poll that hung past the lease was sent twice).
    settings.POLL_LEASE = 9.0
    make_prediction("sent", status="starting", provider_id="s1")
    poller = Poller(client=ProviderClient())
    [prediction] = Prediction.claim_batch(limit=10)
    create = Job(prediction, timezone.now(), time.monotonic())
    first_poll = Job(prediction, timezone.now(), time.monotonic())
    poller.held[prediction.pk] = first_poll
    poller.results.append((create, None))
    poller.outstanding = 2

    poller.write_results()

    assert poller.held == {prediction.pk: first_poll}
    first_poll.lease_until = timezone.now() + timedelta(seconds=2)
    Prediction.objects.filter(pk=prediction.pk).update(next_poll_at=first_poll.lease_until)
    poller.renew_leases()
    assert first_poll.lease_until > timezone.now() + timedelta(seconds=8)


@pytest.mark.skipif("connection.vendor != 'postgresql'")
@pytest.mark.django_db(transaction=True)
def test_only_the_conductors_own_commits_skip_waiting_for_the_disk():
    def commit_mode(relaxed: bool) -> str:
        if relaxed:
            relax_commits()
        with connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            return cursor.fetchone()[0]

    with ThreadPoolExecutor(1) as conductor, ThreadPoolExecutor(1) as pool:
        assert conductor.submit(commit_mode, True).result() == "off"
        assert pool.submit(commit_mode, False).result() == "on"
        conductor.submit(connections.close_all).result()
        pool.submit(connections.close_all).result()


# --- End to end ------------------------------------------------------------------------------


def test_the_poller_never_exceeds_the_providers_query_budget(settings, simulator, worker):
    configure_provider(settings, "simulator", query_rate=4.0)
    simulator.faults.query_rate_limit = 5  # the provider's own limit, a little above
    simulator.engine.speed = 8  # jobs of a second or so, polled densely
    settings.POLL_DENSE_INTERVAL = 0.05
    predictions = [make_prediction(f"budget {n}") for n in range(8)]

    wait_until_finished(*predictions, timeout=60)

    assert {p.status for p in predictions} == {"succeeded"}
    assert simulator.stats()["responses_by_status"].get("429", 0) == 0


def test_a_stalled_provider_call_does_not_hold_up_the_others(settings, simulator, worker):
    # The stall outlives the test (the simulator's stop ends it) unless it is left behind.
    settings.PROVIDER_READ_TIMEOUT = 150
    stalled = make_prediction("stalled", status="processing", provider_id="no-such-id")
    simulator.faults.stall_rate = 1.0
    simulator.faults.stall_seconds = 120
    simulator.faults.endpoints = ["get"]
    wait_for(lambda: simulator.stats()["requests_by_endpoint"].get("get", 0) >= 1)
    simulator.faults.stall_rate = 0.0
    others = [make_prediction(f"flowing {n}") for n in range(4)]

    wait_until_finished(*others, timeout=30)

    assert {p.status for p in others} == {"succeeded"}
    stalled.refresh_from_db()
    assert stalled.status == "processing"


def test_a_stopping_poller_writes_the_answers_still_out_and_hands_back_the_rest(
    settings, simulator, transactional_db
):
    settings.POLL_THREADS = 1
    settings.PROVIDER_READ_TIMEOUT = 5  # longer than the slow answer below
    team = make_team()
    client = ProviderClient()
    rows = []
    for n in range(3):
        created = client.create(team.provider("simulator"), "darkroom/slow", {"prompt": f"{n}"})
        rows.append(
            make_prediction(
                f"{n}",
                team=team,
                model="darkroom/slow",
                status="starting",
                provider_id=created["id"],
                accepted_at=timezone.now(),
                next_poll_at=timezone.now(),
            )
        )
    # Answered 1.5 s after it arrives: time enough for the test to see the first poll and stop
    # the poller before the next leaves, and for the answer to come within its 3 s grace.
    simulator.faults.slow_rate = 1.0
    simulator.faults.slow_seconds = 1.5
    simulator.faults.endpoints = ["get"]
    poller = Poller(client).start()
    wait_for(lambda: simulator.stats()["requests_by_endpoint"].get("get", 0) >= 1)

    poller.stop()
    # stop() waits 5 s at most for the answers to be written: a loaded machine may take longer.
    wait_for(lambda: not poller.thread.is_alive(), message="the poller to hand back")

    for row in rows:
        row.refresh_from_db()
    answered = [row for row in rows if row.polls == 1]
    handed_back = [row for row in rows if row.polls == 0]
    assert len(answered) == 1
    assert len(handed_back) == 2
    assert all(row.next_poll_at <= timezone.now() for row in handed_back)


def test_every_prediction_a_killed_worker_held_is_polled_again_within_15_seconds(
    settings, simulator, worker_process, scheduler
):
    simulator.engine.speed = 2  # flux-dev: a few seconds each, so they are mid-flight
    predictions = [
        make_prediction(f"held {n}", model="black-forest-labs/flux-dev") for n in range(20)
    ]
    first = worker_process()
    wait_for(
        lambda: Prediction.objects.filter(polls__gt=0).count() >= 10,
        timeout=60,  # the worker process starts first, in seconds on a loaded machine
        message="polls under way",
    )

    first.kill()
    killed = timezone.now()
    horizon = killed + timedelta(seconds=settings.POLL_LEASE + settings.POLL_LOOKAHEAD)
    affected = set(
        Prediction.objects.filter(
            status__in=["starting", "processing", "submitting"], next_poll_at__lte=horizon
        ).values_list("pk", flat=True)
    )
    worker_process()

    def all_polled_again() -> bool:
        rows = Prediction.objects.filter(pk__in=affected)
        polled = rows.filter(last_polled_at__gt=killed) | rows.filter(completed_at__isnull=False)
        return set(polled.values_list("pk", flat=True)) == affected

    wait_for(all_polled_again, timeout=15, message="every affected prediction polled again")
    wait_until_finished(*predictions, timeout=60)
    creates = simulator.stats()["creates_by_prompt"]
    assert all(creates.get(p.prompt, 0) <= 1 for p in predictions)
    assert {p.status for p in predictions} <= {"succeeded", "submit_unknown"}


@pytest.mark.django_db(transaction=True)
def test_a_wake_up_consumed_while_the_worker_shuts_down_starts_no_poller():
    start_in_child()
    assert pollers_running() == 1
    stop_in_worker()
    assert pollers_running() == 0

    dispatch_due()  # a late message, taken off the queue just before the consumer stopped
    assert running_poller() is None
    assert pollers_running() == 0

    start_in_child()  # the worker (or a new child) starts again: so does its poller
    assert pollers_running() == 1


def pollers_running() -> int:
    return sum(thread.name == "poller" and thread.is_alive() for thread in threading.enumerate())
