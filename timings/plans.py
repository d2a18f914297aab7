"""A model's polling in words, as the timings page says it: the polls the poller's own rule
(predictions.schedule.plan) gives a typical prediction of the model, summed up."""

from datetime import timedelta

from django.conf import settings
from django.template.defaultfilters import pluralize

from predictions.schedule import plan
from predictions.templatetags.durations import duration

from .learned import Timing

# A prediction followed this many polls is followed as sparsely as it will be.
MOST_POLLS = 500


def typical_polls(timing: Timing, deadline: float) -> list[tuple[float, float]]:
    """(age, delay to the next poll) of each poll of a prediction that starts at its model's
    median queue time and shows no progress bar, from the provider's answer to the create
    until polls past the model's 99th percentile are as far apart as they get, or until the
    `deadline` (seconds after acceptance)."""
    started, late = timing.queue.quantile(0.5), timing.total.quantile(0.99)
    polls: list[tuple[float, float]] = []
    age = 0.0
    while age < deadline and len(polls) < MOST_POLLS:
        run_age = age - started if age >= started else None
        delay = plan(timing, age=age, run_age=run_age, remaining=None).delay
        polls.append((age, delay))
        if age > late and delay >= settings.POLL_MAX_INTERVAL:
            break
        age += delay
    return polls


def describe(timing: Timing, polls: list[tuple[float, float]]) -> str:
    """ "Polled every ~500 ms from 6 s to 11 s after the provider accepts it, where 9 in 10 of
    its predictions end (3 polls before that); then every 2 s, slowing to every 30 s": how
    `polls` (typical_polls) fall around the window where the model's predictions end."""
    start, end = timing.total.quantile(0.05), timing.total.quantile(0.95)
    before = [age for age, _ in polls[1:] if age < start]
    inside = [delay for age, delay in polls if start <= age < end]
    if not inside:  # a window narrower than a poll's wait: the wait that crosses it
        inside = [next((delay for age, delay in reversed(polls) if age < start), polls[0][1])]
    after = [delay for age, delay in polls if age >= end]
    words = (
        f"Polled every ~{say(sum(inside) / len(inside))} from {say(start)} to {say(end)} after "
        f"the provider accepts it, where 9 in 10 of its predictions end ({len(before)} "
        f"poll{pluralize(len(before))} before that)"
    )
    if after:
        words += f"; then every {say(after[0])}"
        if say(after[-1]) != say(after[0]):
            words += f", slowing to every {say(after[-1])}"
    return words + "."


def say(seconds: float) -> str:
    return duration(timedelta(seconds=seconds))
