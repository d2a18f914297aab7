"""Drill: a hostile provider. Every prediction still ends in a true state, no create is sent
twice, and what went wrong shows on the prediction.

The simulator answers 20% of creates, polls and cancels with a 5xx, sends bursts of 429s,
truncates some JSON bodies and stalls some answers; a proxy in front of it resets connections in
the middle of answers; one model never ends before its deadline. Scaled to the test suite:
stalls of 2.5 s against the tests' 1.5 s read timeout (tests/settings.py), and a deadline of 4 s
for the never-ending model. The issue's real 45 to 60 s stalls, against the deployed 60 s read
timeout, are drilled in test_stalls.py.
"""

import threading
import time

import pytest

from predictions.models import RUNNING, Prediction, Status

from ..conftest import configure_provider, make_prediction, wait_for
from .outages import ResettingProxy

pytestmark = [pytest.mark.drill, pytest.mark.timeout(150)]

TERMINAL = {
    Status.SUCCEEDED,
    Status.FAILED,
    Status.CANCELED,
    Status.ABORTED,
    Status.TIMED_OUT,
    Status.SUBMIT_UNKNOWN,
}


def test_a_hostile_provider_loses_nothing_duplicates_nothing_and_shows_its_errors(
    settings, simulator, worker, scheduler, drill_report
):
    proxy = ResettingProxy(simulator.port, reset_rate=0.03).start()
    configure_provider(settings, "simulator", base_url=f"{proxy.url}/v1", create_rate=30.0)
    simulator.public_url = proxy.url  # outputs are downloaded through the resets too
    simulator.engine.speed = 4  # flux-schnell in under a second; darkroom/slow in 15 s
    settings.POLL_DEADLINES = {"darkroom/slow": 4}
    faults = simulator.faults
    faults.server_error_rate = 0.2
    faults.malformed_rate = 0.05
    faults.stall_rate = 0.03
    faults.stall_seconds = 2.5
    faults.retry_after = 0.5

    calm = threading.Event()
    bursts = []

    def storm() -> None:
        """While predictions are submitted, a burst of 429s every 1.5 s that lasts at most half
        a second (one that never ends would starve the last predictions: a storm, not a burst);
        whether a failed create was made anyway changes with each."""
        while not calm.wait(1.0):
            faults.rate_limit_burst = 6
            faults.create_error_after_commit = not faults.create_error_after_commit
            bursts.append(time.monotonic())
            calm.wait(0.5)
            faults.rate_limit_burst = 0

    predictions = []
    seen_unknown, seen_retrying = set(), set()

    def look(rows) -> None:
        """What shows on the predictions now: an error being retried shows only until the next
        poll answers, a fraction of a second here, so look often and from the first submit."""
        seen_unknown.update(rows.filter(status=Status.SUBMIT_UNKNOWN).values_list("pk", flat=True))
        seen_retrying.update(
            rows.filter(status__in=RUNNING).exclude(last_error="").values_list("pk", flat=True)
        )

    storm_thread = threading.Thread(target=storm, daemon=True)
    storm_thread.start()
    for batch in range(6):
        predictions += [make_prediction(f"hostile {batch}-{n}") for n in range(10)]
        batch_ends = time.monotonic() + 1.0
        while time.monotonic() < batch_ends:
            look(Prediction.objects.filter(pk__in=[p.pk for p in predictions]))
            time.sleep(0.05)
    predictions += [make_prediction(f"never ends {n}", model="darkroom/slow") for n in range(2)]
    calm.set()
    storm_thread.join()
    pks = [p.pk for p in predictions]
    rows = Prediction.objects.filter(pk__in=pks)

    def settled() -> bool:
        look(rows)
        created = simulator.stats()["creates_by_prompt"]
        unknown = rows.filter(status=Status.SUBMIT_UNKNOWN)
        return not rows.filter(status__in=RUNNING).exists() and all(
            created.get(p.prompt, 0) == 0 and p.polls >= 1 for p in unknown
        )

    try:
        wait_for(settled, timeout=90)
    except AssertionError:
        stuck = [
            (p.pk, p.status, p.provider_id, p.polls, p.next_poll_at, p.last_error[:80])
            for p in rows
            if p.status in RUNNING or p.status == Status.SUBMIT_UNKNOWN
        ]
        raise AssertionError(f"not settled: {stuck}") from None
    stats = simulator.stats()
    proxy.stop()

    created = stats["creates_by_prompt"]
    final = {p.pk: p for p in rows}
    statuses = {status: 0 for status in TERMINAL}
    for prediction in final.values():
        statuses[prediction.status] += 1
    unknown = [p for p in final.values() if p.status == Status.SUBMIT_UNKNOWN]
    adopted = [pk for pk in seen_unknown if final[pk].status != Status.SUBMIT_UNKNOWN]
    responses = stats["responses_by_status"]
    drill_report(
        f"{len(pks)} predictions ({len(pks) - 2} flux-schnell, 2 that never end); "
        f"{sum(stats['requests_by_endpoint'].values())} requests: "
        + ", ".join(f"{n} {kind}" for kind, n in sorted(stats["requests_by_endpoint"].items()))
    )
    drill_report(
        "faults answered: "
        + ", ".join(f"{n} × {code}" for code, n in sorted(responses.items()) if code != "200")
        + f"; {len(bursts)} bursts of 429s; {proxy.counts['resets']} connections reset "
        f"of {proxy.counts['connections']}"
    )
    drill_report("ends: " + ", ".join(f"{n} {status}" for status, n in statuses.items() if n))
    drill_report(
        f"{len(seen_unknown)} outcomes were unknown: {len(adopted)} found at the provider and "
        f"adopted, {len(unknown)} never created and still unknown with what was looked at"
    )
    drill_report(
        f"{len(seen_retrying)} predictions showed a provider error while being retried; "
        f"creates sent twice: {sum(1 for n in created.values() if n > 1)}"
    )

    assert set(final) == set(pks)
    assert all(p.status in TERMINAL for p in final.values())
    assert all(created.get(p.prompt, 0) <= 1 for p in final.values()), "a create was sent twice"
    for prediction in unknown:
        assert created.get(prediction.prompt, 0) == 0, f"{prediction.pk} was created: adopt it"
        assert "looked for it among the provider's predictions" in prediction.error
    for prediction in final.values():
        if prediction.status == Status.SUCCEEDED:
            assert created[prediction.prompt] == 1
            assert prediction.provider_id and prediction.output_urls
        else:
            assert prediction.error, f"{prediction.pk} ended {prediction.status} without a word"
    slow = [p for p in final.values() if p.model == "darkroom/slow"]
    assert {p.status for p in slow} <= {Status.TIMED_OUT, Status.SUBMIT_UNKNOWN}
    assert seen_unknown and adopted, "the drill met no unknown outcome to resolve"
    assert seen_retrying, "no provider error showed on a prediction"
