"""When to poll a running prediction next: where its end has become likely.

Polls are the provider's rate limit, so each one should have a fair chance of finding something
new. Three things say when a prediction will end, best first:

1. its log: a tqdm bar says how many steps are left and how fast they go, so the next poll goes
   right after the bar's predicted end (a bar longer than POLL_MAX_INTERVAL is looked at on the
   way, with little priority: those polls only keep its log fresh);
2. what Darkroom has learned of its model (timings.learned): the time from acceptance to end
   while it queues, the run time once it has started. The next poll waits until another
   POLL_SKIP_MASS of the predictions still running at this age would have ended, never less
   than POLL_DENSE_INTERVAL: sparse where few jobs end, dense around the likely end;
3. in the long tail past the 99th percentile, a fraction of the time overdue, so a stuck job
   costs few polls and is still polled.

A prediction whose provider sends webhooks is only polled as a safety net.
"""

import math
from dataclasses import dataclass

from django.conf import settings

# A bar's predicted end, checked this much later: the provider needs a moment to store it.
AFTER_BAR = 0.05
# How likely a poll planned from a bar is to find the end.
BAR_LIKELIHOOD = 0.9
# A queued job is polled when this share of its model's queue times would have passed.
QUEUE_MASS = 0.8


@dataclass(frozen=True, slots=True)
class Plan:
    delay: float  # seconds until the next poll
    likelihood: float  # the chance it finds the prediction ended: what spends a short budget


def plan(
    timing,
    *,
    age: float,
    run_age: float | None,
    remaining: float | None,
    deadline_in: float = math.inf,
    webhook: bool = False,
) -> Plan:
    """The next poll of a prediction `age` seconds after its acceptance, `run_age` seconds
    after it started (None while queued), with `remaining` seconds left on its progress bar
    (None without one) and its deadline `deadline_in` seconds away, given its model's
    `timing`. Never later than POLL_MAX_INTERVAL, nor than just past the deadline."""
    chosen = _plan(timing, age, run_age, remaining, webhook)
    latest = min(settings.POLL_MAX_INTERVAL, max(deadline_in, 0.0) + AFTER_BAR)
    if chosen.delay <= latest:
        return chosen
    # Looked at on the way: an end this early is as likely as the times learned say.
    early = by_distribution(timing.run if run_age is not None else timing.total, run_age or age)
    return Plan(latest, min(chosen.likelihood, early.likelihood))


def _plan(timing, age: float, run_age: float | None, remaining: float | None, webhook: bool):
    if remaining is not None:
        # A bar at its end (or a step from it, its rate rounded) says the end is imminent.
        delay = remaining + AFTER_BAR if remaining > 0 else settings.POLL_DENSE_INTERVAL
        chosen = Plan(delay, BAR_LIKELIHOOD)
    elif run_age is not None:
        chosen = by_distribution(timing.run, run_age)
    else:
        chosen = by_distribution(timing.total, age)
        # A queued job is looked at again when it has most likely started: from then on its
        # bar or its run time plans the polls, which says far more than its total time.
        started = by_distribution(timing.queue, age, mass=QUEUE_MASS)
        if started.delay < chosen.delay:
            chosen = Plan(started.delay, chosen.likelihood * started.delay / chosen.delay)
    if webhook:
        return Plan(max(chosen.delay, settings.POLL_WEBHOOK_INTERVAL), chosen.likelihood)
    return chosen


def by_distribution(distribution, elapsed: float, mass: float | None = None) -> Plan:
    """Wait until `mass` (POLL_SKIP_MASS) of what is still running at `elapsed` would have
    ended, within the dense interval and POLL_MAX_INTERVAL."""
    mass = settings.POLL_SKIP_MASS if mass is None else mass
    elapsed = max(elapsed, 0.0)
    done = distribution.cdf(elapsed)
    alive = max(1.0 - done, 1e-9)
    delay = distribution.quantile(min(done + mass * alive, 0.999)) - elapsed
    if done > 0.99:
        delay = max(delay, settings.POLL_AGE_FACTOR * (elapsed - distribution.quantile(0.5)))
    delay = min(max(delay, settings.POLL_DENSE_INTERVAL), settings.POLL_MAX_INTERVAL)
    likelihood = (distribution.cdf(elapsed + delay) - done) / alive
    return Plan(delay, min(max(likelihood, 0.0), 1.0))
