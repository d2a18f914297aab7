"""The poller: one per worker process, sending every due request of every prediction.

A conductor thread leases due predictions in batches (one statement, `Prediction.claim_batch`),
a little ahead of when they are due, and fires each at its due time on a pool of threads that
share one HTTP client. What most polls bring (still running, maybe further along) is written
back in one statement per batch (`Prediction.store_polls`); the rarer steps (a create, a cancel,
an end with its outputs and costs, a timeout) run whole on the pool, one row at a time.

Nothing here is the truth: a claimed prediction's lease (`next_poll_at`) is renewed while this
process holds it, so if the process dies the lease runs out within POLL_LEASE seconds and any
other worker's poller claims it again. A call that outlives its claim cannot overwrite a newer
result: every write is bound to the claim. The request budget (predictions.budget) is shared by
every poller; when it is short, the polls likeliest to find an end go first.
"""

import heapq
import itertools
import logging
import os
import queue
import threading
import time
from collections import deque
from datetime import datetime, timedelta
from itertools import groupby

from django.conf import settings
from django.db import close_old_connections, connection, connections
from django.utils import timezone

from accounts.models import Team
from operations import tallies

from .budget import RequestBudget
from .client import Provider, ProviderClient, ProviderError, ProviderNotConfigured, shared_client
from .models import RUNNING, Prediction, Status

log = logging.getLogger(__name__)

# How long a team's provider and key are reused before they are read again.
PROVIDER_TTL = 10.0
# Quiet: look for due predictions at least this often (a submit wakes the poller at once).
CLAIM_INTERVAL = 0.25
# While requests are out, the loop collects answers and sends more this often.
WRITE_INTERVAL = 0.01
# With a plentiful budget, requests queue for the pool up to this many per thread: enough for a
# round of the loop (a claim and a batch written) at a thousand polls a second. A short budget's
# bucket never grants that many at once.
QUEUE_DEPTH = 16
# While the budget is short, the due requests are put in order of likelihood this often.
RESORT_INTERVAL = 0.1
# On stop, how long the answers of requests still out are waited for, to be written.
SHUTDOWN_GRACE = 3.0
# What a pool thread hands back for a request it did not send because the poller is stopping.
SKIPPED = ("skipped", None)


class Job:
    __slots__ = ("prediction", "due", "lease_until", "kind")

    def __init__(self, prediction: Prediction, now: datetime, monotonic: float) -> None:
        self.prediction = prediction
        self.due = monotonic + max((prediction.due_at - now).total_seconds(), 0.0)
        self.lease_until = prediction.next_poll_at
        self.kind = "create" if prediction.status == Status.SUBMITTING else "query"

    def budget_key(self) -> tuple[str, str]:
        return (self.prediction.provider, self.kind)

    def chance_ended(self, now) -> float:
        """Whose request goes first when the budget is short: a create or a step first, then
        the polls likeliest to find an end."""
        if self.kind == "create" or not self.is_plain_poll:
            return 1.0
        return self.prediction.chance_ended(now)

    @property
    def is_plain_poll(self) -> bool:
        """A poll of a running prediction, whose result can share a batched write."""
        p = self.prediction
        return (
            p.status in (Status.STARTING, Status.PROCESSING)
            and bool(p.provider_id)
            and not p.cancel_requested_at
            and not p.past_deadline()
        )


class Poller:
    def __init__(self, client: ProviderClient | None = None) -> None:
        self.client = client or shared_client()
        # The pool: threads taking requests from one queue (None tells one to stop).
        self.queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self.threads = [
            threading.Thread(target=self.serve, name=f"poll-{n}", daemon=True)
            for n in range(settings.POLL_THREADS)
        ]
        self.waiting: list[tuple[float, float, int, Job]] = []  # (due, -likelihood, n, job)
        self.held: dict[int, Job] = {}
        self.results: deque = deque()
        # Set to cut the loop's sleep short: by stop(), and with `claim_asked`.
        self.wakeup = threading.Event()
        self.claim_asked = False
        self.ready: deque[Job] = deque()  # due, waiting for room in the pool
        self.outstanding = 0  # handed to the pool and not written back yet
        self.budget_short_until = self.budget_wait_until = self.next_sort = 0.0
        self.refused_until: dict[tuple[str, str], float] = {}  # per budget, after a refusal
        self.stopping = threading.Event()
        self.counter = itertools.count()
        self.providers: dict[tuple[int, str], tuple[float, Provider | Exception]] = {}
        self.thread = threading.Thread(target=self.run, name="poller", daemon=True)

    # --- Running ---------------------------------------------------------------------------

    def start(self) -> "Poller":
        for thread in (self.thread, *self.threads):
            thread.start()
        return self

    def wake(self) -> None:
        """Look for due predictions now (a submit or a dispatch asks)."""
        self.claim_asked = True
        self.wakeup.set()

    def stop(self, timeout: float = 5.0) -> None:
        self.stopping.set()
        self.wakeup.set()
        self.thread.join(timeout)
        # Each thread closes its database connection and ends, without waiting for a call that
        # has stalled.
        for _ in self.threads:
            self.queue.put(None)

    def serve(self) -> None:
        """A pool thread: send what the conductor hands over, until told to stop."""
        while (job := self.queue.get()) is not None:
            self.send(job)
        connections.close_all()

    def run(self) -> None:
        next_claim = next_renewal = 0.0
        while not self.stopping.is_set():
            try:
                self.wakeup.clear()
                relax_commits()
                now = time.monotonic()
                if self.claim_asked or now >= next_claim:
                    self.claim_asked = False
                    next_claim = now + (0.0 if self.claim() else CLAIM_INTERVAL)
                self.fire_due()
                self.write_results()
                if now >= next_renewal:
                    self.renew_leases()
                    tallies.beat()
                    next_renewal = now + settings.POLL_LEASE / 3
                self.wakeup.wait(self.sleep_time(next_claim))
            except Exception:
                log.exception("the poller failed a round; it goes on after a pause")
                close_old_connections()
                self.stopping.wait(1.0)
        self.hand_back()
        connection.close()

    def sleep_time(self, next_claim: float) -> float:
        until = next_claim
        if self.waiting:
            until = min(until, self.waiting[0][0])
        beat = time.monotonic() + WRITE_INTERVAL
        if self.outstanding:
            # Answers are collected, written and followed by more requests on this beat.
            until = min(until, beat)
        if self.ready:
            until = min(until, max(self.budget_wait_until, beat))
        return max(until - time.monotonic(), 0.0)

    # --- Claiming --------------------------------------------------------------------------

    def claim(self) -> bool:
        """Lease what is due soon; True if the batch was full (more may be due)."""
        room = settings.POLL_CAPACITY - len(self.held)
        if room < min(settings.POLL_BATCH, settings.POLL_CAPACITY) / 4 and self.held:
            return False  # wait for a batch's worth of room: a claim is one statement
        limit = min(room, settings.POLL_BATCH)
        claimed = Prediction.claim_batch(limit, lookahead=settings.POLL_LOOKAHEAD)
        now, monotonic = timezone.now(), time.monotonic()
        for prediction in claimed:
            job = Job(prediction, now, monotonic)
            self.held[prediction.pk] = job
            self.push(job, job.due)
        return len(claimed) == limit

    def push(self, job: Job, due: float) -> None:
        priority = -job.prediction.poll_likelihood
        heapq.heappush(self.waiting, (due, priority, next(self.counter), job))

    # --- Sending ---------------------------------------------------------------------------

    def fire_due(self) -> None:
        """Send due requests on the pool's free threads, as many as the budget grants: each
        leaves as its token is granted, never in a bunch after a wait in a queue. While the
        budget is short, the likeliest to find an end go first; the rest wait their turn. A
        budget that refused holds back only its own requests: creates waiting for theirs (a
        team's burst of submits) never keep polls, which have a budget of their own, waiting."""
        now = time.monotonic()
        while self.waiting and self.waiting[0][0] <= now:
            self.ready.append(heapq.heappop(self.waiting)[3])
        # Requests queue for the pool only while the budget is plentiful: when it is short,
        # a request waiting in a queue would leave later than its token, bunched with others.
        depth = 1 if self.budget_short_until > now else QUEUE_DEPTH
        # Answers waiting to be written have left the pool: their threads are free already.
        room = settings.POLL_THREADS * depth - (self.outstanding - len(self.results))
        if room <= 0 or not self.ready or now < self.budget_wait_until:
            return
        if len(self.ready) > room and self.budget_short_until > now >= self.next_sort:
            moment = timezone.now()
            self.ready = deque(
                sorted(self.ready, key=lambda job: job.chance_ended(moment), reverse=True)
            )
            self.next_sort = now + RESORT_INTERVAL
        candidates, held_back = [], []
        while self.ready and len(candidates) < room:
            job = self.ready.popleft()
            waiting = self.refused_until.get(job.budget_key(), 0.0) > now
            (held_back if waiting else candidates).append(job)
        refused = []
        for key, jobs in groupby(candidates, key=Job.budget_key):
            jobs = list(jobs)
            granted, wait = RequestBudget.of(*key).take(len(jobs))
            for job in jobs[:granted]:
                self.outstanding += 1
                self.queue.put(job)
            if granted < len(jobs):
                refused.extend(jobs[granted:])
                self.budget_short_until = now + 1.0
                self.refused_until[key] = now + min(max(wait, 0.001), 0.1)
        self.ready.extendleft(reversed(refused + held_back))
        # Nothing more goes before the first moment a request still waiting could.
        if self.ready:
            self.budget_wait_until = min(
                self.refused_until.get(job.budget_key(), 0.0) for job in self.ready
            )

    def send(self, job: Job) -> None:
        """On a pool thread: one request, and what follows from its answer."""
        prediction = job.prediction
        try:
            if self.stopping.is_set():
                self.results.append((job, SKIPPED))  # hand_back() gives it back
                return
            if not job.is_plain_poll:
                prediction.advance(self.client)
                self.results.append((job, None))
            else:
                self.results.append((job, self.poll(prediction)))
        except Exception:
            log.exception("prediction %s: the poll failed", prediction.pk)
            close_old_connections()
            self.results.append((job, None))

    def poll(self, prediction: Prediction) -> tuple[str, object] | None:
        """Ask for `prediction`; what to write in a batch, or None if it was written here."""
        try:
            provider = self.provider(prediction)
            payload = self.client.get(provider, prediction.provider_id)
        except ProviderError as exc:
            if exc.status == 404:
                prediction.poll_failed(exc)
                return None
            return ("error", exc)
        except ProviderNotConfigured as exc:
            return ("error", ProviderError(str(exc), retryable=True))
        except ValueError as exc:
            prediction._finish(Status.FAILED, error=str(exc))
            return None
        fields = prediction.remote_fields(payload)
        if fields is None:
            prediction.apply_remote(payload)  # records the unknown status as an error
            return None
        quiet = fields["status"] in RUNNING and not prediction.output_urls and not fields["output"]
        if not quiet:
            prediction.store_remote(fields)
            return None
        return ("running", fields)

    def provider(self, prediction: Prediction) -> Provider:
        """The prediction's provider with its team's key, read at most every PROVIDER_TTL."""
        key = (prediction.team_id, prediction.provider)
        now = time.monotonic()
        cached = self.providers.get(key)
        if cached is None or cached[0] < now:
            try:
                found = Team(pk=prediction.team_id).provider(prediction.provider)
            except ProviderNotConfigured as exc:
                found = exc
            cached = self.providers[key] = (now + PROVIDER_TTL, found)
        if isinstance(cached[1], Exception):
            raise cached[1]
        return cached[1]

    # --- Writing ---------------------------------------------------------------------------

    def write_results(self) -> None:
        running, errors = [], []
        while self.results:
            job, outcome = self.results.popleft()
            self.outstanding -= 1
            # Only this job: a create or step that stored its answer itself may have been
            # claimed again for its first poll meanwhile, and that job's lease must be kept.
            if self.held.get(job.prediction.pk) is job:
                del self.held[job.prediction.pk]
            if outcome is None:
                continue
            if outcome is SKIPPED:
                self.ready.append(job)
                continue
            kind, value = outcome
            (running if kind == "running" else errors).append((job.prediction, value))
        Prediction.store_polls(running)
        Prediction.store_poll_errors(errors)

    def renew_leases(self) -> None:
        """Keep what this process holds, waiting jobs and requests still on their way, where
        the lease would run out before the next renewal but one (most polls are written back
        long before)."""
        now = timezone.now()
        soon = now + timedelta(seconds=settings.POLL_LEASE * 2 / 3)
        held = [(job.prediction, job.lease_until) for job in self.held.values()]
        held = [(prediction, lease) for prediction, lease in held if lease < soon]
        if not held:
            return
        lease_until = now + timedelta(seconds=settings.POLL_LEASE)
        renewed = Prediction.renew_leases(held, lease_until)
        for pk in renewed:
            self.held[pk].lease_until = lease_until

    def hand_back(self) -> None:
        """On stop: write the answers of the requests still out (waiting SHUTDOWN_GRACE at
        most for them), and give back what was claimed but not sent, so another poller takes
        it at once. A call still out after the grace keeps its lease, which runs out."""
        while True:
            try:
                job = self.queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                self.outstanding -= 1
                self.ready.append(job)
        deadline = time.monotonic() + SHUTDOWN_GRACE
        while self.outstanding > len(self.results) and time.monotonic() < deadline:
            time.sleep(WRITE_INTERVAL)
        try:
            self.write_results()
        except Exception:
            log.warning("could not write %s answers on stop; they are asked again", len(self.held))
        self.release_waiting()

    def release_waiting(self) -> None:
        """Hand back what was claimed but not sent, so another poller takes it at once."""
        jobs = [job for _, _, _, job in self.waiting] + list(self.ready)
        self.waiting.clear()
        self.ready.clear()
        try:
            Prediction.release([(job.prediction, job.lease_until) for job in jobs])
        except Exception:
            log.warning("could not release %s leases; they run out by themselves", len(jobs))


def relax_commits() -> None:
    """Let the conductor's own commits return before PostgreSQL has flushed them to disk.

    All it writes are claims, leases and answers of predictions still running: a crash of the
    database server that lost its last fraction of a second of these would only have the
    predictions claimed and polled again. Creates, cancels and ends are written on the pool's
    connections, which keep every commit durable.
    """
    if connection.vendor != "postgresql":
        return
    connection.ensure_connection()
    if getattr(connection.connection, "darkroom_relaxed", False):
        return
    with connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit TO off")
    connection.connection.darkroom_relaxed = True


_poller: tuple[int, Poller] | None = None
# The process whose worker is shutting down: a wake-up it consumes late starts no poller.
_closed_in: int | None = None
_lock = threading.Lock()


def open_poller() -> None:
    """Start this process's poller as its worker starts (a forked worker child starts its own)."""
    global _closed_in
    with _lock:
        _closed_in = None
    running_poller()


def running_poller() -> Poller | None:
    """This process's poller, started on first use; None once its worker is shutting down."""
    global _poller
    with _lock:
        if _closed_in == os.getpid():
            return None
        if _poller is None or _poller[0] != os.getpid() or not _poller[1].thread.is_alive():
            _poller = (os.getpid(), Poller().start())
        return _poller[1]


def stop_poller(*, closing: bool = False) -> None:
    """Stop this process's poller. `closing` (the worker's shutdown) keeps it from starting
    again until the process's worker starts anew; otherwise the next wake-up may start one."""
    global _poller, _closed_in
    with _lock:
        _closed_in = os.getpid() if closing else None
        if _poller is not None and _poller[0] == os.getpid():
            _poller[1].stop()
        _poller = None
