"""How soon Darkroom sees a job end, what it spends to see it, and how fast it recovers.

Runs the simulator in this process and real Celery workers (separate processes, on the
configured database and broker), submits a workload and measures:

- detection lag: from the provider's end (its `completed_at`) to Darkroom's stored answer;
- provider requests per prediction (creates included), and 429s received;
- CPU per 1,000 polls: the worker process, and the database server's backends for this
  database (PostgreSQL: read from /proc; on SQLite the database is in the worker);
- recovery: after one of two workers is SIGKILLed, how long until every prediction it held is
  polled again, and whether any create was sent twice.

Every scenario but throughput also runs a baseline on the same workload (the same seed): the
official client's way, each prediction polled every 0.5 s from creation to its end.

Scenarios: light (200 jobs of 2 to 20 s, no budget pressure), pressure (1,000 in flight under a
50/s query budget), throughput (a provider with no limit: polls a second from one worker
process, with the database updates), recovery (a worker killed with 200 in flight).
Run it with no other Darkroom worker on this database: any poller claims any due prediction.
"""

import heapq
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import httpx
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection
from django.db.models import Q, Sum
from django.utils import timezone

from accounts.models import Team
from predictions.models import RUNNING, Prediction, Status
from predictions.simulator import Faults, Simulator
from predictions.tasks import wake_dispatcher
from timings.learned import cache as learned_cache
from timings.models import ModelTiming, TimingSample

TEAM = "Bench poller"
TERMINAL = {"succeeded", "failed", "canceled", "aborted"}
# The light workload: jobs of 2 to 20 s (the simulator's models at half speed), a few failing.
MIXED_MODELS = [
    "black-forest-labs/flux-schnell",
    "black-forest-labs/flux-dev",
    "black-forest-labs/flux-1.1-pro",
    "black-forest-labs/flux-kontext-pro",
    "stability-ai/sdxl",
    "darkroom/fails",
]
BASELINE_INTERVAL = 0.5
BASELINE_THREADS = 32


@dataclass
class Scenario:
    jobs: int
    speed: float  # the simulator's: 0.5 makes its jobs take twice as long
    arrival: float  # seconds over which the jobs are submitted
    query_limit: float = 0.0  # the simulator's enforced limit; 0: none
    query_budget: float = 1000.0  # Darkroom's budget
    create_budget: float = 1000.0
    workers: int = 1
    kill_after: float | None = None
    warmup: int = 0  # jobs run first, for the models' times to be learned
    seed_offset: int = 0
    env: dict[str, str] = field(default_factory=dict)


SCENARIOS = {
    "light": Scenario(jobs=200, speed=0.5, arrival=20.0, warmup=120),
    "pressure": Scenario(
        jobs=1000,
        speed=0.05,
        arrival=10.0,
        query_limit=50,
        query_budget=50,
        create_budget=200,
        warmup=120,
    ),
    "recovery": Scenario(jobs=200, speed=0.1, arrival=5.0, workers=2, kill_after=15.0),
}


@dataclass
class Result:
    name: str
    lags: list[float]
    requests: int
    jobs: int
    throttled: int
    polls: int = 0
    worker_cpu: float = 0.0
    database_cpu: float = 0.0
    extra: dict = field(default_factory=dict)

    def row(self) -> dict:
        lags = sorted(self.lags)

        def pick(q: float) -> float | None:
            return round(lags[min(int(q * len(lags)), len(lags) - 1)], 3) if lags else None

        per_thousand = 1000 / self.polls if self.polls else 0
        return {
            "run": self.name,
            "ended": len(lags),
            "lag_p50_s": pick(0.5),
            "lag_p95_s": pick(0.95),
            "lag_max_s": round(lags[-1], 3) if lags else None,
            "requests_per_prediction": round(self.requests / max(self.jobs, 1), 2),
            "429s": self.throttled,
            "polls": self.polls,
            "worker_cpu_s_per_1000_polls": round(self.worker_cpu * per_thousand, 3),
            "database_cpu_s_per_1000_polls": round(self.database_cpu * per_thousand, 3),
            **self.extra,
        }


class Command(BaseCommand):
    help = "Measure the poller: detection lag, requests, 429s, CPU per poll and recovery."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--scenario", choices=[*SCENARIOS, "throughput"], default="light", help="(light)"
        )
        parser.add_argument("--seed", type=int, default=7)
        parser.add_argument("--seconds", type=float, default=10.0, help="throughput run (10)")
        parser.add_argument("--jobs", type=int, help="override the scenario's number of jobs")
        parser.add_argument("--no-baseline", action="store_true")

    def handle(self, *args, scenario: str, seed: int, seconds: float, **options) -> None:
        # A `timeout` or Ctrl-C must still stop the workers, which run in sessions of their own.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        if connection.vendor == "sqlite" and scenario in ("pressure", "throughput"):
            self.stderr.write("Note: SQLite serialises writes; PostgreSQL is what this measures.")
        self.team = Team.objects.get_or_create(name=TEAM)[0]
        self.seed = seed
        if scenario == "throughput":
            results = [self.throughput(seconds, options["jobs"] or 2000)]
        else:
            plan = SCENARIOS[scenario]
            if options["jobs"]:
                plan.jobs = options["jobs"]
            results = [self.darkroom(plan)]
            if not options["no_baseline"]:
                results.append(self.baseline(plan))
        rows = [result.row() for result in results]
        self.print_table(rows)
        summary = {"bench": "poller", "scenario": scenario, "database": connection.vendor}
        self.stdout.write(json.dumps(summary | {"results": rows}))

    # --- Darkroom ------------------------------------------------------------------------

    def darkroom(self, plan: Scenario) -> Result:
        self.clear()
        with Simulator(speed=plan.speed, seed=self.seed, faults=self.faults(plan)) as sim:
            before = self.warm_up(sim, plan) if plan.warmup else sim.stats()
            workers = [self.start_worker(sim, plan) for _ in range(plan.workers)]
            beat = self.start_beat(sim)
            try:
                start = timezone.now()
                cpu_before = self.cpu(workers)
                pks = self.submit(plan)
                recovery = {}
                if plan.kill_after is not None:
                    time.sleep(plan.kill_after)
                    killed = self.kill(workers[0])
                    recovery["recovered_within_s"] = round(self.watch_recovery(pks, killed), 2)
                self.wait_until_ended(pks, timeout=plan.arrival + 600)
                cpu_after = self.cpu(workers)
            finally:
                for process in [*workers, beat]:
                    stop(process)
            stats = since(before, sim.stats())
        rows = Prediction.objects.filter(pk__in=pks)
        lags = [
            (polled - completed).total_seconds()
            for polled, completed in rows.filter(
                completed_at__isnull=False, status__in=TERMINAL
            ).values_list("last_polled_at", "completed_at")
        ]
        polls = rows.aggregate(n=Sum("polls"))["n"] or 0
        result = Result(
            "darkroom",
            lags,
            requests=sum(stats["requests_by_endpoint"].values()),
            jobs=len(pks),
            throttled=throttled(stats),
            polls=polls,
            worker_cpu=cpu_after[0] - cpu_before[0],
            database_cpu=cpu_after[1] - cpu_before[1],
            extra={"seconds": round((timezone.now() - start).total_seconds(), 1)},
        )
        if recovery:
            creates = stats["creates_by_prompt"].values()
            recovery["duplicate_creates"] = sum(1 for count in creates if count > 1)
            recovery["submit_unknown"] = rows.filter(status=Status.SUBMIT_UNKNOWN).count()
            result.extra |= recovery
        return result

    def warm_up(self, sim: Simulator, plan: Scenario) -> dict:
        """Run `plan.warmup` jobs of the workload first, as a deployment has run jobs before:
        the models' times are learned from them. The measured run's workers start afresh."""
        ModelTiming.objects.filter(provider="simulator").delete()
        TimingSample.objects.filter(provider="simulator").delete()
        warm = replace(plan, jobs=plan.warmup, arrival=plan.warmup / 20, seed_offset=1)
        worker = self.start_worker(sim, warm)
        try:
            pks = self.submit(warm)
            self.wait_until_ended(pks, timeout=600)
        finally:
            stop(worker)
        ModelTiming.learn()
        learned_cache.clear()
        Prediction.objects.filter(pk__in=pks).delete()
        return sim.stats()

    def submit(self, plan: Scenario) -> list[int]:
        pks = []
        gap = plan.arrival / plan.jobs
        started = time.monotonic()
        for n in range(plan.jobs):
            model = MIXED_MODELS[n % len(MIXED_MODELS)]
            prediction = Prediction.objects.create(
                team=self.team,
                provider="simulator",
                model=model,
                input={"prompt": f"bench {self.seed + plan.seed_offset} {n}"},
            )
            pks.append(prediction.pk)
            wake_dispatcher()
            time.sleep(max(0.0, started + (n + 1) * gap - time.monotonic()))
        return pks

    def wait_until_ended(self, pks: list[int], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not Prediction.objects.filter(pk__in=pks, status__in=RUNNING).exists():
                return
            time.sleep(0.5)
        raise CommandError(f"predictions still running after {timeout:g} s")

    def watch_recovery(self, pks: list[int], killed: datetime) -> float:
        """Seconds from the kill until every prediction the dead worker may have held (running,
        and due or leased within a lease of the kill) had been polled again."""
        horizon = killed + timedelta(seconds=settings.POLL_LEASE + settings.POLL_LOOKAHEAD)
        affected = set(
            Prediction.objects.filter(
                pk__in=pks, status__in=RUNNING, next_poll_at__lte=horizon
            ).values_list("pk", flat=True)
        )
        while affected and timezone.now() < killed + timedelta(seconds=120):
            affected -= set(
                Prediction.objects.filter(pk__in=affected)
                .filter(Q(last_polled_at__gt=killed) | ~Q(status__in=RUNNING))
                .values_list("pk", flat=True)
            )
            time.sleep(0.1)
        return (timezone.now() - killed).total_seconds()

    # --- Throughput ----------------------------------------------------------------------

    def throughput(self, seconds: float, jobs: int) -> Result:
        """Polls a second from one worker process with its database writes: every prediction is
        always due, and none ends."""
        self.clear()
        plan = Scenario(jobs=jobs, speed=0.001, arrival=0.0, query_budget=1e6)
        plan.env = {"POLL_MAX_INTERVAL": "0", "POLL_DENSE_INTERVAL": "0", "POLL_LOOKAHEAD": "0"}
        with Simulator(speed=plan.speed, seed=self.seed, faults=Faults()) as sim:
            now = timezone.now()
            created = [
                sim.engine.create("darkroom/slow", {"prompt": f"bench {n}"}, sim.url)
                for n in range(jobs)
            ]
            Prediction.objects.bulk_create(
                Prediction(
                    team=self.team,
                    provider="simulator",
                    model="darkroom/slow",
                    input={"prompt": f"bench {n}"},
                    provider_id=payload["id"],
                    status=Status.STARTING,
                    accepted_at=now,
                    next_poll_at=now,
                )
                for n, payload in enumerate(created)
            )
            worker = self.start_worker(sim, plan)
            try:
                time.sleep(3.0)  # started, connected, polling
                polls_before = self.total_polls()
                cpu_before, started = self.cpu([worker]), time.monotonic()
                simulator_before = time.process_time()
                time.sleep(seconds)
                polls_after = self.total_polls()
                cpu_after, elapsed = self.cpu([worker]), time.monotonic() - started
                simulator_cpu = time.process_time() - simulator_before
            finally:
                stop(worker)
        polls = polls_after - polls_before
        return Result(
            "darkroom",
            [],
            requests=polls,
            jobs=jobs,
            throttled=0,
            polls=polls,
            worker_cpu=cpu_after[0] - cpu_before[0],
            database_cpu=cpu_after[1] - cpu_before[1],
            extra={
                "polls_per_second": round(polls / elapsed),
                "simulator_cpu_s_per_1000_polls": round(simulator_cpu * 1000 / max(polls, 1), 3),
                "seconds": round(elapsed, 1),
            },
        )

    def total_polls(self) -> int:
        return Prediction.objects.filter(team=self.team).aggregate(n=Sum("polls"))["n"] or 0

    # --- Baseline ------------------------------------------------------------------------

    def baseline(self, plan: Scenario) -> Result:
        """The official client's way: create, then poll every 0.5 s until the end (as one
        loop over all predictions, with up to BASELINE_THREADS requests at once)."""
        lags: list[float] = []
        with Simulator(speed=plan.speed, seed=self.seed, faults=self.faults(plan)) as sim:
            http = httpx.Client(
                base_url=sim.base_url,
                headers={"Authorization": "Bearer baseline"},
                limits=httpx.Limits(max_connections=BASELINE_THREADS),
                timeout=30,
            )

            def request(n: int, prediction_id: str | None) -> tuple[int, dict | None]:
                """A create or a poll; None to try again after the interval (a 429, or a
                connection the loaded machine dropped)."""
                try:
                    if prediction_id is None:
                        model = MIXED_MODELS[n % len(MIXED_MODELS)]
                        body = {"input": {"prompt": f"bench {self.seed} {n}"}}
                        return n, http.post(f"/models/{model}/predictions", json=body).json()
                    answer = http.get(f"/predictions/{prediction_id}")
                except httpx.TransportError:
                    return n, None
                return n, answer.json() if answer.status_code == 200 else None

            due = [(n * plan.arrival / plan.jobs, n, None) for n in range(plan.jobs)]
            ids: dict[int, str] = {}
            start = time.monotonic()
            with ThreadPoolExecutor(BASELINE_THREADS) as pool:
                pending: set = set()
                while due or pending:
                    now = time.monotonic() - start
                    while due and due[0][0] <= now and len(pending) < BASELINE_THREADS:
                        _, n, prediction_id = heapq.heappop(due)
                        pending.add(pool.submit(request, n, prediction_id))
                    timeout = max(0.0, due[0][0] - now) if due else None
                    done, pending = wait(pending, timeout=timeout, return_when=FIRST_COMPLETED)
                    for future in done:
                        n, payload = future.result()
                        if payload is not None:
                            ids[n] = payload["id"]
                        if payload is not None and payload.get("status") in TERMINAL:
                            ended = datetime.fromisoformat(payload["completed_at"]).timestamp()
                            lags.append(time.time() - ended)
                        else:
                            due_at = time.monotonic() - start + BASELINE_INTERVAL
                            heapq.heappush(due, (due_at, n, ids.get(n)))
            http.close()
            stats = sim.stats()
        requests = sum(stats["requests_by_endpoint"].values())
        return Result(
            f"baseline {BASELINE_INTERVAL:g} s",
            lags,
            requests=requests,
            jobs=plan.jobs,
            throttled=throttled(stats),
            polls=requests - plan.jobs,
        )

    # --- Helpers -------------------------------------------------------------------------

    def faults(self, plan: Scenario) -> Faults:
        faults = Faults()
        if plan.query_limit:
            faults.update({"query_rate_limit": plan.query_limit})
        return faults

    def clear(self) -> None:
        Prediction.objects.filter(team=self.team).delete()

    def start_worker(self, sim: Simulator, plan: Scenario) -> subprocess.Popen:
        rates = {
            "SIMULATOR_QUERY_RATE": str(plan.query_budget),
            "SIMULATOR_CREATE_RATE": str(plan.create_budget),
        }
        worker = ["worker", "--pool", "threads", "--concurrency", "2", "--without-gossip"]
        worker += ["--without-mingle", "--without-heartbeat"]
        return self.celery(sim, worker, rates | plan.env)

    def start_beat(self, sim: Simulator) -> subprocess.Popen:
        """Celery beat, for its sweeps: learning models' times, above all."""
        return self.celery(sim, ["beat"])

    def celery(self, sim: Simulator, command: list[str], env: dict | None = None):
        """A Celery process of its own session (so a kill reaches all of it), on `sim`."""
        return subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "dashboard", *command, "--loglevel", "WARNING"],
            cwd=settings.BASE_DIR,
            env={**os.environ, "SIMULATOR_URL": sim.base_url, "DEBUG": "false", **(env or {})},
            start_new_session=True,
        )

    def kill(self, worker: subprocess.Popen) -> datetime:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        return timezone.now()

    def cpu(self, workers: list[subprocess.Popen]) -> tuple[float, float]:
        """CPU seconds so far of the workers, and of this database's server processes."""
        worker = sum(process_cpu(w.pid) for w in workers if w.poll() is None)
        database = 0.0
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid()"
                )
                database = sum(process_cpu(pid) for (pid,) in cursor.fetchall())
        return worker, database

    def print_table(self, rows: list[dict]) -> None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
        widths = {c: max(len(c), *(len(str(row.get(c, ""))) for row in rows)) for c in columns}
        for column in columns:
            values = "  ".join(f"{str(row.get(column, '')):>{widths[column]}}" for row in rows)
            self.stdout.write(f"{column:<32} {values}")


def process_cpu(pid: int) -> float:
    """User and system CPU seconds of a process (all its threads), from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def throttled(stats: dict) -> int:
    """The 429s among the simulator's responses (counted by status, as JSON keys or numbers)."""
    return sum(n for status, n in stats["responses_by_status"].items() if str(status) == "429")


def since(before: dict, after: dict) -> dict:
    """The simulator's counts between two of its stats."""
    keys = ("requests_by_endpoint", "responses_by_status", "creates_by_prompt")
    return {
        key: {name: n - before[key].get(name, 0) for name, n in after[key].items()} for key in keys
    }


def stop(worker: subprocess.Popen) -> None:
    if worker.poll() is None:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
