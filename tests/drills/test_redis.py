"""Drill: Redis restarted, then flushed, mid-run. Nothing is lost, polling and the scheduler's
sweeps go on by themselves, and the web takes submissions during the outage, as the README
says ("When Redis or the database is down": the submit limits are not applied, forms are still
sent).

The drill runs a redis-server of its own on a free port (never the shared one), without
persistence, so a restart loses every key as a flush does; a worker process and a `celery beat`
process use it as their broker and cache, and so does the web (the test client).
"""

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from accounts.models import Role
from outputs.models import ArchiveState, Output
from predictions.models import RUNNING, Prediction, Status

from ..conftest import make_prediction, make_team, make_user, wait_for
from .conftest import wait_for_rows
from .outages import PrivateRedis

pytestmark = [pytest.mark.drill, pytest.mark.timeout(180)]

BASE_DIR = Path(__file__).resolve().parents[2]
DEV = "black-forest-labs/flux-dev"


@pytest.fixture
def private_redis(monkeypatch, settings) -> PrivateRedis:
    """A redis-server of the drill's own: the broker and cache of the worker and beat processes
    started after this fixture, and the cache of this process's web."""
    server = PrivateRedis().start()
    monkeypatch.setenv("REDIS_URL", server.url)
    # An archive attempt whose message a restart lost is claimed again when its lease runs out:
    # 5 s here rather than the deployed 155 s.
    monkeypatch.setenv("ARCHIVE_LEASE", "5")
    settings.CACHES = {
        alias: {
            **config,
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": server.url,
        }
        for alias, config in settings.CACHES.items()
    }
    yield server
    server.stop()


def submit(client, prompt: str) -> int:
    """Send the New images form as a browser does; the response's status."""
    response = client.post(
        "/predictions/new",
        {
            "provider": "simulator",
            "model": DEV,
            "prompt": prompt,
            "extra_input": "",
            "request_key": str(uuid.uuid4()),
        },
    )
    return response.status_code


def test_a_restarted_or_flushed_redis_loses_nothing_and_polling_goes_on(
    private_redis, simulator, worker_process, client, drill_report
):
    simulator.engine.speed = 2  # flux-dev: 2 to 5 s
    team = make_team()
    client.force_login(make_user("redis", team, Role.MEMBER))
    rows = Prediction.objects.filter(team=team)

    def polls() -> int:
        return sum(rows.values_list("polls", flat=True))

    worker_process()
    scheduler = start_beat()
    try:
        for n in range(20):
            make_prediction(f"before the restart {n}", model=DEV)
        wait_for_rows(
            lambda: rows.exclude(provider_id="").count() >= 10, rows, 30, "creates under way"
        )
        keys_before = private_redis.keys()

        private_redis.stop()
        down_at, polls_down = time.monotonic(), polls()
        during_outage = [submit(client, f"submitted while Redis is down {n}") for n in range(3)]
        # Down 3 s at least, and until a poll was stored meanwhile (of these three, if nothing
        # else runs by then): counted, not hoped for within a fixed time.
        wait_for(
            lambda: time.monotonic() - down_at >= 3.0 and polls() > polls_down,
            timeout=30,
            message="a poll while Redis is down: the pollers stopped with Redis",
        )
        down_for = time.monotonic() - down_at
        polled_while_down = polls() - polls_down
        ended_while_down = rows.exclude(status__in=RUNNING).count()
        private_redis.start()

        for n in range(20):
            make_prediction(f"after the restart {n}", model=DEV)
        time.sleep(2.0)
        private_redis.flush()
        after_flush = [submit(client, f"submitted after the flush {n}") for n in range(3)]

        def settled() -> bool:
            outputs = Output.objects.filter(prediction__team=team)
            return (
                not rows.filter(status__in=RUNNING).exists()
                and outputs.count() == rows.filter(status=Status.SUCCEEDED).count()
                and not outputs.exclude(state=ArchiveState.ARCHIVED).exists()
            )

        wait_for_rows(settled, rows, 90, "every prediction ended and its output archived")
    finally:
        scheduler.terminate()
        scheduler.wait(10)

    created = simulator.stats()["creates_by_prompt"]
    final = list(rows)
    statuses: dict[str, int] = {}
    for prediction in final:
        statuses[prediction.status] = statuses.get(prediction.status, 0) + 1
    web = [p for p in final if p.prompt.startswith("submitted")]
    drill_report(
        f"{len(final)} predictions: 20 before the restart, 20 after it, 6 through the web form; "
        f"{keys_before} keys in Redis before the restart, {private_redis.keys()} at the end"
    )
    drill_report(
        f"Redis down for {down_for:.1f} s: {polled_while_down} polls and {ended_while_down} "
        f"predictions ended meanwhile; web submits during the outage answered {during_outage}, "
        f"after the flush {after_flush}"
    )
    drill_report("ends: " + ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())))
    drill_report(
        f"creates sent: {sum(created.values())}; sent twice: "
        f"{sum(1 for n in created.values() if n > 1)}; outputs archived: "
        f"{Output.objects.filter(prediction__team=team, state=ArchiveState.ARCHIVED).count()}"
    )

    assert during_outage == [302] * 3 and after_flush == [302] * 3
    assert len(final) == 46 and len(web) == 6
    assert statuses == {Status.SUCCEEDED: 46}
    assert all(created.get(p.prompt) == 1 for p in final)
    assert private_redis.keys() > 0  # the broker and the budget use it again


def start_beat() -> subprocess.Popen:
    """`celery beat` as its own process: the scheduler's sweeps, sent through the private Redis
    (REDIS_URL, as set by the `private_redis` fixture)."""
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "dashboard", "beat", "--loglevel", "WARNING"],
        cwd=BASE_DIR,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"},
    )
