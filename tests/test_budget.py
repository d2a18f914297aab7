"""The request budget: every worker process together keeps within a provider's rate limit.

Each test counts in a bucket of its own (a fresh name), on Redis when this run has one, and in
the file bucket that the embedded defaults use. CI runs the suite once with Redis and once
without, so both are covered.
"""

import logging
import multiprocessing
import time
import uuid

import pytest
import redis
from django.conf import settings as django_settings

from predictions.budget import RequestBudget

from .conftest import configure_provider
from .test_security import manage, production_env, settings_in

RATE = 50.0  # Replicate's 3,000 queries a minute
CAPACITY = 10  # a fifth of a second's worth


def fresh_budget(rate: float = RATE) -> RequestBudget:
    return RequestBudget(f"test-{uuid.uuid4().hex}", rate)


@pytest.fixture(params=["redis", "file"])
def counting_in(request, settings) -> str:
    """Where the buckets are counted: Redis, or the file bucket of the embedded defaults."""
    if request.param == "redis" and not django_settings.REDIS_URL:
        pytest.skip("REDIS_URL is not set: the run with Redis covers this")
    if request.param == "file":
        settings.REDIS_URL = ""
    return request.param


def take_until(budget: RequestBudget, start: float, stop: float) -> tuple[int, float]:
    """A worker taking requests as fast as it can from `start` until `stop`: how many it was
    granted, and when it last was (a busy machine may hold a call past `stop`)."""
    time.sleep(max(0.0, start - time.time()))
    granted, last = 0, start
    while time.time() < stop:
        if got := budget.take(2)[0]:
            granted, last = granted + got, time.time()
    return granted, last


def test_a_bucket_holds_a_fifth_of_a_seconds_worth_and_at_least_one_request():
    assert RequestBudget("test", 50).capacity == 10
    assert RequestBudget("test", 50).refill == 35  # never more than 45 within any second
    assert RequestBudget("test", 10).capacity == 2
    assert RequestBudget("test", 0.5).capacity == 1


def test_a_providers_rates_come_from_its_settings(settings):
    configure_provider(settings, "replicate", query_rate=20.0, create_rate=4.0)

    query, create = RequestBudget.of("replicate", "query"), RequestBudget.of("replicate", "create")

    assert (query.name, query.rate, query.capacity) == ("replicate:query", 20.0, 4.0)
    assert (create.name, create.rate, create.capacity) == ("replicate:create", 4.0, 1.0)


def test_rates_default_to_replicates_limits_and_are_read_from_the_environment():
    values = settings_in(production_env(COMETAPI_CREATE_RATE="2.5"), "PROVIDERS")["PROVIDERS"]

    rates = {name: (p["query_rate"], p["create_rate"]) for name, p in values.items()}
    assert rates == {"cometapi": (50, 2.5), "replicate": (50, 10), "simulator": (50, 10)}


def test_a_rate_of_zero_stops_start_up_naming_the_variable():
    result = manage(production_env(REPLICATE_QUERY_RATE="0"), "check")

    assert result.returncode != 0
    assert "REPLICATE_QUERY_RATE must be a number of requests a second above 0" in result.stderr


def test_a_full_bucket_grants_what_it_holds_and_says_when_the_next_request_may_go(counting_in):
    budget = fresh_budget()

    assert budget.take(3) == (3, 0.0)
    granted, wait = budget.take(100)
    assert granted == CAPACITY - 3
    assert 0 < wait <= 1 / budget.refill
    assert budget.take(1)[0] == 0


def test_take_never_waits_for_the_next_request(counting_in):
    budget = fresh_budget(rate=1.0)
    budget.take(1)

    # Waiting for the next request would have granted it: each answer is "none yet, wait this
    # long", and the wait shrinks as the next request comes nearer.
    waits = []
    for _ in range(50):
        granted, wait = budget.take(1)
        assert granted == 0
        waits.append(wait)
    assert all(0 < wait <= 1 / budget.refill for wait in waits)
    assert waits == sorted(waits, reverse=True)


def test_several_worker_processes_together_never_take_more_than_the_budget_but_use_it(
    counting_in,
):
    budget, workers, seconds = fresh_budget(), 4, 2.0
    start = time.time() + 0.3  # once every worker process has started
    # Forked, the workers keep this test's settings (where to count).
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        taken = pool.starmap(take_until, [(budget, start, start + seconds)] * workers)

    granted, last = sum(granted for granted, _ in taken), max(last for _, last in taken)
    assert granted <= CAPACITY + budget.refill * (last - start)
    assert granted >= 0.8 * (CAPACITY + budget.refill * seconds)
    assert all(granted > 0 for granted, _ in taken)


def test_a_429_grants_nothing_for_its_retry_after_then_the_full_rate_again(counting_in):
    budget = fresh_budget()
    budget.take(CAPACITY)

    budget.throttled(retry_after=0.4)
    granted, wait = budget.take(1)
    assert granted == 0
    assert 0.38 < wait <= 0.4 + 1 / budget.refill
    time.sleep(0.3)
    assert budget.take(1)[0] == 0

    time.sleep(0.1 + 0.3)  # the pause ends, and the bucket refills within 0.2 s
    assert budget.take(100)[0] == CAPACITY


def test_a_429_without_a_retry_after_pauses_every_worker_for_a_second(counting_in):
    budget = fresh_budget()

    budget.throttled(retry_after=None)

    same_bucket = RequestBudget(budget.name, RATE)
    granted, wait = same_bucket.take(1)
    assert granted == 0
    assert 0.95 < wait <= 1 + 1 / budget.refill


@pytest.mark.skipif(not django_settings.REDIS_URL, reason="REDIS_URL is not set")
def test_a_bucket_on_redis_is_kept_under_darkrooms_namespace_and_expires():
    budget = RequestBudget(f"test-{uuid.uuid4().hex}", RATE)
    budget.take(1)

    key = f"darkroom:budget:{budget.name}"
    ttl = redis.Redis.from_url(django_settings.REDIS_URL).ttl(key)
    assert 0 < ttl <= 2


def test_a_dead_redis_neither_raises_nor_exceeds_the_machines_share_and_warns_once(
    settings, caplog
):
    # A closed port, where nothing answers; a database number of this test's own, since a
    # process warns once a minute for each Redis URL. Two machines: each keeps to half the rate.
    settings.REDIS_URL = f"redis://127.0.0.1:1/{uuid.uuid4().int % 16}"
    settings.WORKER_MACHINES = 2
    budget, start, seconds = fresh_budget(), time.time(), 1.0
    share_capacity = 5
    share = RATE / 2 * 0.9 - share_capacity  # what refills

    with caplog.at_level(logging.WARNING, logger="predictions.budget"):
        granted, last = take_until(budget, start, start + seconds)

    assert granted <= share_capacity + share * (last - start)
    assert granted >= 0.8 * (share_capacity + share * seconds)
    assert [record.levelname for record in caplog.records] == ["WARNING"]
    assert "Redis cannot be reached (ConnectionError)" in caplog.records[0].getMessage()
