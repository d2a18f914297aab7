"""Drill: real 45 to 60 s stalls, against the deployed timeouts. While a few predictions' polls and
creates hang, the poller's other threads keep polling the rest, which finish as promptly as
ever; each stalled prediction ends in a true state, no create is sent twice, and what went wrong
shows on the prediction.

The provider timeouts, deadlines, first retry, lease and pool size are a deployment's
(dashboard/settings.py), not the tests' shortened ones: a stall of 45, 50 or 55 s is waited out
and its late answer taken; one that outlasts the 60 s read timeout is cut there, a poll is sent
again, and a create (which the provider did make) becomes "submit outcome unknown" until it is
found among the provider's predictions and adopted. Only the jobs themselves are short (the
simulator runs them four times faster), so their polls stay the tests' dense ones. About 70 s.
"""

import statistics
import time
from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from dashboard import settings as deployed
from predictions.models import RUNNING, Prediction, Status
from predictions.poller import stop_poller
from predictions.simulator import Faults, Simulator

from ..conftest import make_prediction, wait_for

pytestmark = [pytest.mark.drill, pytest.mark.timeout(150)]

# What a deployment runs with, in place of tests/settings.py's values.
DEPLOYED = (
    "PROVIDER_CONNECT_TIMEOUT",
    "PROVIDER_READ_TIMEOUT",
    "POLL_DEADLINE",
    "POLL_DEADLINES",
    "POLL_FIRST_INTERVAL",
    "POLL_LEASE",
    "POLL_THREADS",
)
# A stall the read timeout cuts short: the provider would have answered 2 s after it.
PAST_TIMEOUT = deployed.PROVIDER_READ_TIMEOUT + 2
# (the request that hangs, for how many seconds), the longest first, so that the drill ends
# soonest: each holds one of the poller's threads until it is answered or cut.
STALLS = [
    ("create", PAST_TIMEOUT),
    ("get", PAST_TIMEOUT),
    ("create", 50.0),
    ("get", 45.0),
    ("get", 55.0),
]
WAVES, WAVE_SIZE, WAVE_EVERY = 10, 10, 3.5


def stall_next(simulator: Simulator, endpoint: str, seconds: float, prompt: str) -> Prediction:
    """A new prediction whose next request to `endpoint` (its create, or its first poll) hangs
    `seconds`; returned once it hangs. Each stall has a Faults of its own: a request reads the
    one it met, so the next stall's length never reaches one already hanging."""
    faults = Faults(endpoints=[endpoint], stall_burst=1, stall_seconds=seconds)
    simulator.engine.faults = faults
    prediction = make_prediction(prompt)
    wait_for(lambda: faults.stall_burst == 0, 20, f"the {endpoint} of {prompt!r} to hang")
    return prediction


def seconds_between(start: datetime, end: datetime | None) -> float:
    return (end - start).total_seconds() if end else float("nan")


def ended_wave(prompt: str) -> list[Prediction]:
    """A wave of predictions that meet no stall, once every one has ended."""
    wave = [make_prediction(f"{prompt} {n}") for n in range(WAVE_SIZE)]
    rows = Prediction.objects.filter(pk__in=[p.pk for p in wave])
    wait_for(lambda: not rows.filter(status__in=RUNNING).exists(), 30, f"{prompt} to end")
    return list(rows)


def submit_to_end(predictions: list[Prediction]) -> list[float]:
    """How long each took, from its submit to when Darkroom saw it end; shortest first."""
    return sorted(seconds_between(p.submitted_at, p.last_polled_at) for p in predictions)


def spread(seconds: list[float]) -> str:
    return (
        f"median {statistics.median(seconds):.2f} s, "
        f"95th percentile {seconds[int(len(seconds) * 0.95)]:.2f} s, max {seconds[-1]:.2f} s"
    )


def test_long_stalls_hold_only_their_own_threads_and_every_stalled_prediction_ends_true(
    settings, simulator, worker, scheduler, drill_report
):
    assert deployed.PROVIDER_READ_TIMEOUT > 55, "the drill's stalls are for a 60 s read timeout"
    for name in DEPLOYED:
        setattr(settings, name, getattr(deployed, name))
    # The poller starts anew (at the next dispatch), with a client made with these timeouts.
    stop_poller()
    simulator.engine.speed = 4  # flux-schnell in about 0.3 s: a poll or two each
    calm = ended_wave("before the stalls")
    began = time.monotonic()
    start = timezone.now()

    stalled = []  # (prediction, endpoint, seconds, a moment before its stall began)
    for n, (endpoint, seconds) in enumerate(STALLS):
        before = timezone.now()
        prompt = f"stalled {endpoint} {n}: {seconds:g} s"
        prediction = stall_next(simulator, endpoint, seconds, prompt)
        stalled.append((prediction, endpoint, seconds, before))
    simulator.engine.faults = Faults()
    stalls_hung_at = time.monotonic() - began
    # No stall can have ended before this: each is answered or cut this long after it began.
    first_stall_end = min(
        before + timedelta(seconds=min(seconds, settings.PROVIDER_READ_TIMEOUT))
        for _, _, seconds, before in stalled
    )
    watched = Prediction.objects.filter(pk__in=[p.pk for p, *_ in stalled])
    shown: dict[int, list[str]] = {p.pk: [] for p, *_ in stalled}
    gave_up_after: dict[int, float] = {}

    def watch() -> None:
        """Note every error a stalled prediction shows while it is retried or unknown, and how
        long a create was waited for before its outcome was called unknown."""
        for prediction in watched.all():
            for text in (prediction.last_error, prediction.error):
                if text and text not in shown[prediction.pk]:
                    shown[prediction.pk].append(text)
            if prediction.status == Status.SUBMIT_UNKNOWN and prediction.sending_since:
                gave_up_after.setdefault(
                    prediction.pk,
                    seconds_between(prediction.sending_since, prediction.completed_at),
                )

    def watch_until(moment: float) -> None:
        while time.monotonic() < moment:
            watch()
            time.sleep(0.1)

    flowing = []
    waves_began = time.monotonic()
    for wave in range(WAVES):
        flowing += [make_prediction(f"flowing {wave}-{n}") for n in range(WAVE_SIZE)]
        # Each wave on the clock, not after the last one's submits: on a loaded machine these
        # take their time, and the waves would drift into when the stalls end.
        watch_until(waves_began + (wave + 1) * WAVE_EVERY)
    flowing_rows = Prediction.objects.filter(pk__in=[p.pk for p in flowing])
    wait_for(
        lambda: not flowing_rows.filter(status__in=RUNNING).exists(),
        timeout=30,
        message="the predictions that met no stall to end",
    )
    flowed_at = time.monotonic() - began
    rows = Prediction.objects.filter(pk__in=[p.pk for p in flowing + [p for p, *_ in stalled]])

    def settled() -> bool:
        watch()
        # An unknown outcome has settled once it was looked for (and not found) at least once.
        looking = watched.filter(status=Status.SUBMIT_UNKNOWN, polls=0)
        return not rows.filter(status__in=RUNNING).exists() and not looking.exists()

    try:
        wait_for(settled, timeout=90)
    except AssertionError:
        stuck = [(p.prompt, p.status, p.polls, p.last_error[:80]) for p in watched.all()]
        raise AssertionError(f"not settled: {stuck}") from None
    settled_at = time.monotonic() - began

    stats = simulator.stats()
    created = stats["creates_by_prompt"]
    flowed = list(flowing_rows)
    took = submit_to_end(flowed)
    last_flowed = max(p.last_polled_at for p in flowed)
    final = {p.pk: p for p in watched.all()}
    drill_report(
        "deployed: "
        + ", ".join(f"{name} {getattr(settings, name)!r}" for name in DEPLOYED)
        + f"; the stalls all hung {stalls_hung_at:.1f} s in"
    )
    drill_report(
        f"{len(STALLS)} stalls held {len(STALLS)} of the poller's {settings.POLL_THREADS} "
        "threads: "
        + ", ".join(f"{endpoint} {seconds:g} s" for endpoint, seconds in STALLS)
        + f"; the first could end {seconds_between(start, first_stall_end):.1f} s in"
    )
    drill_report(
        f"meanwhile {len(flowed)} other predictions in {WAVES} waves over "
        f"{WAVES * WAVE_EVERY:g} s: {sum(p.status == Status.SUCCEEDED for p in flowed)} "
        f"succeeded after {sum(p.polls for p in flowed)} polls; submit to end {spread(took)} "
        f"(before the stalls, {len(calm)}: {spread(submit_to_end(calm))}); the last ended "
        f"{seconds_between(start, last_flowed):.1f} s in ({flowed_at:.1f} s: all ended), "
        f"{seconds_between(last_flowed, first_stall_end):.1f} s before any stall could end"
    )
    for prediction, endpoint, seconds, _ in stalled:
        ended = final[prediction.pk]
        line = (
            f"{endpoint} stalled {seconds:g} s: {ended.status} "
            f"{seconds_between(ended.submitted_at, ended.last_polled_at):.1f} s after submit, "
            f"polls: {ended.polls}, creates: {created.get(ended.prompt, 0)}"
        )
        if prediction.pk in gave_up_after:
            line += f"; unknown after the client waited {gave_up_after[prediction.pk]:.1f} s"
        errors = [text.splitlines()[0] for text in shown[prediction.pk]]
        drill_report(line + (f"; showed: {' | '.join(errors)}" if errors else "; no error"))
    drill_report(
        f"all settled {settled_at:.1f} s in; requests: "
        + ", ".join(f"{n} {kind}" for kind, n in sorted(stats["requests_by_endpoint"].items()))
        + f"; creates sent twice: {sum(1 for n in created.values() if n > 1)}"
    )

    assert all(created.get(p.prompt) == 1 for p in calm + flowed + list(final.values()))
    assert {p.status for p in calm + flowed} == {Status.SUCCEEDED}
    assert took[-1] < 15, "a prediction that met no stall waited on the stalled ones"
    assert last_flowed < first_stall_end, "the others ended only as the stalls did"
    for prediction, endpoint, seconds, _ in stalled:
        ended = final[prediction.pk]
        assert ended.status == Status.SUCCEEDED, (ended.prompt, ended.status, ended.error)
        assert ended.provider_id and ended.output_urls
        waited = seconds_between(ended.submitted_at, ended.last_polled_at)
        assert waited >= min(seconds, settings.PROVIDER_READ_TIMEOUT), ended.prompt
        cut = seconds > settings.PROVIDER_READ_TIMEOUT
        timed_out = [text for text in shown[prediction.pk] if "did not answer in time" in text]
        assert bool(timed_out) == cut, (ended.prompt, shown[prediction.pk])
        if cut and endpoint == "create":
            assert prediction.pk in gave_up_after, "the create cut short was never unknown"
            assert gave_up_after[prediction.pk] >= settings.PROVIDER_READ_TIMEOUT - 1
            assert "may have reached the provider" in timed_out[0]
        elif cut:
            assert ended.polls >= 2, "the poll cut short was not sent again"
