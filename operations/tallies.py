"""What each process counts for operators, in memory, and adds to the database every few seconds.

Every request to a provider goes through `send()` (predictions/client.py), which times it and
counts how it ended; every end of a prediction is counted by `ended()` once its transaction has
committed (operations.signals). A worker's poller calls `beat()` every few seconds from its
conductor: it stamps the process's heartbeat and stores the counts. A process without a poller
(web processes apply webhooks) stores its counts with its first count FLUSH_INTERVAL after the
last store; a worker process also stores them as it shuts down (operations.signals). A process
that stops otherwise loses the few seconds of counts it held: figures, never a prediction.

Counting takes a lock and a few dictionary updates (6 to 10 µs a request on a busy two-core
machine), never a query.
"""

import bisect
import logging
import os
import socket
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from functools import lru_cache

import httpx
from django.db import DatabaseError, transaction
from django.utils import timezone
from django.utils.crypto import salted_hmac

log = logging.getLogger(__name__)

# The upper bounds of the latency histogram's buckets, in seconds (a query has taken over 45 s).
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
FLUSH_INTERVAL = 5.0
# How long minutes and heartbeats are kept: the page shows an hour, /metrics keeps its totals.
KEEP = timedelta(days=1)
FORGET_INTERVAL = 3600.0
WARNING_INTERVAL = 60.0


def outcome_of(status: int) -> str:
    """How a request that got an answer ended."""
    if status < 300:
        return "ok"
    if status == 429:
        return "throttled"
    return "server_error" if status >= 500 else "refused"


def request_kind(request: httpx.Request) -> str:
    """Which call a request to a provider is, from its method and path."""
    path = request.url.path.rstrip("/")
    if path.endswith("/cancel"):
        return "cancel"
    if "/models/" in path:
        return "create" if request.method == "POST" else "other"
    if path.endswith("/webhooks/default/secret"):
        return "secret"
    if path.endswith("/predictions"):
        return "create" if request.method == "POST" else "list"
    return "get" if "/predictions/" in path else "other"


@lru_cache(maxsize=256)
def account_of(token: str) -> str:
    """Which key sent a request, as the health page tells keys apart: never the key itself."""
    return salted_hmac("darkroom.operations.account", token, algorithm="sha256").hexdigest()[:16]


class Tallies:
    """This process's counts since it last stored them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pid = os.getpid()
        self.stored_at = time.monotonic()
        self.forgot_at = -FORGET_INTERVAL
        self.warned_at = -WARNING_INTERVAL
        self.clear()

    def clear(self) -> None:
        # (account, minute since the epoch, provider, request, outcome): [count, seconds, slowest]
        self.minutes: dict[tuple, list] = defaultdict(lambda: [0, 0.0, 0.0])
        # (provider, request, outcome): [count, seconds, buckets]
        self.totals: dict[tuple, list] = defaultdict(
            lambda: [0, 0.0, [0] * (len(LATENCY_BUCKETS) + 1)]
        )
        # (provider, status): count
        self.ends: dict[tuple, int] = defaultdict(int)

    def request(self, provider, kind: str, outcome: str, seconds: float) -> None:
        minute = int(time.time() // 60)  # a datetime is made when stored: 6 µs less here
        account = account_of(provider.token)
        bucket = bisect.bisect_left(LATENCY_BUCKETS, seconds)
        with self.lock:
            counts = self.minutes[(account, minute, provider.name, kind, outcome)]
            counts[0] += 1
            counts[1] += seconds
            counts[2] = max(counts[2], seconds)
            total = self.totals[(provider.name, kind, outcome)]
            total[0] += 1
            total[1] += seconds
            total[2][bucket] += 1
        self.store_if_due()

    def ended(self, provider: str, status: str) -> None:
        with self.lock:
            self.ends[(provider, status)] += 1
        self.store_if_due()

    def store_if_due(self) -> None:
        if time.monotonic() - self.stored_at >= FLUSH_INTERVAL:
            self.store()

    def store(self) -> None:
        """Add what was counted to the database; on a failure, keep it for the next try. It
        never raises: counting must not fail the request or the end it counts."""
        from .models import PredictionEnds, RequestMinute, RequestTotal

        with self.lock:
            self.stored_at = time.monotonic()
            minutes, totals, ends = self.minutes, self.totals, self.ends
            if not (minutes or totals or ends):
                return
            self.clear()
        try:
            with transaction.atomic():  # all of it or, to be tried again, none
                if minutes:
                    RequestMinute.add(
                        {
                            (account, datetime.fromtimestamp(minute * 60, UTC), *rest): tuple(value)
                            for (account, minute, *rest), value in minutes.items()
                        }
                    )
                if totals:
                    RequestTotal.add({key: tuple(value) for key, value in totals.items()})
                if ends:
                    PredictionEnds.add(dict(ends))
        except Exception as exc:
            self.put_back(minutes, totals, ends)
            self.warn(
                f"could not store the provider request and prediction counts: {describe(exc)}"
            )

    def put_back(self, minutes: dict, totals: dict, ends: dict) -> None:
        with self.lock:
            for key, (count, seconds, slowest) in minutes.items():
                counts = self.minutes[key]
                counts[0] += count
                counts[1] += seconds
                counts[2] = max(counts[2], slowest)
            for key, (count, seconds, buckets) in totals.items():
                total = self.totals[key]
                total[0] += count
                total[1] += seconds
                total[2] = [a + b for a, b in zip(total[2], buckets, strict=True)]
            for key, count in ends.items():
                self.ends[key] += count

    def forget_old(self, now: datetime) -> None:
        """Drop minutes and heartbeats older than KEEP, at most once an hour a process."""
        from .models import Heartbeat, RequestMinute

        if time.monotonic() - self.forgot_at < FORGET_INTERVAL:
            return
        self.forgot_at = time.monotonic()
        RequestMinute.forget_before(now - KEEP)
        Heartbeat.forget_before(now - KEEP)

    def warn(self, message: str) -> None:
        """One line, at most once a minute: a database outage must not flood the log."""
        now = time.monotonic()
        if now - self.warned_at >= WARNING_INTERVAL:
            self.warned_at = now
            log.warning(message)


_tallies: Tallies | None = None
_lock = threading.Lock()


def tallies() -> Tallies:
    """This process's tallies (a forked worker child starts its own, with nothing counted)."""
    global _tallies
    with _lock:
        if _tallies is None or _tallies.pid != os.getpid():
            _tallies = Tallies()
        return _tallies


def send(transport: httpx.BaseTransport, request: httpx.Request, provider) -> httpx.Response:
    """`request` sent through `transport` with its answer read, timed and counted for
    `provider` (a predictions.client.Provider): every request to a provider comes here."""
    started = time.monotonic()
    outcome = "broken"  # the connection failed mid-way, or the answer was cut short
    try:
        response = transport.handle_request(request)
        try:
            response.read()
        except BaseException:
            response.close()
            raise
        outcome = outcome_of(response.status_code)
        return response
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout):
        outcome = "unreachable"
        raise
    except httpx.TimeoutException:
        outcome = "timeout"
        raise
    finally:
        seconds = time.monotonic() - started
        tallies().request(provider, request_kind(request), outcome, seconds)


def ended(provider: str, status: str) -> None:
    """A prediction of `provider` reached the end status `status` (its transaction committed)."""
    tallies().ended(provider, status)


def beat() -> None:
    """The poller's conductor is alive (it calls this every few seconds): stamp this process's
    heartbeat and store its counts. A database that fails here fails the conductor's next
    statement too, which the poller handles: this only says so, in one line a minute."""
    from .models import Heartbeat

    counts = tallies()
    try:
        Heartbeat.stamp(f"{socket.gethostname()}:{os.getpid()}")
        counts.store()
        counts.forget_old(timezone.now())
    except DatabaseError as exc:
        counts.warn(f"could not stamp this worker's heartbeat: {describe(exc)}")


def describe(exc: Exception) -> str:
    """An error in one line: its type and the first line of its message."""
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first_line}" if first_line else type(exc).__name__
