"""/metrics in Prometheus's text format: every figure read from the database (and the request
budget from Redis) at each scrape, so it is the same whichever web process answers and counts
every worker process's requests. No prometheus_client multiprocess files: the counters are the
totals the processes add to the database (operations.tallies).

Families (every name starts with darkroom_):
  predictions_running{provider,status}                 gauge    submitting, starting, processing
  predictions_ended_total{provider,status}             counter  reached an end status
  unknown_outcomes{resolved}                           gauge    creates given up as unknown
  provider_requests_total{provider,request,outcome}    counter  polls are request="get"
  provider_request_duration_seconds{provider,request}  histogram
  request_budget_rate{provider,kind}                   gauge    requests a second allowed
  request_budget_tokens{provider,kind}                 gauge    requests that could leave now
  request_budget_paused_seconds{provider,kind}         gauge    left of a pause after a 429
  poll_delay_seconds                                   gauge    the most overdue step (queue lag)
  archive_backlog, archive_delay_seconds               gauges   outputs waiting, most overdue
  workers, worker_heartbeat_age_seconds                gauges   fresh heartbeats, newest's age
"""

from collections import defaultdict
from collections.abc import Iterator
from itertools import accumulate

from django.db.models import Count
from django.utils import timezone
from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from predictions.models import RUNNING, Prediction, Status

from . import health
from .models import PredictionEnds, RequestTotal, UnknownOutcome
from .tallies import LATENCY_BUCKETS


class DarkroomCollector:
    def collect(self) -> Iterator[Metric]:
        yield from predictions()
        yield from requests()
        yield from budgets()
        yield from lags()


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


def budgets() -> Iterator[Metric]:
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


def lags() -> Iterator[Metric]:
    now = timezone.now()
    polls = health.polls(now).figures
    yield GaugeMetricFamily(
        "darkroom_poll_delay_seconds",
        "How late the most overdue step of any prediction (send, poll, cancel) is.",
        value=polls["oldest_due_seconds"],
    )
    archive = health.archive(now).figures
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
    workers = health.workers(now).figures
    yield GaugeMetricFamily(
        "darkroom_workers",
        "Worker processes whose poller stamped a heartbeat within HEALTH_MAX_HEARTBEAT_AGE.",
        value=workers["workers"],
    )
    if workers["last_heartbeat_seconds"] is not None:
        yield GaugeMetricFamily(
            "darkroom_worker_heartbeat_age_seconds",
            "Seconds since the newest worker heartbeat.",
            value=workers["last_heartbeat_seconds"],
        )
