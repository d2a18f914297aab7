"""The provider health page's figures, for one team: how the providers it uses answered over the
last hour (requests sent with the team's own key, or with the deployment's key it uses), the
request budget every team shares, the team's spend this month against its monthly budget, and
the team's predictions stuck in `starting`, outputs not archived and creates of unknown outcome.
Charts are drawn on the server as SVG (the geometry here, the markup in
templates/operations/_minutes.html): no script, no style attribute.
"""

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from django.conf import settings
from django.db.models import Count, Q, QuerySet, Sum
from django.utils import timezone

from accounts.models import Team
from costs.models import Budget, BudgetUsage, DailyCost, money, month_of
from outputs.models import ArchiveState, Output
from predictions.client import ProviderNotConfigured
from predictions.models import Prediction, Status

from .health import BudgetLevel, budget_levels
from .models import RequestMinute, UnknownOutcome
from .tallies import account_of

MINUTES = 60
# What the lists cover, and how long a prediction may sit in `starting` before it counts as
# stuck (a cold model may well queue a few minutes).
WINDOW = timedelta(hours=24)
STUCK_AFTER = timedelta(minutes=10)
LISTED = 10
# Which budget each kind of request draws on (predictions.poller.Job.kind).
BUDGET_OF = {"create": "create", "get": "query", "cancel": "query", "list": "query"}

# The charts' drawing box: stretched to the page's width, its text in HTML around it.
WIDTH = 720
HEIGHT = 100
# A few errors among many requests still show, as a sliver.
SLIVER = 2.0


@dataclass
class Minute:
    at: datetime
    requests: int = 0
    errors: int = 0
    throttled: int = 0
    seconds: float = 0.0
    slowest: float = 0.0

    @property
    def average(self) -> float | None:
        return self.seconds / self.requests if self.requests else None

    @property
    def average_text(self) -> str:
        return seconds_text(self.average)

    @property
    def slowest_text(self) -> str:
        return seconds_text(self.slowest if self.requests else None)

    @property
    def error_share(self) -> str:
        return f"{100 * self.errors / self.requests:.1f} %" if self.requests else "—"

    @property
    def label(self) -> str:
        return f"{timezone.localtime(self.at):%H:%M}"

    def add(self, row: RequestMinute) -> None:
        self.requests += row.count
        self.seconds += row.seconds
        self.slowest = max(self.slowest, row.slowest)
        if row.outcome != "ok":
            self.errors += row.count
        if row.outcome == "throttled":
            self.throttled += row.count

    def describe(self) -> str:
        """ "14:05: 120 requests, 2 errors (1.7 %), 0.31 s on average, the slowest 1.2 s" """
        if not self.requests:
            return f"{self.label}: no requests"
        return (
            f"{self.label}: {self.requests} request{'s' if self.requests != 1 else ''}, "
            f"{self.errors} error{'s' if self.errors != 1 else ''} ({self.error_share}), "
            f"{seconds_text(self.average)} on average, the slowest {seconds_text(self.slowest)}"
        )


def seconds_text(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"


@dataclass(frozen=True)
class Column:
    x: str
    width: str
    y: str
    height: str
    # The errors stacked on top of the column (requests chart only).
    top_y: str
    top_height: str
    title: str


@dataclass(frozen=True)
class Chart:
    columns: list[Column]
    largest: str  # the scale's top, in words
    width: int = WIDTH
    height: int = HEIGHT


def coordinate(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def minute_columns(minutes: list[Minute], value, top=lambda minute: 0.0) -> list[Column]:
    """A column a minute of height `value(minute)` with `top(minute)` stacked on it, on a
    scale from 0 to the largest column."""
    largest = max((value(m) + top(m) for m in minutes), default=0.0) or 1.0
    step = WIDTH / len(minutes)
    gap = min(step * 0.2, 2)
    columns = []
    for n, minute in enumerate(minutes):
        height = HEIGHT * value(minute) / largest
        top_height = HEIGHT * top(minute) / largest
        if top(minute):
            top_height = max(top_height, SLIVER)
        columns.append(
            Column(
                x=coordinate(n * step + gap / 2),
                width=coordinate(step - gap),
                y=coordinate(HEIGHT - height),
                height=coordinate(height),
                top_y=coordinate(HEIGHT - height - top_height),
                top_height=coordinate(top_height),
                title=minute.describe(),
            )
        )
    return columns


@dataclass
class ProviderPanel:
    """One provider the team uses, over the last hour, oldest minute first."""

    name: str
    label: str
    own_key: bool  # the team's key, else the deployment's (shared with teams without one)
    minutes: list[Minute]
    budgets: list["BudgetUse"] = field(default_factory=list)

    @property
    def hour(self) -> Minute:
        total = Minute(self.minutes[0].at)
        for minute in self.minutes:
            total.requests += minute.requests
            total.errors += minute.errors
            total.throttled += minute.throttled
            total.seconds += minute.seconds
            total.slowest = max(total.slowest, minute.slowest)
        return total

    @property
    def requests_chart(self) -> Chart:
        answered = minute_columns(
            self.minutes, lambda m: m.requests - m.errors, top=lambda m: m.errors
        )
        largest = max(m.requests for m in self.minutes)
        return Chart(answered, f"{largest} request{'s' if largest != 1 else ''}")

    @property
    def latency_chart(self) -> Chart:
        columns = minute_columns(self.minutes, lambda m: m.average or 0.0)
        largest = max((m.average or 0.0) for m in self.minutes)
        return Chart(columns, seconds_text(largest) if largest else "—")

    @property
    def quiet(self) -> bool:
        return not any(m.requests for m in self.minutes)


@dataclass(frozen=True)
class BudgetUse:
    """A budget every team shares: its rate, how much of it the last full minute used, and
    how it stands now."""

    level: BudgetLevel
    last_minute: int

    @property
    def used(self) -> str:
        return f"{100 * self.last_minute / (self.level.rate * 60):.0f} %"

    @property
    def label(self) -> str:
        return "Creates" if self.level.kind == "create" else "Polls and cancels"

    @property
    def state(self) -> str:
        """How the budget stands now, in words."""
        level = self.level
        if level.tokens is None:
            return "Unknown: Redis cannot be reached (each machine counts on its own meanwhile)"
        if level.paused_seconds:
            return f"Paused for {level.paused_seconds:.0f} s more after a provider's 429"
        if level.tokens < 1:
            return "Spent: requests wait their turn"
        return "Available"


def provider_panels(team: Team, now: datetime) -> list[ProviderPanel]:
    """A panel for each provider the team can use (one with a key, its own or the
    deployment's), with its minutes of the last hour and its budgets."""
    keys = {}
    for name, config in settings.PROVIDERS.items():
        if name == "simulator" and settings.DEFAULT_PROVIDER != "simulator":
            continue  # only offered as the demo provider
        try:
            provider = team.provider(name)
        except ProviderNotConfigured:
            continue
        keys[name] = (account_of(provider.token), provider.token != config["token"])
    this_minute = now.replace(second=0, microsecond=0)
    first = this_minute - timedelta(minutes=MINUTES - 1)
    rows = RequestMinute.objects.filter(
        account__in={account for account, _ in keys.values()},
        minute__gte=first,
        provider__in=list(keys),
    )
    minutes = {
        name: {
            first + timedelta(minutes=n): Minute(first + timedelta(minutes=n))
            for n in range(MINUTES)
        }
        for name in keys
    }
    for row in rows:
        if row.account == keys[row.provider][0] and row.minute in minutes[row.provider]:
            minutes[row.provider][row.minute].add(row)
    uses = budget_uses(this_minute - timedelta(minutes=1))
    return [
        ProviderPanel(
            name,
            settings.PROVIDERS[name]["label"],
            own_key,
            list(minutes[name].values()),
            [use for use in uses if use.level.provider == name],
        )
        for name, (_, own_key) in keys.items()
    ]


def budget_uses(minute: datetime) -> list[BudgetUse]:
    """Every budget, with the requests of every team that drew on it in `minute`."""
    sent = RequestMinute.objects.filter(minute=minute).values_list("provider", "request")
    drawn: dict[tuple[str, str], int] = {}
    for provider, request, count in sent.order_by().annotate(n=Sum("count")):
        if request in BUDGET_OF:
            key = (provider, BUDGET_OF[request])
            drawn[key] = drawn.get(key, 0) + count
    return [
        BudgetUse(level, drawn.get((level.provider, level.kind), 0)) for level in budget_levels()
    ]


@dataclass(frozen=True)
class MonthSpend:
    """The team's calendar month so far: against its monthly budget (with what may have been
    charged and what is still running, as the Budgets page counts it), or what it spent in each
    currency when it has none."""

    first_day: date
    usage: BudgetUsage | None
    spent: list[str]  # "$2.50", "3.00 EUR": without a budget only


def month_spend(team: Team, now: datetime) -> MonthSpend:
    first, last = month_of(now)
    budget = Budget.objects.filter(team=team, member=None).first()
    if budget is not None:
        return MonthSpend(first, budget.usage(now), [])
    # daily_cost_period_idx: the month's rows, summed by currency.
    totals = DailyCost.totals(team, first, last, "currency")
    spent = [money(row["spent"], row["currency"]) for row in totals if row["currency"]]
    return MonthSpend(first, None, spent)


@dataclass
class TeamTrouble:
    """The team's own predictions and outputs that need a look."""

    stuck: list[Prediction]
    stuck_count: int
    failed_outputs: list[Output]
    outputs_retrying: int
    outputs_given_up: int
    unknown: list[UnknownOutcome]
    unknown_count: int
    resolved: dict[str, int]  # status now: how many

    @property
    def resolved_count(self) -> int:
        return sum(self.resolved.values())

    @property
    def resolved_as(self) -> list[tuple[str, int]]:
        """What the resolved ones turned out to be: (status label, how many)."""
        return [(Status(status).label, count) for status, count in sorted(self.resolved.items())]


def team_trouble(predictions: QuerySet, outputs: QuerySet, outcomes: QuerySet, now) -> TeamTrouble:
    """From the team's own querysets (accounts.teams.for_team): predictions in `starting` for
    longer than STUCK_AFTER, outputs not archived and creates given up as unknown in WINDOW."""
    since = now - WINDOW
    # prediction_status_idx: the team's starting predictions, by submit time.
    stuck = predictions.filter(status=Status.STARTING, submitted_at__lt=now - STUCK_AFTER).filter(
        Q(accepted_at__isnull=True) | Q(accepted_at__lt=now - STUCK_AFTER)
    )
    # The team's predictions of the window first (prediction_recent_idx), then their outputs:
    # a join on submitted_at alone had PostgreSQL read a whole index (2 s at 1,000,000 rows;
    # 4 ms this way).
    recent_predictions = predictions.filter(submitted_at__gte=since)
    failed = outputs.filter(state=ArchiveState.FAILED, prediction__in=recent_predictions)
    counted = failed.aggregate(
        retrying=Count("pk", filter=Q(next_attempt_at__isnull=False)),
        given_up=Count("pk", filter=Q(next_attempt_at__isnull=True)),
    )
    recent = outcomes.filter(given_up_at__gte=since)
    resolved = UnknownOutcome.by_status(recent)
    unresolved = resolved.pop(Status.SUBMIT_UNKNOWN, 0)
    return TeamTrouble(
        stuck=list(stuck.order_by("submitted_at", "id")[:LISTED]),
        stuck_count=stuck.count(),
        failed_outputs=list(failed.select_related("prediction").order_by("-pk")[:LISTED]),
        outputs_retrying=counted["retrying"],
        outputs_given_up=counted["given_up"],
        unknown=list(
            recent.filter(prediction__status=Status.SUBMIT_UNKNOWN)
            .select_related("prediction")
            .order_by("-given_up_at")[:LISTED]
        ),
        unknown_count=unresolved,
        resolved=resolved,
    )
