"""Drill: 200 predictions in flight, and the worker killed with SIGKILL mid-create, then again
mid-poll. Every prediction reaches a true end, no create is sent twice, and a create the
provider received is never left "submit outcome unknown" (the simulator lists predictions).

Real `celery worker` processes (each with its poller) and a real kill, as a crashed host.
"""

import pytest
from django.utils import timezone

from predictions.models import RUNNING, Prediction, Status

from ..conftest import make_prediction, wait_for
from .conftest import wait_for_rows

pytestmark = [pytest.mark.drill, pytest.mark.timeout(240)]

MODELS = ["black-forest-labs/flux-dev", "black-forest-labs/flux-1.1-pro", "stability-ai/sdxl"]


def test_killed_workers_lose_no_prediction_and_send_no_create_twice(
    settings, monkeypatch, simulator, worker_process, scheduler, drill_report
):
    # The workers' budgets: 20 creates a second, each answered in 0.3 s, keep six of a poller's
    # eight threads on creates (creates go first) and leave two to poll; polls are not limited.
    monkeypatch.setenv("SIMULATOR_CREATE_RATE", "20")
    monkeypatch.setenv("SIMULATOR_QUERY_RATE", "300")
    simulator.engine.speed = 1  # jobs of 3 to 16 s: in flight across both kills
    simulator.faults.slow_rate = 1.0
    simulator.faults.slow_seconds = 0.3
    simulator.faults.endpoints = ["create"]
    predictions = [
        make_prediction(f"in flight {n}", model=MODELS[n % len(MODELS)]) for n in range(200)
    ]
    rows = Prediction.objects.filter(pk__in=[p.pk for p in predictions])

    first = worker_process()
    wait_for(
        lambda: (
            rows.exclude(provider_id="").count() >= 20
            and rows.filter(status=Status.SUBMITTING, sending_since__isnull=False).count() >= 4
        ),
        timeout=60,
        message="creates under way",
    )
    first.kill()
    mid_create = set(
        rows.filter(status=Status.SUBMITTING, sending_since__isnull=False).values_list(
            "pk", flat=True
        )
    )
    answered_before = rows.exclude(provider_id="").count()

    second = worker_process()
    polled = rows.filter(status__in=[Status.STARTING, Status.PROCESSING])
    # Ten running at once that were polled, not thirty running: how many run at once depends
    # on how fast the creates go, which a loaded machine slows until thirty never do.
    wait_for_rows(
        lambda: polled.filter(polls__gt=0).count() >= 10,
        rows,
        timeout=90,
        message="polls under way",
    )
    polls_before = sum(rows.values_list("polls", flat=True))
    second.kill()
    killed_at = timezone.now()
    mid_poll = set(polled.values_list("pk", flat=True))

    worker_process()
    created = simulator.stats()["creates_by_prompt"]

    def settled() -> bool:
        nonlocal created
        created = simulator.stats()["creates_by_prompt"]
        unknown = rows.filter(status=Status.SUBMIT_UNKNOWN)
        return not rows.filter(status__in=RUNNING).exists() and all(
            p.polls >= 1 and not created.get(p.prompt) for p in unknown
        )

    wait_for_rows(settled, rows, 90, "every prediction ended, every unknown looked for")

    final = list(rows)
    statuses: dict[str, int] = {}
    for prediction in final:
        statuses[prediction.status] = statuses.get(prediction.status, 0) + 1
    repolled = [p for p in final if p.pk in mid_poll and p.last_polled_at > killed_at]
    lost_answers = [p for p in final if p.pk in mid_create]
    drill_report(
        f"200 predictions; first worker killed mid-create with {len(mid_create)} creates in "
        f"flight ({answered_before} answered before)"
    )
    drill_report(
        f"second worker killed mid-poll with {len(mid_poll)} predictions running "
        f"({polls_before} polls so far); {len(repolled)} of them polled again by the third"
    )
    drill_report(
        "in-flight creates ended as: "
        + ", ".join(
            f"{sum(1 for p in lost_answers if p.status == s)} {s}"
            for s in sorted({p.status for p in lost_answers})
        )
        + f" ({sum(1 for p in lost_answers if created.get(p.prompt))} of them had reached "
        "the provider)"
    )
    drill_report("ends: " + ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())))
    drill_report(
        f"creates sent: {sum(created.values())}; sent twice: "
        f"{sum(1 for n in created.values() if n > 1)}"
    )

    assert len(final) == 200
    assert all(created.get(p.prompt, 0) <= 1 for p in final), "a create was sent twice"
    assert statuses.keys() <= {Status.SUCCEEDED, Status.SUBMIT_UNKNOWN}
    for prediction in final:
        if prediction.status == Status.SUCCEEDED:
            assert created[prediction.prompt] == 1 and prediction.output_urls
        else:  # only a create whose worker died before it reached the provider
            assert prediction.pk in mid_create and not created.get(prediction.prompt)
            assert "looked for it among the provider's predictions" in prediction.error
    assert mid_create and mid_poll, "a kill met nothing in flight"
    assert len(repolled) == len(mid_poll)
