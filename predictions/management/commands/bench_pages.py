"""How long the history, gallery, prediction, costs and New images pages take to answer with a
big history.

Times each page server side, through Django's test client signed in as a member of a team with
`--count` predictions: the whole request (middleware, session, queries, template), without a
socket or a browser. The team is `--team` (by default "Benchmark <count>"); if it holds fewer
predictions, `seed_history` adds the rest first (with their costs and roll-ups). The baseline,
measured in the same run, is the same history page for a member of an empty team: what a page
costs before any prediction.

Each page is requested twice to warm up, once more to count its SQL queries, then `--runs` times
with the clock running: wall time per request (median, p95, ...) and the CPU time this process
spent per request, on average (Django's side; the database server's CPU is not in it). SQLite is
for small histories: above 50,000 predictions the command refuses, as the figures would say
nothing about a deployment.
"""

import json
import logging
import re
import statistics
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import quote, urlencode

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import Membership, Role, Team
from accounts.teams import SESSION_KEY
from predictions.filters import Cursor, HistoryFilterForm
from predictions.management.commands.seed_history import find_or_create_team
from predictions.models import Prediction, Status

SQLITE_LIMIT = 50_000
HISTORY_PAGE = HistoryFilterForm.page_size
# Searches over seed_history's prompts: a word in about 2.5% of them, two words together in
# about 0.06% and a near miss (many prompts hold both words, none in that order), three letters
# of many words, and words and letters in none; (text, refused by the form).
SEARCHES = {
    "hit": ("lighthouse", False),
    "rare hit": ("tiny owl", False),
    "near miss": ("tiny at", False),
    "3 letters, hit": ("ing", False),
    "3 letters, miss": ("zqx", False),
    "miss": ("quokka", False),
    "2 letters, refused": ("ox", True),
}

# What the New images form shows once it has an estimate.
ESTIMATED = 'class="estimate-amount"'


@dataclass
class Page:
    name: str
    url: str
    headers: dict = field(default_factory=dict)
    status: int = 200
    # Markup the answer must hold, where its status alone would not tell.
    expect: str = ""
    # Asked again with the ETag of its first answer (If-None-Match), as a browser asks a page
    # it holds: read just before the page is timed, as an arrivals question's changes with its
    # team's change marker, once a minute at least.
    conditional: bool = False


class Command(BaseCommand):
    help = "Time the history, gallery, prediction, costs and New images pages at a history size."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--count", type=int, required=True, help="predictions in the team")
        parser.add_argument("--runs", type=int, default=30, help="timed requests per page (30)")
        parser.add_argument("--team", help='team name or id (default: "Benchmark <count>")')

    def handle(self, *args, count: int, runs: int, team: str | None, **options) -> None:
        if connection.vendor == "sqlite" and count > SQLITE_LIMIT:
            raise CommandError(
                f"SQLite is meant for histories of up to {SQLITE_LIMIT:,} predictions; run "
                f"the benchmark for {count:,} on PostgreSQL (set DATABASE_URL)."
            )
        if count < 2 * HISTORY_PAGE or runs < 1:
            raise CommandError(
                f"--count must be {2 * HISTORY_PAGE} or more (two pages) and --runs 1 or more."
            )
        bench_team = find_or_create_team(team or f"Benchmark {count}")
        size = Prediction.objects.filter(team=bench_team).count()
        if size < count:
            self.stdout.write(f"{bench_team} has {size:,} predictions: seeding the rest.")
            call_command(
                "seed_history", team=str(bench_team.pk), count=count - size, stdout=self.stdout
            )
            size = count
        empty_team = Team.objects.create(name=f"bench-empty-{uuid.uuid4().hex[:8]}")
        try:
            # Debug mode would keep every query's text in memory: not what production does.
            with override_settings(DEBUG=False), quiet_request_log():
                results = self.measure(bench_team, empty_team, runs)
        finally:
            get_user_model().objects.filter(memberships__team=empty_team).delete()
            empty_team.delete()
        self.report(results, size, runs)

    def measure(self, team: Team, empty_team: Team, runs: int) -> dict[str, dict]:
        baseline = signed_in(empty_team, make_member(empty_team))
        results = {"empty history (baseline)": self.time(baseline, Page("", "/"), runs)}
        member = Membership.objects.filter(team=team, role=Role.MEMBER).first()
        if member is None:
            raise CommandError(f"{team} has no member to sign in as.")
        client = signed_in(team, member.user)
        for page in self.pages(client, team):
            results[page.name] = self.time(client, page, runs)
        return results

    def pages(self, client: Client, team: Team) -> list["Page"]:
        predictions = Prediction.objects.filter(team=team).order_by("-submitted_at", "-id")
        size = predictions.count()
        deep = Cursor(*predictions.values_list("submitted_at", "pk")[size * 9 // 10])
        # Where the first page ends: its chunk's refresh URL goes back to it.
        through = Cursor(*predictions.values_list("submitted_at", "pk")[HISTORY_PAGE - 1])
        # The member with the fewest predictions: the filter whose rows lie furthest apart.
        members = Membership.objects.filter(team=team, role__in=[Role.OWNER, Role.MEMBER])
        rare_member = min(
            members.values_list("user__username", flat=True),
            key=lambda name: predictions.filter(submitted_by__username=name).count(),
        )
        since = (timezone.localdate() - timedelta(days=180)).isoformat()
        until = (timezone.localdate() - timedelta(days=173)).isoformat()
        # A custom period of the costs page spans at most 366 days.
        today = timezone.localdate()
        year = f"since={today - timedelta(days=365)}&until={today}"
        # The New images form asking again after a change: 4 variations of 2 images each.
        estimate = urlencode(
            {
                "provider": settings.DEFAULT_PROVIDER,
                "model": "black-forest-labs/flux-dev",
                "num_outputs": 2,
                "variations": 4,
            }
        )
        model = predictions.values_list("model", flat=True).first()
        prediction = predictions.filter(status=Status.SUCCEEDED).first()
        htmx = {"HTTP_HX_REQUEST": "true"}
        # The question an open history asks once a second: what arrived since its newest row.
        arrivals = f"/?after={Cursor.of(predictions.first())}&through={through}"
        return [
            Page("history page 1", "/"),
            Page("history deep (90% back)", f"/?before={deep}"),
            Page("history older chunk (htmx)", f"/?before={deep}", htmx),
            Page("history status=failed", "/?status=failed"),
            Page("history status=timed_out", "/?status=timed_out"),
            Page("history model", f"/?model={model}"),
            Page("history rarest member", f"/?member={rare_member}"),
            Page("history one week, 6 months ago", f"/?since={since}&until={until}"),
            *(
                Page(f"history q={q} ({what})", f"/?q={quote(q)}", status=400 * refused or 200)
                for what, (q, refused) in SEARCHES.items()
            ),
            Page("gallery page 1", "/gallery/"),
            Page("gallery deep (90% back)", f"/gallery/?before={deep}"),
            Page("gallery starred", "/gallery/?starred=on"),
            Page("gallery model", f"/gallery/?model={model}"),
            Page("gallery q=lighthouse (hit)", "/gallery/?q=lighthouse"),
            Page("gallery q=quokka (miss)", "/gallery/?q=quokka"),
            Page("prediction page", f"/predictions/{prediction.pk}/"),
            Page("costs this month", "/costs/"),
            Page("costs last 30 days", "/costs/?period=last_30"),
            Page("costs full year", f"/costs/?{year}"),
            Page("costs full year, one model", f"/costs/?{year}&model={quote(model)}"),
            Page("prices", "/costs/prices/"),
            Page("new images (with estimate)", "/new/", expect=ESTIMATED),
            Page(
                "new images estimate (htmx)", f"/costs/estimate?{estimate}", htmx, expect=ESTIMATED
            ),
            Page(
                "live refresh, unchanged (304)",
                f"/?through={through}",
                htmx,
                status=304,
                conditional=True,
            ),
            Page("live arrivals, none (304)", arrivals, htmx, status=304, conditional=True),
        ]

    def time(self, client: Client, page: "Page", runs: int) -> dict:
        headers = page.headers
        if page.conditional:
            etag = client.get(page.url, **headers).headers.get("ETag", "")
            headers = {**headers, "HTTP_IF_NONE_MATCH": etag}
        for _ in range(2):
            client.get(page.url, **headers)
        with CaptureQueriesContext(connection) as queries:
            response = client.get(page.url, **headers)
        # Read now: the next request clears the connection's query log.
        query_count = len(queries)
        if response.status_code != page.status or page.expect not in response.text:
            expected = f"{page.status} with {page.expect}" if page.expect else page.status
            raise CommandError(
                f"{page.url} answered {response.status_code}, not {expected}: "
                "the benchmark would time something else than it says."
            )
        samples = []
        cpu_start = time.process_time()
        for _ in range(runs):
            start = time.perf_counter()
            client.get(page.url, **headers)
            samples.append((time.perf_counter() - start) * 1000)
        cpu = (time.process_time() - cpu_start) * 1000 / runs
        samples.sort()
        return {
            "url": page.url,
            "status": response.status_code,
            "queries": query_count,
            "min": round(samples[0], 2),
            "median": round(statistics.median(samples), 2),
            "p95": round(samples[min(len(samples) - 1, round(0.95 * (len(samples) - 1)))], 2),
            "max": round(samples[-1], 2),
            "cpu": round(cpu, 2),
        }

    def report(self, results: dict[str, dict], size: int, runs: int) -> None:
        baseline = results["empty history (baseline)"]["median"]
        self.stdout.write(
            f"{size:,} predictions on {connection.vendor}, {runs} runs a page; ms, server side "
            "(cpu: this process's CPU per request):"
        )
        width = max(map(len, results))
        self.stdout.write(
            f"{'page':<{width}}  {'min':>7} {'median':>7} {'p95':>7} {'max':>7} {'cpu':>7} "
            f"{'queries':>7} {'x baseline':>10}"
        )
        for name, row in results.items():
            row["ratio"] = round(row["median"] / baseline, 2) if baseline else None
            self.stdout.write(
                f"{name:<{width}}  {row['min']:>7.1f} {row['median']:>7.1f} {row['p95']:>7.1f} "
                f"{row['max']:>7.1f} {row['cpu']:>7.1f} {row['queries']:>7} {row['ratio']:>10.2f}"
            )
        line = {
            "bench": "pages",
            "database": connection.vendor,
            "predictions": size,
            "runs": runs,
            "pages": {slug(name): row for name, row in results.items()},
        }
        self.stdout.write(json.dumps(line))


@contextmanager
def quiet_request_log() -> Iterator[None]:
    """Without the request log's warnings: one per refused search would bury the table."""
    request_log = logging.getLogger("django.request")
    level = request_log.level
    request_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        request_log.setLevel(level)


def make_member(team: Team):
    user = get_user_model().objects.create_user(f"{team.name}-member")
    Membership.objects.create(team=team, user=user, role=Role.MEMBER)
    return user


def signed_in(team: Team, user) -> Client:
    # The test client's own host name is not among ALLOWED_HOSTS outside the test runner.
    client = Client(SERVER_NAME="localhost")
    client.force_login(user)
    session = client.session
    session[SESSION_KEY] = team.pk
    session.save()
    return client


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
