"""Whether Darkroom is working, as /healthz answers and the provider health page shows it.

The database answers; the broker answers; a worker's poller stamped its heartbeat lately; no
prediction's next step is long overdue; the archive keeps up. Three small indexed queries and a
ping, so a load balancer may ask every few seconds. The request budget's state (for /metrics and
the page) and the Celery queues' lengths (for /metrics) are read here too.
"""

import logging
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path

import redis
from django.conf import settings
from django.db import DatabaseError
from django.db.models import Count, Min
from django.utils import timezone
from kombu.transport.redis import PRIORITY_STEPS
from kombu.transport.redis import Channel as KombuRedisChannel
from redis.backoff import NoBackoff
from redis.retry import Retry

from outputs.models import Output
from predictions.budget import FILE_STATE, RequestBudget, bucket_step
from predictions.models import Prediction

from .models import Heartbeat

log = logging.getLogger(__name__)
# While the same checks keep failing, /healthz says so again this often (per process).
REPEAT_AFTER = 60.0


@dataclass
class Check:
    name: str
    ok: bool
    # Why not, in words: what /healthz lists and the page shows.
    reason: str = ""
    figures: dict = field(default_factory=dict)


def checks() -> list[Check]:
    now = timezone.now()
    try:
        found = [Check("database", True), workers(now), polls(now), archive(now)]
    except DatabaseError as exc:
        found = [Check("database", False, f"the database cannot be reached ({type(exc).__name__})")]
    return [*found, broker()]


class HealthLog:
    """What this process's /healthz said in the log last. A load balancer probes every few
    seconds: a line a failing probe would bury everything else, so a failure is one warning line
    when it starts, when the checks that fail change, and once every REPEAT_AFTER while it
    lasts; the recovery one info line."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.failing: frozenset[str] = frozenset()
        self.said_at = 0.0

    def note(self, checks: list[Check]) -> None:
        failing = frozenset(check.name for check in checks if not check.ok)
        now = time.monotonic()
        with self.lock:
            if failing == self.failing and (not failing or now - self.said_at < REPEAT_AFTER):
                return
            self.failing, self.said_at = failing, now
        if failing:
            reasons = "; ".join(check.reason for check in checks if not check.ok)
            log.warning("/healthz is failing: %s", reasons, extra={"status_code": 503})
        else:
            log.info("/healthz is ok again")


health_log = HealthLog()


def workers(now: datetime) -> Check:
    limit = settings.HEALTH_MAX_HEARTBEAT_AGE
    latest, fresh = Heartbeat.latest(timedelta(seconds=limit))
    age = (now - latest).total_seconds() if latest else None
    figures = {"workers": fresh, "last_heartbeat_seconds": round(age, 1) if latest else None}
    if fresh:
        return Check("workers", True, figures=figures)
    if latest is None:
        return Check("workers", False, "no worker has stamped a heartbeat yet", figures)
    return Check(
        "workers", False, f"no worker heartbeat for {age:.0f} s (limit {limit:g} s)", figures
    )


def polls(now: datetime) -> Check:
    """How late the most overdue step of any prediction (send, poll, cancel) is: a claimed one
    is due when its lease runs out, so a dead poller's work turns late too."""
    limit = settings.HEALTH_MAX_POLL_DELAY
    # prediction_due_idx: its first entry.
    oldest = (
        Prediction.objects.filter(next_poll_at__isnull=False)
        .order_by("next_poll_at")
        .values_list("next_poll_at", flat=True)
        .first()
    )
    delay = max((now - oldest).total_seconds(), 0.0) if oldest else 0.0
    figures = {"oldest_due_seconds": round(delay, 1)}
    if delay <= limit:
        return Check("polls", True, figures=figures)
    return Check(
        "polls", False, f"the oldest due poll is {delay:.0f} s late (limit {limit:g} s)", figures
    )


def archive(now: datetime) -> Check:
    """Outputs waiting to be archived (or retried), and how late the most overdue one is."""
    limit = settings.HEALTH_MAX_ARCHIVE_DELAY
    # output_due_idx holds exactly these rows.
    waiting = Output.objects.filter(next_attempt_at__isnull=False).aggregate(
        backlog=Count("pk"), oldest=Min("next_attempt_at")
    )
    oldest = waiting["oldest"]
    delay = max((now - oldest).total_seconds(), 0.0) if oldest else 0.0
    figures = {"backlog": waiting["backlog"], "oldest_due_seconds": round(delay, 1)}
    if delay <= limit:
        return Check("archive", True, figures=figures)
    reason = (
        f"the oldest output waiting to be archived is {delay:.0f} s late "
        f"({waiting['backlog']} waiting; limit {limit:g} s)"
    )
    return Check("archive", False, reason, figures)


REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def broker() -> Check:
    """Redis answers a ping; the filesystem broker's folder can be written to."""
    url = settings.CELERY_BROKER_URL
    if url.startswith(REDIS_SCHEMES):
        try:
            redis_client(url).ping()
        except redis.RedisError as exc:
            # The type only: the message may name the URL with its password.
            return Check("broker", False, f"the broker cannot be reached ({type(exc).__name__})")
        return Check("broker", True)
    folder = settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"]
    if not os.access(folder, os.W_OK):
        return Check("broker", False, "the broker's folder cannot be written to")
    return Check("broker", True)


def queue_lengths(queues: list[str]) -> list[int]:
    """The messages waiting in each Celery queue that no worker has taken yet (one a worker
    holds unacknowledged is not counted): kombu's Redis lists, one a priority step, in one
    round trip; or the filesystem broker's message files, in one listing of its folder. It
    raises what the broker raises."""
    url = settings.CELERY_BROKER_URL
    options = getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {})
    if url.startswith(REDIS_SCHEMES):
        # The keys kombu.transport.redis.Channel._q_for_pri names.
        prefix = options.get("global_keyprefix", "")
        separator = options.get("sep", KombuRedisChannel.sep)
        steps = options.get("priority_steps", PRIORITY_STEPS)
        pipeline = redis_client(url).pipeline(transaction=False)
        for queue in queues:
            for step in steps:
                pipeline.llen(f"{prefix}{queue}{separator}{step}" if step else prefix + queue)
        lengths = pipeline.execute()
        return [sum(lengths[n * len(steps) : (n + 1) * len(steps)]) for n in range(len(queues))]
    # kombu.transport.filesystem names a message "<stamp>_<uuid>.<queue>.msg"; a file being
    # written (dashboard/broker.py) ends in ".partial" and is not one yet.
    with os.scandir(options["data_folder_in"]) as entries:
        found = Counter(entry.name.partition(".")[2] for entry in entries)
    return [found[f"{queue}.msg"] for queue in queues]


@lru_cache(maxsize=4)
def _client(url: str, pid: int) -> redis.Redis:
    # Dead Redis: an answer within a second, and no retries (redis-py retries by default).
    return redis.Redis.from_url(
        url, socket_timeout=1, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0)
    )


def redis_client(url: str) -> redis.Redis:
    """One client a process and URL: a forked worker makes its own rather than share sockets."""
    return _client(url, os.getpid())


# --- The request budget ------------------------------------------------------------------------


@dataclass(frozen=True)
class BudgetLevel:
    provider: str
    kind: str  # "query" or "create"
    rate: float  # requests a second the deployment may send
    # Requests that could leave at once now, and the seconds left of a pause after a 429;
    # None when the budget cannot be read (Redis down).
    tokens: float | None
    paused_seconds: float | None


def budget_levels() -> list[BudgetLevel]:
    """Every provider's budgets as they stand, read without taking from them: one round trip
    to Redis (the buckets of predictions/budget.py), or their files on the embedded defaults."""
    budgets = [
        RequestBudget.of(provider, kind)
        for provider in settings.PROVIDERS
        for kind in ("query", "create")
    ]
    try:
        states, now = saved_states(budgets)
    except redis.RedisError:
        return [BudgetLevel(*budget.name.split(":"), budget.rate, None, None) for budget in budgets]
    levels = []
    for budget, state in zip(budgets, states, strict=True):
        (tokens, _, paused_until), _, _ = bucket_step(
            state, now, budget.refill, budget.capacity, 0, 0.0
        )
        provider, kind = budget.name.split(":")
        levels.append(
            BudgetLevel(provider, kind, budget.rate, tokens, max(paused_until - now, 0.0))
        )
    return levels


def saved_states(budgets: list[RequestBudget]) -> tuple[list, float]:
    """Each bucket's saved (tokens, stamp, paused_until), None for one never used or full
    again, and the bucket's clock now (Redis's own, as the bucket script uses)."""
    if not settings.REDIS_URL:
        folder = Path(settings.VAR_DIR) / "budget"
        return [read_file_state(folder / budget.name) for budget in budgets], time.time()
    pipeline = redis_client(settings.REDIS_URL).pipeline(transaction=False)
    pipeline.time()
    for budget in budgets:
        # The key predictions.budget.RequestBudget._draw uses.
        pipeline.hmget(f"darkroom:budget:{budget.name}", "tokens", "stamp", "paused_until")
    (seconds, microseconds), *saved = pipeline.execute()
    states = [tuple(float(value) for value in values) if all(values) else None for values in saved]
    return states, seconds + microseconds / 1_000_000


def read_file_state(path: Path) -> tuple[float, float, float] | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return FILE_STATE.unpack(data) if len(data) == FILE_STATE.size else None
