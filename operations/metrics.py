"""/metrics in Prometheus's text format: every figure read from the database (and the request
budget from Redis, the queues from the broker) at each scrape, so it is the same whichever web
process answers and counts every worker process's requests. No prometheus_client multiprocess
files: the counters are the totals the processes add to the database (operations.tallies).

Families (every name starts with darkroom_):
  predictions_running{provider,status}                 gauge    submitting, starting, processing
  predictions_ended_total{provider,status}             counter  reached an end status
  unknown_outcomes{resolved}                           gauge    creates given up as unknown
  provider_requests_total{provider,request,outcome}    counter  polls are request="get"
  provider_request_duration_seconds{provider,request}  histogram
  request_budget_rate{provider,kind}                   gauge    requests a second allowed
  request_budget_tokens{provider,kind}                 gauge    requests that could leave now
  request_budget_paused_seconds{provider,kind}         gauge    left of a pause after a 429
  budget_amount{team_id,team,member_id,currency}       gauge    a monthly budget (or own limit)
  budget_spent{...the same}                            gauge    charged this month, that it counts
  budget_possibly_charged{...the same}                 gauge    possibly charged this month
  poll_delay_seconds                                   gauge    the most overdue step (queue lag)
  queue_length{queue}                                  gauge    Celery messages no worker took yet
  archive_backlog, archive_delay_seconds               gauges   outputs waiting, most overdue
  workers, worker_heartbeat_age_seconds                gauges   fresh heartbeats, newest's age
  metrics_unreadable{figures}                          gauge    1: this scrape skipped them

Monthly budgets: a series a budget (costs.models.Budget), so only teams with a budget appear,
and as many series as budgets: every team's spend in every currency would grow with sign-ups
and say nothing a budget does not; the costs page has it. member_id is empty for the team's
budget; no names of people. The sums are the month's daily roll-ups (costs.models.DailyCost) in
the budget's currency, what ended, as the 80% banner counts; the estimates of what is still
running, which the refusal at Generate adds, would mean reading raw predictions at every scrape.

A figure that cannot be read (a broker or database down) is left out, not a 500: the scrape
answers with the rest, metrics_unreadable{figures} says 1 for what it skipped, and one warning
line says why.
"""

import logging
from collections import defaultdict
from collections.abc import Callable, Iterator
from decimal import Decimal
from itertools import accumulate

from django.conf import settings
from django.db.models import Count, Sum
from django.utils import timezone
from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from costs.models import Budget, DailyCost, month_of
from dashboard.outage import OUTAGES
from predictions.models import RUNNING, Prediction, Status

from . import health
from .models import PredictionEnds, RequestTotal, UnknownOutcome
from .tallies import LATENCY_BUCKETS, describe

log = logging.getLogger(__name__)


class DarkroomCollector:
    def collect(self) -> Iterator[Metric]:
        unreadable = GaugeMetricFamily(
            "darkroom_metrics_unreadable",
            "1 when this scrape could not read these figures and left them out (the log says "
            "why), else 0.",
            labels=["figures"],
        )
        skipped = []
        database_down = None
        for name, read in FIGURES.items():
            try:
                if database_down and name not in BROKER_FIGURES:
                    # Each figure would wait for a connection of its own: the scrape answers
                    # within one connect timeout, not eight.
                    raise database_down
                found = list(read())
            except Exception as exc:
                if isinstance(exc, OUTAGES):
                    database_down = exc
                # Whatever failed (a broker or database down, a query timed out): the other
                # figures still answer, rather than a 500 that would hide them all.
                skipped.append(f"{name} ({describe(exc)})")
                unreadable.add_metric([name], 1)
                continue
            unreadable.add_metric([name], 0)
            yield from found
        yield unreadable
        if skipped:
            log.warning("/metrics left out figures it could not read: %s", "; ".join(skipped))


def registry() -> CollectorRegistry:
    """A registry of Darkroom's figures alone: the web process's own (its CPU, its Python) say
    nothing about the deployment, which one of several processes answers."""
    found = CollectorRegistry(auto_describe=False)
    found.register(DarkroomCollector())
    return found


def predictions() -> Iterator[Metric]:
    running = GaugeMetricFamily(
        "darkroom_predictions_running",
        "Predictions not ended yet, by provider and status.",
        labels=["provider", "status"],
    )
    # prediction_due_idx: every running prediction has a next step due (a poll or its lease).
    rows = (
        Prediction.objects.filter(next_poll_at__isnull=False, status__in=RUNNING)
        .order_by()
        .values_list("provider", "status")
        .annotate(n=Count("pk"))
    )
    for provider, status, count in rows:
        running.add_metric([provider, status], count)
    yield running

    ended = CounterMetricFamily(
        "darkroom_predictions_ended",
        "Predictions that reached an end status, by provider and status.",
        labels=["provider", "status"],
    )
    for row in PredictionEnds.objects.order_by("provider", "status"):
        ended.add_metric([row.provider, row.status], row.count)
    yield ended

    unknown = GaugeMetricFamily(
        "darkroom_unknown_outcomes",
        "Creates given up as 'submit outcome unknown', by whether their outcome was found since.",
        labels=["resolved"],
    )
    statuses = UnknownOutcome.by_status(UnknownOutcome.objects.all())
    unresolved = statuses.pop(Status.SUBMIT_UNKNOWN, 0)
    unknown.add_metric(["false"], unresolved)
    unknown.add_metric(["true"], sum(statuses.values()))
    yield unknown


def requests() -> Iterator[Metric]:
    totals = RequestTotal.objects.order_by("provider", "request", "outcome")
    sent = CounterMetricFamily(
        "darkroom_provider_requests",
        "Requests to providers, by call (polls are 'get') and how they ended.",
        labels=["provider", "request", "outcome"],
    )
    histograms: dict[tuple, list] = defaultdict(lambda: [[0] * (len(LATENCY_BUCKETS) + 1), 0.0])
    for row in totals:
        sent.add_metric([row.provider, row.request, row.outcome], row.count)
        histogram = histograms[(row.provider, row.request)]
        histogram[0] = [a + b for a, b in zip(histogram[0], row.buckets, strict=False)]
        histogram[1] += row.seconds
    yield sent

    latency = HistogramMetricFamily(
        "darkroom_provider_request_duration_seconds",
        "How long requests to providers took, answer read, whatever their outcome.",
        labels=["provider", "request"],
    )
    bounds = [f"{bound:g}" for bound in LATENCY_BUCKETS] + ["+Inf"]
    for (provider, request), (buckets, seconds) in histograms.items():
        cumulative = list(zip(bounds, accumulate(buckets), strict=True))
        latency.add_metric([provider, request], cumulative, sum_value=seconds)
    yield latency


def request_budgets() -> Iterator[Metric]:
    labels = ["provider", "kind"]
    rate = GaugeMetricFamily(
        "darkroom_request_budget_rate",
        "Requests a second every worker together may send (kind: query or create).",
        labels=labels,
    )
    tokens = GaugeMetricFamily(
        "darkroom_request_budget_tokens",
        "Requests that could leave at once now; near 0, the budget is what limits polling.",
        labels=labels,
    )
    paused = GaugeMetricFamily(
        "darkroom_request_budget_paused_seconds",
        "Seconds left of the pause every worker keeps after a provider's 429.",
        labels=labels,
    )
    for level in health.budget_levels():
        key = [level.provider, level.kind]
        rate.add_metric(key, level.rate)
        if level.tokens is not None:
            tokens.add_metric(key, level.tokens)
            paused.add_metric(key, level.paused_seconds)
    yield from (rate, tokens, paused)


def monthly_budgets() -> Iterator[Metric]:
    """Each budget, and what it counts of this calendar month so far, from the daily roll-ups:
    two queries whatever the number of teams."""
    labels = ["team_id", "team", "member_id", "currency"]
    amount = GaugeMetricFamily(
        "darkroom_budget_amount",
        "A team's monthly budget (member_id empty) or a member's own monthly limit.",
        labels=labels,
    )
    spent = GaugeMetricFamily(
        "darkroom_budget_spent",
        "Charged this calendar month in the budget's currency: by the team, or by the member "
        "for a member's own limit.",
        labels=labels,
    )
    possibly = GaugeMetricFamily(
        "darkroom_budget_possibly_charged",
        "Possibly charged this calendar month in the budget's currency (what is still running "
        "is not counted).",
        labels=labels,
    )
    budgets = list(Budget.objects.select_related("team").order_by("team_id", "pk"))
    sums: dict[tuple, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    if budgets:
        first, last = month_of(timezone.now())
        # daily_cost_period_idx: the month's rows of each team with a budget.
        rows = (
            DailyCost.objects.filter(
                team__in={budget.team_id for budget in budgets}, day__gte=first, day__lte=last
            )
            .order_by()
            .values_list("team_id", "member_id", "currency")
            .annotate(spent=Sum("amount"), possibly=Sum("possibly_charged_amount"))
        )
        for team_id, member_id, currency, charged, maybe in rows:
            # The team's budget counts every member's row, a member's limit their own.
            for whose in {(team_id, None, currency), (team_id, member_id, currency)}:
                sums[whose][0] += charged
                sums[whose][1] += maybe
    for budget in budgets:
        key = [str(budget.team_id), budget.team.name, str(budget.member_id or ""), budget.currency]
        charged, maybe = sums[(budget.team_id, budget.member_id, budget.currency)]
        amount.add_metric(key, float(budget.amount))
        spent.add_metric(key, float(charged))
        possibly.add_metric(key, float(maybe))
    yield from (amount, spent, possibly)


def poll_lag() -> Iterator[Metric]:
    polls = health.polls(timezone.now()).figures
    yield GaugeMetricFamily(
        "darkroom_poll_delay_seconds",
        "How late the most overdue step of any prediction (send, poll, cancel) is.",
        value=polls["oldest_due_seconds"],
    )


def queues() -> Iterator[Metric]:
    length = GaugeMetricFamily(
        "darkroom_queue_length",
        "Celery messages waiting in a queue for a worker to take: the default queue (celery: "
        "predictions' wake-ups and every task but archiving) and the archive queue.",
        labels=["queue"],
    )
    names = [settings.CELERY_TASK_DEFAULT_QUEUE, settings.ARCHIVE_QUEUE]
    for name, count in zip(names, health.queue_lengths(names), strict=True):
        length.add_metric([name], count)
    yield length


def archive_lag() -> Iterator[Metric]:
    archive = health.archive(timezone.now()).figures
    yield GaugeMetricFamily(
        "darkroom_archive_backlog",
        "Outputs waiting to be archived, retries included.",
        value=archive["backlog"],
    )
    yield GaugeMetricFamily(
        "darkroom_archive_delay_seconds",
        "How late the most overdue output to archive is.",
        value=archive["oldest_due_seconds"],
    )


def workers() -> Iterator[Metric]:
    found = health.workers(timezone.now()).figures
    yield GaugeMetricFamily(
        "darkroom_workers",
        "Worker processes whose poller stamped a heartbeat within HEALTH_MAX_HEARTBEAT_AGE.",
        value=found["workers"],
    )
    if found["last_heartbeat_seconds"] is not None:
        yield GaugeMetricFamily(
            "darkroom_worker_heartbeat_age_seconds",
            "Seconds since the newest worker heartbeat.",
            value=found["last_heartbeat_seconds"],
        )


# What a scrape reads, each on its own: one that fails leaves the others standing.
# The figures read from the broker (Redis or its folder) alone, not the database.
BROKER_FIGURES = {"request_budget", "queues"}
FIGURES: dict[str, Callable[[], Iterator[Metric]]] = {
    "predictions": predictions,
    "requests": requests,
    "request_budget": request_budgets,
    "budgets": monthly_budgets,
    "polls": poll_lag,
    "queues": queues,
    "archive": archive_lag,
    "workers": workers,
}
